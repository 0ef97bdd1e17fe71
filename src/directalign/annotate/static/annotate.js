// Keyboard shortcuts of the item page: 1 A, 2 B, 3 tie, 4 both bad, s skip, u undo, g guidelines, r rationale.
// Keys typed into the rationale box are text; Esc leaves the box, then the shortcuts work again.
"use strict";
(function () {
  const keys = {
    "1": "verdict-a", "2": "verdict-b", "3": "verdict-tie", "4": "verdict-both_bad",
    "a": "verdict-a", "b": "verdict-b", "t": "verdict-tie", "x": "verdict-both_bad",
    "s": "skip", "u": "undo",
  };
  let sent = false;
  document.addEventListener("keydown", function (event) {
    const target = event.target;
    if (target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT")) {
      if (event.key === "Escape") { target.blur(); }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) { return; }
    const key = event.key.toLowerCase();
    if (key === "g") {
      const link = document.getElementById("guidelines-link");
      if (link) { window.location.assign(link.href); }
      return;
    }
    if (key === "r") {
      const box = document.getElementById("rationale");
      if (box) { event.preventDefault(); box.focus(); }
      return;
    }
    const button = keys[key] && document.getElementById(keys[key]);
    if (button && !sent) {
      sent = true;  // one key press, one vote: a held or doubled key does not post twice
      event.preventDefault();
      button.click();
    }
  });
})();

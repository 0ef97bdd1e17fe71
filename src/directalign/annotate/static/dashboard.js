// Live dashboard: every 10 s read the status (same-origin GET with the session cookie) and reload the plots.
"use strict";
(function () {
  const root = document.getElementById("dashboard");
  if (!root) { return; }
  const project = root.dataset.project;
  function fmt(value, digits) { return value === null || value === undefined ? "–" : value.toFixed(digits); }
  function text(id, value) { const el = document.getElementById(id); if (el) { el.textContent = value; } }
  async function refresh() {
    const response = await fetch("/api/projects/" + encodeURIComponent(project) + "/status",
                                 {credentials: "same-origin", headers: {"Accept": "application/json"}});
    if (!response.ok) { return; }
    const status = await response.json();
    text("votes", String(status.counts.votes));
    text("complete", String(status.counts.complete_items));
    text("annotators", String(status.counts.annotators));
    text("leases", String(status.counts.live_leases));
    const fleiss = status.agreement.fleiss_kappa;
    if (fleiss) {
      text("fleiss", fmt(fleiss.value, 3));
      if (fleiss.ci && fleiss.ci[0] !== null) { text("fleiss-ci", "[" + fmt(fleiss.ci[0], 2) + ", " + fmt(fleiss.ci[1], 2) + "]"); }
    }
    if (status.win_rate) { text("winrate", fmt(status.win_rate.win_rate, 3)); }
    const list = document.getElementById("warnings");
    if (list) {
      list.replaceChildren(...status.warnings.map(function (w) { const li = document.createElement("li"); li.textContent = w; return li; }));
    }
    const stamp = Date.now();
    document.querySelectorAll("img.plot").forEach(function (img) {
      img.src = img.src.split("?")[0] + "?t=" + stamp;
    });
    const pre = document.getElementById("status-json");
    if (pre) { pre.textContent = JSON.stringify(status, null, 1); }
  }
  setInterval(function () { refresh().catch(function () {}); }, 10000);
})();

"""Progress bars: rate and ETA after a delay, on the main process only."""

from directalign.progress import DELAY_S, bar


def test_bars_wait_then_show_on_the_main_process_only(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    shown = bar(range(3), desc="held-out eval", unit="batch")
    assert not shown.disable and shown.delay == DELAY_S and shown.unit == "batch" and shown.total == 3
    assert list(shown) == [0, 1, 2]
    monkeypatch.setenv("RANK", "1")
    assert bar(range(3), desc="x").disable
    assert bar(range(3), desc="x", enabled=False).disable

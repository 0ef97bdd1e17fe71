"""The HTML report from crafted run and sweep folders, checked as text and rendered in headless Chromium."""

import base64
import json
import re
import shutil
import subprocess

import pytest

from directalign.errors import ConfigError
from directalign.reports.html import write_report
from directalign.reports.plots import PANELS, pareto_front

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
IMG = re.compile(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)">')
# Injected into a copy of the page: after load, record how many images decoded (naturalWidth > 0).
MARKER_SCRIPT = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
  console.log('report-loaded');
});</script>"""


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_run(folder, steps=12, stop=False):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model": "tiny", "loss_type": "sigmoid", "beta": 0.1,
                                                      "learning_rate": 1e-4, "kl_budget": 3.0}))
    events = []
    for s in range(1, steps + 1):
        events.append({"step": s, "split": "train", "loss": 0.69 - 0.03 * s, "rewards/chosen": 0.01 * s,
                       "rewards/rejected": -0.02 * s, "rewards/margins": 0.03 * s, "rewards/accuracies": 0.5 + 0.04 * s,
                       "logps/chosen": -30 - 0.2 * s, "logps/rejected": -35 - s, "kl": 0.1 * s,
                       "lengths/chosen": 12.0, "lengths/rejected": 15.0})
        if s % 4 == 0 or s == 1:
            events.append({"step": s - 1 if s == 1 else s, "split": "eval", "tag": "before" if s == 1 else "periodic",
                           "implicit_accuracy": 0.5 + 0.02 * s, "logp_accuracy": 0.6, "mean_margin": 0.02 * s,
                           "kl": 0.25 * s, "lengths/generated": 20.0 + s, "reward": 0.3 + 0.02 * s, "n_pairs": 8})
    events.append({"step": 8, "split": "health", "check": "likelihood_displacement", "level": "warning",
                   "message": "logps/chosen fell <steadily>"})
    if stop:
        events.append({"step": 12, "split": "health", "check": "kl_budget", "level": "stop",
                       "message": "held-out KL 3.1 > kl_budget 3: stopping"})
    write_jsonl(folder / "metrics.jsonl", events)
    prompt = [{"role": "user", "content": "What is 2 + 2? <b>bold</b>"}]
    write_jsonl(folder / "generations.jsonl", [
        {"stage": "before", "step": 0, "prompt": prompt, "completion": "Four, I think.", "reward": 0.5},
        {"stage": "after", "step": steps, "prompt": prompt, "completion": "4", "reward": 1.0},
    ])
    return folder


def make_sweep(folder):
    folder.mkdir()
    trials = []
    for n, (beta, value, kl) in enumerate([(0.1, 0.7, 4.0), (0.25, 0.75, 2.0), (0.5, 0.6, 1.0), (0.3, None, None)]):
        out = make_run(folder / f"trial-{n:03d}", steps=4) if value is not None else folder / f"trial-{n:03d}"
        trials.append({"number": n, "state": "COMPLETE" if value is not None else "FAIL", "value": value, "kl": kl,
                       "beta": beta, "params": {"beta": beta, "loss_type": "sigmoid"}, "steps": 4,
                       "output_dir": str(out), "rank": None})
    for rank, t in enumerate(sorted([t for t in trials if t["value"] is not None], key=lambda t: -t["value"]), 1):
        t["rank"] = rank
    (folder / "results.json").write_text(json.dumps({"metric": "implicit_accuracy", "direction": "maximize",
                                                      "best_trial": 1, "sampler": "grid", "trials": trials}))
    return folder


def test_run_report_embeds_every_panel_the_data_has(tmp_path):
    page = write_report(make_run(tmp_path / "run", stop=True)).read_text()
    titles = [alt for alt, _ in IMG.findall(page)]
    assert titles == [title for title, _, _ in PANELS]  # the crafted run has data for every panel
    for _, data in IMG.findall(page):
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "logps/chosen fell &lt;steadily&gt;" in page  # messages are escaped
    assert "Stopped: held-out KL 3.1" in page
    assert "Four, I think." in page and "&lt;b&gt;bold&lt;/b&gt;" in page and "after (step 12)" in page


def test_sweep_report_has_the_frontier_the_table_and_the_best_run(tmp_path):
    page = write_report(make_sweep(tmp_path / "sweep")).read_text()
    titles = [alt for alt, _ in IMG.findall(page)]
    assert titles[0] == "frontier" and "Loss" in titles[1:]
    assert page.count('<tr class="best">') == 1 and "Best trial: #1" in page
    assert "FAIL" in page


def test_pareto_front_keeps_points_nothing_beats():
    assert pareto_front([(4.0, 0.7), (2.0, 0.75), (1.0, 0.6), (3.0, 0.5)]) == [(1.0, 0.6), (2.0, 0.75)]


def test_a_folder_without_metrics_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no metrics.jsonl"):
        write_report(tmp_path)


def render(page_path, tmp_path):
    """Dump the DOM of a copy of the page with the marker script; return (dom, stderr), and screenshot it."""
    probe = tmp_path / "probe.html"
    probe.write_text(page_path.read_text().replace("</body>", MARKER_SCRIPT + "</body>"))
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=10000"]
    dump = subprocess.run([*flags, f"--user-data-dir={tmp_path / 'profile-dom'}", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=120)
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--user-data-dir={tmp_path / 'profile-shot'}", "--window-size=1400,3000",
                    f"--screenshot={shot}", page_path.as_uri()], capture_output=True, timeout=120)
    return dump.stdout, dump.stderr, shot


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
@pytest.mark.parametrize("kind", ["run", "sweep"])
def test_report_renders_in_headless_chromium_with_every_image_loaded(tmp_path, kind):
    folder = make_run(tmp_path / "run", stop=True) if kind == "run" else make_sweep(tmp_path / "sweep")
    page = write_report(folder)
    n_images = len(IMG.findall(page.read_text()))
    dom, stderr, shot = render(page, tmp_path)
    assert f'data-images="{n_images}/{n_images}"' in dom
    console = [line for line in stderr.splitlines() if "CONSOLE" in line]
    assert any("report-loaded" in line for line in console)  # the console is captured ...
    assert [line for line in console if "report-loaded" not in line] == []  # ... and the page logs nothing else
    assert "Failed to load resource" not in stderr
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000

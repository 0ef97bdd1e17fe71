"""Self-contained HTML reports: one file, every image inline as base64 PNG, no scripts and no external links.

A run folder (config.json, metrics.jsonl, optional generations.jsonl) gives the training curves with health
warnings marked, the held-out evals before and after, and sample generations before and after side by side.
A sweep folder (results.json, written by `directalign sweep`) gives the metric-vs-KL frontier across trials,
the results table, and the best trial's run report below it.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from directalign.engine.metrics import read_metrics
from directalign.errors import ConfigError, DataError
from directalign.reports.plots import frontier_figure, training_panels

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best { background: #eaf6ea; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; } .plots figure { margin: 0; }
.warn { color: #8a4b00; } .stop { color: #a00; font-weight: 600; }
pre { white-space: pre-wrap; margin: 0; font-family: ui-monospace, monospace; font-size: 0.85em; }
"""
EVAL_KEYS = (
    "implicit_accuracy",
    "logp_accuracy",
    "mean_margin",
    "kl",
    "lengths/generated",
    "reward",
    "logps_chosen",
    "logps_rejected",
    "n_pairs",
)
CONFIG_KEYS = ("model", "data", "loss_type", "beta", "learning_rate", "use_peft", "lora_r", "max_steps",
               "num_train_epochs", "kl_budget", "early_stopping_metric")


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(header: list[str], rows: list[list], row_classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(
            f'<td class="num">{escape(fmt(v))}</td>' if isinstance(v, int | float) else f"<td>{escape(fmt(v))}</td>"
            for v in row
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def images(figures: list[tuple[str, str]]) -> str:
    tags = [
        f'<figure><img alt="{escape(title)}" src="data:image/png;base64,{png}"></figure>' for title, png in figures
    ]
    return f'<div class="plots">{"".join(tags)}</div>'


def _prompt_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(m["content"] if m["role"] == "user" else f"[{m['role']}] {m['content']}" for m in prompt)


def generations_section(path: Path) -> str:
    if not path.is_file():
        return ""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    before = [g for g in lines if g["stage"] == "before"]
    after = {json.dumps(g["prompt"]): g for g in lines if g["stage"] == "after"}
    rows = []
    for g in before:
        a = after.get(json.dumps(g["prompt"]), {})
        rows.append(
            f"<tr><td><pre>{escape(_prompt_text(g['prompt']))}</pre></td><td><pre>{escape(g['completion'])}</pre>"
            f"</td><td><pre>{escape(a.get('completion', '-'))}</pre></td>"
            f'<td class="num">{escape(fmt(g.get("reward")))} &rarr; {escape(fmt(a.get("reward")))}</td></tr>'
        )
    after_step = next(iter(after.values()), {}).get("step", "-")
    head = f"<tr><th>prompt</th><th>before (step 0)</th><th>after (step {after_step})</th><th>reward</th></tr>"
    return f"<h2>Generations before and after (greedy)</h2><table>{head}{''.join(rows)}</table>"


def _read_config(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(errors="replace"))
    except ValueError as err:
        raise DataError(f"{path}: not JSON ({err}); the run's configuration is unreadable") from err
    return config if isinstance(config, dict) else {}


def run_body(run_dir: Path, heading_level: int = 2) -> str:
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        raise ConfigError(f"{run_dir} has no metrics.jsonl: is it a training run's output_dir?")
    events = read_metrics(metrics_path)
    config = _read_config(run_dir / "config.json")
    health = [e for e in events if e.get("split") == "health"]
    evals = [e for e in events if e.get("split") == "eval"]
    train_steps = [e["step"] for e in events if e.get("split") == "train"]
    h = f"h{heading_level}"
    parts = [table(["key", "value"], [[k, config.get(k)] for k in CONFIG_KEYS if k in config])]
    parts.append(f"<p>{len(train_steps)} training logs, last step {max(train_steps, default=0)}; "
                 f"{len(evals)} held-out evals.</p>")
    stops = [e for e in health if e.get("level") == "stop"]
    if stops:
        parts.append(f'<p class="stop">Stopped: {escape(stops[0]["message"])}</p>')
    parts.append(f"<{h}>Health</{h}>")
    if health:
        items = "".join(
            f'<li class="{"stop" if e.get("level") == "stop" else "warn"}">step {e["step"]} '
            f'<b>{escape(e["check"])}</b>: {escape(e["message"])}</li>'
            for e in health
        )
        parts.append(f"<ol>{items}</ol>")
    else:
        parts.append("<p>No health warnings.</p>")
    parts.append(f"<{h}>Training curves</{h}>")
    parts.append(images(training_panels(events, health, config.get("kl_budget"))))
    if evals:
        keys = [k for k in EVAL_KEYS if any(k in e for e in evals)]
        rows = [[e.get("tag"), e["step"], *[e.get(k) for k in keys]] for e in evals]
        parts.append(f"<{h}>Held-out evals</{h}>" + table(["tag", "step", *keys], rows))
    parts.append(generations_section(run_dir / "generations.jsonl"))
    return "\n".join(parts)


def run_report(run_dir: str | Path) -> str:
    run_dir = Path(run_dir)
    return page(f"directalign run report: {run_dir.name}", run_body(run_dir))


def sweep_report(sweep_dir: str | Path) -> str:
    sweep_dir = Path(sweep_dir)
    results = json.loads((sweep_dir / "results.json").read_text())
    metric, trials = results["metric"], results["trials"]
    params = sorted({k for t in trials for k in t["params"]})
    ordered = sorted(trials, key=lambda t: (t["value"] is None, t.get("rank") or 0))
    rows = [[t.get("rank"), t["number"], t["state"], t["value"], t.get("kl"), t.get("steps"),
             *[t["params"].get(k) for k in params], t.get("stop_reason") or ""] for t in ordered]
    classes = ["best" if t["number"] == results.get("best_trial") else "" for t in ordered]
    parts = [
        f"<p>{len(trials)} trials, ranked by held-out <b>{escape(metric)}</b> ({escape(results['direction'])}); "
        f"sampler {escape(results.get('sampler', '-'))}; storage {escape(results.get('storage', '-'))}.</p>",
        "<h2>Frontier</h2>",
        images([("frontier", frontier_figure(trials, metric))]),
        "<h2>Results</h2>",
        table(["rank", "trial", "state", metric, "kl", "steps", *params, "stop"], rows, classes),
    ]
    best = next((t for t in trials if t["number"] == results.get("best_trial")), None)
    if best is not None and (Path(best["output_dir"]) / "metrics.jsonl").is_file():
        parts.append(f"<h2>Best trial: #{best['number']}</h2>")
        parts.append(run_body(Path(best["output_dir"]), heading_level=3))
    return page(f"directalign sweep report: {sweep_dir.name}", "\n".join(parts))


def write_report(folder: str | Path, output: str | Path | None = None) -> Path:
    """Write report.html for a run or sweep folder (a sweep has results.json); return its path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder")
    html = sweep_report(folder) if (folder / "results.json").is_file() else run_report(folder)
    target = Path(output) if output else folder / "report.html"
    target.write_text(html)
    return target

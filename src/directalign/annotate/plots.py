"""The dashboard's plots, drawn on the server with matplotlib (Agg, object API: safe in a threaded server) as SVG.

Served from the app's own origin as <img> sources, where an SVG can run no script; nothing comes from a CDN.
Each function takes the project's status (status.project_status) and its votes and returns SVG text.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from datetime import UTC, datetime

import matplotlib

matplotlib.use("Agg")

from matplotlib.dates import AutoDateLocator, ConciseDateFormatter  # noqa: E402  (after the backend is chosen)
from matplotlib.figure import Figure  # noqa: E402

from directalign.annotate.votes import ProjectVotes  # noqa: E402

PLOTS = ("votes", "throughput", "agreement", "annotators", "drift", "winrate")


def render(kind: str, status: dict, pv: ProjectVotes) -> str:
    """SVG of one plot by name (PLOTS)."""
    return {"votes": votes_over_time, "throughput": throughput, "agreement": agreement, "annotators": annotators,
            "drift": drift, "winrate": win_rate}[kind](status, pv)


def votes_over_time(status: dict, pv: ProjectVotes) -> str:
    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot()
    series: dict[str, list[float]] = defaultdict(list)
    for vote in pv.votes:
        series[vote.annotator].append(vote.submitted_at)
    times = sorted(v.submitted_at for v in pv.votes)
    if times:
        ax.step(_dates(times), range(1, len(times) + 1), where="post", color="black", label="all", linewidth=2)
        for name, stamps in sorted(series.items()):
            ax.step(_dates(stamps), range(1, len(stamps) + 1), where="post", label=name, linewidth=1)
        ax.legend(fontsize=7, ncol=2, loc="upper left")
    counts = status["counts"]
    ax.set_title(f"Votes over time ({counts['votes']} of {counts['target_votes']} regular, "
                 f"{counts['gold_votes']} gold; UTC)")
    ax.set_ylabel("cumulative votes")
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    fig.tight_layout()
    return _svg(fig, empty=not times)


def throughput(status: dict, pv: ProjectVotes) -> str:
    rows = status["annotators"]
    fig = Figure(figsize=(7, 3.2))
    left, right = fig.subplots(1, 2)
    names = [r["annotator"] for r in rows]
    left.barh(names, [r["votes"] + r["gold_votes"] for r in rows], color="#4a7ab5")
    left.set_title("Votes per annotator")
    right.barh(names, [r["median_seconds"] for r in rows], color="#b5804a")
    right.set_title("Median seconds per item")
    for ax in (left, right):
        ax.invert_yaxis()
    fig.tight_layout()
    return _svg(fig, empty=not rows)


def agreement(status: dict, pv: ProjectVotes) -> str:
    stats = status["agreement"]
    names = [("percent_agreement", "percent agreement"), ("fleiss_kappa", "Fleiss' kappa"),
             ("krippendorff_alpha", "Krippendorff's alpha"), ("cohen_kappa_mean", "Cohen's kappa (mean pair)")]
    present = [(key, label) for key, label in names if stats.get(key, {}).get("value") is not None]
    fig = Figure(figsize=(7, 3.0))
    ax = fig.add_subplot()
    for y, (key, _) in enumerate(present):
        value, ci = stats[key]["value"], stats[key]["ci"] or [None, None]
        ax.plot([value], [y], "o", color="#4a7ab5")
        if ci[0] is not None:
            ax.plot(ci, [y, y], "-", color="#4a7ab5", linewidth=2)
            ax.annotate(f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]", (value, y), textcoords="offset points",
                        xytext=(0, 6), ha="center", fontsize=8)
    ax.set_yticks(range(len(present)), [label for _, label in present])
    ax.axvline(0, color="grey", linewidth=0.5)
    ax.set_xlim(-0.2, 1.05)
    ax.set_title(f"Agreement on {stats.get('pairable_items', 0)} items with >= 2 votes "
                 f"({int(100 * stats.get('confidence', 0.95))}% bootstrap intervals)")
    fig.tight_layout()
    return _svg(fig, empty=not present)


def annotators(status: dict, pv: ProjectVotes) -> str:
    rows = status["annotators"]
    names = [r["annotator"] for r in rows]
    fig = Figure(figsize=(9, 3.2))
    gold, bias, ds = fig.subplots(1, 3, sharey=True)
    _bars(gold, names, [r.get("gold_accuracy") for r in rows], [r.get("gold_ci") for r in rows], "Gold accuracy")
    _bars(bias, names, [r["left_share"] for r in rows], [r["left_ci"] for r in rows], "Left-side share (0.5 = none)")
    bias.axvline(0.5, color="red", linewidth=0.8, linestyle="--")
    _bars(ds, names, [r["dawid_skene_reliability"] for r in rows], None, "Dawid-Skene reliability")
    gold.invert_yaxis()
    fig.tight_layout()
    return _svg(fig, empty=not rows)


def drift(status: dict, pv: ProjectVotes) -> str:
    fig = Figure(figsize=(7, 3.0))
    ax = fig.add_subplot()
    drawn = False
    for row in status["annotators"]:
        windows = row.get("gold_windows")
        if windows:
            ax.plot(range(1, len(windows) + 1), windows, marker="o", label=row["annotator"])
            drawn = True
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("window of consecutive gold answers (oldest first)")
    ax.set_ylabel("gold accuracy")
    ax.set_title("Gold accuracy over time (drift)")
    if drawn:
        ax.legend(fontsize=7, ncol=2)
    return _svg(fig, empty=not drawn)


def win_rate(status: dict, pv: ProjectVotes) -> str:
    result = status.get("win_rate") or {}
    fig = Figure(figsize=(7, 2.2))
    ax = fig.add_subplot()
    value = result.get("win_rate")
    if value is not None:
        low, high = result["ci"]
        ax.barh(["model vs reference"], [value], color="#4a7ab5")
        ax.errorbar([value], [0], xerr=[[value - low], [high - value]], color="black", capsize=6)
        ax.axvline(0.5, color="red", linestyle="--", linewidth=0.8)
        ax.set_title(f"Human win rate {value:.3f} [{low:.3f}, {high:.3f}] over {result['prompts']} prompts "
                     "(ties and both-bad count half)")
    ax.set_xlim(0, 1)
    fig.tight_layout()
    return _svg(fig, empty=value is None)


def _bars(ax, names, values, intervals, title) -> None:
    shown = [v if v is not None and not math.isnan(v) else 0.0 for v in values]
    ax.barh(names, shown, color="#4a7ab5")
    for y, (v, ci) in enumerate(zip(values, intervals or [None] * len(values), strict=True)):
        if v is None:
            ax.text(0.02, y, "n/a", va="center", fontsize=7)
        elif ci and ci[0] is not None:
            ax.plot(ci, [y, y], color="black", linewidth=1.5)
    ax.set_xlim(0, 1)
    ax.set_title(title, fontsize=9)


def _dates(stamps: list[float]) -> list[datetime]:
    return [datetime.fromtimestamp(t, UTC) for t in stamps]


def _svg(fig: Figure, empty: bool = False) -> str:
    if empty:
        fig.text(0.5, 0.5, "no data yet", ha="center", va="center", fontsize=14, color="grey")
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    return buffer.getvalue()

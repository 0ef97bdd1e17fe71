"""The report's figures, drawn with matplotlib's Agg backend and returned as base64 PNG for inline <img> tags.

Each training panel plots metrics.jsonl series over steps, train lines solid and held-out evals as markers, with
a dotted vertical line wherever a health check fired (numbered like the report's warning list).
"""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.ticker import MaxNLocator  # noqa: E402

# (title, [(split, key, label)], y label): one panel each; a panel with no data is left out.
PANELS = (
    ("Loss", [("train", "loss", "train loss")], "loss"),
    ("Reward margin", [("train", "rewards/margins", "train"), ("eval", "mean_margin", "held-out")], "margin"),
    (
        "Implicit rewards",
        [("train", "rewards/chosen", "chosen"), ("train", "rewards/rejected", "rejected")],
        "beta * log(pi / pi_ref)",
    ),
    (
        "Log-probs",
        [
            ("train", "logps/chosen", "chosen (train)"),
            ("train", "logps/rejected", "rejected (train)"),
            ("eval", "logps_chosen", "chosen (held-out)"),
            ("eval", "logps_rejected", "rejected (held-out)"),
        ],
        "nats per sequence",
    ),
    (
        "Preference accuracy",
        [
            ("train", "rewards/accuracies", "train reward accuracy"),
            ("eval", "implicit_accuracy", "held-out implicit"),
            ("eval", "logp_accuracy", "held-out log-prob"),
        ],
        "accuracy",
    ),
    (
        "KL to reference",
        [("train", "kl", "train responses (log-ratio)"), ("eval", "kl", "held-out samples")],
        "nats per sequence",
    ),
    (
        "Lengths",
        [
            ("train", "lengths/chosen", "chosen"),
            ("train", "lengths/rejected", "rejected"),
            ("eval", "lengths/generated", "generated (held-out)"),
        ],
        "tokens",
    ),
    ("Held-out reward", [("eval", "reward", "mean reward of samples")], "reward"),
)
HEALTH_COLORS = {
    "margin_stuck": "tab:purple",
    "likelihood_displacement": "tab:red",
    "overfitting": "tab:orange",
    "kl_budget": "black",
    "length_drift": "tab:brown",
    "early_stopping": "tab:gray",
}


def to_base64_png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def series(events: list[dict], split: str, key: str) -> tuple[list[int], list[float]]:
    points = [(e["step"], e[key]) for e in events if e.get("split") == split and e.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def training_panels(events: list[dict], health: list[dict], kl_budget: float | None = None) -> list[tuple[str, str]]:
    """[(title, base64 PNG)] for every panel with data; health events are drawn as numbered vertical lines."""
    figures = []
    for title, lines, ylabel in PANELS:
        drawn = [(label, *series(events, split, key), split) for split, key, label in lines]
        drawn = [d for d in drawn if d[1]]
        if not drawn:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        for label, steps, values, split in drawn:
            if split == "train":
                ax.plot(steps, values, label=label, linewidth=1.4)
            else:
                ax.plot(steps, values, label=label, marker="o", linestyle="--", linewidth=1)
        if title == "KL to reference" and kl_budget is not None:
            ax.axhline(kl_budget, color="black", linestyle=":", linewidth=1, label=f"kl_budget {kl_budget:g}")
        for number, event in enumerate(health, 1):
            color = HEALTH_COLORS.get(event["check"], "tab:red")
            ax.axvline(event["step"], color=color, linestyle=":", linewidth=1.2)
            ax.annotate(str(number), (event["step"], 1.0), xycoords=("data", "axes fraction"), color=color,
                        fontsize=8, ha="center", va="bottom")
        ax.set_title(title, pad=14 if health else 6)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        figures.append((title, to_base64_png(fig)))
    return figures


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both axes (lower KL, higher metric), by increasing KL."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def frontier_figure(trials: list[dict], metric: str) -> str:
    """Held-out metric against held-out KL, one point per finished trial, labelled by beta; the Pareto front."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    done = [t for t in trials if t.get("kl") is not None and t.get("value") is not None]
    for loss_type in sorted({t["params"].get("loss_type", t.get("loss_type", "sigmoid")) for t in done}):
        group = [t for t in done if t["params"].get("loss_type", t.get("loss_type", "sigmoid")) == loss_type]
        ax.scatter([t["kl"] for t in group], [t["value"] for t in group], label=loss_type, s=36, zorder=3)
    for t in done:
        ax.annotate(f"#{t['number']} beta {t.get('beta', 0):g}", (t["kl"], t["value"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    front = pareto_front([(t["kl"], t["value"]) for t in done])
    if len(front) > 1:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="gray", linewidth=1,
                label="Pareto front", zorder=2)
    ax.set_xlabel("held-out KL to reference (nats per sequence)")
    ax.set_ylabel(f"held-out {metric}")
    ax.set_title(f"{metric} vs KL, one point per trial")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return to_base64_png(fig)

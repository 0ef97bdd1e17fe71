"""Plain-text views of a project's status for the terminal (`annotate status` without --json)."""

from __future__ import annotations

from directalign.quality.render import table


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ci(ci) -> str:
    return "" if not ci or ci[0] is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def status_text(status: dict) -> str:
    project, counts, agreement = status["project"], status["counts"], status["agreement"]
    lines = [
        f"project {project['name']} ({project['kind']}, overlap {project['overlap']}): "
        f"{counts['votes']}/{counts['target_votes']} votes ({counts['progress']:.0%}), "
        f"{counts['complete_items']}/{counts['items']} items complete, {counts['gold_votes']} gold votes, "
        f"{counts['annotators']} annotators, {counts['live_leases']} live leases",
        "outcomes: " + (", ".join(f"{k} {v}" for k, v in sorted(counts["outcomes"].items())) or "none yet"),
    ]
    if agreement.get("pairable_items"):
        rows = [[label, _num(agreement[key]["value"]), _ci(agreement[key]["ci"])]
                for key, label in (("percent_agreement", "percent agreement"), ("fleiss_kappa", "Fleiss' kappa"),
                                   ("krippendorff_alpha", "Krippendorff's alpha"),
                                   ("cohen_kappa_mean", "Cohen's kappa (mean pair)"))]
        lines += [f"agreement on {agreement['pairable_items']} items with >= 2 votes "
                  f"({agreement['confidence']:.0%} bootstrap CI, {agreement['n_boot']} resamples):",
                  table(["statistic", "value", "interval"], rows)]
    if status["annotators"]:
        rows = [[r["annotator"], r["votes"], r["gold_votes"], _num(r.get("gold_accuracy"), 2),
                 _num(r["left_share"], 2), _num(r["dawid_skene_reliability"], 2), _num(r["median_seconds"], 1),
                 r["qualification"] or ""] for r in status["annotators"]]
        lines.append(table(["annotator", "votes", "gold", "gold acc", "left share", "dawid-skene", "median s",
                            "qualification"], rows))
    if "file_agreement" in status and status["file_agreement"]["decisive_votes"]:
        fa = status["file_agreement"]
        lines.append(f"agreement with the file's labels: {_num(fa['votes_agree'])} of {fa['decisive_votes']} "
                     f"decisive votes {_ci(fa['votes_ci'])}; majority {_num(fa['majority_agree'])} of "
                     f"{fa['majority_items']} items")
    if "win_rate" in status:
        w = status["win_rate"]
        lines.append(f"human win rate (model vs reference, ties and both-bad half): {_num(w['win_rate'])} "
                     f"{_ci(w['ci'])} over {w['prompts']} prompts ({w['method']}); votes: model {w['model_wins']}, "
                     f"reference {w['reference_wins']}, tie {w['ties']}, both bad {w['both_bad']}")
    if "judge" in status and status["judge"].get("items"):
        j = status["judge"]
        decisive = (f"{_num(j.get('decisive_agreement'))} on the {j['n_decisive']} items both call decisive"
                    if j.get("n_decisive") else "no item that both call decisive")
        lines.append(f"judge {j['judge']} vs the humans' majority on {j['items']} items: agreement "
                     f"{_num(j.get('agreement'))} {_ci(j.get('agreement_interval'))} with ties, {decisive} "
                     f"(without ties); kappa {_num(j.get('kappa'))} {_ci(j.get('kappa_interval'))}; "
                     f"{j.get('judge_ties', 0)} judge ties, {j.get('position_flips', 0)} position flips")
    lines += [f"warning: {w}" for w in status["warnings"]]
    return "\n".join(lines)

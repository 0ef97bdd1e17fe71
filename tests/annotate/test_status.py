"""The live status: agreement equal to directalign.quality's, left-side bias, gold drift, win rate, judge agreement."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from sqlalchemy import select

from directalign.annotate import queue
from directalign.annotate.models import Item
from directalign.annotate.render import status_text
from directalign.annotate.status import project_status
from directalign.quality.agreement import cohen_kappa, fleiss_kappa, krippendorff_alpha
from directalign.quality.table import rating_table
from tests.annotate.conftest import add_project, add_users


def _prefer(db, project, user, choose):
    """Claim and vote so that the preferred response is choose(task) ("0", "1", "tie" or "both_bad")."""
    task = queue.claim(db, project, user).task
    wanted = choose(task)
    left = 0 if task.a[0]["content"].split()[0] in ("good", "right") else 1
    verdict = {"0": "a" if left == 0 else "b", "1": "b" if left == 0 else "a"}.get(wanted, wanted)
    queue.submit(db, user, task.assignment_id, verdict)
    return task, wanted


def test_agreement_matches_the_quality_package_on_the_same_votes(db):
    project = add_project(db, n=12, overlap=3)
    users = add_users(db, ["u1", "u2", "u3"])
    rng = np.random.default_rng(0)
    rows = []
    for name, user in users.items():
        for _ in range(12):
            task, wanted = _prefer(db, project, user, lambda t: str(rng.choice(["0", "0", "1", "tie"])))
            rows.append({"item_id": task.item_id, "annotator_id": name, "label": wanted})
    table = rating_table(rows)
    agreement = project_status(db, project, n_boot=100)["agreement"]
    assert agreement["pairable_items"] == 12
    assert agreement["fleiss_kappa"]["value"] == pytest.approx(fleiss_kappa(table))
    assert agreement["krippendorff_alpha"]["value"] == pytest.approx(krippendorff_alpha(table))
    pairs = [cohen_kappa([table.labels_of(a)[i] for i in table.items], [table.labels_of(b)[i] for i in table.items])
             for a, b in combinations(["u1", "u2", "u3"], 2)]
    assert agreement["cohen_kappa_mean"]["value"] == pytest.approx(np.mean(pairs))
    for key in ("fleiss_kappa", "krippendorff_alpha", "cohen_kappa_mean", "percent_agreement"):
        low, high = agreement[key]["ci"]
        assert low <= agreement[key]["value"] <= high


def test_a_left_side_clicker_is_flagged_and_a_careful_annotator_is_not(db):
    project = add_project(db, n=30, overlap=2)
    users = add_users(db, ["lefty", "careful"])
    lefty_agrees = 0
    for _ in range(30):
        task = queue.claim(db, project, users["lefty"]).task
        lefty_agrees += task.a[0]["content"].startswith("good")  # "a" is the file's chosen when it is shown left
        queue.submit(db, users["lefty"], task.assignment_id, "a")
        _prefer(db, project, users["careful"], lambda t: "0")
    status = project_status(db, project, n_boot=0)
    rows = {r["annotator"]: r for r in status["annotators"]}
    assert rows["lefty"]["left_share"] == 1.0 and rows["lefty"]["left_bias"]
    assert 0.2 < rows["careful"]["left_share"] < 0.8 and not rows["careful"]["left_bias"]
    assert any(w.startswith("lefty: picks the left side") for w in status["warnings"])
    assert not any(w.startswith("careful") for w in status["warnings"])
    # The careful annotator always sides with the file's label; the left-clicker only when it was shown left.
    assert status["file_agreement"]["votes_agree"] == pytest.approx((30 + lefty_agrees) / 60)


def test_falling_gold_accuracy_is_reported_as_drift(db):
    project = add_project(db, n=2, gold=25, qualification_size=25, qualification_pass=0.0)
    user = add_users(db, ["tired"])["tired"]
    for k in range(25):
        _prefer(db, project, user, lambda t, k=k: "0" if k < 12 else "1")
    status = project_status(db, project, n_boot=0)
    row = status["annotators"][0]
    assert row["gold_votes"] == 25 and row["gold_accuracy"] == pytest.approx(12 / 25)
    assert row["gold_windows"] == [1.0, 0.2, 0.0] and row["gold_latest"] == 0.0 and row["gold_flagged"]
    assert row["qualification"] == "passed (48%)"
    assert any("gold accuracy low or falling" in w for w in status["warnings"])


def test_human_win_rate_counts_ties_half_with_a_prompt_level_interval(db):
    project = add_project(db, n=4, overlap=2, kind="humaneval")
    users = add_users(db, ["u1", "u2"])
    plan = {0: ("0", "0"), 1: ("0", "tie"), 2: ("1", "1"), 3: ("both_bad", "0")}
    for column, user in enumerate(users.values()):
        for _ in range(4):
            _prefer(db, project, user, lambda t, c=column: plan[int(t.prompt[0]["content"].split()[1])][c])
    status = project_status(db, project, n_boot=0)
    win = status["win_rate"]
    # Per prompt: 1, 0.75, 0, 0.75 -> 0.625; votes: model 4, reference 2, tie 1, both bad 1.
    assert win["win_rate"] == pytest.approx(0.625) and win["prompts"] == 4
    assert (win["model_wins"], win["reference_wins"], win["ties"], win["both_bad"]) == (4, 2, 1, 1)
    assert 0.0 <= win["ci"][0] < 0.625 < win["ci"][1] <= 1.0
    text = status_text(status)
    assert "human win rate" in text and "0.625" in text


def test_judge_agreement_with_and_without_ties(db):
    project = add_project(db, n=4, overlap=1)
    user = add_users(db, ["u1"])["u1"]
    humans = {0: "0", 1: "1", 2: "tie", 3: "0"}
    for _ in range(4):
        _prefer(db, project, user, lambda t: humans[int(t.prompt[0]["content"].split()[1])])
    judge = {0: "0", 1: "0", 2: "tie", 3: "0"}
    with db.write() as session:
        for item in session.scalars(select(Item)):
            item.judge_name, item.judge_winner = "reward:len", judge[item.position]
            item.judge_prob, item.judge_flip = 0.5, False
    result = project_status(db, project, n_boot=0)["judge"]
    assert result["items"] == 4 and result["agreement"] == pytest.approx(0.75)
    assert result["n_decisive"] == 3 and result["decisive_agreement"] == pytest.approx(2 / 3)

"""Exports: outcomes, counts, agreement and confidence; the files load_records and the trainer read unchanged."""

from __future__ import annotations

import json

import pytest

from directalign.annotate import queue
from directalign.annotate.export import export_rows, write_jsonl
from directalign.annotate.votes import load_votes
from directalign.config import load_config
from directalign.data.formats import CONVERSATIONAL, UNPAIRED, load_records
from directalign.errors import ConfigError
from directalign.quality.agreement import fleiss_kappa
from directalign.quality.table import rating_table, read_rows
from directalign.training.dpo import train
from tests.annotate.conftest import add_project, add_users

# Per item, the responses the three annotators prefer ("0" = the file's chosen): 6 items, every outcome.
PLAN = [
    ["0", "0", "0"],  # unanimous win of response 0
    ["1", "1", "0"],  # response 1 wins 2-1
    ["tie", "tie", "0"],  # tie
    ["both_bad", "both_bad", "1"],  # both bad
    ["0", "1", "tie"],  # no majority
    ["0", "0", "both_bad"],  # response 0 wins 2-1
]


@pytest.fixture
def voted(db):
    """A project whose votes follow PLAN (each annotator's verdict chosen to prefer the planned response)."""
    project = add_project(db, n=len(PLAN), overlap=3)
    users = add_users(db, ["u1", "u2", "u3"])
    for column, name in enumerate(("u1", "u2", "u3")):
        for _ in PLAN:
            task = queue.claim(db, project, users[name]).task
            wanted = PLAN[int(task.prompt[0]["content"].split()[1])][column]
            left = 0 if task.a[0]["content"].startswith("good") else 1
            verdict = {"0": "a" if left == 0 else "b", "1": "b" if left == 0 else "a"}.get(wanted, wanted)
            queue.submit(db, users[name], task.assignment_id, verdict)
    return load_votes(db, project, with_text=True)


def test_dpo_rows_are_the_won_items_with_counts_agreement_and_confidence(voted):
    rows, summary = export_rows(voted, "dpo")
    assert summary.dropped == {"tie": 1, "both bad": 1, "no majority": 1} and summary.items == 3
    by_prompt = {row["prompt"][0]["content"]: row for row in rows}
    unanimous, flipped, split = by_prompt["question 0"], by_prompt["question 1"], by_prompt["question 5"]
    assert unanimous["chosen"] == [{"role": "assistant", "content": "good 0"}]
    assert flipped["chosen"][0]["content"] == "bad 1" and flipped["rejected"][0]["content"] == "good 1"
    assert (flipped["votes_chosen"], flipped["votes_rejected"], flipped["n_votes"]) == (2, 1, 3)
    assert split["votes_both_bad"] == 1 and split["agreement"] == pytest.approx(2 / 3)
    assert unanimous["agreement"] == 1.0
    # Laplace's rule on the decisive votes: 3-0 -> 4/5, 2-1 -> 3/5, 2-0 (and a both-bad vote) -> 3/4.
    assert (unanimous["confidence"], flipped["confidence"], split["confidence"]) == pytest.approx((0.8, 0.6, 0.75))
    assert all(0.5 <= row["ds_confidence"] <= 1.0 for row in rows)


def test_ties_and_both_bad_are_kept_when_asked(voted):
    rows, summary = export_rows(voted, "dpo", keep_ties=True, keep_both_bad=True)
    assert summary.rows == 6 and summary.dropped == {}
    outcomes = sorted(row["outcome"] for row in rows)
    assert outcomes == ["both_bad", "chosen", "chosen", "chosen", "no_majority", "tie"]
    tie = next(row for row in rows if row["outcome"] == "tie")
    assert tie["chosen"][0]["content"] == "good 2"  # the only decisive vote went to response 0


def test_kto_rows_from_clear_wins_and_both_bad(voted):
    rows, summary = export_rows(voted, "kto")
    assert summary.items == 4 and summary.rows == 8 and summary.dropped == {"tie": 1, "no majority": 1}
    labels = {(row["prompt"][0]["content"], row["completion"][0]["content"]): row["label"] for row in rows}
    assert labels[("question 1", "bad 1")] is True and labels[("question 1", "good 1")] is False
    assert labels[("question 3", "good 3")] is False and labels[("question 3", "bad 3")] is False
    tied, _ = export_rows(voted, "kto", keep_ties=True)
    assert {r["label"] for r in tied if r["outcome"] == "tie"} == {True}


def test_votes_rows_are_a_long_table_the_quality_commands_read(voted, tmp_path):
    rows, summary = export_rows(voted, "votes")
    assert summary.rows == 18 and {r["label"] for r in rows} == {"0", "1", "tie", "both_bad"}
    path = write_jsonl(rows, tmp_path / "votes.jsonl")
    table = rating_table(read_rows(path))
    assert table.codes.shape == (6, 3)
    assert fleiss_kappa(table) == pytest.approx(fleiss_kappa(voted.rating_table()))


def test_export_files_must_be_json_lines_in_an_existing_folder(voted, tmp_path):
    rows, _ = export_rows(voted, "dpo")
    with pytest.raises(ConfigError, match="name it .jsonl"):
        write_jsonl(rows, tmp_path / "out.csv")
    with pytest.raises(ConfigError, match="does not exist"):
        write_jsonl(rows, tmp_path / "missing" / "out.jsonl")
    with pytest.raises(ConfigError, match="choose one of dpo, kto, votes"):
        export_rows(voted, "sft")
    gz = write_jsonl(rows, tmp_path / "out.jsonl.gz")
    assert len(load_records(gz).records) == 3


def test_the_trainer_reads_both_exports_unchanged(voted, tiny_model_dir, tmp_path):
    dpo_rows, _ = export_rows(voted, "dpo", keep_ties=True, keep_both_bad=True)
    dpo = write_jsonl(dpo_rows, tmp_path / "dpo.jsonl")
    kto = write_jsonl(export_rows(voted, "kto")[0], tmp_path / "kto.jsonl")
    loaded = load_records(dpo)
    assert loaded.schema == CONVERSATIONAL and len(loaded.records) == 6 and not loaded.skipped
    assert loaded.records[0].prompt == [{"role": "user", "content": "question 0"}]
    unpaired = load_records(kto)
    assert unpaired.schema == UNPAIRED and [r.labels for r in unpaired.records[:2]] == [[True], [False]]
    for path, loss in ((dpo, "sigmoid"), (kto, "kto")):
        out = tmp_path / f"run-{loss}"
        cfg = load_config("train", overrides=dict(model=str(tiny_model_dir), data=str(path), output_dir=str(out),
                                         loss_type=loss, max_steps=2, per_device_train_batch_size=2,
                                         logging_steps=1, eval_split=0.0, save_steps=0, kl_prompts=0,
                                         max_length=64, max_prompt_length=32))
        assert train(cfg).steps == 2
        steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert sum(e.get("split") == "train" for e in steps) == 2

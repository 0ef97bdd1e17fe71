"""The hostile-input probe's classification (benchmarks/probe.py), on made-up outcomes and on a few real cases of
each group; the whole probe (over 1,000 cases, minutes) is `python benchmarks/probe.py`, not a test."""

from __future__ import annotations

import pytest
from benchmarks.probe import Case, Result, classify, execute, run_inproc
from benchmarks.probe_cases import build_cases, prepare

REFUSE = Case("c", "data", "train", [], "refuse", ("bad.jsonl", "row"))
SUCCEED = Case("s", "faults", "train", [], "succeed", ("damaged",))


@pytest.mark.parametrize(
    ("case", "result", "problem", "outcome"),
    [
        (REFUSE, Result(1, "loading...\nerror: bad.jsonl:3: row 3 has no prompt\n"), None, "clear error"),
        (REFUSE, Result(1, "Traceback (most recent call last):\n  File x\nKeyError: 'prompt'\n"), None, "traceback"),
        (REFUSE, Result(-11, ""), None, "traceback"),
        (REFUSE, Result(0, "outputs: runs/x"), None, "silent wrong"),
        (REFUSE, Result(1, "error: something went wrong\n"), None, "unclear error"),
        (REFUSE, Result(1, "error: bad.jsonl: row 1\nline two\nline three\n"), None, "unclear error"),
        (REFUSE, Result(1, "error: bad.jsonl: row 1\n"), ("lost", "adapter changed"), "data lost"),
        (SUCCEED, Result(0, "checkpoint-2 is damaged; using the one before"), None, "handled"),
        (SUCCEED, Result(0, "resumed"), None, "silent wrong"),  # it did not say the checkpoint was damaged
        (SUCCEED, Result(0, "damaged"), ("silent", "weights differ"), "silent wrong"),
        (SUCCEED, Result(1, "error: no\n"), None, "refused wrongly"),
    ],
)
def test_outcomes_are_classified(case, result, problem, outcome):
    assert classify(case, result, problem)[0] == outcome


SUBSET = {
    "data/train/truncated.jsonl.gz": "clear error",
    "data/kto/unknown_role.jsonl": "clear error",
    "data/data inspect/valid:text.jsonl": "handled",
    "data/data diagnose/one-bad-row:unquoted_comma": "handled",
    "config/train/max_grad_norm=-1": "clear error",
    "config/grpo/logging_steps=0": "clear error",
    "config/eval/--batch-size=0": "clear error",
    "paths/eval/adapter:a-run-folder": "clear error",
    "paths/train/output-dir:a-file": "clear error",
    "paths/grpo/reward:nan": "clear error",
}


def test_a_few_real_cases_of_each_group(tmp_path):
    prepare(tmp_path, bases=False)
    cases = {c.name: c for c in build_cases()}
    got = {name: execute(cases[name], tmp_path, run_inproc) for name in SUBSET}
    assert {name: row["outcome"] for name, row in got.items()} == SUBSET, {n: r["why"] for n, r in got.items()}

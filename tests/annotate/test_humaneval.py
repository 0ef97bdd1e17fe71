"""Blind human evaluation end to end on a tiny model: a trained adapter against its reference, a judge, a win rate."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from directalign.annotate import auth
from directalign.annotate.create import create
from directalign.annotate.humaneval import read_prompts
from directalign.annotate.models import Item, Project
from directalign.annotate.projects import HUMANEVAL_GUIDELINES, ProjectOptions
from directalign.config import load_config
from directalign.errors import DataError
from directalign.generation.base import GenerationConfig
from directalign.training.dpo import train
from tests.annotate.conftest import PASSWORD

PROMPTS = ["Name a colour.", "Say hello.", "Count to three.", "Name a fruit."]


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapter-run")
    cfg = load_config("train", overrides=dict(model=str(tiny_model_dir), output_dir=str(out), max_steps=2,
                                     builtin_train_pairs=8, builtin_eval_pairs=2, per_device_train_batch_size=4,
                                     learning_rate=5e-2, save_steps=0, kl_prompts=0, warmup_ratio=0.0))
    train(cfg)
    return out / "adapter"


def test_prompts_come_from_text_lines_prompt_rows_or_preference_files(tmp_path):
    lines = tmp_path / "p.txt"
    lines.write_text("first\n\nsecond\n")
    assert [p for p, _ in read_prompts(lines)] == [[{"role": "user", "content": "first"}],
                                                    [{"role": "user", "content": "second"}]]
    rows = tmp_path / "p.jsonl"
    rows.write_text(json.dumps({"instruction": "Fix", "input": "teh"}) + "\n" + json.dumps({"prompt": "Hi"}) + "\n")
    assert [p[0]["content"] for p, _ in read_prompts(rows)] == ["Fix\n\nteh", "Hi"]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "Q", "chosen": "a", "rejected": "b"}) + "\n")
    assert read_prompts(pairs)[0] == ([{"role": "user", "content": "Q"}], f"{pairs}:1")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": 3}) + "\n")
    with pytest.raises(DataError, match="bad.jsonl:1: field 'prompt'"):
        read_prompts(bad)


def test_adapter_against_its_reference_judged_and_voted(db, app, adapter, tiny_model_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    judge_file = tmp_path / "judge.py"
    judge_file.write_text("def longer(prompts, completions, **_):\n    return [len(c) for c in completions]\n")
    summary = create(db, "eval", ProjectOptions(overlap=2), prompts=str(prompts), model=str(tiny_model_dir),
                     adapter=str(adapter), generation=GenerationConfig(max_new_tokens=6, temperature=1.0, seed=0),
                     batch_size=2, judge=f"reward:{judge_file}:longer")
    assert summary.startswith("project eval (humaneval): 4 items") and "judge reward:" in summary
    with db.read() as session:
        items = session.scalars(select(Item).order_by(Item.position)).all()
    assert [json.loads(i.prompt)[0]["content"] for i in items] == PROMPTS
    assert all(json.loads(i.response_0)[0]["role"] == "assistant" for i in items)
    # The judge prefers the longer text: its stored verdict must say so for every item.
    for item in items:
        a, b = (len(json.loads(r)[0]["content"]) for r in (item.response_0, item.response_1))
        assert item.judge_winner == ("0" if a > b else "1" if b > a else "tie")
    tokens = [auth.add_user(db, f"rater{k}", PASSWORD, "annotator") for k in range(2)]
    admin = auth.add_user(db, "boss", PASSWORD, "admin")
    api = TestClient(app, base_url="https://testserver")
    model_texts = {json.loads(i.response_0)[0]["content"] for i in items}
    for token in tokens:
        headers = {"Authorization": f"Bearer {token}"}
        while (response := api.get("/api/projects/eval/next", headers=headers)).status_code == 200:
            task = response.json()
            verdict = "tie" if task["a"] == task["b"] else ("a" if task["a"] in model_texts else "b")
            api.post(f"/api/assignments/{task['assignment_id']}", json={"verdict": verdict}, headers=headers)
    status = api.get("/api/projects/eval/status", headers={"Authorization": f"Bearer {admin}"}).json()
    win = status["win_rate"]
    assert win["prompts"] == 4 and win["votes"] == 8 and win["reference_wins"] == 0
    assert win["win_rate"] == pytest.approx((win["model_wins"] + 0.5 * win["ties"]) / 8)
    assert status["judge"]["items"] == 4 and status["judge"]["judge"].startswith("reward:")
    with db.read() as session:
        project = session.scalars(select(Project)).one()
    assert project.guidelines == HUMANEVAL_GUIDELINES and json.loads(project.settings)["adapter"] == str(adapter)

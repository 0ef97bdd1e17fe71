"""A judge in the loop of online and iterative DPO: the Copeland ranking over the k samples, the pairs it keeps
and drops, the length penalty, confidence label smoothing, the judge/... metrics, and runs on a tiny model with
a reward-function judge, a local model judge and an OpenAI-compatible judge served on 127.0.0.1."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from directalign.config import load_config
from directalign.engine.metrics import read_metrics
from directalign.errors import ConfigError
from directalign.generation.base import Completion
from directalign.judges.backends import reward_function_judge
from directalign.judges.base import Verdict
from directalign.losses.paired import dpo_loss
from directalign.losses.registry import PairTerms
from directalign.training.iterative import iterative_dpo
from directalign.training.judged import MAX_SMOOTHING, judge_groups, judge_metrics
from directalign.training.objective import pair_loss
from directalign.training.online import online_dpo
from directalign.training.rollout import Group, best_worst_pairs, pair_smoothing
from tests.local_server import JSONHandler, LocalServer, serving
from tests.training.test_online import length_reward, onpolicy_config

JUDGE_KEYS = ("judge/consistency", "judge/tie_rate", "judge/flip_rate", "judge/calls", "judge/latency_s",
              "judge/pairs", "judge/dropped_tie", "judge/dropped_flip")


def judge_cfg(**kw):
    base = dict(judge_swap=True, judge_rule="flip-tie", judge_length_penalty=0.0, max_new_tokens=8)
    return SimpleNamespace(**{**base, **kw})


def texts_group(texts: list[str], lengths: list[int] | None = None) -> Group:
    lengths = lengths or [2] * len(texts)
    completions = [Completion(t, list(range(10, 10 + n)), "stop") for t, n in zip(texts, lengths, strict=True)]
    return Group([{"role": "user", "content": "q"}], [1, 5], completions, [c.token_ids for c in completions],
                 [0.0] * len(texts), {})


class TableJudge:
    """A text judge answering from a table keyed by (response shown first, response shown second); pairs not
    in the table: the response whose text sorts first wins. Counts the ordered pairs it was asked."""

    order_invariant = False
    name = "table"

    def __init__(self, table=None):
        self.table, self.asked = table or {}, 0

    def judge(self, prompts, responses_a, responses_b):
        self.asked += len(prompts)
        return [self.table.get((a, b)) or Verdict("A" if a < b else "B") for a, b in zip(responses_a, responses_b,
                                                                                          strict=True)]


def test_copeland_ranking_pairs_best_against_worst_in_one_batch_of_both_orders():
    judge = TableJudge()
    (judged,) = judge_groups(judge, [texts_group(["c", "a", "d", "b"])], judge_cfg())
    assert judged.wins == [-1.0, 3.0, -3.0, 1.0]  # a beats all, d loses to all
    assert judged.pair == (1, 2) and judged.dropped is None and judged.confidence == 1.0
    assert (judged.pairs_judged, judged.calls, judge.asked) == (6, 12, 12)  # C(4,2) pairs, both orders
    assert (judged.ties, judged.flips, judged.unparseable) == (0, 0, 0)


def test_flips_ties_and_cycles_give_no_pair_and_are_counted():
    # "x" wins whenever it is shown first, "y" too: the verdict follows the position, an order flip.
    flip = TableJudge({("x", "y"): Verdict("A"), ("y", "x"): Verdict("A")})
    assert judge_groups(flip, [texts_group(["x", "y"])], judge_cfg())[0].dropped == "flip"
    tie = TableJudge({("x", "y"): Verdict("tie"), ("y", "x"): Verdict("tie")})
    (judged,) = judge_groups(tie, [texts_group(["x", "y"])], judge_cfg())
    assert (judged.dropped, judged.pair, judged.ties) == ("tie", None, 1)
    # d beats b (both orders agree), a beats both: a +2, b -2, d 0; the pair is a vs b, which a won directly.
    table = {("b", "d"): Verdict("B"), ("d", "b"): Verdict("A")}
    (judged,) = judge_groups(TableJudge(table), [texts_group(["a", "b", "d"])], judge_cfg())
    assert judged.wins == [2.0, -2.0, 0.0] and judged.pair == (0, 1)
    cyclic = {("c", "a"): Verdict("A"), ("a", "c"): Verdict("B")}  # c > a, a > b, b > c: all equal
    (judged,) = judge_groups(TableJudge(cyclic), [texts_group(["a", "b", "c"])], judge_cfg())
    assert judged.wins == [0.0, 0.0, 0.0] and judged.dropped == "tie"
    groups = [texts_group(["x", "y"]), texts_group(["x", "y"])]
    for g, j in zip(groups, judge_groups(flip, groups, judge_cfg()), strict=True):
        g.judged = j
    records, dropped = best_worst_pairs(groups)
    assert (len(records), dropped) == (0, 2)
    metrics = judge_metrics(groups)
    assert metrics["judge/flip_rate"] == 1.0 and metrics["judge/consistency"] == 0.0
    assert metrics["judge/tie_rate"] == 1.0  # a flip resolves as a tie
    assert metrics["judge/dropped_flip"] == 2.0 and metrics["judge/pairs"] == 0.0 and metrics["judge/calls"] == 4


def test_a_ranking_the_direct_verdict_contradicts_gives_no_pair():
    judge = TableJudge()  # a > b > c, and a is long
    group = texts_group(["a", "b", "c"], lengths=[8, 1, 1])
    (plain,) = judge_groups(judge, [group], judge_cfg())
    assert plain.pair == (0, 2)
    (penalised,) = judge_groups(judge, [group], judge_cfg(judge_length_penalty=3.0))
    # a: 2/2 - 3 x 8/8 = -2, b: 0 - 3/8, c: -1 - 3/8: best b, worst a; but a beat b directly
    assert penalised.scores == pytest.approx([-2.0, -0.375, -1.375]) and penalised.dropped == "intransitive"


def test_the_length_penalty_changes_which_pair_is_kept():
    judge = TableJudge()  # a > b > c > d; a is four times as long
    group = texts_group(["a", "b", "c", "d"], lengths=[8, 2, 2, 2])
    assert judge_groups(judge, [group], judge_cfg())[0].pair == (0, 3)
    (judged,) = judge_groups(judge, [group], judge_cfg(judge_length_penalty=1.0))
    assert judged.scores == pytest.approx([1 - 1.0, 1 / 3 - 0.25, -1 / 3 - 0.25, -1 - 0.25])
    assert judged.pair == (1, 3)


def test_score_judges_give_confidence_and_label_smoothing():
    judge = reward_function_judge(length_reward, name="len")
    groups = [texts_group(["abcd", "ab", "abc"]), texts_group(["x", "x"])]
    for g, j in zip(groups, judge_groups(judge, groups, judge_cfg()), strict=True):
        g.judged = j
    first = groups[0].judged
    assert first.pair == (0, 1) and first.calls == 3  # an order-invariant judge is asked once per pair
    assert first.confidence == pytest.approx(1 / (1 + math.exp(-2)))  # sigmoid(4 - 2)
    assert groups[1].judged.dropped == "tie"
    assert pair_smoothing(groups) == [pytest.approx(1 - first.confidence)]
    groups[0].judged.confidence = 0.5
    assert pair_smoothing(groups) == [MAX_SMOOTHING]


def test_per_pair_label_smoothing_is_each_pairs_cdpo_loss():
    torch.manual_seed(0)
    pc, pr, rc, rr = (torch.randn(3) for _ in range(4))
    terms = PairTerms(policy_chosen=pc, policy_rejected=pr, ref_chosen=rc, ref_rejected=rr,
                      chosen_lengths=torch.ones(3), rejected_lengths=torch.ones(3))
    cfg = load_config("online-dpo", overrides={"beta": 0.5})
    eps = torch.tensor([0.0, 0.1, 0.3])
    losses, _, _ = pair_loss(cfg, terms, eps)
    expected = [dpo_loss(pc[i], pr[i], rc[i], rr[i], 0.5, float(eps[i])) for i in range(3)]
    assert losses.tolist() == pytest.approx([float(e) for e in expected])


@pytest.mark.parametrize(
    "command, overrides, message",
    [
        ("grpo", {"judge": "reward:builtin"}, "judge"),
        ("online-dpo", {"judge_length_penalty": "0.5"}, "judge_length_penalty: set judge too"),
        ("iterative-dpo", {"judge": "reward:builtin", "judge_label_smoothing": "true", "loss_type": "ipo"},
         "judge_label_smoothing needs a loss that reads label_smoothing"),
        ("online-dpo", {"judge": "reward:builtin", "judge_label_smoothing": "true", "label_smoothing": "0.1"},
         "leave label_smoothing at 0"),
        ("online-dpo", {"judge": "reward:builtin", "judge_rule": "majority"}, "judge_rule must be one of"),
    ],
)
def test_judge_keys_are_checked_and_honoured_only_by_the_dpo_commands(command, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(command, overrides=overrides)


def test_online_dpo_with_a_reward_function_judge(tiny_model_dir, tmp_path):
    spec = f"reward:{Path(__file__).parent / 'test_online.py'}:length_reward"
    cfg = onpolicy_config(tiny_model_dir, tmp_path / "run", judge=spec, judge_label_smoothing=True,
                          eval_before_training=False)
    online_dpo(cfg, length_reward)
    train = [e for e in read_metrics(tmp_path / "run" / "metrics.jsonl") if e["split"] == "train"]
    for key in (*JUDGE_KEYS, "judge/chosen_len", "judge/rejected_len", "judge/confidence"):
        assert key in train[0], key
    # 2 prompts x C(3,2) pairs, one order each (a score judge cannot favour a position)
    assert all(e["judge/calls"] == 6 and e["judge/consistency"] == 1.0 for e in train)
    assert sum(e["judge/pairs"] for e in train) == sum(e["pairs"] for e in train) > 0
    # with label smoothing from a confidence below 1, step 1's loss (policy = reference) is still log 2
    assert train[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_iterative_dpo_with_a_local_model_judge_writes_judged_pairs(tiny_model_dir, tmp_path):
    settings = dict(command="iterative-dpo", num_rounds=1, prompts_per_round=2, max_steps=1,
                    judge=f"local:{tiny_model_dir}", judge_rule="mean-probability", kl_prompts=0)
    result = iterative_dpo(onpolicy_config(tiny_model_dir, tmp_path / "run", **settings), length_reward)
    sample = next(e for e in read_metrics(tmp_path / "run" / "metrics.jsonl") if e["split"] == "sample")
    assert sample["judge/calls"] == 2 * 2 * 3  # 2 prompts x C(3,2) pairs x both orders
    assert sample["pairs"] == sample["judge/pairs"]
    rollout = json.loads((tmp_path / "run" / "round_1" / "rollout.json").read_text())
    assert all(row["judged"]["calls"] == 6 for row in rollout)
    pairs = [json.loads(line) for line in (tmp_path / "run" / "round_1" / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == sample["pairs"]
    assert all(p["judge_score_chosen"] > p["judge_score_rejected"] for p in pairs)
    assert result.steps == (1 if pairs else 0)


class ShorterWinsHandler(JSONHandler):
    """An OpenAI-compatible judge that prefers the shorter response (equal lengths: a tie), as JSON."""

    def do_POST(self):  # noqa: N802 (the http.server API)
        body = self.read_json()
        text = body["messages"][-1]["content"]
        a, b = (re.search(rf"\[Response {x}\]\n(.*?)\n\[End of Response {x}\]", text, re.S).group(1) for x in "AB")
        winner = "tie" if len(a) == len(b) else "A" if len(a) < len(b) else "B"
        verdict = json.dumps({"winner": winner, "rationale": "shorter"})
        self.chat_completion(body["model"], [{"index": 0, "message": {"role": "assistant", "content": verdict},
                                              "finish_reason": "stop"}])


def test_online_dpo_with_an_openai_compatible_judge(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with serving(LocalServer(ShorterWinsHandler)) as server:
        cfg = onpolicy_config(tiny_model_dir, tmp_path / "run", judge="openai:shorter", judge_base_url=server.base_url,
                              judge_concurrency=4, eval_before_training=False, kl_prompts=0)
        online_dpo(cfg, length_reward)
        requests = len(server.requests)
    train = [e for e in read_metrics(tmp_path / "run" / "metrics.jsonl") if e["split"] == "train"]
    assert sum(e["judge/calls"] for e in train) == requests == 2 * 2 * 3 * 2  # steps x prompts x pairs x orders
    assert all(e["judge/flip_rate"] == 0.0 for e in train)
    assert all(e["judge/consistency"] == 1.0 for e in train)

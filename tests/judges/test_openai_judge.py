"""The OpenAI-compatible judge against a real HTTP server on 127.0.0.1 (tests/judges/conftest.py), which is
deterministic and position-biased on the pairs marked [hard]: the order swap must turn those into ties."""

import pytest

pytest.importorskip("openai")

from directalign.errors import ConfigError  # noqa: E402
from directalign.judges.backends import OpenAIJudge, judge_from_spec  # noqa: E402
from directalign.judges.ensemble import JudgeEnsemble  # noqa: E402
from directalign.judges.pairwise import judge_pairs, summarize  # noqa: E402
from directalign.judges.validation import LabelledPair, validate_judges  # noqa: E402

PROMPTS = ["What is 2 + 2?", "[hard] Name the capital of Australia.", "[hard] Is 91 prime?", "[garbage] Hello?"]
A = ["4 (correct)", "Canberra (correct)", "Yes, it is prime.", "Hi"]
B = ["5", "Sydney", "No, 91 = 7 x 13 (correct)", "Hello"]


def judge(server, model):
    return OpenAIJudge(model, base_url=server.base_url, timeout=10, max_retries=0)


def test_order_swap_turns_position_bias_into_ties(judge_server):
    biased = judge(judge_server, "biased-judge")
    one_order = judge_pairs(biased, PROMPTS, A, B, swap=False)
    # In one order the bias passes for a verdict: "A" on both hard pairs, one of them wrong.
    assert [j.winner for j in one_order] == ["A", "A", "A", None]
    both_orders = judge_pairs(biased, PROMPTS, A, B)
    assert [j.winner for j in both_orders] == ["A", "tie", "tie", None]
    assert [j.position_flip for j in both_orders] == [False, True, True, False]
    summary = summarize(both_orders)
    assert (summary.wins_a, summary.ties, summary.unparseable, summary.position_flips) == (1, 2, 1, 2)
    assert both_orders[0].rationale == "biased-judge read response A" and both_orders[0].confidence == 1.0

    fair = judge_pairs(judge(judge_server, "fair-judge"), PROMPTS, A, B)
    assert [j.winner for j in fair] == ["A", "A", "B", None]
    assert not any(j.position_flip for j in fair)


def test_requests_are_greedy_judging_prompts_in_both_orders(judge_server):
    judge_pairs(judge(judge_server, "fair-judge"), PROMPTS[:1], A[:1], B[:1])
    first, second = sorted(judge_server.requests, key=lambda body: body["messages"][-1]["content"].index("(correct)"))
    for body in (first, second):
        assert (body["temperature"], body["n"], body["max_tokens"]) == (0.0, 1, 512)
        assert body["messages"][0]["role"] == "system" and "impartial judge" in body["messages"][0]["content"]
    assert "[Response A]\n4 (correct)\n" in first["messages"][-1]["content"]
    assert "[Response A]\n5\n" in second["messages"][-1]["content"]


def test_ensemble_votes_and_reports_the_judges_agreement(judge_server):
    ensemble = JudgeEnsemble([judge(judge_server, "fair-judge"), judge(judge_server, "biased-judge")])
    result = ensemble.run(PROMPTS, A, B)
    # fair: A, A, B; biased: A, tie, tie; a split vote is a tie, no parseable vote is unparseable.
    assert [j.winner for j in result.judgements] == ["A", "tie", "tie", None]
    assert result.judgements[1].votes == {"openai:fair-judge": "A", "openai:biased-judge": "tie"}
    # Cohen's kappa on the 3 pairs both parsed: p_o = 1/3, p_e = 2/3 * 1/3, kappa = (1/3 - 2/9) / (7/9) = 1/7.
    assert result.agreement["pairwise_kappa"] == {"openai:fair-judge vs openai:biased-judge": pytest.approx(1 / 7)}
    assert result.agreement["percent_agreement"] == pytest.approx(1 / 3)
    assert result.summaries()["openai:biased-judge"].position_flips == 2


def test_validation_against_human_labels(judge_server):
    pairs = [
        LabelledPair([{"role": "user", "content": p}], a, b, human)
        for p, a, b, human in zip(PROMPTS[:3], A, B, ["A", "A", "B"], strict=False)
    ]
    report = validate_judges(
        [judge(judge_server, "fair-judge"), judge(judge_server, "biased-judge")], pairs, n_boot=200
    )
    fair, biased, ensemble = report.validations
    assert (fair.agreement, fair.kappa, fair.coverage) == (1.0, 1.0, 1.0)
    assert (biased.agreement, biased.judge_ties, biased.position_flips) == (pytest.approx(1 / 3), 2, 2)
    assert biased.confusion == {
        "A": {"A": 1, "B": 0, "tie": 1, "unparseable": 0},
        "B": {"A": 0, "B": 0, "tie": 1, "unparseable": 0},
    }
    assert ensemble.judge == "ensemble" and ensemble.agreement == pytest.approx(1 / 3)


def test_spec_builds_an_openai_judge_and_unknown_models_fail_clearly(judge_server):
    judge_spec = judge_from_spec("openai:nope", base_url=judge_server.base_url)
    judge_spec.generator.client = judge_spec.generator.client.with_options(max_retries=0)
    with pytest.raises(ConfigError, match="refused the request for model 'nope': HTTP 404"):
        judge_pairs(judge_spec, PROMPTS[:1], A[:1], B[:1])
    with pytest.raises(ConfigError, match="KIND:ARGUMENT"):
        judge_from_spec("gpt-4")

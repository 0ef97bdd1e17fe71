"""Order-swap debiasing: the rules that turn the verdicts on both orders into one judgement."""

import pytest

from directalign.judges.base import Verdict
from directalign.judges.pairwise import judge_pairs, mirror, resolve, summarize


class ScriptedJudge:
    """Answers from a table keyed by (prompt, response shown first); counts its calls."""

    order_invariant = False

    def __init__(self, answers, name="scripted"):
        self.answers, self.name, self.calls = answers, name, 0

    def judge(self, prompts, responses_a, responses_b):
        self.calls += 1
        return [self.answers[(p, a)] for p, a in zip(prompts, responses_a, strict=True)]


def test_swapped_verdicts_are_mapped_back_and_resolved():
    v = Verdict
    judge = ScriptedJudge(
        {
            ("consistent", "x"): v("A", "x wins"),
            ("consistent", "y"): v("B", "x wins again"),
            ("flip", "x"): v("A", "first"),
            ("flip", "y"): v("A", "first again"),
            ("half-tie", "x"): v("tie"),
            ("half-tie", "y"): v("A"),
            ("broken", "x"): v("A"),
            ("broken", "y"): v(None, raw="??"),
        }
    )
    prompts = ["consistent", "flip", "half-tie", "broken"]
    out = judge_pairs(judge, prompts, ["x"] * 4, ["y"] * 4)
    assert judge.calls == 1  # both orders in one batch
    assert [j.winner for j in out] == ["A", "tie", "B", None]
    assert [j.position_flip for j in out] == [False, True, False, False]
    assert [j.prob_a for j in out] == [1.0, 0.5, 0.25, None]
    assert [j.confidence for j in out] == [1.0, 0.5, 0.75, None]
    assert out[0].rationale == "x wins" and out[0].verdicts[1].winner == "A"  # the swapped verdict, mapped back
    summary = summarize(out)
    assert (summary.wins_a, summary.wins_b, summary.ties, summary.unparseable, summary.position_flips) == (
        1,
        1,
        1,
        1,
        1,
    )
    assert summary.consistency == pytest.approx(2 / 3)


def test_without_swap_the_first_order_decides():
    judge = ScriptedJudge({("flip", "x"): Verdict("A")})
    (only,) = judge_pairs(judge, ["flip"], ["x"], ["y"], swap=False)
    assert (only.winner, only.position_flip, judge.calls) == ("A", False, 1)


def test_order_invariant_judges_are_asked_once():
    judge = ScriptedJudge({("p", "x"): Verdict("B", prob_a=0.2)})
    judge.order_invariant = True
    (only,) = judge_pairs(judge, ["p"], ["x"], ["y"])
    assert (only.winner, only.prob_a, judge.calls) == ("B", 0.2, 1)
    assert only.confidence == pytest.approx(0.8)


def test_probabilities_average_over_both_orders():
    forward, swapped = Verdict("A", prob_a=0.9), Verdict("B", prob_a=0.4)  # swapped: B shown first, so it says A
    judgement = resolve(forward, mirror(swapped))
    assert judgement.winner == "A" and judgement.prob_a == pytest.approx((0.9 + 0.6) / 2)
    flipped = resolve(Verdict("A", prob_a=0.7), mirror(Verdict("A", prob_a=0.6)))
    assert flipped.winner == "tie" and flipped.position_flip and flipped.prob_a == pytest.approx(0.55)


def test_mean_probability_rule_keeps_the_content_signal_of_a_position_leaning_judge():
    # Always leaning to the first position, a little less when the worse response is first.
    forward, swapped = Verdict("A", prob_a=0.8), Verdict("A", prob_a=0.7)
    flip_tie = resolve(forward, mirror(swapped))
    mean = resolve(forward, mirror(swapped), rule="mean-probability")
    assert (flip_tie.winner, mean.winner) == ("tie", "A")
    assert mean.position_flip and mean.prob_a == pytest.approx(0.55) and mean.confidence == pytest.approx(0.55)
    # for verdicts without probabilities the two rules agree
    for pair in [("A", "B"), ("A", "A"), ("tie", "B"), ("tie", "tie")]:
        verdicts = [Verdict(pair[0]), mirror(Verdict(pair[1]))]
        assert resolve(*verdicts).winner == resolve(*verdicts, rule="mean-probability").winner


def test_unknown_rule_is_a_config_error():
    from directalign.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown rule 'vote'"):
        judge_pairs(ScriptedJudge({}), [], [], [], rule="vote")

"""Parsing judges' verdicts robustly, and the judging prompt."""

import pytest

from directalign.errors import DataError
from directalign.judges.base import check_pairs, judge_messages, normalize_winner, parse_verdict


@pytest.mark.parametrize(
    ("text", "winner", "rationale"),
    [
        ('{"winner": "A", "rationale": "A is right."}', "A", "A is right."),
        ('```json\n{"winner": "b", "rationale": "shorter"}\n```', "B", "shorter"),
        ('Let me think. {"Winner": "Response B", "Rationale": "B cites a source"} Done.', "B", "B cites a source"),
        ('{"winner": "tie", "rationale": "same"}', "tie", "same"),
        ('{"winner": "Draw"}', "tie", ""),
        ('{"winner": "[[A]]", "reason": "why not"}', "A", "why not"),
        ('{"note": {"x": 1}} then {"winner": "B", "rationale": "second object"}', "B", "second object"),
        # cut off by max_tokens before the closing brace: the field is still read
        ('{"winner": "A", "rationale": "Response A explains the', "A", "Response A explains the"),
        ("winner: B", "B", ""),
    ],
)
def test_verdicts_are_read_from_json_fences_prose_and_cut_off_replies(text, winner, rationale):
    verdict = parse_verdict(text)
    assert (verdict.winner, verdict.rationale, verdict.raw) == (winner, rationale, text)
    assert verdict.parsed


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Both responses have merit.",
        '{"rationale": "no winner field"}',
        '{"winner": "C"}',
        '{"winner": 1}',
        "The winner is clear to me.",
    ],
)
def test_answers_without_a_readable_winner_are_unparseable(text):
    verdict = parse_verdict(text)
    assert verdict.winner is None and not verdict.parsed and verdict.rationale == ""


def test_winner_spellings():
    assert [normalize_winner(v) for v in ("a", " B ", "Response A", "output (b)", "TIE", "neither", "AB", None)] == [
        "A",
        "B",
        "A",
        "B",
        "tie",
        "tie",
        None,
        None,
    ]


def test_judging_prompt_shows_both_responses_in_order():
    messages = judge_messages([{"role": "user", "content": "Hi?"}], "first", "second")
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert "User: Hi?" in user
    assert user.index("[Response A]\nfirst\n[End of Response A]") < user.index("[Response B]\nsecond\n")
    assert user.endswith('{"winner": "A" or "B" or "tie", "rationale": "one or two sentences"}.')


def test_pairs_must_be_parallel():
    with pytest.raises(DataError, match="2 prompts, 1 responses A and 2 responses B"):
        check_pairs(["p", "q"], ["a"], ["b", "c"])

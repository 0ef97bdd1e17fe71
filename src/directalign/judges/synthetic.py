"""Synthetic preference data: sample several responses per prompt, judge them, write the pairs.

For each prompt the generator samples at each temperature (default 0.3, 0.5, 0.7, 1.0; several samples each if
asked); identical and empty responses are dropped. Every pair of the remaining responses is judged (both
orders, so a verdict that follows the position is a tie), and the pairs written are:
- "all-pairs": every pair with a winner;
- "best-vs-worst": one pair, the response that won most comparisons (Copeland score: wins + ties / 2)
  against the one that won fewest, kept only when the judge's own verdict on that pair agrees.
Rows are TRL's conversational form, {prompt, chosen, rejected} message lists, which the trainer reads as it
is, plus judge columns: judge; judge_rationale, the judge's reason in the order the pair was first shown;
judge_chosen_position, "A" when the chosen response was shown first in that order, else "B"; judge_confidence,
the judge's averaged probability that chosen is better; and chosen_temperature / rejected_temperature.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from directalign.data.types import Message
from directalign.errors import ConfigError
from directalign.generation.base import GenerationConfig, Generator
from directalign.judges.base import PairwiseJudge, as_messages
from directalign.judges.ensemble import JudgeEnsemble
from directalign.judges.pairwise import PairJudgement

PAIRINGS = ("best-vs-worst", "all-pairs")
DEFAULT_TEMPERATURES = (0.3, 0.5, 0.7, 1.0)


@dataclass
class Candidate:
    text: str
    temperature: float
    finish_reason: str


@dataclass
class SynthStats:
    """What happened on the way from prompts to rows."""

    prompts: int = 0
    responses: int = 0
    duplicates_dropped: int = 0
    empty_dropped: int = 0
    pairs_judged: int = 0
    ties: int = 0
    position_flips: int = 0
    unparseable: int = 0
    prompts_without_pair: int = 0
    rows: int = 0
    judge_agreement: dict = field(default_factory=dict)


@dataclass
class SynthResult:
    rows: list[dict[str, Any]]
    stats: SynthStats


def build_preferences(
    prompts: Sequence[list[Message] | str],
    generator: Generator,
    judge: PairwiseJudge | JudgeEnsemble | Sequence[PairwiseJudge],
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    samples_per_temperature: int = 1,
    max_new_tokens: int = 256,
    pairing: str = "best-vs-worst",
    seed: int | None = 0,
    swap: bool = True,
    rule: str = "flip-tie",
) -> SynthResult:
    """Sample, judge and pair (module docstring); judge may be one judge, several (they vote) or an ensemble."""
    if pairing not in PAIRINGS:
        raise ConfigError(f"pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")
    if not temperatures:
        raise ConfigError("give at least one sampling temperature")
    ensemble = judge if isinstance(judge, JudgeEnsemble) else JudgeEnsemble(_as_list(judge), swap, rule)
    conversations = [as_messages(p) for p in prompts]
    stats = SynthStats(prompts=len(conversations))
    candidates = _sample(conversations, generator, temperatures, samples_per_temperature, max_new_tokens, seed)
    candidates = [_dedupe(c, stats) for c in candidates]
    stats.responses = sum(len(c) for c in candidates)

    index = [(p, i, j) for p, cands in enumerate(candidates) for i, j in combinations(range(len(cands)), 2)]
    judgements: list[PairJudgement] = []
    if index:
        result = ensemble.run(
            [conversations[p] for p, _, _ in index],
            [candidates[p][i].text for p, i, _ in index],
            [candidates[p][j].text for p, _, j in index],
        )
        judgements, stats.judge_agreement = result.judgements, result.agreement
    stats.pairs_judged = len(index)
    judged: dict[int, dict[tuple[int, int], PairJudgement]] = {p: {} for p in range(len(conversations))}
    for (p, i, j), judgement in zip(index, judgements, strict=True):
        judged[p][(i, j)] = judgement
        stats.ties += judgement.winner == "tie"
        stats.unparseable += judgement.winner is None
        stats.position_flips += judgement.position_flip

    rows = []
    for p, conversation in enumerate(conversations):
        pairs = _choose(judged[p], len(candidates[p]), pairing)
        stats.prompts_without_pair += not pairs
        rows += [_row(conversation, candidates[p], pair, ensemble.name) for pair in pairs]
    stats.rows = len(rows)
    return SynthResult(rows, stats)


def write_jsonl(rows: Sequence[dict], path: str | Path) -> Path:
    """Write rows as JSON lines, atomically (a temporary file beside the target, renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return path


def _as_list(judge: PairwiseJudge | Sequence[PairwiseJudge]) -> list[PairwiseJudge]:
    return list(judge) if isinstance(judge, list | tuple) else [judge]


def _sample(
    prompts: list[list[Message]],
    generator: Generator,
    temperatures: Sequence[float],
    samples: int,
    max_new_tokens: int,
    seed: int | None,
) -> list[list[Candidate]]:
    candidates: list[list[Candidate]] = [[] for _ in prompts]
    for k, temperature in enumerate(temperatures):
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            num_samples=samples,
            seed=None if seed is None else seed + k * len(prompts),  # a new stream per temperature
        )
        for p, completions in enumerate(generator.generate(prompts, config)):
            candidates[p] += [Candidate(c.text, temperature, c.finish_reason) for c in completions]
    return candidates


def _dedupe(candidates: list[Candidate], stats: SynthStats) -> list[Candidate]:
    kept, seen = [], set()
    for candidate in candidates:
        text = candidate.text.strip()
        if not text:
            stats.empty_dropped += 1
        elif text in seen:
            stats.duplicates_dropped += 1
        else:
            seen.add(text)
            kept.append(candidate)
    return kept


def _choose(judged: dict[tuple[int, int], PairJudgement], n: int, pairing: str) -> list[tuple[int, int, PairJudgement]]:
    """(chosen, rejected, judgement) triples; chosen is the index of the judge's winner."""
    decisive = [
        (i, j, judgement) if judgement.winner == "A" else (j, i, judgement)
        for (i, j), judgement in judged.items()
        if judgement.winner in ("A", "B")
    ]
    if pairing == "all-pairs" or not decisive:
        return decisive
    copeland = [0.0] * n
    for (i, j), judgement in judged.items():
        if judgement.winner is not None:
            won_by_i = {"A": 1.0, "B": 0.0, "tie": 0.5}[judgement.winner]
            copeland[i] += won_by_i
            copeland[j] += 1.0 - won_by_i
    best = max(range(n), key=lambda i: copeland[i])
    worst = min(range(n), key=lambda i: copeland[i])
    return [(c, r, judgement) for c, r, judgement in decisive if (c, r) == (best, worst)]


def _row(conversation: list[Message], candidates: list[Candidate], pair: tuple, judge_name: str) -> dict:
    chosen, rejected, judgement = pair
    return {
        "prompt": conversation,
        "chosen": [{"role": "assistant", "content": candidates[chosen].text}],
        "rejected": [{"role": "assistant", "content": candidates[rejected].text}],
        "judge": judge_name,
        "judge_rationale": judgement.rationale,
        "judge_chosen_position": judgement.winner,
        "judge_confidence": judgement.confidence,
        "chosen_temperature": candidates[chosen].temperature,
        "rejected_temperature": candidates[rejected].temperature,
    }

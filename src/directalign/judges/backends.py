"""Judge backends: an OpenAI-compatible endpoint, a local transformers model, reward models and functions.

- OpenAIJudge: any OpenAI-compatible server (vLLM serve, llama.cpp, Ollama, a hosted API) through the official
  `openai` client, greedy, answering with the JSON verdict that `parse_verdict` reads.
- LocalModelJudge: a causal LM in this process, no generation: after the judging prompt (rendered with its
  chat template) it compares the next-token log-probs of "A" and "B"; P(A) = softmax over the two.
- ScoreJudge: scores each response on its own (a reward model, a reward function) and picks the higher score,
  a tie within tie_margin; P(A) = sigmoid(s_A - s_B), the Bradley-Terry reading of two scores. It cannot
  favour a position, so pairwise.judge_pairs judges it once.

`judge_from_spec` builds one from a command-line string. An OpenAI judge's server and key come from its spec
(openai:MODEL@URL), the arguments, or the environment (OPENAI_BASE_URL, OPENAI_API_KEY; directalign.secrets);
its name, which reports and output files carry, never holds the URL's credentials.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch

from directalign.data.types import Message
from directalign.errors import ConfigError
from directalign.generation.base import GenerationConfig
from directalign.generation.rewards import RewardFunction, checked_scores
from directalign.judges.base import (
    DEFAULT_CRITERIA,
    JSON_ANSWER,
    LETTER_ANSWER,
    Verdict,
    as_messages,
    check_pairs,
    judge_messages,
    parse_verdict,
)
from directalign.secrets import redact

SPEC_KINDS = ("openai", "local", "reward-model", "reward")
# openai:MODEL@URL: the URL starts at the first "@http(s)://", so a model id may itself hold an "@" (name@version).
_MODEL_AT_URL = re.compile(r"^(?P<model>.+?)@(?P<url>https?://.+)$")


class OpenAIJudge:
    """A judge behind an OpenAI-compatible endpoint; one greedy chat completion per ordered pair."""

    order_invariant = False

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        max_tokens: int = 512,
        criteria: str = DEFAULT_CRITERIA,
        timeout: float = 120.0,
        max_retries: int = 2,
        concurrency: int = 8,
        name: str | None = None,
    ):
        from directalign.generation.openai_backend import OpenAIGenerator

        self.generator = OpenAIGenerator(model, base_url, api_key, timeout, max_retries, concurrency)
        self.config = GenerationConfig(max_new_tokens=max_tokens, temperature=0.0)
        self.criteria = criteria
        self.name = redact(name or f"openai:{model}")

    def judge(self, prompts: Sequence, responses_a: Sequence, responses_b: Sequence) -> list[Verdict]:
        pairs = check_pairs(prompts, responses_a, responses_b)
        requests = [
            judge_messages(p, a, b, JSON_ANSWER, self.criteria) for p, (a, b) in zip(prompts, pairs, strict=True)
        ]
        completions = self.generator.generate(requests, self.config)
        return [parse_verdict(samples[0].text) for samples in completions]


class LocalModelJudge:
    """A causal LM judging by the log-probs of its next token, "A" vs "B", after the judging prompt.

    Each verdict letter counts with its variants that are single tokens ("A" and " A"), their probabilities
    summed; P(A) = p(A) / (p(A) + p(B)). The winner is A when P(A) > 0.5 + tie_margin, B when
    P(A) < 0.5 - tie_margin, else a tie. Responses longer than max_response_tokens are cut (marked "[...]"),
    so that a long pair cannot push the question out of the context.
    """

    order_invariant = False

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        batch_size: int = 4,
        tie_margin: float = 0.0,
        max_response_tokens: int = 512,
        criteria: str = DEFAULT_CRITERIA,
        name: str = "local",
    ):
        if getattr(tokenizer, "chat_template", None) is None:
            raise ConfigError("the local judge renders its prompt with a chat template; this tokenizer has none")
        if not 0 <= tie_margin < 0.5:
            raise ConfigError(f"tie_margin must be in [0, 0.5), got {tie_margin}")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size, self.tie_margin = batch_size, tie_margin
        self.max_response_tokens, self.criteria, self.name = max_response_tokens, criteria, name
        self.letter_ids = {letter: _single_token_ids(tokenizer, letter) for letter in ("A", "B")}
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else tokenizer.eos_token_id

    def judge(self, prompts: Sequence, responses_a: Sequence, responses_b: Sequence) -> list[Verdict]:
        pairs = check_pairs(prompts, responses_a, responses_b)
        sequences = [self._encode(p, a, b) for p, (a, b) in zip(prompts, pairs, strict=True)]
        probs: list[float] = []
        for start in range(0, len(sequences), self.batch_size):
            probs.extend(self.prob_a(sequences[start : start + self.batch_size]))
        return [self._verdict(p) for p in probs]

    @torch.no_grad()
    def prob_a(self, sequences: list[list[int]]) -> list[float]:
        """P(A) for each tokenised judging prompt, from the logits at its last token."""
        from directalign.models.logprobs import causal_lm
        from directalign.reward_models.scoring import pad_right

        lm = causal_lm(self.model)
        device = next(lm.parameters()).device
        input_ids, mask = pad_right(sequences, self.pad_token_id)  # right padding: positions need no shifting
        hidden = lm.get_decoder()(input_ids=input_ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        last = hidden[torch.arange(len(sequences), device=device), mask.sum(1).to(device) - 1]
        logp = lm.get_output_embeddings()(last).float().log_softmax(-1)
        scores = {letter: logp[:, ids].logsumexp(-1) for letter, ids in self.letter_ids.items()}
        return torch.sigmoid(scores["A"] - scores["B"]).tolist()

    def _encode(self, prompt: list[Message] | str, response_a: str, response_b: str) -> list[int]:
        messages = judge_messages(prompt, self._cut(response_a), self._cut(response_b), LETTER_ANSWER, self.criteria)
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _cut(self, text: str) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_response_tokens:
            return text
        return self.tokenizer.decode(ids[: self.max_response_tokens]) + " [...]"

    def _verdict(self, p: float) -> Verdict:
        winner = "A" if p > 0.5 + self.tie_margin else "B" if p < 0.5 - self.tie_margin else "tie"
        return Verdict(winner, f"P(A) = {p:.3f}", p, raw=f"P(A) = {p:.6f}")


class ScoreJudge:
    """Picks the response with the higher score; |s_A - s_B| <= tie_margin is a tie.

    score_fn(prompts, responses) -> one score per response; `temperature` scales the score difference in
    P(A) = sigmoid((s_A - s_B) / temperature), for scores that are not on the log-odds scale.
    """

    order_invariant = True

    def __init__(
        self,
        score_fn: Callable[[list, list], list[float]],
        tie_margin: float = 0.0,
        temperature: float = 1.0,
        name: str = "scores",
    ):
        if tie_margin < 0 or temperature <= 0:
            raise ConfigError(f"need tie_margin >= 0 and temperature > 0, got {tie_margin} and {temperature}")
        self.score_fn, self.tie_margin, self.temperature, self.name = score_fn, tie_margin, temperature, name

    def judge(self, prompts: Sequence, responses_a: Sequence, responses_b: Sequence) -> list[Verdict]:
        check_pairs(prompts, responses_a, responses_b)
        scores = self.score_fn(list(prompts) * 2, list(responses_a) + list(responses_b))
        n = len(prompts)
        return [self._verdict(s_a, s_b) for s_a, s_b in zip(scores[:n], scores[n:], strict=True)]

    def _verdict(self, s_a: float, s_b: float) -> Verdict:
        diff = s_a - s_b
        if not math.isfinite(diff):
            return Verdict(None, raw=f"score A {s_a} vs B {s_b}")
        winner = "tie" if abs(diff) <= self.tie_margin else "A" if diff > 0 else "B"
        account = f"score A {s_a:.4g} vs B {s_b:.4g}"
        return Verdict(
            winner, account, 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, diff / self.temperature)))), account
        )


def reward_function_judge(
    fn: RewardFunction, tie_margin: float = 0.0, temperature: float = 1.0, name: str | None = None
) -> ScoreJudge:
    """A judge from a reward function f(prompts, completions, **columns) -> list[float]."""
    label = name or f"reward:{getattr(fn, '__name__', type(fn).__name__)}"

    def score(prompts: list, responses: list) -> list[float]:
        return checked_scores(label, fn([as_messages(p) for p in prompts], responses), len(responses))

    return ScoreJudge(score, tie_margin, temperature, label)


def reward_model_judge(reward_model: Any, tie_margin: float = 0.0, name: str = "reward-model") -> ScoreJudge:
    """A judge from anything with score(prompts, responses) -> list[float] (RewardModel, stacked models)."""
    return ScoreJudge(reward_model.score, tie_margin, 1.0, name)


def judge_from_spec(
    spec: str,
    base_url: str | None = None,
    api_key: str | None = None,
    tie_margin: float = 0.0,
    batch_size: int = 4,
    concurrency: int = 8,
) -> Any:
    """A judge from "KIND:ARGUMENT".

    openai:MODEL (served at base_url, else $OPENAI_BASE_URL, else http://localhost:8000/v1) or openai:MODEL@URL
    (served at URL, whatever base_url says), local:MODEL (embedded name, folder or hub id; log-prob judge),
    reward-model:DIR (a `directalign reward-model train` output), reward:MODULE:FUNCTION or
    reward:FILE.py:FUNCTION (a reward function; also reward:builtin and reward:builtin_content, the built-in
    tasks' verifier and its content half). concurrency: requests an openai: judge keeps in flight.
    """
    kind, _, argument = spec.partition(":")
    if kind not in SPEC_KINDS or not argument:
        raise ConfigError(redact(f"judge {spec!r}: expected KIND:ARGUMENT with KIND one of {', '.join(SPEC_KINDS)}"))
    if kind == "openai":
        at_url = _MODEL_AT_URL.match(argument)
        model, url = (at_url["model"], at_url["url"]) if at_url else (argument, base_url)
        return OpenAIJudge(model, url, api_key, concurrency=concurrency, name=spec)
    if kind == "local":
        from directalign.models.loading import load_model, load_tokenizer

        return LocalModelJudge(load_model(argument), load_tokenizer(argument), batch_size, tie_margin, name=spec)
    if kind == "reward-model":
        from directalign.reward_models.scoring import RewardModel

        return reward_model_judge(RewardModel.load(argument, batch_size=batch_size), tie_margin, name=spec)
    from directalign.generation.rewards import reward_from_spec

    return reward_function_judge(reward_from_spec(argument), tie_margin, name=spec)


def _single_token_ids(tokenizer: Any, letter: str) -> list[int]:
    ids = []
    for variant in (letter, " " + letter):
        encoded = tokenizer(variant, add_special_tokens=False)["input_ids"]
        if len(encoded) == 1:
            ids.append(encoded[0])
    if not ids:
        raise ConfigError(f"the tokenizer has no single token for the verdict {letter!r}")
    return sorted(set(ids))

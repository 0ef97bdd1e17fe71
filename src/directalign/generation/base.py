"""What every generation backend shares: the sampling settings, a completion, the interface and the factory.

A backend turns chat prompts into n sampled completions per prompt. Online and iterative methods (online DPO,
GRPO) call it once per step on the current policy, so the three backends answer the same call:
"transformers" (the policy in this process, any device), "vllm" (a vllm.LLM in this process, CUDA) and
"openai" (any OpenAI-compatible server: vLLM serve, llama.cpp server, Ollama).
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from directalign.data.types import Message
from directalign.errors import ConfigError, DataError

BACKENDS = ("transformers", "vllm", "openai")

FinishReason = Literal["stop", "length"]


@dataclass
class GenerationConfig:
    """Sampling settings shared by every backend.

    temperature 1.0 samples from the policy's own distribution, which on-policy methods assume; 0 means greedy
    decoding (all num_samples completions of a prompt are then the same). top_k 0 and top_p 1.0 switch those
    filters off. seed makes the samples reproducible: the same seed and inputs give the same completions (the
    transformers backend's shared-prefix engine and the vllm backend seed prompt i with derive_seed(seed, i),
    whatever the batch size; transformers' generate engine seeds the whole call).
    stop: strings that end a completion; the returned text stops before the first of them.
    """

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    num_samples: int = 1
    seed: int | None = None
    stop: list[str] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            problems.append(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.num_samples < 1:
            problems.append(f"num_samples must be >= 1, got {self.num_samples}")
        if self.stop is not None and not all(isinstance(s, str) and s for s in self.stop):
            problems.append(f"stop must be a list of non-empty strings, got {self.stop!r}")
        if problems:
            raise ConfigError("generation: " + "; ".join(problems))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Completion:
    """One sampled completion.

    text: the decoded completion, without the end-of-sequence token or the stop string that ended it.
    token_ids: the generated tokens, ending with the end-of-sequence token when the model produced one (so
      prompt_ids + token_ids is the sequence the model produced); None where the backend does not return them.
    finish_reason: "stop" (end-of-sequence token or stop string) or "length" (max_new_tokens reached).
    logprobs: the policy's log-prob of each of token_ids (log_softmax of its raw logits, before temperature and
      filters: what the training forward computes), or None where the backend does not return them. Not part of
      equality: two completions with the same tokens are the same completion, whatever rounding their log-probs
      carry.
    """

    text: str
    token_ids: list[int] | None
    finish_reason: FinishReason
    logprobs: list[float] | None = field(default=None, compare=False)


def repeat_greedy(completion: Completion, n: int) -> list[Completion]:
    """n independent copies of a greedy completion (every sample of a greedy decode is the same)."""
    ids, logprobs = completion.token_ids, completion.logprobs
    return [
        Completion(completion.text, None if ids is None else list(ids), completion.finish_reason,
                   None if logprobs is None else list(logprobs))
        for _ in range(n)
    ]  # fmt: skip


def derive_seed(seed: int, index: int) -> int:
    """The seed of prompt `index` in a call seeded with `seed`: a hash of both, so that nearby seeds and indices
    (seed + 1's prompt 0, seed's prompt 1) do not share a random stream. 62 bits, so that a backend may add the
    sample index (vLLM seeds sample j with seed + j) and stay within int64."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**62 - 1)


def check_prompt_seeds(prompt_seeds: list[int] | None, num_prompts: int) -> None:
    """Raise ConfigError unless prompt_seeds is None or one integer per prompt."""
    if prompt_seeds is None:
        return
    integers = all(isinstance(s, int) and not isinstance(s, bool) for s in prompt_seeds)
    if len(prompt_seeds) != num_prompts or not integers:
        raise ConfigError(f"prompt_seeds must be one integer per prompt ({num_prompts}), got {prompt_seeds!r:.120}")


@runtime_checkable
class Generator(Protocol):
    def generate(
        self,
        prompts: list[list[Message]],
        config: GenerationConfig | None = None,
        prompt_seeds: list[int] | None = None,
    ) -> list[list[Completion]]:
        """Return config.num_samples completions for each prompt, in prompt order.

        prompt_seeds: one seed per prompt; prompt i's samples then depend on the weights, prompt i, prompt_seeds[i]
        and the config alone, not on the other prompts of the call, so that processes sampling disjoint shares of
        the prompts get the completions one process would (up to floating-point differences between batch shapes).
        """
        ...


def make_generator(backend: str = "transformers", **kwargs) -> Generator:
    """Build a generator by backend name; kwargs go to its constructor.

    transformers: model, tokenizer, batch_size, token_budget, engine. vllm: model (name, path or vllm.LLM),
    **vllm.LLM kwargs.
    openai: model, base_url, api_key, timeout, max_retries, concurrency.
    """
    if backend == "transformers":
        from directalign.generation.transformers_backend import TransformersGenerator

        return TransformersGenerator(**kwargs)
    if backend == "vllm":
        from directalign.generation.vllm_backend import VLLMGenerator

        return VLLMGenerator(**kwargs)
    if backend == "openai":
        from directalign.generation.openai_backend import OpenAIGenerator

        return OpenAIGenerator(**kwargs)
    close = difflib.get_close_matches(str(backend), BACKENDS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"unknown generation backend {backend!r}{hint}; choose one of {', '.join(BACKENDS)}")


def check_prompts(prompts: list[list[Message]]) -> None:
    """Raise DataError unless prompts is a list of chat conversations (lists of role/content messages)."""
    for i, prompt in enumerate(prompts):
        ok = (
            isinstance(prompt, list)
            and prompt
            and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt)
        )
        if not ok:
            raise DataError(
                f"prompt {i} must be a non-empty list of {{'role', 'content'}} messages, got {prompt!r:.120}"
            )

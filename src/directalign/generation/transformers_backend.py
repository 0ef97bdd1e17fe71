"""Sample completions from a transformers (or PEFT-wrapped) model in this process, on the device it is on.

Prompts are rendered with the tokenizer's chat template (add_generation_prompt=True). Two engines answer:
- "shared-prefix" (directalign.generation.engine): each prompt is prefilled once and its num_samples samples
  continue from copies of its KV cache; finished rows leave the batch; batches are cut by `token_budget` (prompts
  x samples x (prompt + max_new_tokens) tokens) and at most `batch_size` prompts. It returns each token's log-prob.
- "generate": `model.generate` on `batch_size` left-padded prompts at a time with num_return_sequences, which
  recomputes each prompt's prefill for every sample; kept for comparison and for models whose generation_config
  asks for logits processors the shared-prefix engine does not apply (repetition_penalty and the like).
"auto" (the default) takes "shared-prefix" unless the model's generation_config sets such a processor.
Generation stops at any of the tokenizer's and the model's end-of-sequence ids (SmolLM2 ends a turn with
<|im_end|>) and at the config's stop strings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import transformers
from torch import nn
from transformers import PreTrainedTokenizerBase, StopStringCriteria

from directalign.data.types import Message
from directalign.errors import ConfigError
from directalign.generation import engine as shared_prefix
from directalign.generation.base import (
    Completion,
    GenerationConfig,
    check_prompt_seeds,
    check_prompts,
    derive_seed,
    repeat_greedy,
)
from directalign.progress import bar

ENGINES = ("auto", "shared-prefix", "generate")

# generation_config fields that make `generate` add a logits processor, with the values that add none.
_PROCESSOR_FIELDS = {
    "repetition_penalty": (None, 1.0), "encoder_repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,), "min_length": (None, 0),
    "min_new_tokens": (None, 0), "sequence_bias": (None,), "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,), "suppress_tokens": (None,), "begin_suppress_tokens": (None,),
    "exponential_decay_length_penalty": (None,), "guidance_scale": (None, 1.0), "min_p": (None,),
    "typical_p": (None, 1.0), "epsilon_cutoff": (None, 0.0), "eta_cutoff": (None, 0.0), "top_h": (None,),
    "watermarking_config": (None,),
}  # fmt: skip


class TransformersGenerator:
    """Generator backed by the model in this process; the model is put in eval mode while sampling, then restored.

    batch_size: most prompts per batch; token_budget: most cache tokens per batch (shared-prefix engine);
    engine: "auto", "shared-prefix" or "generate" (see the module docstring).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 8,
        token_budget: int = 16384,
        engine: str = "auto",
    ):
        if batch_size < 1:
            raise ConfigError(f"generation batch_size must be >= 1, got {batch_size}")
        if token_budget < 1:
            raise ConfigError(f"generation token_budget must be >= 1, got {token_budget}")
        if engine not in ENGINES:
            raise ConfigError(f"generation engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if tokenizer.chat_template is None:
            raise ConfigError("the tokenizer has no chat template; generation renders prompts as chat turns")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.token_budget = token_budget
        self.eos_token_ids = _eos_token_ids(model, tokenizer)
        if not self.eos_token_ids:
            raise ConfigError("neither the tokenizer nor the model's generation_config names an eos token")
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.eos_token_ids[0]
        extra = model_logits_processors(model)
        if engine == "shared-prefix" and extra:
            raise ConfigError(
                f"the model's generation_config sets {', '.join(extra)}, which the shared-prefix engine does not "
                "apply; use engine generate (or auto), or clear those fields"
            )
        self.engine = engine if engine != "auto" else ("generate" if extra else "shared-prefix")
        self._stop_criteria: dict[tuple[str, ...], StopStringCriteria] = {}

    def generate(
        self,
        prompts: list[list[Message]],
        config: GenerationConfig | None = None,
        prompt_seeds: list[int] | None = None,
    ) -> list[list[Completion]]:
        """config.num_samples completions per prompt; see base.Generator for prompt_seeds."""
        config = config or GenerationConfig()
        check_prompts(prompts)
        check_prompt_seeds(prompt_seeds, len(prompts))
        prompt_ids = [self._encode(prompt) for prompt in prompts]
        # Restore each module's own mode afterwards, not model.train(): a caller may keep parts in eval mode.
        modes = {module: module.training for module in self.model.modules()}
        self.model.eval()
        try:
            if self.engine == "shared-prefix":
                return self._generate_shared_prefix(prompt_ids, config, prompt_seeds)
            return self._generate_plain(prompt_ids, config, prompt_seeds)
        finally:
            for module, training in modes.items():
                module.training = training

    def _generate_shared_prefix(
        self, prompt_ids: list[list[int]], config: GenerationConfig, prompt_seeds: list[int] | None
    ) -> list[list[Completion]]:
        seeds = None if config.greedy else self._seeds(len(prompt_ids), config, prompt_seeds)
        stop = self._stop_criterion(config.stop) if config.stop else None
        groups = shared_prefix.sample(self.model, prompt_ids, config, seeds, self.eos_token_ids, self.pad_token_id,
                                      self.token_budget, self.batch_size, stop)  # fmt: skip
        completions = [[self._completion(s.token_ids, config, s.logprobs) for s in group] for group in groups]
        if config.greedy:
            completions = [repeat_greedy(group[0], config.num_samples) for group in completions]
        return completions

    def _seeds(self, n: int, config: GenerationConfig, prompt_seeds: list[int] | None) -> list[int]:
        if prompt_seeds is not None:
            return list(prompt_seeds)
        if config.seed is not None:
            return [derive_seed(config.seed, i) for i in range(n)]
        # Unseeded: draw from torch's global generator, so that torch.manual_seed makes a run reproducible.
        return torch.randint(0, 2**62, (n,)).tolist()

    def _stop_criterion(self, stops: list[str]) -> StopStringCriteria:
        key = tuple(stops)
        if key not in self._stop_criteria:  # building one scans the vocabulary: once per set of stop strings
            self._stop_criteria[key] = StopStringCriteria(self.tokenizer, list(stops))
        return self._stop_criteria[key]

    def _generate_plain(
        self, prompt_ids: list[list[int]], config: GenerationConfig, prompt_seeds: list[int] | None
    ) -> list[list[Completion]]:
        device = next(self.model.parameters()).device
        if prompt_seeds is not None and not config.greedy:
            # `generate` draws from the global generator for the whole batch: one prompt at a time is the only way
            # to give each prompt its own seed there.
            completions = []
            for ids, seed in bar(zip(prompt_ids, prompt_seeds, strict=True), total=len(prompt_ids), desc="sampling",
                                 unit="prompt"):
                with _seeded(seed, device):
                    completions.extend(self._generate_batch([ids], config, device))
            return completions
        with _seeded(config.seed, device):
            completions = []
            for start in bar(range(0, len(prompt_ids), self.batch_size), desc="sampling", unit="batch"):
                batch = prompt_ids[start : start + self.batch_size]
                completions.extend(self._generate_batch(batch, config, device))
        return completions

    def _encode(self, prompt: list[Message]) -> list[int]:
        text = self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        # The template already writes the special tokens (BOS, turn markers); adding them would double BOS.
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _generate_batch(
        self, batch: list[list[int]], config: GenerationConfig, device: torch.device
    ) -> list[list[Completion]]:
        input_ids, attention_mask = shared_prefix.left_pad(batch, self.pad_token_id, device)
        # Greedy decoding gives the same sequence every time: generate it once and repeat it.
        per_prompt = 1 if config.greedy else config.num_samples
        sequences = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=self._hf_config(config, per_prompt),
            tokenizer=self.tokenizer if config.stop else None,
        )
        new_tokens = sequences[:, input_ids.shape[1] :].tolist()
        completions = [self._completion(ids, config) for ids in new_tokens]
        grouped = [completions[i : i + per_prompt] for i in range(0, len(completions), per_prompt)]
        if config.greedy:
            grouped = [repeat_greedy(group[0], config.num_samples) for group in grouped]
        return grouped

    def _hf_config(self, config: GenerationConfig, per_prompt: int) -> transformers.GenerationConfig:
        # Set every sampling field explicitly: unset ones are filled from the model's generation_config and
        # transformers' defaults (top_k=50), which would silently change the distribution sampled from.
        sampling = {"temperature": config.temperature, "top_p": config.top_p, "top_k": config.top_k}
        return transformers.GenerationConfig(
            max_new_tokens=config.max_new_tokens,
            do_sample=not config.greedy,
            **({} if config.greedy else sampling),
            num_return_sequences=per_prompt,
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.pad_token_id,
            stop_strings=config.stop,
        )

    def _completion(self, ids: list[int], config: GenerationConfig, logprobs: list[float] | None = None) -> Completion:
        eos = set(self.eos_token_ids)
        end = next((i + 1 for i, token in enumerate(ids) if token in eos), len(ids))
        ids = ids[:end]
        ended_at_eos = bool(ids) and ids[-1] in eos
        text = self.tokenizer.decode(ids[:-1] if ended_at_eos else ids, skip_special_tokens=True)
        cut = _first_stop(text, config.stop or [])
        if cut is not None:
            ids = ids[: _shortest_prefix_containing(self.tokenizer, ids, config.stop or [])]
            return Completion(text[:cut], ids, "stop", _cut(logprobs, len(ids)))
        length_hit = not ended_at_eos and len(ids) >= config.max_new_tokens
        return Completion(text, ids, "length" if length_hit else "stop", _cut(logprobs, len(ids)))


def model_logits_processors(model: nn.Module) -> list[str]:
    """The model's generation_config fields that make `generate` add logits processors beyond temperature, top-k
    and top-p (it merges them into any config passed to it)."""
    generation_config = getattr(model, "generation_config", None)
    return [
        name for name, off in _PROCESSOR_FIELDS.items()
        if generation_config is not None and getattr(generation_config, name, None) not in off
    ]  # fmt: skip


def _cut(logprobs: list[float] | None, n: int) -> list[float] | None:
    return None if logprobs is None else logprobs[:n]


def _eos_token_ids(model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    ids = [tokenizer.eos_token_id]
    generation_config = getattr(model, "generation_config", None)
    model_eos = getattr(generation_config, "eos_token_id", None)
    ids += model_eos if isinstance(model_eos, list) else [model_eos]
    return list(dict.fromkeys(i for i in ids if i is not None))


def _first_stop(text: str, stops: list[str]) -> int | None:
    found = [text.find(stop) for stop in stops]
    found = [i for i in found if i >= 0]
    return min(found) if found else None


def _shortest_prefix_containing(tokenizer: PreTrainedTokenizerBase, ids: list[int], stops: list[str]) -> int:
    """Number of tokens up to the one that completed the first stop string (where generation halted)."""

    def contains_stop(k: int) -> bool:
        decoded = tokenizer.decode(ids[:k], skip_special_tokens=True)
        return _first_stop(decoded, stops) is not None

    low, high = 1, len(ids)  # decoding grows with the prefix, so "contains a stop string" is monotone
    while low < high:
        mid = (low + high) // 2
        if contains_stop(mid):
            high = mid
        else:
            low = mid + 1
    return high


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed the CPU and the model's device, restoring the caller's random state afterwards."""
    if seed is None:
        yield
        return
    accelerator = device.type != "cpu"
    devices = [device.index or 0] if accelerator else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if accelerator else "cuda"):
        torch.manual_seed(seed)
        yield

"""Sample completions from a transformers (or PEFT-wrapped) model in this process, on the device it is on.

Prompts are rendered with the tokenizer's chat template (add_generation_prompt=True), left-padded so every
row's next token sits in the last column, and sent through `model.generate` a few prompts at a time
(`batch_size`), each with num_samples return sequences, which bounds memory at batch_size * num_samples
sequences. Generation stops at any of the tokenizer's and the model's end-of-sequence ids (SmolLM2 ends a turn
with <|im_end|>) and at the config's stop strings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import transformers
from torch import nn
from transformers import PreTrainedTokenizerBase

from directalign.data.types import Message
from directalign.errors import ConfigError
from directalign.generation.base import Completion, GenerationConfig, check_prompts, repeat_greedy


class TransformersGenerator:
    """Generator backed by `model.generate`; the model is put in eval mode while sampling, then restored."""

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, batch_size: int = 8):
        if batch_size < 1:
            raise ConfigError(f"generation batch_size must be >= 1, got {batch_size}")
        if tokenizer.chat_template is None:
            raise ConfigError("the tokenizer has no chat template; generation renders prompts as chat turns")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.eos_token_ids = _eos_token_ids(model, tokenizer)
        if not self.eos_token_ids:
            raise ConfigError("neither the tokenizer nor the model's generation_config names an eos token")
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.eos_token_ids[0]

    def generate(self, prompts: list[list[Message]], config: GenerationConfig | None = None) -> list[list[Completion]]:
        config = config or GenerationConfig()
        check_prompts(prompts)
        prompt_ids = [self._encode(prompt) for prompt in prompts]
        device = next(self.model.parameters()).device
        # Restore each module's own mode afterwards, not model.train(): a caller may keep parts in eval mode.
        modes = {module: module.training for module in self.model.modules()}
        self.model.eval()
        try:
            with _seeded(config.seed, device):
                completions = []
                for start in range(0, len(prompt_ids), self.batch_size):
                    batch = prompt_ids[start : start + self.batch_size]
                    completions.extend(self._generate_batch(batch, config, device))
        finally:
            for module, training in modes.items():
                module.training = training
        return completions

    def _encode(self, prompt: list[Message]) -> list[int]:
        text = self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        # The template already writes the special tokens (BOS, turn markers); adding them would double BOS.
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _generate_batch(
        self, batch: list[list[int]], config: GenerationConfig, device: torch.device
    ) -> list[list[Completion]]:
        input_ids, attention_mask = _left_pad(batch, self.pad_token_id, device)
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

    def _completion(self, ids: list[int], config: GenerationConfig) -> Completion:
        eos = set(self.eos_token_ids)
        end = next((i + 1 for i, token in enumerate(ids) if token in eos), len(ids))
        ids = ids[:end]
        ended_at_eos = bool(ids) and ids[-1] in eos
        text = self.tokenizer.decode(ids[:-1] if ended_at_eos else ids, skip_special_tokens=True)
        cut = _first_stop(text, config.stop or [])
        if cut is not None:
            ids = ids[: _shortest_prefix_containing(self.tokenizer, ids, config.stop or [])]
            return Completion(text[:cut], ids, "stop")
        length_hit = not ended_at_eos and len(ids) >= config.max_new_tokens
        return Completion(text, ids, "length" if length_hit else "stop")


def _eos_token_ids(model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    ids = [tokenizer.eos_token_id]
    generation_config = getattr(model, "generation_config", None)
    model_eos = getattr(generation_config, "eos_token_id", None)
    ids += model_eos if isinstance(model_eos, list) else [model_eos]
    return list(dict.fromkeys(i for i in ids if i is not None))


def _left_pad(batch: list[list[int]], pad_token_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    return input_ids.to(device), attention_mask.to(device)


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

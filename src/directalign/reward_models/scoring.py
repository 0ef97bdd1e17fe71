"""Score responses with a reward model: one scalar per (prompt, response), the chat template applied.

A reward model here is a transformers *ForSequenceClassification with num_labels=1 (LlamaForSequenceClassification
for the embedded model): the score head reads the hidden state of the last token that is not padding, as
transformers pools it, so the model needs pad_token_id in its config. Training and scoring turn a (prompt,
response) into tokens the same way, `encode`, which is the policy trainer's tokenisation (data.tokenize): the
chat template over prompt + response, a long prompt keeping its end and a long response its start.

A trained model is saved as one folder (`reward_model/` in the output directory): the full model, or a LoRA
adapter whose base is named in directalign_reward_model.json, with the tokenizer beside it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from directalign.data.tokenize import tokenize_records
from directalign.data.types import Message, PreferenceRecord
from directalign.errors import ConfigError, DataError
from directalign.generation.rewards import RewardFunction, completion_text

MODEL_FOLDER = "reward_model"
METADATA_FILE = "directalign_reward_model.json"


def encode(
    tokenizer: Any,
    prompts: Sequence[list[Message] | str],
    responses: Sequence[list[Message] | str],
    max_length: int | None = 1024,
    max_prompt_length: int | None = 512,
    use_chat_template: bool = True,
) -> list[list[int]]:
    """Token ids of each prompt + response, exactly as the reward model is trained and scored on them."""
    if len(prompts) != len(responses):
        raise DataError(
            f"a reward model scores parallel lists; got {len(prompts)} prompts and {len(responses)} responses"
        )
    records = [
        PreferenceRecord(_messages(prompt), [[{"role": "assistant", "content": completion_text(response)}]], pairs=[])
        for prompt, response in zip(prompts, responses, strict=True)
    ]
    tokenized = tokenize_records(
        records,
        tokenizer,
        max_length=max_length,
        max_prompt_length=max_prompt_length,
        use_chat_template=use_chat_template,
    ).records
    return [t.prompt_ids + t.response_ids[0] for t in tokenized]


def pad_right(sequences: Sequence[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), right-padded to the longest sequence."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, : len(ids)] = 1
    return input_ids, mask


def sequence_rewards(model: torch.nn.Module, sequences: Sequence[list[int]], pad_token_id: int) -> torch.Tensor:
    """The reward of each token sequence, (len(sequences),) float32, in one forward pass."""
    device = next(model.parameters()).device
    input_ids, mask = pad_right(sequences, pad_token_id)
    return model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits.squeeze(-1).float()


class RewardModel:
    """score(prompts, responses) -> one float per response; as_reward_function() for online methods."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        max_length: int | None = 1024,
        max_prompt_length: int | None = 512,
        use_chat_template: bool = True,
        batch_size: int = 8,
    ):
        pad = model.config.pad_token_id
        if pad is None:
            raise ConfigError(
                "the reward model's config has no pad_token_id, so its score head cannot find the last token"
            )
        self.model, self.tokenizer, self.pad_token_id = model.eval(), tokenizer, pad
        self.max_length, self.max_prompt_length = max_length, max_prompt_length
        self.use_chat_template, self.batch_size = use_chat_template, batch_size

    @classmethod
    def load(cls, path: str | Path, batch_size: int = 8, device: str | torch.device | None = None) -> RewardModel:
        """Open a `reward-model train` output (its folder or its reward_model/ folder), or a plain
        *ForSequenceClassification folder with num_labels=1."""
        from directalign.engine.folder import verify_recorded

        folder = Path(path)
        if (folder / MODEL_FOLDER).is_dir():
            folder = folder / MODEL_FOLDER
        if not (folder / "config.json").is_file() and not (folder / METADATA_FILE).is_file():
            raise ConfigError(f"{path}: not a reward model folder (no {METADATA_FILE} or config.json)")
        verify_recorded(folder)
        try:
            return cls._load(folder, batch_size, device)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"reward model {str(path)!r} cannot be loaded: {first[:200]}") from err

    @classmethod
    def _load(cls, folder: Path, batch_size: int, device) -> RewardModel:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        path = folder
        meta = json.loads((folder / METADATA_FILE).read_text()) if (folder / METADATA_FILE).is_file() else {}
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if meta.get("adapter"):
            from peft import PeftModel

            from directalign.models.loading import resolve_model

            # The base checkpoint has no score head and transformers reports it as freshly initialised; the
            # adapter folder holds the trained head (modules_to_save), so the report would only mislead.
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
            try:
                base = AutoModelForSequenceClassification.from_pretrained(
                    resolve_model(meta["base_model"]), num_labels=1, pad_token_id=tokenizer.pad_token_id
                )
            finally:
                hf_logging.set_verbosity(verbosity)
            model = PeftModel.from_pretrained(base, str(folder))
        else:
            model = AutoModelForSequenceClassification.from_pretrained(str(folder))
        if getattr(model.config, "num_labels", 1) != 1:
            raise ConfigError(
                f"{path}: a reward model has one output (num_labels=1), this one has {model.config.num_labels}"
            )
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        if device is not None:
            model = model.to(device)
        return cls(
            model,
            tokenizer,
            meta.get("max_length", 1024),
            meta.get("max_prompt_length", 512),
            meta.get("use_chat_template", True),
            batch_size,
        )

    @torch.no_grad()
    def score(self, prompts: Sequence[list[Message] | str], responses: Sequence[list[Message] | str]) -> list[float]:
        sequences = encode(
            self.tokenizer, prompts, responses, self.max_length, self.max_prompt_length, self.use_chat_template
        )
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # similar lengths pad less
        scores = [0.0] * len(sequences)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            rewards = sequence_rewards(self.model, [sequences[i] for i in chunk], self.pad_token_id)
            for i, reward in zip(chunk, rewards.tolist(), strict=True):
                scores[i] = reward
        return scores

    def score_records(self, records: Sequence[PreferenceRecord]) -> tuple[list[float], list[float]]:
        """Scores of each record's chosen and rejected response (its first pair)."""
        prompts = [r.prompt for r in records]
        scores = self.score(prompts * 2, [r.chosen for r in records] + [r.rejected for r in records])
        return scores[: len(records)], scores[len(records) :]

    def as_reward_function(self, name: str = "reward_model") -> RewardFunction:
        """f(prompts, completions, **columns) -> list[float], usable wherever a reward function is."""

        def reward(prompts, completions, **columns) -> list[float]:
            return self.score(prompts, completions)

        reward.__name__ = reward.__qualname__ = name
        return reward


def _messages(prompt: list[Message] | str) -> list[Message]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)

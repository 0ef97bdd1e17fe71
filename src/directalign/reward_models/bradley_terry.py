"""The Bradley-Terry reward model: the policy's architecture with a one-output score head, and its loss.

The model is AutoModelForSequenceClassification with num_labels=1 from the policy's weights (the head starts
fresh), trained with LoRA (the head fully trained through modules_to_save) or in full. For a pair with rewards
r_c (chosen) and r_r (rejected) the loss is

    L = -log sigmoid(r_c - r_r - m)

the Bradley-Terry likelihood of the preference (Ouyang et al. 2022, "Training language models to follow
instructions with human feedback", eq. 1), with an optional margin m that asks the chosen reward to lead by
at least m (Touvron et al. 2023, "Llama 2", eq. 2). Metrics follow TRL's RewardTrainer: accuracy (share of
pairs with r_c > r_r) and margin (mean r_c - r_r). A record with k responses (ranked data) has each response
scored once and every one of its pairs trained on.

The forward pass takes a batch in any of the policy trainer's layouts (`layout`: data.batching): with shared and
packed (the default is shared) each prompt is computed once for all its responses, and the score head reads each
response's pooled position, the last token of prompt + response that is not padding, which is where transformers'
sequence classifier pools a right-padded row; so the rewards are those of the padded layout (and of scoring with
`RewardModel`), computed with each prompt once.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForSequenceClassification

from directalign.data.batching import SequenceBatch, build_batch
from directalign.data.types import TokenizedRecord
from directalign.errors import ConfigError
from directalign.models.loading import disable_dropout, load_kwargs, resolve_model
from directalign.models.logprobs import causal_lm, decoder_hidden
from directalign.models.policy import add_adapter, enable_checkpointing


def bradley_terry_loss(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, margin: float | torch.Tensor = 0.0
) -> torch.Tensor:
    """-log sigmoid(r_c - r_r - margin) per pair, shape (num_pairs,) (module docstring)."""
    return -F.logsigmoid(chosen_rewards - rejected_rewards - margin)


def load_backbone(cfg, tokenizer: Any) -> torch.nn.Module:
    """The policy's weights under a one-output score head, pad_token_id set, LoRA-wrapped when use_peft (the
    score head trained in full, and with lora_layers = N only the last N decoder layers adapted: nothing below
    them needs a gradient, so the backward pass stops there)."""
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            resolve_model(cfg.model), num_labels=1, pad_token_id=tokenizer.pad_token_id,
            attn_implementation=cfg.attn_implementation, **load_kwargs(cfg),
        )
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load {cfg.model!r} as a sequence classifier: {err}") from err
    if cfg.disable_dropout:
        disable_dropout(model)
    if cfg.load_in_4bit or cfg.load_in_8bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    enable_checkpointing(cfg, model)
    if not cfg.use_peft:
        return model
    return add_adapter(cfg, model, task_type="SEQ_CLS", modules_to_save=cfg.lora_modules_to_save)


class ResponseRewards(nn.Module):
    """Wraps a reward model so that forward(batch) returns the reward of every response of the batch
    (num_responses,) float32, from one decoder pass in the batch's layout (module docstring). An nn.Module whose
    forward does the whole computation, so accelerate prepares it like any model (DDP, FSDP2, DeepSpeed)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self._no_split_modules = getattr(causal_lm(model), "_no_split_modules", None)

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        score = causal_lm(self.model).score
        hidden = decoder_hidden(self.model, batch, next(score.parameters()).dtype)
        pooled = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch.pooled_pos)
        return score(pooled).squeeze(-1).float()


def record_rewards(model: nn.Module, records: list[TokenizedRecord], pad_token_id: int, layout: str = "shared",
                   max_tokens_per_row: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen rewards, rejected rewards) of every pair of the records, from one forward pass of `model` (a
    ResponseRewards, or its prepared wrapper) that scores each response once."""
    batch = build_batch(records, pad_token_id, layout, max_tokens_per_row).to(next(model.parameters()).device)
    rewards = model(batch)
    return rewards[batch.chosen_index], rewards[batch.rejected_index]


def pair_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    return {
        "accuracy": (chosen > rejected).float().mean().item(),
        "margin": float((chosen - rejected).mean()),
        "rewards/chosen": float(chosen.mean()),
        "rewards/rejected": float(rejected.mean()),
    }


@torch.no_grad()
def reward_scores(model, records: list[TokenizedRecord], pad_token_id: int, batch_size: int, layout: str = "shared",
                  max_tokens_per_row: int | None = None) -> tuple[list, list]:
    """Chosen and rejected rewards of every pair, as lists (a process's share of a held-out set, to be pooled);
    `model` as for record_rewards."""
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    try:
        for start in range(0, len(records), batch_size):
            c, r = record_rewards(model, records[start : start + batch_size], pad_token_id, layout,
                                  max_tokens_per_row)
            chosen += c.tolist()
            rejected += r.tolist()
    finally:
        model.train(was_training)
    return chosen, rejected


def reward_metrics(chosen: list[float], rejected: list[float], margin: float = 0.0) -> dict[str, float]:
    """Held-out accuracy (r_c > r_r; exact counts), mean margin and mean loss over pairs."""
    c, r = torch.tensor(chosen), torch.tensor(rejected)
    return {
        "accuracy": (c > r).sum().item() / len(c),
        "mean_margin": float((c - r).mean()),
        "loss": float(bradley_terry_loss(c, r, margin).mean()),
        "n_pairs": len(chosen),
    }

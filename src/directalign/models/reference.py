"""Reference policies: where pi_ref's log-probs come from.

- AdapterReference: the policy's own weights with its LoRA adapters disabled, so no second copy is in memory.
- FrozenReference: a separate frozen model (full fine-tuning, or a reference other than the base).
Reference-free losses (SimPO, ORPO, CPO) use none, and no reference is loaded or run for them.
"""

from __future__ import annotations

import copy

import torch

from directalign.data.batching import SequenceBatch
from directalign.models.logprobs import ResponseLogProbs, sequence_logps


class AdapterReference:
    def __init__(self, policy: ResponseLogProbs):
        self.policy = policy

    @torch.no_grad()
    def sequence_logps(self, batch: SequenceBatch) -> torch.Tensor:
        with self.policy.reference():
            return sequence_logps(self.policy(batch), batch)


class FrozenReference:
    def __init__(self, model: torch.nn.Module, chunk_size: int | None = 1024):
        model = model.eval()
        model.requires_grad_(False)
        self.scorer = ResponseLogProbs(model, chunk_size)

    @classmethod
    def copy_of(cls, model: torch.nn.Module, chunk_size: int | None = 1024) -> FrozenReference:
        return cls(copy.deepcopy(model), chunk_size)

    @torch.no_grad()
    def sequence_logps(self, batch: SequenceBatch) -> torch.Tensor:
        return sequence_logps(self.scorer(batch), batch)

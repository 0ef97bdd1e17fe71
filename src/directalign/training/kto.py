"""KTO in the training loop: class weights, the per-step KL reference point z0, and the metrics.

z0 follows the paper (Ethayarajh et al. 2024, section 4.1): within a micro-batch of B examples, completion i is
scored after prompt i+1 (mod B), by the policy and by the reference, without gradient, and
z0 = max(0, mean(log pi(y_i|x_{i+1}) - log pi_ref(y_i|x_{i+1}))). Each prompt thus appears twice, with its own
completion (the graded example) and with the previous one (a z0 pair), so both go in one record (`kl_groups`): one
reference pass and one policy pass, with gradient, score them with the prompt computed once, and the z0 pairs'
log-probs are detached. A batch of one pairs the completion with its own prompt, so z0 is then that example's
own log-ratio (clamped, detached): finite, if a poor estimate; use batches of 4 or more. With several processes
the micro-batch is the global one: each process scores the z0 pairs on its own prompts (with completion i-1 of
the global batch), and the log-ratio sums and counts are summed over processes, so z0 is what one process with
the whole batch computes. The loss itself is `directalign.losses.kto_loss`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from directalign.data.batching import SequenceBatch, build_batch
from directalign.data.types import TokenizedRecord
from directalign.data.unpaired import label_counts
from directalign.errors import ConfigError
from directalign.losses import kto_auto_weights, kto_kl_anchor, kto_loss
from directalign.models.logprobs import sequence_logps


@dataclass(frozen=True)
class KTOWeights:
    """lambda_D and lambda_U, and the class counts of the training set they were chosen for."""

    desirable: float
    undesirable: float
    n_desirable: int
    n_undesirable: int

    def describe(self) -> str:
        balance = self.desirable * self.n_desirable / max(self.undesirable * self.n_undesirable, 1e-12)
        return (
            f"KTO: {self.n_desirable} desirable / {self.n_undesirable} undesirable examples; "
            f"desirable_weight {self.desirable:.4g}, undesirable_weight {self.undesirable:.4g} "
            f"(lambda_D n_D / lambda_U n_U = {balance:.3g})"
        )


def kto_weights(cfg, records: Sequence[TokenizedRecord]) -> KTOWeights:
    """The configured weights, or with undesirable_weight "auto" the balancing ones from `kto_auto_weights`."""
    n_desirable, n_undesirable = label_counts(records)
    if cfg.undesirable_weight == "auto":
        try:
            desirable, undesirable = kto_auto_weights(n_desirable, n_undesirable)
        except ValueError as err:
            raise ConfigError(f"undesirable_weight auto: {err}") from err
    else:
        desirable, undesirable = float(cfg.desirable_weight), float(cfg.undesirable_weight)
    return KTOWeights(desirable, undesirable, n_desirable, n_undesirable)


def kl_groups(records: Sequence[TokenizedRecord], positions: Sequence[int] | None = None) -> list[TokenizedRecord]:
    """Prompt j with its own completion, then completion j-1 (mod B): the graded example and the z0 pair that
    shares its prompt, as one record so that the prompt is computed once for both. Only those of `positions`
    (this process's share of the batch) when given; over all the processes every z0 pair is then scored once."""
    n = len(records)
    return [
        TokenizedRecord(
            prompt_ids=records[j].prompt_ids,
            response_ids=[records[j].response_ids[0], records[(j - 1) % n].response_ids[0]],
            pairs=[],
            source=records[j].source,
        )
        for j in (range(n) if positions is None else positions)
    ]


class KTOObjective:
    """Per-example KTO loss of a micro-batch of unpaired records, and its metrics (TRL's names)."""

    def __init__(self, cfg, weights: KTOWeights, pad_token_id: int):
        self.beta = cfg.beta
        self.layout, self.max_tokens_per_row = cfg.layout, cfg.max_tokens_per_row
        self.weights = weights
        self.pad_token_id = pad_token_id

    def __call__(
        self,
        policy: Callable[[SequenceBatch], torch.Tensor],
        reference,
        records: Sequence[TokenizedRecord],
        batch: SequenceBatch,
        groups: Sequence[TokenizedRecord] | None = None,
        dist=None,
        counts: bool = True,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Per-example loss of `records` (`batch` gives their labels); `groups` are the records with their z0
        pairs, `kl_groups` of the global batch at this process's positions (default: `kl_groups(records)`), the
        pairs pooled over the processes of `dist`; counts=False (a padding batch) adds nothing to z0."""
        if batch.labels is None or batch.labels.numel() != len(records):
            raise ConfigError(
                "loss_type kto needs unpaired records (one completion and a label each); "
                f"{records[0].source} is not one"
            )
        grouped = build_batch(kl_groups(records) if groups is None else list(groups), self.pad_token_id,
                              self.layout, self.max_tokens_per_row).to(batch.input_ids.device)
        # Responses alternate, graded example then the z0 pair on its prompt. The pairs' policy log-probs are
        # detached: z0 carries no gradient (the backward still runs over their tokens, which costs less than a
        # second pass over their prompts whenever prompts are longer than completions).
        policy_logps, kl_policy = sequence_logps(policy(grouped), grouped).float().view(-1, 2).unbind(1)
        ref_logps, kl_ref = reference.sequence_logps(grouped).float().view(-1, 2).unbind(1)
        kl_policy = kl_policy.detach()
        ratios = kl_policy - kl_ref
        if dist is None:
            z0 = kto_kl_anchor(kl_policy, kl_ref)
        else:
            total, count = dist.sum([ratios.sum().item() if counts else 0.0, ratios.numel() if counts else 0])
            z0 = torch.tensor(max(total / max(count, 1), 0.0), device=ratios.device)
        w = self.weights
        loss = kto_loss(policy_logps, ref_logps, batch.labels, z0, self.beta, w.desirable, w.undesirable)
        return loss, self.metrics(loss, policy_logps, ref_logps, batch.labels, z0)

    def metrics(self, loss, policy_logps, ref_logps, labels, z0) -> dict[str, float]:
        rewards = self.beta * (policy_logps - ref_logps).detach()
        desirable, undesirable = labels.bool(), ~labels.bool()
        metrics = {
            "loss": loss.detach().mean().item(),
            "kl": z0.item(),
            "count/desirable": float(desirable.sum()),
            "count/undesirable": float(undesirable.sum()),
            "weights/desirable": self.weights.desirable,
            "weights/undesirable": self.weights.undesirable,
        }
        # A class missing from this micro-batch is left out (not logged as 0) so that averages stay honest.
        for name, mask in (("chosen", desirable), ("rejected", undesirable)):
            if mask.any():
                metrics[f"rewards/{name}"] = rewards[mask].mean().item()
                metrics[f"logps/{name}"] = policy_logps[mask].detach().mean().item()
        if desirable.any() and undesirable.any():
            metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
        return metrics

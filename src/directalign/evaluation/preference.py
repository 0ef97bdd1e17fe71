"""Held-out preference metrics: does the policy prefer the chosen answers?

- implicit_accuracy: fraction of pairs whose implicit reward beta * log(pi/pi_ref) is higher for chosen (ties
  count half, so an untrained policy, identical to its reference, scores 0.5);
- mean_margin: mean of that reward's chosen - rejected difference;
- logp_accuracy: fraction of pairs where the policy's own log p(chosen) > log p(rejected), the classic
  before/after check that needs no reference.

Unpaired (KTO) records have no pairs: there every (desirable, undesirable) combination of the held-out set counts
as a pair, so both accuracies are the ROC AUC of the score separating the two classes (0.5 for an untrained
policy), and mean_margin is the mean reward of the desirable examples minus that of the undesirable ones.
"""

from __future__ import annotations

import torch

from directalign.data.batching import build_batch
from directalign.data.types import TokenizedRecord
from directalign.models.logprobs import ResponseLogProbs, sequence_logps


@torch.no_grad()
def evaluate_preferences(
    policy: ResponseLogProbs,
    records: list[TokenizedRecord],
    *,
    pad_token_id: int,
    beta: float,
    reference=None,
    batch_size: int = 8,
    layout: str = "shared",
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    if records and all(not r.pairs and r.labels is not None for r in records):
        return _evaluate_unpaired(policy, records, pad_token_id, beta, reference, batch_size, layout, device)
    was_training = policy.training
    policy.eval()
    chosen, rejected, ref_chosen, ref_rejected, lengths = [], [], [], [], []
    for start in range(0, len(records), batch_size):
        batch = build_batch(records[start : start + batch_size], pad_token_id, layout).to(device)
        logps = sequence_logps(policy(batch), batch).float()
        chosen.append(logps[batch.chosen_index])
        rejected.append(logps[batch.rejected_index])
        lengths.append(batch.response_lengths.float())
        if reference is not None:
            ref = reference.sequence_logps(batch).float()
            ref_chosen.append(ref[batch.chosen_index])
            ref_rejected.append(ref[batch.rejected_index])
    policy.train(was_training)
    chosen, rejected = torch.cat(chosen), torch.cat(rejected)
    result = {
        "n_pairs": int(chosen.numel()),
        "logp_accuracy": (chosen > rejected).float().mean().item(),
        "logps_chosen": chosen.mean().item(),
        "logps_rejected": rejected.mean().item(),
        "mean_response_length": torch.cat(lengths).mean().item(),
    }
    if reference is not None:
        margins = beta * ((chosen - torch.cat(ref_chosen)) - (rejected - torch.cat(ref_rejected)))
        # A tie (margin exactly 0, as before any training) counts half: the model has no preference yet.
        result["implicit_accuracy"] = ((margins > 0).float() + 0.5 * (margins == 0).float()).mean().item()
        result["mean_margin"] = margins.mean().item()
    return result


def _pair_accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Over every (desirable, undesirable) combination, the fraction ordered right (ties half): the ROC AUC."""
    diff = scores[labels][:, None] - scores[~labels][None, :]
    return ((diff > 0).float() + 0.5 * (diff == 0).float()).mean().item()


def _evaluate_unpaired(policy, records, pad_token_id, beta, reference, batch_size, layout, device) -> dict:
    was_training = policy.training
    policy.eval()
    logps, ref_logps, labels, lengths = [], [], [], []
    for start in range(0, len(records), batch_size):
        batch = build_batch(records[start : start + batch_size], pad_token_id, layout).to(device)
        logps.append(sequence_logps(policy(batch), batch).float())
        labels.append(batch.labels)
        lengths.append(batch.response_lengths.float())
        if reference is not None:
            ref_logps.append(reference.sequence_logps(batch).float())
    policy.train(was_training)
    logps, labels = torch.cat(logps), torch.cat(labels).bool()
    result = {
        "n_desirable": int(labels.sum()),
        "n_undesirable": int((~labels).sum()),
        "mean_response_length": torch.cat(lengths).mean().item(),
    }
    rewards = beta * (logps - torch.cat(ref_logps)) if reference is not None else None
    for name, mask in (("chosen", labels), ("rejected", ~labels)):
        if mask.any():
            result[f"logps_{name}"] = logps[mask].mean().item()
            if rewards is not None:
                result[f"rewards_{name}"] = rewards[mask].mean().item()
    both = bool(labels.any()) and bool((~labels).any())
    if both:
        result["logp_accuracy"] = _pair_accuracy(logps, labels)
    if rewards is not None and both:
        result["implicit_accuracy"] = _pair_accuracy(rewards, labels)
        result["mean_margin"] = result["rewards_chosen"] - result["rewards_rejected"]
    return result

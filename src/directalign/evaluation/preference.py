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
from directalign.progress import bar


@torch.no_grad()
def preference_scores(
    policy: ResponseLogProbs,
    records: list[TokenizedRecord],
    *,
    pad_token_id: int,
    reference=None,
    batch_size: int = 8,
    layout: str = "shared",
    device: torch.device | str = "cpu",
) -> dict[str, list]:
    """Per-pair (or, for unpaired records, per-example) log-probs under the policy and the reference, as plain
    lists, so that processes scoring shares of a held-out set can pool them before `preference_metrics`."""
    unpaired = bool(records) and all(not r.pairs and r.labels is not None for r in records)
    was_training = policy.training
    policy.eval()
    scores: dict[str, list] = {"chosen": [], "rejected": [], "ref_chosen": [], "ref_rejected": [], "lengths": [],
                               "logps": [], "ref_logps": [], "labels": []}
    try:
        for start in bar(range(0, len(records), batch_size), desc="held-out eval", unit="batch"):
            batch = build_batch(records[start : start + batch_size], pad_token_id, layout).to(device)
            logps = sequence_logps(policy(batch), batch).float()
            ref = reference.sequence_logps(batch).float() if reference is not None else None
            scores["lengths"] += batch.response_lengths.float().tolist()
            if unpaired:
                scores["logps"] += logps.tolist()
                scores["labels"] += batch.labels.tolist()
                scores["ref_logps"] += ref.tolist() if ref is not None else []
                continue
            scores["chosen"] += logps[batch.chosen_index].tolist()
            scores["rejected"] += logps[batch.rejected_index].tolist()
            if ref is not None:
                scores["ref_chosen"] += ref[batch.chosen_index].tolist()
                scores["ref_rejected"] += ref[batch.rejected_index].tolist()
    finally:
        policy.train(was_training)
    scores["unpaired"] = [unpaired]
    return scores


def pool_scores(parts: list[dict[str, list]]) -> dict[str, list]:
    """The scores of several shares of one held-out set, as if scored at once."""
    pooled = {key: [v for part in parts for v in part[key]] for key in parts[0] if key != "unpaired"}
    pooled["unpaired"] = [any(part["unpaired"][0] for part in parts)]
    return pooled


def preference_metrics(scores: dict[str, list], beta: float) -> dict[str, float]:
    """The held-out metrics of the module docstring from `preference_scores`."""
    if scores["unpaired"][0]:
        return _unpaired_metrics(scores, beta)
    chosen, rejected = torch.tensor(scores["chosen"]), torch.tensor(scores["rejected"])
    result = {
        "n_pairs": int(chosen.numel()),
        "logp_accuracy": (chosen > rejected).float().mean().item(),
        "logps_chosen": chosen.mean().item(),
        "logps_rejected": rejected.mean().item(),
        "mean_response_length": torch.tensor(scores["lengths"]).mean().item(),
    }
    if scores["ref_chosen"]:
        ref_chosen, ref_rejected = torch.tensor(scores["ref_chosen"]), torch.tensor(scores["ref_rejected"])
        margins = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
        # A tie (margin exactly 0, as before any training) counts half: the model has no preference yet.
        result["implicit_accuracy"] = ((margins > 0).float() + 0.5 * (margins == 0).float()).mean().item()
        result["mean_margin"] = margins.mean().item()
    return result


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
    scores = preference_scores(
        policy, records, pad_token_id=pad_token_id, reference=reference, batch_size=batch_size, layout=layout,
        device=device,
    )
    return preference_metrics(scores, beta)


def _pair_accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Over every (desirable, undesirable) combination, the fraction ordered right (ties half): the ROC AUC."""
    diff = scores[labels][:, None] - scores[~labels][None, :]
    return ((diff > 0).float() + 0.5 * (diff == 0).float()).mean().item()


def _unpaired_metrics(scores: dict[str, list], beta: float) -> dict[str, float]:
    logps, labels = torch.tensor(scores["logps"]), torch.tensor(scores["labels"], dtype=torch.bool)
    result = {
        "n_desirable": int(labels.sum()),
        "n_undesirable": int((~labels).sum()),
        "mean_response_length": torch.tensor(scores["lengths"]).mean().item(),
    }
    rewards = beta * (logps - torch.tensor(scores["ref_logps"])) if scores["ref_logps"] else None
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

"""KL(pi || pi_ref) per sequence, estimated on completions the policy samples from held-out prompts.

For y ~ pi(.|x), E[log pi(y|x) - log pi_ref(y|x)] = KL(pi(.|x) || pi_ref(.|x)), so the mean over samples of the
summed token log-ratio is an unbiased estimate (a single sample can be negative; the mean is not, in
expectation). It holds only for samples of pi itself: temperature 1, no top-k or top-p. A completion cut at
max_new_tokens is a sample of the distribution over max_new_tokens-prefixes, whose KL is a lower bound of the
full one. The policy and the reference score each completion in one forward pass (the shared layout: the prompt
once, every sample after it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from directalign.data.batching import build_batch
from directalign.data.types import Message, TokenizedRecord
from directalign.generation.base import Completion, GenerationConfig, make_generator
from directalign.generation.seeded import generate_seeded
from directalign.models.logprobs import ResponseLogProbs, sequence_logps


@dataclass
class SampledKL:
    kl: float  # mean over samples of sum_t log pi - log pi_ref, nats per sequence
    kl_std_error: float
    log_ratios: list[list[float]]  # per prompt, per sample
    completions: list[list[Completion]]

    @property
    def mean_length(self) -> float:
        lengths = [len(c.token_ids or []) for group in self.completions for c in group]
        return sum(lengths) / max(len(lengths), 1)


def sampling_config(num_samples: int, max_new_tokens: int, seed: int | None) -> GenerationConfig:
    """Plain sampling from the policy, the only distribution the estimate is unbiased for."""
    return GenerationConfig(
        max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0, top_k=0, num_samples=num_samples, seed=seed
    )


def prompt_ids(tokenizer, prompt: list[Message]) -> list[int]:
    """The ids the transformers generator conditions on: the chat template with the generation prompt."""
    text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def completion_log_ratios(
    policy: ResponseLogProbs,
    reference,
    prompts_ids: list[list[int]],
    completions: list[list[Completion]],
    *,
    pad_token_id: int,
    batch_size: int = 8,
) -> list[list[float]]:
    """log pi(y|x) - log pi_ref(y|x) of every completion, per prompt (an empty completion scores 0)."""
    device = next(policy.parameters()).device
    ratios = [[0.0] * len(group) for group in completions]
    was_training = policy.training
    policy.eval()
    try:
        for start in range(0, len(prompts_ids), batch_size):
            records, slots = [], []
            for i in range(start, min(start + batch_size, len(prompts_ids))):
                kept = [k for k, c in enumerate(completions[i]) if c.token_ids]
                if kept:
                    responses = [completions[i][k].token_ids for k in kept]
                    records.append(TokenizedRecord(prompts_ids[i], responses, pairs=[]))
                    slots += [(i, k) for k in kept]
            if not records:
                continue
            batch = build_batch(records, pad_token_id, "shared").to(device)
            diff = sequence_logps(policy(batch), batch).float() - reference.sequence_logps(batch).float()
            for (i, k), value in zip(slots, diff.tolist(), strict=True):
                ratios[i][k] = value
    finally:
        policy.train(was_training)
    return ratios


def sampled_kl(
    policy: ResponseLogProbs,
    reference,
    tokenizer,
    prompts: list[list[Message]],
    *,
    num_samples: int = 2,
    max_new_tokens: int = 64,
    seed: int | None = 0,
    batch_size: int = 8,
    prompt_seeds: list[int] | None = None,
) -> SampledKL:
    """Sample num_samples completions per prompt from the policy and average their log-ratio to the reference.
    With prompt_seeds, prompt i is sampled with its own seed (directalign.generation.seeded), whatever the batch."""
    generator = make_generator("transformers", model=policy.model, tokenizer=tokenizer, batch_size=batch_size)
    config = sampling_config(num_samples, max_new_tokens, seed)
    if prompt_seeds is None:
        completions = generator.generate(prompts, config)
    else:
        completions = generate_seeded(generator, prompts, config, prompt_seeds)
    ratios = completion_log_ratios(
        policy,
        reference,
        [prompt_ids(tokenizer, p) for p in prompts],
        completions,
        pad_token_id=generator.pad_token_id,
        batch_size=batch_size,
    )
    flat = [r for group in ratios for r in group]
    mean = sum(flat) / len(flat)
    variance = sum((r - mean) ** 2 for r in flat) / max(len(flat) - 1, 1)
    return SampledKL(mean, math.sqrt(variance / len(flat)), ratios, completions)

"""Shared-prefix sampling: each prompt is prefilled once and its k samples continue from copies of its KV cache.

`model.generate(num_return_sequences=k)` repeats every prompt k times before the first forward pass, so the
prompt is computed k times; here it is computed once, and the cache (transformers' DynamicCache) is repeated k
times along the batch after the prefill (DynamicCache.batch_repeat_interleave). vLLM and SGLang go further and
point the k sequences at the same cache blocks (paged attention, a radix tree of prefixes); in eager PyTorch a
copy is what a cache can do, so the prefill compute is saved, not the cache memory.

Each row stops on its own: a row that samples an end-of-sequence token or completes a stop string leaves the
batch (DynamicCache.batch_select_indices), so finished rows cost no further compute. Batches are formed by a token
budget: prompts, longest first, are grouped while n_prompts * k * (longest prompt + max_new_tokens), the cache the
batch can fill, stays within the budget.

Sampling follows transformers' sampling path exactly: logits in fp32; TemperatureLogitsWarper, TopKLogitsWarper,
TopPLogitsWarper (transformers' own classes, in the order `generate` applies them); softmax; one categorical draw.
The draw is by inverse CDF from one uniform per sample, and the uniforms of prompt i come from its own
torch.Generator seeded with seeds[i], k of them per step: so prompt i's samples are a function of the weights,
its tokens, its seed and the config alone, not of the other prompts in its batch nor of how batches are cut (up to
floating-point differences between batch shapes). Greedy decoding takes the argmax of the raw logits, as
`generate` does.

Each sample also carries the log-prob of each of its tokens under the model (log_softmax of the raw fp32 logits,
before temperature and filters), the quantity the training forward computes.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn
from transformers import LogitsProcessorList, StoppingCriteria
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from directalign.generation.base import GenerationConfig
from directalign.models.logprobs import causal_lm
from directalign.progress import bar


@dataclass
class Sample:
    """One sampled continuation: its tokens (ending with the eos token when one was sampled; cut after the token
    that completed a stop string) and the model's log-prob of each."""

    token_ids: list[int]
    logprobs: list[float]


def plan_batches(
    prompt_lengths: list[int], samples_per_prompt: int, max_new_tokens: int, token_budget: int, max_prompts: int
) -> list[list[int]]:
    """Group prompt indices, longest first, so that each batch's cache fits the budget.

    A batch of n prompts whose longest has L tokens holds n * samples_per_prompt rows of L + max_new_tokens
    positions at most (left padding included); a prompt that alone exceeds the budget forms its own batch.
    """
    order = sorted(range(len(prompt_lengths)), key=lambda i: -prompt_lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches:
            batch = batches[-1]
            width = prompt_lengths[batch[0]] + max_new_tokens  # the batch's first prompt is its longest
            if len(batch) < max_prompts and (len(batch) + 1) * samples_per_prompt * width <= token_budget:
                batch.append(i)
                continue
        batches.append([i])
    return batches


def sample(
    model: nn.Module,
    prompt_ids: list[list[int]],
    config: GenerationConfig,
    seeds: list[int] | None,
    eos_token_ids: list[int],
    pad_token_id: int,
    token_budget: int,
    max_prompts: int,
    stop: StoppingCriteria | None = None,
) -> list[list[Sample]]:
    """config.num_samples samples per prompt (1 when greedy), in prompt order; seeds: one per prompt (unused
    when greedy). The model is used as it is (the caller puts it in eval mode)."""
    per_prompt = 1 if config.greedy else config.num_samples
    if not config.greedy and (seeds is None or len(seeds) != len(prompt_ids)):
        raise ValueError("sampling needs one seed per prompt")
    out: list[list[Sample] | None] = [None] * len(prompt_ids)
    lengths = [len(ids) for ids in prompt_ids]
    with bar(total=len(prompt_ids), desc="sampling", unit="prompt") as shown:
        for batch in plan_batches(lengths, per_prompt, config.max_new_tokens, token_budget, max_prompts):
            decoder = _BatchDecoder(model, [prompt_ids[i] for i in batch], per_prompt, config, eos_token_ids,
                                    pad_token_id)
            batch_seeds = None if config.greedy else [seeds[i] for i in batch]
            for i, samples in zip(batch, decoder.run(batch_seeds, stop), strict=True):
                out[i] = samples
            shown.update(len(batch))
    return out  # type: ignore[return-value]


def warpers(config: GenerationConfig) -> LogitsProcessorList:
    """transformers' sampling warpers for the config, built as `generate` builds them (same classes, same order,
    min_tokens_to_keep=1)."""
    processors = LogitsProcessorList()
    if config.temperature != 1.0:
        processors.append(TemperatureLogitsWarper(config.temperature))
    if config.top_k != 0:
        processors.append(TopKLogitsWarper(top_k=config.top_k, min_tokens_to_keep=1))
    if config.top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p=config.top_p, min_tokens_to_keep=1))
    return processors


def inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One categorical draw per row of probs (rows, V) from uniforms (rows,) in [0, 1).

    Token j is drawn when cdf[j-1] <= u * total < cdf[j], an interval of width probs[j]: a token of probability 0
    has an empty interval and is never drawn. The cumulative sum is in fp64 so that its rounding (about 1e-16 per
    add) is far below any probability that matters.
    """
    cdf = probs.double().cumsum(-1)
    targets = (uniforms.to(cdf) * cdf[:, -1]).unsqueeze(1)
    return torch.searchsorted(cdf, targets, right=True).squeeze(1).clamp_(max=probs.shape[-1] - 1)


class _BatchDecoder:
    """Decodes one batch: prefill once, repeat the cache per sample, then one token per step for live rows."""

    def __init__(self, model, prompts, per_prompt, config, eos_token_ids, pad_token_id):
        self.model, self.config, self.per_prompt = model, config, per_prompt
        self.device = next(model.parameters()).device
        self.eos = torch.tensor(eos_token_ids, device=self.device)
        self.prompts, self.pad_token_id = prompts, pad_token_id
        self.warpers = None if config.greedy else warpers(config)
        parameters = inspect.signature(causal_lm(model).forward).parameters
        self.keep_one = "logits_to_keep" in parameters
        # transformers 5.24 renamed past_key_values to cache (the old name is deprecated); 5.0-5.23 know the old one.
        self.cache_key = "cache" if "cache" in parameters else "past_key_values"

    @torch.no_grad()
    def run(self, seeds: list[int] | None, stop: StoppingCriteria | None) -> list[list[Sample]]:
        k, n = self.per_prompt, len(self.prompts)
        input_ids, attention_mask = left_pad(self.prompts, self.pad_token_id, self.device)
        # Positions count real tokens only (as `generate` computes them), so left padding does not shift them.
        positions = (attention_mask.cumsum(-1) - 1).clamp_(min=0)
        out = self._forward(input_ids, attention_mask, positions, cache=None)
        cache, logits = out[self.cache_key], out.logits[:, -1].float()
        cache.batch_repeat_interleave(k)
        logits, attention_mask = logits.repeat_interleave(k, 0), attention_mask.repeat_interleave(k, 0)
        sequences = input_ids.repeat_interleave(k, 0)  # kept for stop strings, which read the text so far
        next_position = positions[:, -1].repeat_interleave(k) + 1
        rows = torch.arange(n * k)  # live row -> flat sample index (prompt * k + sample)
        streams = None if seeds is None else [torch.Generator().manual_seed(int(s)) for s in seeds]
        tokens: list[list[int]] = [[] for _ in range(n * k)]
        logps: list[list[float]] = [[] for _ in range(n * k)]
        for step in range(self.config.max_new_tokens):
            token = self._choose(logits, rows, streams)
            chosen_logp = torch.log_softmax(logits, -1).gather(1, token[:, None]).squeeze(1)
            for row, t, lp in zip(rows.tolist(), token.tolist(), chosen_logp.tolist(), strict=True):
                tokens[row].append(t)
                logps[row].append(lp)
            done = torch.isin(token, self.eos)
            if stop is not None:
                sequences = torch.cat([sequences, token[:, None]], dim=1)
                done |= stop(sequences, None).to(done.device)
            if step == self.config.max_new_tokens - 1 or bool(done.all()):
                break
            if bool(done.any()):
                # Finished rows leave the batch, so they cost nothing from here on.
                live = (~done).nonzero().squeeze(1)
                cache.batch_select_indices(live)
                rows, token, attention_mask = rows[live.cpu()], token[live], attention_mask[live]
                next_position, sequences = next_position[live], sequences[live]
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(rows), 1)], dim=1)
            out = self._forward(token[:, None], attention_mask, next_position[:, None], cache)
            logits = out.logits[:, -1].float()
            next_position = next_position + 1
        flat = [Sample(tokens[r], logps[r]) for r in range(n * k)]
        return [flat[i * k : (i + 1) * k] for i in range(n)]

    def _forward(self, input_ids, attention_mask, position_ids, cache):
        extra = {"logits_to_keep": 1} if self.keep_one else {}
        extra[self.cache_key] = cache
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=True, **extra)  # fmt: skip

    def _choose(self, logits: torch.Tensor, rows: torch.Tensor, streams) -> torch.Tensor:
        if streams is None:
            return logits.argmax(-1)
        k = self.per_prompt
        prompt_of_row, sample_of_row = rows // k, rows % k
        # k uniforms per live prompt per step, whichever of its samples are still live, so that a sample's draws
        # depend on its prompt's seed and the step alone.
        live_prompts = prompt_of_row.unique().tolist()
        draws = torch.zeros(len(streams), k, dtype=torch.float64)
        for p in live_prompts:
            draws[p] = torch.rand(k, generator=streams[p], dtype=torch.float64)
        uniforms = draws[prompt_of_row, sample_of_row].to(logits.device)
        scores = self.warpers(None, logits)
        return inverse_cdf(torch.softmax(scores, dim=-1), uniforms)


def left_pad(batch: list[list[int]], pad_token_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, longest) token ids and attention mask, each row's tokens at the right end."""
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    return input_ids.to(device), attention_mask.to(device)

"""precompute_ref_log_probs: the reference's log-probs of every training and held-out response, computed once
(each process scoring its share of the records, pooled), cached on disk by the main process and read by all.

An entry is keyed by everything the log-probs depend on (the reference weights' fingerprint, the token ids,
the lengths, the precision) and carries its checksum: a stale key is never read, and a damaged entry is
reported and recomputed.
"""

from __future__ import annotations

import torch

from directalign.models.logprobs import sequence_logps
from directalign.models.reference import (
    compute_reference_logps,
    frozen_copy,
    live_reference,
    read_cached_logps,
    reference_cache_key,
    weights_fingerprint,
    with_reference_logps,
    write_cached_logps,
)


def precompute_reference(run, cfg, policy, data, tokenizer):
    """Attach reference log-probs to data.train and data.eval; returns the live reference kept for sequences the
    cache cannot cover (held-out KL samples), or None (full fine-tuning without KL samples keeps no copy: the
    policy before its first step scores the records)."""
    if cfg.use_peft:
        live = live_reference(cfg, policy)
    else:
        live = frozen_copy(policy.model, cfg.bf16) if cfg.kl_prompts > 0 else None
    weights = weights_fingerprint(policy.model)
    was_training = policy.training
    policy.eval()

    @torch.no_grad()
    def score(batch):
        with run.accelerator.autocast():
            return live.sequence_logps(batch) if live is not None else sequence_logps(policy(batch), batch)

    for split in ("train", "eval"):
        records = getattr(data, split)
        if not records:
            continue
        key = reference_cache_key(
            weights,
            records,
            model=cfg.model,
            tokenizer=[tokenizer.name_or_path, len(tokenizer)],
            max_length=cfg.max_length,
            max_prompt_length=cfg.prompt_length_limit,
            bf16=cfg.bf16,
        )
        counts = [len(r.response_ids) for r in records]
        found, problem = read_cached_logps(key, counts) if run.dist.is_main else (None, "")
        hit = run.dist.broadcast(found is not None)
        if problem:
            run.log(f"reference cache entry {key} is damaged ({problem}); recomputing it")
        if hit:
            logps = found if run.dist.is_main else read_cached_logps(key, counts)[0]
            state = "read from the cache"
        else:
            local = compute_reference_logps(
                score,
                run.dist.share(records),
                pad_token_id=tokenizer.pad_token_id,
                batch_size=cfg.per_device_eval_batch_size,
                layout=cfg.layout,
                max_tokens_per_row=cfg.max_tokens_per_row,
                device=run.device,
                show_progress=run.dist.is_main,
            )
            logps = run.dist.pool(local)
            if run.dist.is_main:
                write_cached_logps(key, logps)
            run.dist.barrier()
            state = "computed and cached"
        run.log(f"reference log-probs ({split}, {len(records)} records): {state} ({key})")
        setattr(data, split, with_reference_logps(records, logps))
    policy.train(was_training)
    return live

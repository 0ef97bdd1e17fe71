"""Online DPO (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback").

Every step: take per_device_train_batch_size prompts, sample num_generations completions for each from the
current policy, score them, pair each prompt's best completion against its worst (a prompt whose completions all
score the same gives no pair), and take one DPO-family step (loss_type) on those fresh pairs against the
reference (the policy with its LoRA disabled). A generated set is a TokenizedRecord whose responses are the
sampled token ids, so the pair goes through the same batching and log-prob code as offline data.
"""

from __future__ import annotations

import time
import warnings

import torch
from tqdm.auto import tqdm

from directalign.data.batching import build_batch
from directalign.data.types import TokenizedRecord
from directalign.errors import TrainingError
from directalign.generation.rewards import RewardFunction
from directalign.models.logprobs import sequence_logps
from directalign.training.objective import pair_loss, pair_metrics, pair_terms
from directalign.training.onpolicy import OnPolicyConfig, generation_config
from directalign.training.optim import make_optimizer, optimizer_step
from directalign.training.rollout import (
    Group,
    OnPolicyResult,
    OnPolicyRun,
    sample_groups,
    sampling_metrics,
)


def best_worst_pairs(groups: list[Group]) -> tuple[list[TokenizedRecord], int]:
    """One (best, worst) pair per group, its two completions as a two-response record; and the number of groups
    skipped because every completion scored the same. The first of equally scored completions is taken."""
    records, ties = [], 0
    for i, g in enumerate(groups):
        best = max(range(len(g.rewards)), key=lambda k: g.rewards[k])
        worst = min(range(len(g.rewards)), key=lambda k: g.rewards[k])
        if g.rewards[best] == g.rewards[worst]:
            ties += 1
            continue
        records.append(
            TokenizedRecord(g.prompt_ids, [g.response_ids[best], g.response_ids[worst]], [(0, 1)], source=f"group:{i}")
        )
    return records, ties


def dpo_step(run: OnPolicyRun, records: list[TokenizedRecord], step: int) -> tuple[torch.Tensor, dict]:
    """The configured pair loss on records (backward done) and its metrics."""
    cfg = run.cfg
    batch = build_batch(records, run.tokenizer.pad_token_id, cfg.layout, cfg.max_tokens_per_row).to(run.device)
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
        policy_logps = sequence_logps(run.policy(batch), batch)
        ref_logps = run.reference.sequence_logps(batch) if run.reference is not None else None
    terms = pair_terms(policy_logps.float(), None if ref_logps is None else ref_logps.float(), batch)
    losses, chosen_rewards, rejected_rewards = pair_loss(cfg, terms)
    loss = losses.mean()
    if not torch.isfinite(loss):
        raise TrainingError(f"non-finite loss ({loss.item()}) at step {step}; lower learning_rate or beta")
    loss.backward()
    return loss, pair_metrics(terms, loss, chosen_rewards, rejected_rewards)


def online_dpo(cfg: OnPolicyConfig, reward_fn: RewardFunction | None = None, on_step=None) -> OnPolicyResult:
    """Run online DPO; reward_fn overrides cfg.reward_funcs (any `f(prompts, completions, **columns)` callable).
    `on_step(step, metrics)` is called after every step."""
    from directalign.training.loop import MicroBatches

    run = OnPolicyRun(cfg, reward_fn)
    schedule = MicroBatches(len(run.train), cfg.per_device_train_batch_size, 1, cfg.seed)
    total_steps = cfg.max_steps if cfg.max_steps > 0 else schedule.steps_for(cfg.num_train_epochs)
    trainable, optimizer, scheduler = make_optimizer(cfg, run.model, total_steps)
    generator = run.generator()
    eval_before = run.evaluate("before", 0) if cfg.eval_before_training else None
    bar = tqdm(total=total_steps, desc="online-dpo", unit="step", dynamic_ncols=True)
    metrics: dict = {}
    for step in range(1, total_steps + 1):
        started = time.perf_counter()
        prompts = run.train.take(schedule.indices(step - 1, 0))
        config = generation_config(cfg, seed=cfg.seed * 100_003 + step)
        groups = sample_groups(generator, run.tokenizer, prompts, config, run.reward_fn, cfg.generation_batch_size)
        records, ties = best_worst_pairs(groups)
        metrics = {"step": step, "split": "train", **sampling_metrics(groups), "pairs": len(records)}
        run.policy.train()
        if records:
            _, loss_metrics = dpo_step(run, records, step)
            metrics.update(loss_metrics)
            metrics["grad_norm"] = optimizer_step(cfg, trainable, optimizer, scheduler)
        else:  # no pair to learn from: the schedule still advances, so that every step keeps its learning rate
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step\\(\\)` before")
                scheduler.step()
        bar.update(1)
        bar.set_postfix(reward=f"{metrics['reward']:.3f}", pairs=len(records), loss=f"{metrics.get('loss', 0):.4f}")
        run.end_step(step, total_steps, metrics, scheduler, started, on_step)
    bar.close()
    return run.finish(total_steps, eval_before)

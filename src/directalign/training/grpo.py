"""GRPO training: sample a group per prompt, normalise rewards within it, take clipped policy-gradient steps.

Every step: per_device_train_batch_size prompts, num_generations completions each from the current policy, scored
by the reward functions; advantages (r - group mean) / (group std + eps) (`group_advantages`); then
num_iterations optimizer steps on the clipped objective (`grpo_loss`) with pi_old the policy that sampled, and,
with beta > 0, the k3 KL penalty to the reference (the policy with its LoRA disabled). A prompt's group is one
TokenizedRecord with num_generations responses, so the prompt is computed once for all of them.
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from directalign.data.batching import SequenceBatch, build_batch
from directalign.data.types import TokenizedRecord
from directalign.errors import TrainingError
from directalign.generation.rewards import RewardFunction
from directalign.losses.grpo import group_advantages, grpo_loss
from directalign.training.onpolicy import OnPolicyConfig, generation_config
from directalign.training.optim import make_optimizer, optimizer_step
from directalign.training.rollout import (
    OnPolicyResult,
    OnPolicyRun,
    sample_groups,
    sampling_metrics,
)


def per_response_tokens(token_values: torch.Tensor, batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's flat per-token values (N,) as (num_responses, longest response) and its 0/1 mask.

    Tokens of a response are in order within the flat tensor in every layout, though responses may be
    interleaved (packing reorders records), hence the stable sort.
    """
    lengths = batch.response_lengths
    width = int(lengths.max()) if lengths.numel() else 0
    order = torch.argsort(batch.gather_response, stable=True)
    response = batch.gather_response[order]
    starts = torch.cumsum(lengths, 0) - lengths
    offset = torch.arange(order.numel(), device=order.device) - starts[response]
    values = token_values.new_zeros((batch.num_responses, width))
    values = values.index_put((response, offset), token_values[order])
    mask = torch.zeros((batch.num_responses, width), dtype=torch.long, device=order.device)
    mask[response, offset] = 1
    return values, mask


@torch.no_grad()
def reference_token_logps(run: OnPolicyRun, batch: SequenceBatch) -> torch.Tensor:
    from directalign.evaluation.generation_eval import as_reference

    with as_reference(run.policy, run.reference) as reference:
        return reference(batch)


def grpo(cfg: OnPolicyConfig, reward_fn: RewardFunction | None = None, on_step=None) -> OnPolicyResult:
    """Run GRPO; reward_fn overrides cfg.reward_funcs. `on_step(step, metrics)` is called after every step."""
    from directalign.training.loop import MicroBatches

    run = OnPolicyRun(cfg, reward_fn)
    schedule = MicroBatches(len(run.train), cfg.per_device_train_batch_size, 1, cfg.seed)
    total_steps = cfg.max_steps if cfg.max_steps > 0 else schedule.steps_for(cfg.num_train_epochs)
    trainable, optimizer, scheduler = make_optimizer(cfg, run.model, total_steps * cfg.num_iterations)
    generator = run.generator()
    eval_before = run.evaluate("before", 0) if cfg.eval_before_training else None
    bar = tqdm(total=total_steps, desc="grpo", unit="step", dynamic_ncols=True)
    for step in range(1, total_steps + 1):
        started = time.perf_counter()
        prompts = run.train.take(schedule.indices(step - 1, 0))
        config = generation_config(cfg, seed=cfg.seed * 100_003 + step)
        groups = sample_groups(generator, run.tokenizer, prompts, config, run.reward_fn, cfg.generation_batch_size)
        rewards = torch.tensor([r for g in groups for r in g.rewards])
        advantages = group_advantages(rewards, cfg.num_generations, scale=cfg.scale_rewards).to(run.device)
        records = [
            TokenizedRecord(g.prompt_ids, g.response_ids, pairs=[], source=f"group:{i}") for i, g in enumerate(groups)
        ]
        batch = build_batch(records, run.tokenizer.pad_token_id, cfg.layout, cfg.max_tokens_per_row).to(run.device)
        metrics = {"step": step, "split": "train", **sampling_metrics(groups)}
        metrics.update(update(run, batch, advantages, trainable, optimizer, scheduler, step))
        bar.update(1)
        bar.set_postfix(reward=f"{metrics['reward']:.3f}", loss=f"{metrics['loss']:.4f}")
        run.end_step(step, total_steps, metrics, scheduler, started, on_step)
    bar.close()
    return run.finish(total_steps, eval_before)


def update(run: OnPolicyRun, batch, advantages, trainable, optimizer, scheduler, step: int) -> dict[str, float]:
    """num_iterations optimizer steps on one generation batch; the metrics are averaged over them."""
    cfg = run.cfg
    run.policy.train()
    ref = None
    if run.reference is not None:
        ref, _ = per_response_tokens(reference_token_logps(run, batch).float(), batch)
    old = None
    if cfg.num_iterations > 1:  # pi_old must stay the sampling policy while the updates move pi
        with torch.no_grad():
            old, _ = per_response_tokens(run.policy(batch).float(), batch)
    totals = {"loss": 0.0, "kl": 0.0, "clip_ratio": 0.0, "grad_norm": 0.0}
    for _ in range(cfg.num_iterations):
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            token_logps = run.policy(batch)
        logps, mask = per_response_tokens(token_logps.float(), batch)
        out = grpo_loss(
            logps,
            logps.detach() if old is None else old,
            advantages,
            mask,
            epsilon=cfg.epsilon,
            beta=cfg.beta,
            ref_logps=ref,
        )
        if not torch.isfinite(out.loss):
            raise TrainingError(f"non-finite GRPO loss ({out.loss.item()}) at step {step}; lower learning_rate")
        out.loss.backward()
        totals["grad_norm"] += optimizer_step(cfg, trainable, optimizer, scheduler)
        totals["loss"] += out.loss.item()
        totals["kl"] += out.kl.item()
        totals["clip_ratio"] += out.clip_fraction.item()
    if ref is None:  # no reference pass (beta = 0): no KL to report
        del totals["kl"]
    return {k: v / cfg.num_iterations for k, v in totals.items()}

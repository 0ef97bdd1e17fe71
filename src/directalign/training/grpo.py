"""`directalign grpo`: GRPO (Shao et al. 2024, "DeepSeekMath", section 4.1) on the shared run engine.

Every step takes per_device_train_batch_size x processes x gradient_accumulation_steps prompts, samples
num_generations completions for each from the current policy (each process its share, with per-prompt seeds),
scores them, and normalises the rewards within each prompt's group (`group_advantages`); then
num_iterations optimizer steps on the clipped objective (`grpo_loss`), with pi_old the policy that sampled and,
with beta > 0, the k3 KL penalty to the reference (the policy with its LoRA disabled). A group is one record
with num_generations responses, so its prompt is computed once in the forward pass (the shared layout); each
process trains on its share of the groups, and the token sums are divided by the step's completion tokens over
every process, so the loss means what it means on one process.

setup -> data (prompts, reward) -> model -> loop -> save, as every trainer.
"""

from __future__ import annotations

import torch

from directalign.config import GRPOConfig
from directalign.data.batching import SequenceBatch, build_batch
from directalign.data.prompts import prompt_sets
from directalign.data.sampler import MicroBatches
from directalign.data.types import TokenizedRecord
from directalign.engine.guard import RunGuard
from directalign.engine.loop import StepLoop
from directalign.engine.model_card import model_card
from directalign.engine.optim import StepOptimizer
from directalign.engine.run import open_run, steps_plan
from directalign.engine.save import base_model_id, gathered_state, save_policy
from directalign.engine.sharding import full_model_state
from directalign.errors import DataError
from directalign.evaluation.generation_eval import as_reference
from directalign.generation.base import make_generator
from directalign.generation.rewards import RewardFunction, reward_from_specs
from directalign.losses.grpo import group_advantages, grpo_loss
from directalign.models.loading import load_tokenizer
from directalign.models.logprobs import ResponseLogProbs
from directalign.models.policy import build_policy
from directalign.models.reference import live_reference
from directalign.training.rollout import (
    OnPolicyResult,
    generation_config,
    heldout_eval,
    sampling_metrics,
    shared_sampling,
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


def grpo(cfg: GRPOConfig, reward_fn: RewardFunction | None = None, on_step=None) -> OnPolicyResult:
    """Run (or resume) GRPO; reward_fn overrides cfg.reward_funcs. `on_step(step, metrics)` after every step."""
    with open_run(cfg) as run:
        # Data: prompts and the reward.
        tokenizer = load_tokenizer(cfg.model)
        train_prompts, held = prompt_sets(cfg)
        if not len(train_prompts):
            raise DataError("no training prompts")
        reward_fn = reward_fn or reward_from_specs(cfg.reward_funcs, cfg.reward_weights)
        schedule = MicroBatches(len(train_prompts), cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps,
                                cfg.seed, run.dist.world)
        total_steps = cfg.max_steps if cfg.max_steps > 0 else schedule.steps_for(cfg.num_train_epochs)

        # Model.
        policy = ResponseLogProbs(build_policy(cfg), cfg.logits_chunk_size)
        optim = StepOptimizer(cfg, policy, total_steps * cfg.num_iterations, run.accelerator, run.dist)
        start_model = live_reference(cfg, policy)  # before the policy is wrapped (and, under FSDP, sharded)
        reference = start_model if cfg.needs_reference else None
        wrapped = optim.prepare(policy)
        guard = RunGuard(cfg, run, policy)
        generator = make_generator("transformers", model=policy.model, tokenizer=tokenizer,
                                   batch_size=cfg.generation_batch_size)
        loop = StepLoop(
            run, optim, policy, guard, total_steps,
            evaluate=lambda tag, step: heldout_eval(run, policy, start_model, tokenizer, held, reward_fn, tag),
            desc="grpo",
            unit="completions",
            shown={"reward": "reward", "loss": "loss"},
            epoch_at=schedule.epoch_at,
            on_step=on_step,
        )
        start = loop.resume()
        run.summary(policy, f"{len(train_prompts)} train / {len(held)} held-out prompts, {cfg.num_generations} "
                    f"samples each", steps_plan(total_steps, cfg, run.dist.world, "prompts"))
        eval_before = loop.evaluate("before", 0) if cfg.eval_before_training and start == 0 else None

        # Loop.
        for step in loop:
            micro = []
            for m in range(cfg.gradient_accumulation_steps):
                groups = shared_sampling(run, policy, generator, tokenizer, train_prompts, schedule.indices(step, m),
                                         generation_config(cfg), reward_fn, step)
                micro.append(groups)
            all_groups = [g for groups in micro for g in groups]
            loop.add(sampling_metrics(all_groups))
            total_tokens = sum(len(ids) for g in all_groups for ids in g.response_ids)
            batches = [_local_batch(run, cfg, tokenizer, groups) for groups in micro]
            wrapped.train()
            fixed = [_fixed_logps(run, cfg, wrapped, policy, reference, batch) for batch, _, _ in batches]
            for iteration in range(cfg.num_iterations):
                for m, ((batch, advantages, weight), (old, ref)) in enumerate(zip(batches, fixed, strict=True)):
                    with optim.sync(wrapped, last=m == len(batches) - 1), run.accelerator.autocast():
                        logps, mask = per_response_tokens(wrapped(batch).float(), batch)
                        out = grpo_loss(logps, logps.detach() if old is None else old, advantages, mask,
                                        epsilon=cfg.epsilon, beta=cfg.beta, ref_logps=ref)
                        tokens = float(mask.sum())
                        loop.backward(out.loss * tokens * weight, total_tokens)
                    if weight:
                        metrics = {"loss": out.loss.item(), "clip_ratio": out.clip_fraction.item()}
                        if ref is not None:
                            metrics["kl"] = out.kl.item()
                        loop.add(metrics, tokens)
                        loop.count(batch.num_responses, batch.num_tokens)
                if iteration < cfg.num_iterations - 1:
                    loop.inner_step()
            if not loop.end_step(step):
                break
        final_step = loop.finish()

        # Save.
        eval_after = loop.evaluate("after", final_step)
        state = gathered_state(full_model_state(policy))  # every process, under FSDP
        if run.dist.is_main:
            card = model_card(
                cfg, base_model=base_model_id(cfg.model), adapter=cfg.use_peft,
                data=f"{cfg.prompts or 'built-in verifiable tasks'} ({len(train_prompts)} prompts)", steps=final_step,
                eval_before=eval_before, eval_after=eval_after, warnings=guard.warnings,
            )
            run.finish(final_step, save_policy(cfg, policy.model, tokenizer, run.out, card, state))
        run.dist.barrier()
        return OnPolicyResult(run.out, final_step, eval_before, eval_after, loop.history)


def _local_batch(run, cfg, tokenizer, groups) -> tuple[SequenceBatch, torch.Tensor, float]:
    """This process's share of a micro-batch's groups as one batch (each group one record: its prompt once),
    their advantages, and the weight of their loss (0 for a padding group, when there are fewer groups than
    processes)."""
    rewards = torch.tensor([r for g in groups for r in g.rewards])
    advantages = group_advantages(rewards, cfg.num_generations, scale=cfg.scale_rewards)
    start, end = run.dist.bounds(len(groups))
    weight = 1.0
    if start == end:
        start, end, weight = 0, 1, 0.0
    records = [TokenizedRecord(g.prompt_ids, g.response_ids, pairs=[], source=f"group:{i}")
               for i, g in enumerate(groups[start:end], start)]
    batch = build_batch(records, tokenizer.pad_token_id, cfg.layout, cfg.max_tokens_per_row).to(run.device)
    k = cfg.num_generations
    return batch, advantages[start * k : end * k].to(run.device), weight


@torch.no_grad()
def _fixed_logps(run, cfg, wrapped, policy, reference, batch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """pi_old's token log-probs (only needed when several updates reuse the samples) and the reference's."""
    old = ref = None
    with run.accelerator.autocast():
        if cfg.num_iterations > 1:
            old = per_response_tokens(wrapped(batch).float(), batch)[0]
        if reference is not None:
            with as_reference(policy, reference) as scorer:
                ref = per_response_tokens(scorer(batch).float(), batch)[0]
    return old, ref

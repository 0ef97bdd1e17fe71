"""`directalign online-dpo`: online DPO (Guo et al. 2024, "Direct Language Model Alignment from Online AI
Feedback") on the shared run engine.

Every step takes per_device_train_batch_size x processes x gradient_accumulation_steps training prompts,
samples num_generations completions for each from the current policy (each process its share, with per-prompt
seeds), scores them, pairs each prompt's best completion against its worst (a prompt whose completions all
score the same gives no pair; with `judge` set, a pairwise judge ranks them instead, training/judged.py), and
takes one step of the configured pair loss on those fresh pairs against the
reference (the policy with its LoRA disabled, or a frozen copy). A pair is a two-response record, so it goes
through the same batching, shared-prompt forward pass and registered loss as offline data; the loss is
normalised by the step's pairs over every process. A step with no pair anywhere only advances the schedule.

setup -> data (prompts, reward) -> model -> loop -> save, as every trainer.
"""

from __future__ import annotations

import torch

from directalign.config import OnlineDPOConfig
from directalign.data.batching import build_batch
from directalign.data.prompts import prompt_sets
from directalign.data.sampler import MicroBatches
from directalign.engine.guard import RunGuard
from directalign.engine.loop import StepLoop
from directalign.engine.model_card import model_card
from directalign.engine.optim import StepOptimizer
from directalign.engine.run import open_run, steps_plan
from directalign.engine.save import base_model_id, gathered_state, save_policy
from directalign.engine.sharding import full_model_state
from directalign.errors import DataError
from directalign.generation.base import make_generator
from directalign.generation.rewards import RewardFunction, reward_from_specs
from directalign.models.loading import load_tokenizer
from directalign.models.logprobs import ResponseLogProbs, sequence_logps
from directalign.models.policy import build_policy
from directalign.models.reference import live_reference
from directalign.training.judged import judge_from_config
from directalign.training.objective import pair_loss, pair_metrics, pair_terms
from directalign.training.rollout import (
    OnPolicyResult,
    best_worst_pairs,
    generation_config,
    heldout_eval,
    pair_smoothing,
    sampling_metrics,
    shared_sampling,
)


def online_dpo(cfg: OnlineDPOConfig, reward_fn: RewardFunction | None = None, on_step=None,
               judge=None) -> OnPolicyResult:
    """Run (or resume) online DPO; reward_fn overrides cfg.reward_funcs (any `f(prompts, completions, **columns)`
    callable), judge (any judges.base.PairwiseJudge) cfg.judge. `on_step(step, metrics)` is called after every
    step."""
    with open_run(cfg) as run:
        # Data: prompts and the reward.
        tokenizer = load_tokenizer(cfg.model)
        train_prompts, held = prompt_sets(cfg)
        if not len(train_prompts):
            raise DataError("no training prompts")
        reward_fn = reward_fn or reward_from_specs(cfg.reward_funcs, cfg.reward_weights,
                                                 [*train_prompts.prompts, *held.prompts])
        judge = judge if judge is not None else judge_from_config(cfg)
        schedule = MicroBatches(len(train_prompts), cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps,
                                cfg.seed, run.dist.world)
        total_steps = cfg.max_steps if cfg.max_steps > 0 else schedule.steps_for(cfg.num_train_epochs)

        # Model.
        policy = ResponseLogProbs(build_policy(cfg), cfg.logits_chunk_size)
        optim = StepOptimizer(cfg, policy, total_steps, run.accelerator, run.dist)
        start_model = live_reference(cfg, policy)  # before the policy is wrapped (and, under FSDP, sharded)
        reference = start_model if cfg.needs_reference else None
        wrapped = optim.prepare(policy)
        guard = RunGuard(cfg, run, policy)
        generator = make_generator("transformers", model=policy.model, tokenizer=tokenizer,
                                   batch_size=cfg.generation_batch_size)
        loop = StepLoop(
            run, optim, policy, guard, total_steps,
            evaluate=lambda tag, step: heldout_eval(run, policy, start_model, tokenizer, held, reward_fn, tag),
            desc="online-dpo",
            shown={"reward": "reward", "pairs": "pairs", "loss": "loss"},
            epoch_at=schedule.epoch_at,
            on_step=on_step,
        )
        start = loop.resume()
        run.summary(policy, f"{len(train_prompts)} train / {len(held)} held-out prompts, {cfg.num_generations} "
                    f"samples each", steps_plan(total_steps, cfg, run.dist.world, "prompts"))
        eval_before = loop.evaluate("before", 0) if cfg.eval_before_training and start == 0 else None

        # Loop.
        for step in loop:
            micro = [schedule.indices(step, m) for m in range(cfg.gradient_accumulation_steps)]
            groups = [shared_sampling(run, policy, generator, tokenizer, train_prompts, indices, generation_config(cfg),
                                      reward_fn, step, judge) for indices in micro]
            pairs = [best_worst_pairs(g)[0] for g in groups]
            smoothing = [pair_smoothing(g) for g in groups] if cfg.judge_label_smoothing else None
            total = sum(len(p) for p in pairs)
            loop.add({**sampling_metrics([g for part in groups for g in part]), "pairs": total})
            wrapped.train()
            for m, micro_pairs in enumerate(pairs):
                if total == 0:
                    break
                mine, padding = run.dist.shard(micro_pairs), False
                eps = run.dist.shard(smoothing[m]) if smoothing is not None else None
                if not mine:  # this process has no pair in this micro-batch: a zero-weight one keeps DDP in step
                    mine, padding = (micro_pairs or [p for part in pairs for p in part])[:1], True
                    eps = [0.0] if smoothing is not None else None
                batch = build_batch(mine, tokenizer.pad_token_id, cfg.layout, cfg.max_tokens_per_row).to(run.device)
                with optim.sync(wrapped, last=m == len(pairs) - 1), run.accelerator.autocast():
                    policy_logps = sequence_logps(wrapped(batch), batch)
                    ref_logps = reference.sequence_logps(batch) if reference is not None else None
                    terms = pair_terms(policy_logps.float(), None if ref_logps is None else ref_logps.float(), batch)
                    losses, chosen_r, rejected_r = pair_loss(
                        cfg, terms, None if eps is None else torch.tensor(eps, device=run.device)
                    )
                    loop.backward(losses.sum() * (0.0 if padding else 1.0), total)
                if not padding:
                    loop.add(pair_metrics(terms, losses.mean(), chosen_r, rejected_r), len(mine))
                    loop.count(len(mine), batch.num_tokens)
            if not loop.end_step(step, skip=total == 0):
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


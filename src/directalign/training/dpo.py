"""`directalign train`: the DPO family and KTO on preference data, on the shared run engine.

setup -> data -> model -> loop -> save:
- setup: `open_run` (accelerator, seeds, the process count, the output folder and whether this run resumes);
- data: tokenised train and held-out records; the epoch sampler (a function of seed and step);
- model: the policy (LoRA or full), AdamW, the reference (adapter-disabled, a frozen copy, or log-probs
  precomputed once, shared out over the processes and cached on disk), the health guard;
- loop: every step, each micro-batch's records are cut between the processes ([rank::world] of the global
  micro-batch), one forward pass scores every response, the registered loss is summed and normalised by the
  step's pairs (KTO: examples) over every process; the engine's StepLoop logs, evaluates, checkpoints, guards;
- save: the adapter (or model) with its model card, finished.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from directalign.config import TrainConfig
from directalign.data.batching import build_batch
from directalign.data.pipeline import prepare_data
from directalign.data.sampler import MicroBatches
from directalign.engine.guard import RunGuard, heldout_kl
from directalign.engine.loop import StepLoop
from directalign.engine.model_card import model_card
from directalign.engine.optim import StepOptimizer
from directalign.engine.run import RunOutputs, open_run, steps_plan
from directalign.engine.save import base_model_id, gathered_state, save_policy
from directalign.engine.sharding import full_model_state
from directalign.errors import TrainingError
from directalign.evaluation.preference import pool_scores, preference_metrics, preference_scores
from directalign.generation.rewards import builtin_reward
from directalign.models.loading import load_tokenizer
from directalign.models.logprobs import ResponseLogProbs, sequence_logps
from directalign.models.policy import build_policy
from directalign.models.reference import CachedReference, live_reference
from directalign.training.kto import KTOObjective, kl_groups, kto_weights
from directalign.training.objective import pair_loss, pair_metrics, pair_terms
from directalign.training.reference_cache import precompute_reference
from directalign.training.samples import write_sample_generations


@dataclass
class TrainResult(RunOutputs):
    output_dir: Path
    steps: int
    eval_before: dict | None
    eval_after: dict | None
    last_metrics: dict
    stop_reason: str | None = None  # a health stop (kl_budget, early_stopping), in words


def train(cfg: TrainConfig, on_step=None) -> TrainResult:
    """Run (or resume) a training job; `on_step(step, metrics)` is called after every optimizer step."""
    with open_run(cfg) as run:
        # Data.
        tokenizer = load_tokenizer(cfg.model)
        data = prepare_data(cfg, tokenizer)
        run.log(f"data: {data.description}")
        for note in data.notes:
            run.log(f"  {note}")
        if not data.train:
            raise TrainingError("no training records left after loading and tokenisation")
        unpaired = cfg.loss.data == "unpaired"
        schedule = MicroBatches(
            len(data.train),
            cfg.per_device_train_batch_size,
            cfg.gradient_accumulation_steps,
            cfg.seed,
            run.dist.world,
            shuffle=cfg.train_sampling_strategy == "random",
            token_counts=[r.num_tokens_unshared if cfg.layout == "padded" else r.num_tokens for r in data.train],
            max_tokens=cfg.max_tokens_per_batch,
        )
        total_steps = cfg.max_steps if cfg.max_steps > 0 else schedule.steps_for(cfg.num_train_epochs)

        # Model: policy, optimizer, reference, health guard.
        policy = ResponseLogProbs(build_policy(cfg), cfg.logits_chunk_size)
        optim = StepOptimizer(cfg, policy, total_steps, run.accelerator, run.dist)
        reference = None  # built before the policy is wrapped (and, under FSDP, sharded)
        if cfg.needs_reference:
            reference = live_reference(cfg, policy) if not cfg.precompute_ref_log_probs else None
            if cfg.precompute_ref_log_probs:
                reference = CachedReference(precompute_reference(run, cfg, policy, data, tokenizer))
        wrapped = optim.prepare(policy)
        n_units = sum(len(r.labels) if unpaired else len(r.pairs) for r in data.train)
        guard = RunGuard(cfg, run, policy, n_units)
        kto = KTOObjective(cfg, kto_weights(cfg, data.train), tokenizer.pad_token_id) if unpaired else None
        if kto is not None:
            run.log(kto.weights.describe())
        reward_fn = builtin_reward if cfg.data is None else None  # the built-in set's verifier scores samples

        def evaluate(tag: str, step: int) -> dict | None:
            if not data.eval:
                return None
            local = run.dist.share(data.eval)
            scores = preference_scores(
                policy, local, pad_token_id=tokenizer.pad_token_id, reference=reference,
                batch_size=cfg.per_device_eval_batch_size, layout=cfg.layout, device=run.device,
            )
            result = preference_metrics(pool_scores(run.dist.pool([scores])), cfg.beta)
            result.update(heldout_kl(run, policy, reference, tokenizer, data.eval_prompts, cfg, reward_fn))
            if cfg.sample_generations and tag in ("before", "after"):
                write_sample_generations(run, cfg, policy, tokenizer, data.eval_prompts, tag, step, reward_fn)
            return result

        loop = StepLoop(
            run, optim, policy, guard, total_steps,
            evaluate=evaluate,
            desc="train",
            unit="examples" if unpaired else "pairs",
            shown={"loss": "loss", "acc": "rewards/accuracies", "margin": "rewards/margins",
                   ("kl_z0" if unpaired else "logratio"): "kl"},
            epoch_at=schedule.epoch_at,
            on_step=on_step,
        )
        start = loop.resume()
        run.summary(policy, f"{len(data.train)} train / {len(data.eval)} held-out records",
                    steps_plan(total_steps, cfg, run.dist.world, "records"))
        eval_before = loop.evaluate("before", 0) if cfg.eval_before_training and start == 0 else None

        # Loop.
        wrapped.train()
        for step in loop:
            micro = [schedule.local(step, m, run.dist.rank) for m in range(cfg.gradient_accumulation_steps)]
            local_units = sum(_units(data.train[i], unpaired) for indices, padding in micro if not padding
                              for i in indices)
            step_total = run.dist.sum([local_units])[0]  # pairs (KTO: examples) of the step over every process
            for m, (indices, padding) in enumerate(micro):
                records = [data.train[i] for i in indices]
                batch = build_batch(records, tokenizer.pad_token_id, cfg.layout, cfg.max_tokens_per_row)
                batch = batch.to(run.device)
                with optim.sync(wrapped, last=m == len(micro) - 1), run.accelerator.autocast():
                    if kto is not None:
                        global_batch = [data.train[i] for i in schedule.indices(step, m)]
                        mine = [0] if padding else range(run.dist.rank, len(global_batch), run.dist.world)
                        groups = kl_groups(global_batch, mine)
                        losses, metrics = kto(wrapped, reference, records, batch, groups, run.dist, not padding)
                    else:
                        policy_logps = sequence_logps(wrapped(batch), batch)
                        ref_logps = reference.sequence_logps(batch) if reference is not None else None
                        terms = pair_terms(policy_logps.float(), ref_logps, batch)
                        losses, chosen_r, rejected_r = pair_loss(cfg, terms)
                        metrics = pair_metrics(terms, losses.mean(), chosen_r, rejected_r)
                    weight = 0.0 if padding else 1.0
                    loop.backward(losses.sum() * weight, step_total, [r.source for r in records])
                if not padding:
                    loop.add(metrics, losses.numel())
                    loop.count(int(losses.numel()), batch.num_tokens)
            if not loop.end_step(step):
                break
        final_step = loop.finish()

        # Save.
        eval_after = loop.evaluate("after", final_step)
        state = gathered_state(full_model_state(policy))  # every process, under FSDP
        if run.dist.is_main:
            card = model_card(
                cfg, base_model=base_model_id(cfg.model), adapter=cfg.use_peft, data=data.description,
                steps=final_step, eval_before=eval_before, eval_after=eval_after, warnings=guard.warnings,
            )
            run.finish(final_step, save_policy(cfg, policy.model, tokenizer, run.out, card, state))
        run.dist.barrier()
        return TrainResult(run.out, final_step, eval_before, eval_after, loop.last, guard.stop_message)


def _units(record, unpaired: bool) -> int:
    """What the loss averages over: a record's pairs, or (KTO) its examples."""
    return len(record.labels) if unpaired else len(record.pairs)

"""`directalign reward-model train`: a Bradley-Terry reward model on the shared run engine.

setup -> data -> model -> loop -> save, as every trainer: the same tokenised preference records and epoch
sampler as `train` (each micro-batch's records cut between the processes), the loss summed over pairs and
normalised by the step's pairs over every process, held-out accuracy shared out and pooled, and
reward_model/ (the model or its adapter, the tokenizer, directalign_reward_model.json, a model card) written
atomically at the end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from directalign.config import RewardModelConfig
from directalign.data.pipeline import prepare_data
from directalign.data.sampler import MicroBatches
from directalign.engine.files import sha256_file, staged_dir
from directalign.engine.guard import RunGuard
from directalign.engine.loop import StepLoop
from directalign.engine.model_card import model_card
from directalign.engine.optim import StepOptimizer
from directalign.engine.run import RunOutputs, open_run, steps_plan
from directalign.engine.save import base_model_id, gathered_state
from directalign.engine.sharding import full_model_state
from directalign.errors import DataError
from directalign.models.loading import load_tokenizer
from directalign.reward_models.bradley_terry import (
    ResponseRewards,
    bradley_terry_loss,
    load_backbone,
    pair_metrics,
    record_rewards,
    reward_metrics,
    reward_scores,
)
from directalign.reward_models.scoring import METADATA_FILE, MODEL_FOLDER


@dataclass
class RewardTrainResult(RunOutputs):
    output_dir: Path
    model_dir: Path
    steps: int
    eval_before: dict | None
    eval_after: dict | None
    last_metrics: dict


def train_reward_model(cfg: RewardModelConfig, on_step=None) -> RewardTrainResult:
    """Train (see the module docstring); on_step(step, metrics) is called after every optimizer step."""
    with open_run(cfg) as run:
        # Data.
        tokenizer = load_tokenizer(cfg.model)
        data = prepare_data(cfg, tokenizer)
        run.log(f"data: {data.description}")
        for note in data.notes:
            run.log(f"  {note}")
        if not data.train:
            raise DataError(f"{cfg.data}: no training pairs")
        schedule = MicroBatches(
            len(data.train), cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps, cfg.seed,
            run.dist.world, shuffle=cfg.train_sampling_strategy == "random",
            token_counts=[r.num_tokens_unshared for r in data.train], max_tokens=cfg.max_tokens_per_batch,
        )
        total_steps = cfg.max_steps if cfg.max_steps > 0 else schedule.steps_for(cfg.num_train_epochs)

        # Model: the score head over the policy's weights, under the module that scores a batch in any layout.
        model = load_backbone(cfg, tokenizer)
        scorer = ResponseRewards(model)
        optim = StepOptimizer(cfg, scorer, total_steps, run.accelerator, run.dist)
        wrapped = optim.prepare(scorer)
        guard = RunGuard(cfg, run, scorer)
        pad, layout = tokenizer.pad_token_id, (cfg.layout, cfg.max_tokens_per_row)

        def evaluate(tag: str, step: int) -> dict | None:
            if not data.eval:
                return None
            chosen, rejected = reward_scores(scorer, run.dist.share(data.eval), pad, cfg.per_device_eval_batch_size,
                                             *layout)
            return reward_metrics(run.dist.pool(chosen), run.dist.pool(rejected), cfg.margin)

        loop = StepLoop(run, optim, scorer, guard, total_steps, evaluate=evaluate, desc="reward model",
                        shown={"loss": "loss", "acc": "accuracy", "margin": "margin"}, epoch_at=schedule.epoch_at,
                        on_step=on_step)
        start = loop.resume()
        run.summary(scorer, f"{sum(len(r.pairs) for r in data.train)} train / {sum(len(r.pairs) for r in data.eval)} "
                    "held-out pairs", steps_plan(total_steps, cfg, run.dist.world, "records"))
        eval_before = loop.evaluate("before", 0) if cfg.eval_before_training and start == 0 else None

        # Loop.
        wrapped.train()
        for step in loop:
            micro = [schedule.local(step, m, run.dist.rank) for m in range(cfg.gradient_accumulation_steps)]
            total = run.dist.sum([sum(len(data.train[i].pairs) for idx, pad_ in micro if not pad_ for i in idx)])[0]
            for m, (indices, padding) in enumerate(micro):
                records = [data.train[i] for i in indices]
                with optim.sync(wrapped, last=m == len(micro) - 1), run.accelerator.autocast():
                    chosen, rejected = record_rewards(wrapped, records, pad, *layout)
                    losses = bradley_terry_loss(chosen, rejected, cfg.margin)
                    loop.backward(losses.sum() * (0.0 if padding else 1.0), total, [r.source for r in records])
                if not padding:
                    metrics = {"loss": losses.mean().item(), **pair_metrics(chosen.detach(), rejected.detach())}
                    loop.add(metrics, losses.numel())
                    loop.count(losses.numel(), sum(len(r.prompt_ids) + len(x) for r in records for x in r.response_ids))
            if not loop.end_step(step):
                break
        final_step = loop.finish()

        # Save.
        eval_after = loop.evaluate("after", final_step)
        model_dir = run.out / MODEL_FOLDER
        state = gathered_state(full_model_state(scorer))  # every process, under FSDP and ZeRO-3
        if run.dist.is_main:
            card = model_card(cfg, base_model=base_model_id(cfg.model), adapter=cfg.use_peft, data=data.description,
                              steps=final_step, eval_before=eval_before, eval_after=eval_after,
                              warnings=guard.warnings)
            run.finish(final_step, save_reward_model(model, tokenizer, cfg, model_dir, card, state))
        run.dist.barrier()
        return RewardTrainResult(run.out, model_dir, final_step, eval_before, eval_after, loop.last)


def save_reward_model(model, tokenizer, cfg, target: Path, card: str, state_dict=None) -> dict[str, str]:
    """reward_model/ written atomically (from the gathered weights of a sharded run when given); returns its
    files' sha256."""
    with staged_dir(target) as staging:
        model.save_pretrained(staging, **({} if state_dict is None else {"state_dict": state_dict}))
        tokenizer.save_pretrained(staging)
        meta = {
            "base_model": cfg.model,
            "adapter": cfg.use_peft,
            "max_length": cfg.max_length,
            "max_prompt_length": cfg.prompt_length_limit,
            "use_chat_template": cfg.use_chat_template,
            "margin": cfg.margin,
        }
        (staging / METADATA_FILE).write_text(json.dumps(meta, indent=2))
        (staging / "README.md").write_text(card)
    return {f"{target.name}/{p.name}": sha256_file(p) for p in sorted(target.iterdir()) if p.is_file()}

"""Iterative DPO (Xu et al. 2023, "Some things are more CRINGE than others"; Xiong et al. 2024, "Iterative
Preference Learning from Human Feedback"): rounds of generate -> score -> pair -> offline DPO.

Round r samples num_generations completions for prompts_per_round training prompts from the current policy, pairs
each prompt's best against its worst (ties skipped), writes the pairs to round_r/pairs.jsonl (a conversational
preference file `directalign train --data` reads), trains num_train_epochs over them with the configured loss, and
measures the held-out reward and the KL to the starting model. With update_reference the round's LoRA is then
merged into the base weights and a fresh LoRA starts on top, so the next round's reference is this round's
policy; without it the reference stays the starting model and one adapter keeps training.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from tqdm.auto import tqdm

from directalign.generation.rewards import RewardFunction
from directalign.training.metrics import MetricsWriter
from directalign.training.online import best_worst_pairs, dpo_step
from directalign.training.onpolicy import OnPolicyConfig, generation_config
from directalign.training.optim import make_optimizer, optimizer_step
from directalign.training.rollout import (
    Group,
    OnPolicyResult,
    OnPolicyRun,
    sample_groups,
    sampling_metrics,
)


def write_pairs(path: Path, groups: list[Group]) -> int:
    """Best-vs-worst pairs as conversational preference rows with their scores; returns the number written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with path.open("w") as f:
        for g in groups:
            best = max(range(len(g.rewards)), key=lambda k: g.rewards[k])
            worst = min(range(len(g.rewards)), key=lambda k: g.rewards[k])
            if g.rewards[best] == g.rewards[worst]:
                continue
            row = {
                "prompt": g.prompt,
                "chosen": [{"role": "assistant", "content": g.completions[best].text}],
                "rejected": [{"role": "assistant", "content": g.completions[worst].text}],
                "score_chosen": g.rewards[best],
                "score_rejected": g.rewards[worst],
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            written += 1
    return written


def move_reference(run: OnPolicyRun) -> None:
    """Make the current policy the reference: merge the LoRA into the base and start a fresh one (full
    fine-tuning: a frozen copy of the current weights)."""
    from directalign.models.logprobs import ResponseLogProbs
    from directalign.models.reference import AdapterReference, FrozenReference

    cfg = run.cfg
    if not cfg.use_peft:
        run.reference = FrozenReference.copy_of(run.model)
        return
    from peft import LoraConfig, get_peft_model

    base = run.model.merge_and_unload()
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules,
        task_type="CAUSAL_LM",
    )
    run.model = get_peft_model(base, lora)
    run.policy = ResponseLogProbs(run.model, cfg.logits_chunk_size)
    run.reference = AdapterReference(run.policy)


def iterative_dpo(cfg: OnPolicyConfig, reward_fn: RewardFunction | None = None, on_round=None) -> OnPolicyResult:
    """Run num_rounds rounds; reward_fn overrides cfg.reward_funcs. `on_round(round, eval_metrics)` after each."""
    from directalign.training.loop import MicroBatches

    run = OnPolicyRun(cfg, reward_fn, frozen_start=cfg.update_reference)
    prompt_schedule = MicroBatches(len(run.train), cfg.prompts_per_round, 1, cfg.seed)
    eval_before = run.evaluate("round 0", 0, round=0)
    step = 0
    for round_number in range(1, cfg.num_rounds + 1):
        started = time.perf_counter()
        folder = run.out / f"round_{round_number}"
        prompts = run.train.take(prompt_schedule.indices(round_number - 1, 0))
        config = generation_config(cfg, seed=cfg.seed * 100_003 + round_number)
        generator = run.generator()
        groups = sample_groups(generator, run.tokenizer, prompts, config, run.reward_fn, cfg.generation_batch_size)
        records, ties = best_worst_pairs(groups)
        written = write_pairs(folder / "pairs.jsonl", groups)
        run.write_samples(folder / "samples.jsonl", groups)
        sampled = {"round": round_number, "split": "sample", "step": step, **sampling_metrics(groups), "pairs": written}
        sampled["time_s"] = time.perf_counter() - started
        round_metrics = MetricsWriter(folder / "metrics.jsonl")
        for writer in (run.metrics, round_metrics):
            writer.write(sampled)
        run.log(
            f"round {round_number}: {len(groups)} prompts, sampled reward {sampled['reward']:.3f}, "
            f"{written} pairs ({ties} prompts tied) -> {folder / 'pairs.jsonl'} ({sampled['time_s']:.0f} s)"
        )
        if records:
            step = train_round(run, records, round_number, step, round_metrics)
        elapsed = time.perf_counter() - started
        result = run.evaluate(f"round {round_number}", step, round=round_number, sample_train_time_s=elapsed)
        if result is not None:
            round_metrics.write({"round": round_number, "split": "eval", "step": step, **result})
        if on_round is not None:
            on_round(round_number, result)
        if cfg.update_reference and round_number < cfg.num_rounds:
            move_reference(run)
    save(run)
    return OnPolicyResult(run.out, step, eval_before, run.history[-1] if run.history else None, run.history)


def train_round(run: OnPolicyRun, records, round_number: int, step: int, round_metrics: MetricsWriter) -> int:
    """num_train_epochs of DPO over this round's pairs, a fresh optimizer each round; returns the global step."""
    from directalign.training.loop import MicroBatches

    cfg = run.cfg
    schedule = MicroBatches(len(records), cfg.per_device_train_batch_size, 1, cfg.seed + round_number)
    steps = cfg.max_steps if cfg.max_steps > 0 else schedule.steps_for(cfg.num_train_epochs)
    trainable, optimizer, scheduler = make_optimizer(cfg, run.model, steps)
    run.policy.train()
    for k in tqdm(range(steps), desc=f"round {round_number}", unit="step", dynamic_ncols=True):
        step += 1
        _, metrics = dpo_step(run, [records[i] for i in schedule.indices(k, 0)], step)
        metrics["grad_norm"] = optimizer_step(cfg, trainable, optimizer, scheduler)
        event = {"round": round_number, "split": "train", "step": step, **metrics}
        event["learning_rate"] = scheduler.get_last_lr()[0]
        for writer in (run.metrics, round_metrics):
            writer.write(event)
    return step


def save(run: OnPolicyRun) -> None:
    """The adapter when the base never changed; else the merged model, which from_pretrained opens as it is."""
    if run.cfg.use_peft and run.cfg.update_reference:
        merged = run.model.merge_and_unload()
        merged.save_pretrained(run.out / "model")
        run.tokenizer.save_pretrained(run.out / "model")
    else:
        run.save()


def rounds_table(history: list[dict]) -> str:
    """Held-out reward and KL per round, one line each; for built-in tasks also the content and format shares and
    the reward per kind."""
    columns = ["reward", "kl", "content", "format"]
    columns += sorted({k for event in history for k in event if k.startswith("reward/")})
    columns = [c for c in columns if any(c in event for event in history)]
    names = {"kl": "KL"}
    lines = [f"{'round':>5} " + " ".join(f"{names.get(c, c.removeprefix('reward/')):>{_width(c)}}" for c in columns)]
    for event in history:
        cells = []
        for c in columns:
            value = event.get(c)
            ok = isinstance(value, int | float) and math.isfinite(value)
            cells.append(f"{value:>{_width(c)}.3f}" if ok else f"{'-':>{_width(c)}}")
        lines.append(f"{event.get('round', '-'):>5} " + " ".join(cells))
    return "\n".join(lines)


def _width(column: str) -> int:
    return max(7, len(column.removeprefix("reward/")))

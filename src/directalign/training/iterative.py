"""`directalign iterative-dpo`: rounds of generate -> score -> pair -> offline DPO (Xu et al. 2023, "Some things
are more CRINGE than others"; Xiong et al. 2024, "Iterative Preference Learning from Human Feedback"), on the
shared run engine, each round resumable.

Round r samples num_generations completions for prompts_per_round training prompts from the current policy
(each process its share, per-prompt seeds), pairs each prompt's best against its worst (ties skipped; with
`judge` set, ranked by a pairwise judge, training/judged.py), writes
round_r/rollout.json (token ids and rewards, what the round trains on), round_r/pairs.jsonl (a conversational
preference file `directalign train --data` reads) and round_r/samples.jsonl, trains num_train_epochs (or
max_steps) over the pairs with the configured loss and a fresh optimizer (checkpoints in round_r/), and measures
the held-out reward and the KL to the starting model. round_r/round.json then marks the round done, with its
trained weights in round_r/trainable.safetensors (and their sha256 in round.json: a round whose record or weights
are damaged is reported and run again from its rollout). With update_reference the round's LoRA is merged into the base
and a fresh LoRA (seeded by the round) starts on top, so the next round's reference is this round's policy;
without it the reference stays the starting model and one adapter keeps training.

A resumed run replays the finished rounds from their saved weights (the same merges, so the same base, bit for
bit), reuses the interrupted round's rollout, and continues its training from its last good checkpoint.
A round whose held-out KL exceeds kl_budget stops the run with the weights of the round before.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from directalign.config import IterativeDPOConfig
from directalign.data.batching import build_batch
from directalign.data.prompts import prompt_sets
from directalign.data.sampler import MicroBatches
from directalign.engine.checkpoint import latest_good, load_trainable, trainable_state
from directalign.engine.files import atomic_save_tensors, atomic_write_json, atomic_write_text, sha256_file
from directalign.engine.guard import RunGuard
from directalign.engine.loop import StepLoop
from directalign.engine.model_card import model_card
from directalign.engine.optim import StepOptimizer
from directalign.engine.run import open_run
from directalign.engine.save import base_model_id, save_policy, write_pretrained
from directalign.engine.sharding import is_sharded, sharding_requested
from directalign.errors import ConfigError, DataError
from directalign.generation.base import Completion, make_generator
from directalign.generation.rewards import RewardFunction, reward_from_specs
from directalign.models.loading import load_tokenizer
from directalign.models.logprobs import ResponseLogProbs, sequence_logps
from directalign.models.policy import add_adapter, build_policy
from directalign.models.reference import AdapterReference, frozen_copy, live_reference
from directalign.training.judged import JudgedGroup, judge_from_config
from directalign.training.objective import pair_loss, pair_metrics, pair_terms
from directalign.training.rollout import (
    Group,
    OnPolicyResult,
    best_worst_pairs,
    generation_config,
    heldout_eval,
    pair_smoothing,
    sampling_metrics,
    shared_sampling,
    write_samples,
)

ROUND_FILE = "round.json"
WEIGHTS = "trainable.safetensors"


def _read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def iterative_dpo(
    cfg: IterativeDPOConfig, reward_fn: RewardFunction | None = None, on_round=None, on_step=None, judge=None
) -> OnPolicyResult:
    """Run (or resume) num_rounds rounds; reward_fn overrides cfg.reward_funcs, judge (a judges.base.PairwiseJudge)
    cfg.judge. `on_round(round, eval)` after each round, `on_step(step, metrics)` after each optimizer step (steps
    counted over the whole run)."""
    with open_run(cfg) as run:
        # Data: prompts and the reward.
        tokenizer = load_tokenizer(cfg.model)
        train_prompts, held = prompt_sets(cfg)
        if not len(train_prompts):
            raise DataError("no training prompts")
        reward_fn = reward_fn or reward_from_specs(cfg.reward_funcs, cfg.reward_weights,
                                                 [*train_prompts.prompts, *held.prompts])
        judge = judge if judge is not None else judge_from_config(cfg)
        prompt_schedule = MicroBatches(len(train_prompts), cfg.prompts_per_round, 1, cfg.seed)

        # Model: the policy, the starting model the held-out KL is measured to, the moving reference.
        policy = ResponseLogProbs(build_policy(cfg), cfg.logits_chunk_size)
        moving = cfg.update_reference
        start_model = frozen_copy(policy.model, cfg.bf16) if moving or not cfg.use_peft else live_reference(cfg, policy)
        reference = start_model
        if is_sharded(policy) or sharding_requested():
            raise ConfigError("iterative-dpo merges each round's adapter into the base weights, which FSDP and "
                              "ZeRO-3 shard; run it with data parallelism (the ddp accelerate config or torchrun) "
                              "or ZeRO-2")
        guard = RunGuard(cfg, run, policy)
        rounds = Rounds(run, cfg)
        first = rounds.first_unfinished()
        run.metrics.start(rounds.resume_step(first) if run.resuming else None)
        run.summary(policy, f"{len(train_prompts)} train / {len(held)} held-out prompts",
                    f"{cfg.num_rounds} rounds of {cfg.prompts_per_round} prompts x {cfg.num_generations} samples, "
                    "then DPO on their pairs")
        history: list[dict] = []

        def evaluate(round_number: int, at_step: int) -> dict | None:
            result = heldout_eval(run, policy, start_model, tokenizer, held, reward_fn, f"round {round_number}")
            if result is None:
                return None
            event = {"step": at_step, "split": "eval", "tag": f"round {round_number}", "round": round_number, **result}
            run.metrics.write(event)
            shown = ", ".join(f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, int | float))
            run.log(f"eval (round {round_number}, step {at_step}): {shown}")
            guard.observe(event)
            return event

        if first == 0:  # round 0: the policy before any training
            before = evaluate(0, 0)
            rounds.finish(0, 0, before, None, guard.state_dict()[0])
        else:
            before = rounds.done(0).get("event")
        history += [before] if before else []
        step, stopped, round_start = 0, False, trainable_state(policy)
        for round_number in range(1, cfg.num_rounds + 1):
            if round_number < first:  # finished before a restart: replay its weights (the merge follows below)
                record = rounds.done(round_number)
                load_trainable(policy, rounds.weights(round_number))
                step, event = record["step"], record.get("event")
                if round_number == first - 1:
                    guard.load_state_dict(record["guard"], None)
            else:
                groups = rollout(run, cfg, rounds, policy, tokenizer, train_prompts, prompt_schedule, reward_fn,
                                 round_number, step, judge)
                records, _ = best_worst_pairs(groups)
                smoothing = pair_smoothing(groups) if cfg.judge_label_smoothing else None
                if records:
                    step = train_round(run, cfg, policy, reference, guard, tokenizer, records, round_number, step,
                                       on_step, smoothing)
                event = evaluate(round_number, step)
                rounds.finish(round_number, step, event, trainable_state(policy), guard.state_dict()[0])
                if on_round is not None:
                    on_round(round_number, event)
            history += [event] if event else []
            if guard.should_stop:
                if guard.monitor.stop.check == "kl_budget":  # back to the end of the round before
                    load_trainable(policy, round_start)
                    run.log(f"round {round_number} exceeded kl_budget: the outputs are those of round "
                            f"{round_number - 1}")
                stopped = True
                break
            if moving and round_number < cfg.num_rounds:
                policy, reference = move_reference(cfg, policy, round_number)
            round_start = trainable_state(policy)

        # Save: the merged model when the base moved, else the adapter.
        if run.dist.is_main:
            card = model_card(
                cfg, base_model=base_model_id(cfg.model), adapter=cfg.use_peft and not moving,
                data=f"{cfg.prompts or 'built-in verifiable tasks'} ({len(train_prompts)} prompts)", steps=step,
                eval_before=before, eval_after=history[-1] if history else None, warnings=guard.warnings,
            )
            if cfg.use_peft and moving:
                outputs = write_pretrained(run.out / "model", policy.model.merge_and_unload(), tokenizer, card,
                                           base_model_id(cfg.model))
            else:
                outputs = save_policy(cfg, policy.model, tokenizer, run.out, card)
            run.finish(step, outputs)
        run.dist.barrier()
        if stopped:
            run.log(f"stopped: {guard.stop_message}")
        return OnPolicyResult(run.out, step, before, history[-1] if history else None, history)


def rollout(run, cfg, rounds, policy, tokenizer, train_prompts, prompt_schedule, reward_fn, round_number: int,
            step: int, judge=None) -> list[Group]:
    """The round's scored samples: the interrupted round's rollout when resuming, else sampled now (each
    process its share) and written to round_<r>/ with its pairs file."""
    groups = rounds.rollout(round_number)
    if groups is not None:
        return groups
    generator = make_generator("transformers", model=policy.model, tokenizer=tokenizer,
                               batch_size=cfg.generation_batch_size)
    indices = prompt_schedule.indices(round_number - 1, 0)
    groups = shared_sampling(run, policy, generator, tokenizer, train_prompts, indices, generation_config(cfg),
                             reward_fn, round_number, judge)
    rounds.write_rollout(round_number, groups)
    records, ties = best_worst_pairs(groups)
    metrics = sampling_metrics(groups)
    run.metrics.write({"round": round_number, "split": "sample", "step": step, "pairs": len(records), **metrics})
    judged = ""
    if "judge/calls" in metrics:
        judged = (f", judged by {getattr(judge, 'name', 'the judge')}: {metrics['judge/calls']:.0f} calls in "
                  f"{metrics['judge/latency_s']:.1f} s, consistency {metrics['judge/consistency']:.2f}, "
                  f"tie rate {metrics['judge/tie_rate']:.2f}")
    run.log(f"round {round_number}: {len(groups)} prompts, {len(records)} pairs ({ties} prompts without one{judged})"
            f" -> {rounds.folder(round_number) / 'pairs.jsonl'}")
    return groups


def train_round(run, cfg, policy, reference, guard, tokenizer, records, round_number: int, step: int,
                on_step=None, smoothing: list[float] | None = None) -> int:
    """num_train_epochs (or max_steps) of the pair loss over this round's pairs, a fresh optimizer, checkpoints in
    round_<r>/; returns the run's step count after it. smoothing: each record's label smoothing (the judge's)."""
    schedule = MicroBatches(len(records), cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps,
                            cfg.seed + round_number, run.dist.world)
    steps = cfg.max_steps if cfg.max_steps > 0 else schedule.steps_for(cfg.num_train_epochs)
    optim = StepOptimizer(cfg, policy, steps, run.accelerator, run.dist)
    wrapped = optim.prepare(policy)
    loop = StepLoop(run, optim, policy, guard, steps, desc=f"round {round_number}",
                    shown={"loss": "loss", "acc": "rewards/accuracies"}, epoch_at=schedule.epoch_at,
                    checkpoint_dir=run.out / f"round_{round_number}", step_offset=step,
                    event_extra={"round": round_number}, on_step=on_step)
    loop.resume(restart_metrics=False)
    wrapped.train()
    for local_step in loop:
        micro = [schedule.local(local_step, m, run.dist.rank) for m in range(cfg.gradient_accumulation_steps)]
        total = run.dist.sum([sum(len(idx) for idx, padding in micro if not padding)])[0]
        for m, (indices, padding) in enumerate(micro):
            batch = build_batch([records[i] for i in indices], tokenizer.pad_token_id, cfg.layout,
                                cfg.max_tokens_per_row).to(run.device)
            with optim.sync(wrapped, last=m == len(micro) - 1), run.accelerator.autocast():
                policy_logps = sequence_logps(wrapped(batch), batch)
                ref_logps = reference.sequence_logps(batch) if reference is not None else None
                terms = pair_terms(policy_logps.float(), None if ref_logps is None else ref_logps.float(), batch)
                eps = None if smoothing is None else torch.tensor([smoothing[i] for i in indices], device=run.device)
                losses, chosen_r, rejected_r = pair_loss(cfg, terms, eps)
                loop.backward(losses.sum() * (0.0 if padding else 1.0), total)
            if not padding:
                loop.add(pair_metrics(terms, losses.mean(), chosen_r, rejected_r), len(indices))
                loop.count(len(indices), batch.num_tokens)
        if not loop.end_step(local_step):
            break
    return step + loop.current


def move_reference(cfg, policy: ResponseLogProbs, round_number: int):
    """Make the current policy the reference: merge the LoRA into the base and start a fresh one, seeded by the
    round so that a replayed run starts the same adapter (full fine-tuning: a frozen copy of the current
    weights). Returns (policy, reference)."""
    if not cfg.use_peft:
        return policy, frozen_copy(policy.model, cfg.bf16)
    base = policy.model.merge_and_unload()
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed * 1_000 + round_number)
        model = add_adapter(cfg, base)
    policy = ResponseLogProbs(model, cfg.logits_chunk_size)
    return policy, AdapterReference(policy)


class Rounds:
    """The round folders: rollouts, finished-round records (round.json: the step, the eval event, the health
    guard's state) and their trained weights; round 0 is the evaluation before training."""

    def __init__(self, run, cfg):
        self.run, self.cfg = run, cfg

    def folder(self, round_number: int) -> Path:
        return self.run.out / f"round_{round_number}"

    def done(self, round_number: int) -> dict:
        """The round's record, or {} when it is not finished, or its record or weights are damaged."""
        return {} if self.damage(round_number) is not None else _read_record(self.folder(round_number) / ROUND_FILE)

    def damage(self, round_number: int) -> str | None:
        """Why a finished round cannot be replayed ("" when it simply did not finish), or None when it can."""
        folder = self.folder(round_number)
        if not (folder / ROUND_FILE).is_file():
            return ""
        record = _read_record(folder / ROUND_FILE)
        if not record or not isinstance(record.get("step"), int):
            return f"{ROUND_FILE} is unreadable"
        digest = record.get("weights_sha256")
        if digest is not None and (not (folder / WEIGHTS).is_file() or sha256_file(folder / WEIGHTS) != digest):
            return f"{WEIGHTS} does not match its checksum"
        return None

    def first_unfinished(self) -> int:
        if not self.run.resuming:
            return 0
        for r in range(0, self.cfg.num_rounds + 1):
            problem = self.damage(r)
            if problem:
                self.run.log(f"round_{r} is damaged ({problem}); running it again")
            if problem is not None:
                return r
        return self.cfg.num_rounds + 1

    def resume_step(self, first: int) -> int | None:
        """The last step metrics.jsonl keeps: the end of the last finished round, or the interrupted round's last
        good checkpoint (its events after that are logged again)."""
        if first == 0:
            return None
        step = self.done(first - 1).get("step", 0)
        checkpoint = latest_good(self.folder(first), lambda _: None) if first <= self.cfg.num_rounds else None
        return step + (checkpoint.step if checkpoint is not None else 0)

    def weights(self, round_number: int) -> dict[str, torch.Tensor]:
        return load_file(str(self.folder(round_number) / WEIGHTS))

    def finish(self, round_number: int, step: int, event: dict | None, weights, guard_state: dict) -> None:
        if self.run.dist.is_main:
            folder = self.folder(round_number)
            record = {"step": step, "event": event, "guard": guard_state}
            if weights is not None:
                atomic_save_tensors(folder / WEIGHTS, weights)
                record["weights_sha256"] = sha256_file(folder / WEIGHTS)
            atomic_write_json(folder / ROUND_FILE, record)  # last: its presence means the round is whole
            for checkpoint in folder.glob("checkpoint-*"):  # the round's weights are kept above
                shutil.rmtree(checkpoint, ignore_errors=True)
        self.run.dist.barrier()

    def rollout(self, round_number: int) -> list[Group] | None:
        path = self.folder(round_number) / "rollout.json"
        if not (self.run.resuming and path.is_file()):
            return None
        try:
            rows = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            self.run.log(f"round_{round_number}/rollout.json is damaged ({err}); sampling the round again")
            return None
        groups = []
        for row in rows:
            completions = [Completion(text, ids, reason)
                           for text, ids, reason in zip(row["texts"], row["response_ids"], row["finish"], strict=True)]
            judged = JudgedGroup.from_dict(row["judged"]) if row.get("judged") else None
            groups.append(Group(row["prompt"], row["prompt_ids"], completions, row["response_ids"], row["rewards"],
                                row["per_function"], judged))
        return groups

    def write_rollout(self, round_number: int, groups: list[Group]) -> None:
        if self.run.dist.is_main:
            folder = self.folder(round_number)
            rows = [{"prompt": g.prompt, "prompt_ids": g.prompt_ids, "response_ids": g.response_ids,
                     "texts": [c.text for c in g.completions], "finish": [c.finish_reason for c in g.completions],
                     "rewards": g.rewards, "per_function": g.per_function,
                     "judged": g.judged.to_dict() if g.judged is not None else None} for g in groups]
            atomic_write_text(folder / "pairs.jsonl", pairs_jsonl(groups))
            write_samples(folder / "samples.jsonl", groups)
            atomic_write_json(folder / "rollout.json", rows)  # last: its presence means the rollout is whole
        self.run.dist.barrier()


def pairs_jsonl(groups: list[Group]) -> str:
    """Best-vs-worst pairs as conversational preference rows with their rewards (and, for judged pairs, the
    judge's selection scores and confidence)."""
    rows = []
    for g in groups:
        pair = g.pair()
        if pair is None:
            continue
        best, worst = pair
        row = {
            "prompt": g.prompt,
            "chosen": [{"role": "assistant", "content": g.completions[best].text}],
            "rejected": [{"role": "assistant", "content": g.completions[worst].text}],
            "score_chosen": g.rewards[best],
            "score_rejected": g.rewards[worst],
        }
        if g.judged is not None:
            row.update(judge_score_chosen=g.judged.scores[best], judge_score_rejected=g.judged.scores[worst],
                       judge_confidence=g.judged.confidence)
        rows.append(json.dumps(row, ensure_ascii=False))
    return "".join(row + "\n" for row in rows)


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


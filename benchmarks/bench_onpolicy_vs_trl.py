"""directalign vs TRL 1.16 on-policy: GRPO (GRPOTrainer) or online DPO (trl.experimental's OnlineDPOTrainer), the
same run for both, each in fresh processes, alternating over repetitions.

    python benchmarks/bench_onpolicy_vs_trl.py --method grpo [--steps 6] [--reps 2] [--json]
    python benchmarks/bench_onpolicy_vs_trl.py --method online-dpo

The run: the embedded SmolLM2-135M-Instruct in fp32, LoRA r 16 / alpha 32 on q_proj and v_proj, the built-in
verifiable tasks' training prompts (the same --prompts prompts for both, in file order for TRL, seeded order for
directalign), the built-in verifier as the reward function (directalign.generation.rewards.builtin_reward, a
plain callable both call), --prompts-per-step prompts per optimizer step, --max-new-tokens new tokens per
completion at temperature 1, AdamW lr --lr, linear decay, no warm-up, clipping at 1.0, no gradient
checkpointing, seed 42. GRPO: num_generations 4, beta 0 (TRL's default: no reference pass), one update per
generation batch, token-level loss normalisation (TRL's "dapo" default; directalign's grpo loss divides by
the step's completion tokens too). Online DPO: TRL's OnlineDPOTrainer samples 2 completions per prompt (fixed
in its code), so both systems run num_generations 2, sigmoid loss, beta 0.1, the reference = the model with its
LoRA disabled.

Each measurement is a fresh subprocess (peak RSS is ru_maxrss of that process). After one warm-up run of each
system (1 step), the systems alternate over --reps repetitions (TRL first in odd ones) and medians are reported.

Timing window: from the first generation call to the end of the last optimizer step (model loading, PEFT
wrapping and the final held-out eval excluded), for both. completions/s = steps x prompts x completions per
prompt / window; steps/s = steps / window. The split: generation = time inside the generate call (TRL:
GRPOTrainer._generate, OnlineDPOTrainer._generate; directalign: the sampler called by the trainer), scoring =
time inside the reward call (TRL: _calculate_rewards / the reward funcs; directalign: reward_breakdown),
training = the rest of the window (log-probs, loss, backward, optimizer, bookkeeping). Held-out reward: after
training, the same code (directalign's greedy generator and the verifier) answers --held-out held-out prompts
with each system's trained model, the same prompts for both.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = dict(lora_r=16, lora_alpha=32, seed=42, temperature=1.0, beta_dpo=0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", choices=("grpo", "online-dpo"), default="grpo")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps of each measured run")
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--prompts", type=int, default=32, help="training prompts of the built-in tasks")
    parser.add_argument("--held-out", type=int, default=16, help="held-out prompts answered after training")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch threads in every run (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--child", choices=("trl", "directalign"), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.child:
        result = (run_trl if args.child == "trl" else run_directalign)(args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        Path(args.result).write_text(json.dumps(result))
        return 0
    return compare(args)


def generations(method: str) -> int:
    return 4 if method == "grpo" else 2


def prompt_sets(args):
    from directalign.data.prompts import builtin_prompt_sets

    return builtin_prompt_sets(args.prompts, args.held_out, [], seed=SETTINGS["seed"])


def run_child(system: str, args, steps: int, workdir: Path) -> dict:
    result = workdir / f"{system}-{time.monotonic_ns()}.json"
    env = dict(os.environ, TQDM_DISABLE="1", TOKENIZERS_PARALLELISM="false", TRL_EXPERIMENTAL_SILENCE="1")
    cmd = [sys.executable, __file__, "--child", system, "--result", str(result), "--method", args.method,
           "--steps", str(steps), "--prompts-per-step", str(args.prompts_per_step), "--max-new-tokens",
           str(args.max_new_tokens), "--prompts", str(args.prompts), "--held-out", str(args.held_out),
           "--lr", str(args.lr)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
        env["OMP_NUM_THREADS"] = str(args.threads)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=workdir)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"{system} run failed (exit {proc.returncode})")
    return json.loads(result.read_text())


def compare(args) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bench-onpolicy-"))
    held = args.held_out
    args.held_out = 0
    for system in ("trl", "directalign"):  # warm-up: file caches, imports
        run_child(system, args, 1, workdir)
    args.held_out = held
    runs: dict[str, list[dict]] = {"trl": [], "directalign": []}
    for rep in range(args.reps):
        for system in ("trl", "directalign") if rep % 2 == 0 else ("directalign", "trl"):
            runs[system].append(run_child(system, args, args.steps, workdir))
    summary = summarise(args, runs)
    if args.json:
        print(json.dumps(summary))
    else:
        print_report(args, summary)
    return 0


KEYS = ("completions_per_s", "steps_per_s", "window_s", "generation_s", "scoring_s", "training_s", "peak_rss_mb",
        "heldout_reward")


def summarise(args, runs: dict[str, list[dict]]) -> dict:
    medians = {system: {k: statistics.median(r[k] for r in rs) for k in KEYS} for system, rs in runs.items()}
    ours, theirs = medians["directalign"], medians["trl"]
    return {
        "method": args.method, "steps": args.steps, "prompts_per_step": args.prompts_per_step,
        "completions_per_prompt": generations(args.method), "max_new_tokens": args.max_new_tokens,
        "reps": args.reps, "threads": args.threads, "medians": medians,
        "completions_per_s_ratio": ours["completions_per_s"] / theirs["completions_per_s"],
        "steps_per_s_ratio": ours["steps_per_s"] / theirs["steps_per_s"],
        "peak_rss_ratio": ours["peak_rss_mb"] / theirs["peak_rss_mb"],
        "runs": runs,
    }


def print_report(args, s: dict) -> None:
    ours, theirs = s["medians"]["directalign"], s["medians"]["trl"]
    print(f"{args.method}: {s['steps']} steps x {s['prompts_per_step']} prompts x {s['completions_per_prompt']} "
          f"completions of <= {s['max_new_tokens']} tokens, median of {s['reps']} runs each")
    print(f"{'':<22}{'TRL 1.16':>12}{'directalign':>14}{'ratio':>9}")
    rows = [("completions/s", "completions_per_s", ".2f"), ("optimizer steps/s", "steps_per_s", ".3f"),
            ("window s", "window_s", ".1f"), ("  generation s", "generation_s", ".1f"),
            ("  scoring s", "scoring_s", ".2f"), ("  training s", "training_s", ".1f"),
            ("peak RSS MB", "peak_rss_mb", ".0f"), ("held-out reward", "heldout_reward", ".3f")]
    for label, key, fmt in rows:
        ratio = ours[key] / theirs[key] if theirs[key] else float("nan")
        print(f"{label:<22}{theirs[key]:>12{fmt}}{ours[key]:>14{fmt}}{ratio:>8.2f}x")


# The children.


class Clock:
    """Seconds spent inside wrapped functions, by name, and the first call's start."""

    def __init__(self):
        self.spent: dict[str, float] = {"generation": 0.0, "scoring": 0.0}
        self.first: float | None = None

    def wrap(self, name: str, fn):
        def timed(*a, **kw):
            start = time.perf_counter()
            if self.first is None:
                self.first = start
            try:
                return fn(*a, **kw)
            finally:
                self.spent[name] += time.perf_counter() - start

        return timed

    def result(self, end: float, steps: int, completions: int) -> dict:
        window = end - self.first
        return {"window_s": window, "generation_s": self.spent["generation"], "scoring_s": self.spent["scoring"],
                "training_s": window - self.spent["generation"] - self.spent["scoring"],
                "completions_per_s": completions / window, "steps_per_s": steps / window, "steps": steps}


def heldout_reward(model, tokenizer, args) -> float:
    """Greedy answers to the held-out prompts, scored by the verifier: the same code for both systems."""
    if not args.held_out:
        return float("nan")
    from directalign.generation.base import GenerationConfig, make_generator
    from directalign.generation.rewards import builtin_reward

    _, held = prompt_sets(args)
    generator = make_generator("transformers", model=model.eval(), tokenizer=tokenizer, batch_size=16)
    answers = generator.generate(held.prompts, GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=0.0))
    scores = builtin_reward(held.prompts, [group[0].text for group in answers])
    return sum(scores) / len(scores)


def run_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback

    from directalign.generation.rewards import builtin_reward
    from directalign.models.loading import load_tokenizer, resolve_model

    model = AutoModelForCausalLM.from_pretrained(resolve_model("smollm2-135m-instruct"), dtype=torch.float32,
                                                 attn_implementation="sdpa")
    tokenizer = load_tokenizer()
    train, _ = prompt_sets(args)
    rows = Dataset.from_list([{"prompt": p} for p in train.prompts])
    clock = Clock()
    k = generations(args.method)

    def reward(prompts, completions, **kwargs):
        return builtin_reward(prompts, completions)

    reward.__name__ = "builtin_reward"
    common = dict(
        output_dir=tempfile.mkdtemp(), learning_rate=args.lr, max_steps=args.steps, lr_scheduler_type="linear",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, seed=SETTINGS["seed"], bf16=False, use_cpu=True,
        gradient_checkpointing=False, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        temperature=SETTINGS["temperature"],
    )
    lora = LoraConfig(r=SETTINGS["lora_r"], lora_alpha=SETTINGS["lora_alpha"], lora_dropout=0.0,
                      target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    if args.method == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        config = GRPOConfig(**common, per_device_train_batch_size=args.prompts_per_step * k, num_generations=k,
                            max_completion_length=args.max_new_tokens, beta=0.0, shuffle_dataset=False)
        trainer_class = GRPOTrainer
    else:
        from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

        config = OnlineDPOConfig(**common, per_device_train_batch_size=args.prompts_per_step,
                                 max_new_tokens=args.max_new_tokens, beta=SETTINGS["beta_dpo"], loss_type="sigmoid")
        trainer_class = OnlineDPOTrainer
    step_ends: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, *a, **kw):
            step_ends.append(time.perf_counter())

    trainer = trainer_class(model=model, reward_funcs=[reward], args=config, train_dataset=rows,
                            processing_class=tokenizer, peft_config=lora, callbacks=[StepTimes()])
    # Instrumentation only: the timers wrap the trainer's own methods, which run unchanged.
    trainer._generate = clock.wrap("generation", trainer._generate)
    if hasattr(trainer, "_calculate_rewards"):
        trainer._calculate_rewards = clock.wrap("scoring", trainer._calculate_rewards)
    else:  # OnlineDPOTrainer scores inside training_step: time the reward functions themselves
        trainer.reward_funcs = [clock.wrap("scoring", f) for f in trainer.reward_funcs]
    trainer.train()
    result = clock.result(step_ends[-1], len(step_ends), len(step_ends) * args.prompts_per_step * k)
    result["heldout_reward"] = heldout_reward(trainer.model, tokenizer, args)
    return result


def run_directalign(args) -> dict:
    from directalign.config import load_config
    from directalign.models.loading import load_tokenizer
    from directalign.training import rollout

    clock = Clock()
    # Instrumentation only: the timers wrap the functions the trainers call, which run unchanged.
    rollout.generate_seeded = clock.wrap("generation", rollout.generate_seeded)
    rollout.reward_breakdown = clock.wrap("scoring", rollout.reward_breakdown)
    k = generations(args.method)
    out = tempfile.mkdtemp()
    overrides = dict(
        output_dir=out, resume=False, builtin_train_prompts=args.prompts, builtin_eval_prompts=0,
        eval_before_training=False, kl_prompts=0, per_device_train_batch_size=args.prompts_per_step,
        num_generations=k, max_new_tokens=args.max_new_tokens, temperature=SETTINGS["temperature"],
        learning_rate=args.lr, max_steps=args.steps, warmup_ratio=0, seed=SETTINGS["seed"],
        lora_r=SETTINGS["lora_r"], lora_alpha=SETTINGS["lora_alpha"], lora_target_modules=["q_proj", "v_proj"],
        logging_steps=1, save_steps=0, generation_batch_size=args.prompts_per_step,
    )
    step_ends: list[float] = []
    if args.method == "grpo":
        from directalign.training.grpo import grpo as trainer

        overrides["beta"] = 0.0
    else:
        from directalign.training.online import online_dpo as trainer

        overrides["beta"] = SETTINGS["beta_dpo"]
    cfg = load_config(args.method, overrides=overrides)
    result = trainer(cfg, on_step=lambda step, metrics: step_ends.append(time.perf_counter()))
    stats = clock.result(step_ends[-1], len(step_ends), len(step_ends) * args.prompts_per_step * k)
    if args.held_out:
        from peft import PeftModel

        from directalign.models.loading import load_model

        model = PeftModel.from_pretrained(load_model(), str(Path(result.output_dir) / "adapter"))
        stats["heldout_reward"] = heldout_reward(model, load_tokenizer(), args)
    else:
        stats["heldout_reward"] = float("nan")
    return stats


if __name__ == "__main__":
    raise SystemExit(main())

"""directalign vs TRL 1.16's DPOTrainer: the same DPO run, each system at its best, in fresh processes.

    python benchmarks/bench_vs_trl.py --data FILE --pairs 48 [--bf16] [--reps 2] [--json]
    python benchmarks/bench_vs_trl.py --scaling      # our throughput vs prompt length and responses per prompt

The run: the first N pairs of FILE (any format directalign reads; both systems get the same records, written once
as TRL's conversational JSONL), the embedded SmolLM2-135M-Instruct in fp32, LoRA r 16 / alpha 32 on q_proj and
v_proj, max_length 512, batch 2 x accumulation 4 (8 pairs per step), one epoch in file order, beta 0.1, sigmoid
loss, AdamW lr 5e-5, linear decay, no warm-up, clipping at 1.0, seed 42. Both systems precompute the reference
log-probs before training (TRL's best setting, precompute_ref_log_probs=True; directalign's cache starts empty in
every run) and run without gradient checkpointing. TRL uses its defaults otherwise (padded rows); directalign the
packed layout with rows of up to 4096 tokens, so that each micro-batch of 2 pairs is one row without padding.
With --bf16, directalign also runs with bf16 autocast, compared with TRL in fp32 and with itself.

Each measurement is a fresh subprocess (so peak RSS, ru_maxrss of that process, is per system); after one warm-up
run of each, the systems alternate over --reps repetitions and the medians are reported.

Timing: pairs/s = N / (tokenisation + reference precompute + training), model loading excluded, for both; the
training loop alone is reported too. tokens/s counts the same dataset tokens for both systems: prompt + chosen
plus prompt + rejected of each pair (what a padded-row trainer computes, padding excluded). "CPU s" is the process
CPU time over the same window: on a machine shared with other jobs it tracks the work better than wall time
(run with --threads 1 for that, as spinning OpenMP threads count as CPU time too).

FLOPs, counting matmuls only (attention scores excluded), with B = decoder parameters (106.2M, embedding excluded),
H = LM head parameters (28.3M, the tied embedding), R = response tokens: a token through the decoder costs 2B
forward, 2B backward (input gradients only: the base weights are frozen and LoRA's 0.9M parameters are negligible)
and 2B in the reference forward; the LM head runs on response tokens only (2H each in the three passes). So
    FLOPs = 4 * B * T_policy + 2 * B * T_reference + 6 * H * R.
MFU uses the dataset tokens for T (the same useful work for both systems, so the MFU ratio is the speedup; a
system that computes each prompt once can exceed 100%); HFU uses the positions each system actually runs,
padding included (TRL: padded rows of 2 pairs, for training and precompute; directalign: packed micro-batches,
precompute in batches of 8 records). Both are divided by the measured fp32 matmul rate (a 4096 x 4096
torch.matmul), the bf16 run's HFU by the bf16 rate.
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

ROW_TOKENS = 4096  # directalign's packed rows: a micro-batch (and a precompute batch of 8 records) in one row
SETTINGS = dict(max_length=512, batch=2, accumulation=4, lora_r=16, lora_alpha=32, beta=0.1, lr=5e-5, seed=42)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="preference data file (e.g. hh-rlhf harmless-base test.jsonl.gz)")
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--bf16", action="store_true", help="also run directalign with bf16 autocast")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--warmup-pairs", type=int, default=8, help="pairs of the warm-up run of each system")
    parser.add_argument("--threads", type=int, help="torch threads in every run (default: torch's, one per core)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    parser.add_argument("--scaling", action="store_true", help="print the scaling table instead")
    parser.add_argument("--child", choices=["trl", "directalign", "directalign-bf16"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        result = run_trl(args.data) if args.child == "trl" else run_directalign(args.data, args.child.endswith("bf16"))
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        Path(args.result).write_text(json.dumps(result))
        return 0
    if args.scaling:
        from scaling import main as scaling_main

        return scaling_main()
    if not args.data:
        parser.error("--data is required")
    return compare(args)


# ---------------------------------------------------------------- parent: data, alternation, report


def write_pairs(source: str, n: int, path: Path) -> dict:
    """The first n records of `source` as TRL conversational rows, and their token counts."""
    from directalign.data.formats import load_records
    from directalign.data.tokenize import tokenize_records
    from directalign.models.loading import load_tokenizer

    records = load_records(source).records[:n]
    path.write_text("".join(
        json.dumps({"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected}) + "\n" for r in records
    ))
    tokenized = tokenize_records(records, load_tokenizer(), max_length=None, max_prompt_length=None).records
    lengths = [(len(t.prompt_ids), len(t.response_ids[0]), len(t.response_ids[1])) for t in tokenized]
    return {
        "pairs": len(records),
        "dataset_tokens": sum(2 * p + c + r for p, c, r in lengths),
        "response_tokens": sum(c + r for _, c, r in lengths),
        "longest_sequence": max(p + max(c, r) for p, c, r in lengths),
        "positions": executed_positions(tokenized, lengths),
    }


def executed_positions(tokenized, lengths) -> dict:
    """Token positions (padding included) each system runs through the decoder: (policy, reference)."""
    from directalign.data.batching import build_batch

    def padded(group):  # TRL: prompt + chosen and prompt + rejected rows, padded to the longest of the batch
        return 2 * len(group) * max(p + max(c, r) for p, c, r in group)

    def packed(records):
        return build_batch(records, 0, "packed", ROW_TOKENS).input_ids.numel()

    b = SETTINGS["batch"]
    trl = sum(padded(lengths[i : i + b]) for i in range(0, len(lengths), b))  # precompute batch = train batch
    return {
        "trl": (trl, trl),
        "directalign": (sum(packed(tokenized[i : i + b]) for i in range(0, len(tokenized), b)),
                        sum(packed(tokenized[i : i + 8]) for i in range(0, len(tokenized), 8))),
    }


def model_flops(body: int, head: int, policy_tokens: int, reference_tokens: int, response_tokens: int) -> float:
    """Matmul FLOPs of a LoRA DPO epoch with the reference precomputed (see the module docstring)."""
    return 4 * body * policy_tokens + 2 * body * reference_tokens + 6 * head * response_tokens


def run_child(system: str, data: Path, workdir: Path, threads: int | None) -> dict:
    result = workdir / f"{system}-{time.monotonic_ns()}.json"
    env = dict(os.environ, TQDM_DISABLE="1", TOKENIZERS_PARALLELISM="false")
    # A fresh DIRECTALIGN_HOME per run: the reference cache starts empty; the model folder is shared.
    from directalign.models.loading import resolve_model

    home = Path(tempfile.mkdtemp(dir=workdir))
    (home / "models").mkdir()
    model_dir = Path(resolve_model("smollm2-135m-instruct"))
    (home / "models" / model_dir.name).symlink_to(model_dir)
    env["DIRECTALIGN_HOME"] = str(home)
    cmd = [sys.executable, __file__, "--child", system, "--data", str(data), "--result", str(result)]
    if threads:
        cmd += ["--threads", str(threads)]
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=workdir)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"{system} run failed (exit {proc.returncode})")
    return json.loads(result.read_text())


def matmul_flops(dtype_name: str, size: int = 4096, repeats: int = 5) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def compare(args) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bench-vs-trl-"))
    data, warm = workdir / "pairs.jsonl", workdir / "warmup.jsonl"
    info = write_pairs(args.data, args.pairs, data)
    write_pairs(args.data, args.warmup_pairs, warm)
    systems = ["trl", "directalign"] + (["directalign-bf16"] if args.bf16 else [])
    print(f"data: first {info['pairs']} pairs of {args.data}; {info['dataset_tokens']} dataset tokens; longest "
          f"sequence {info['longest_sequence']} tokens (max_length {SETTINGS['max_length']})", flush=True)
    if info["longest_sequence"] > SETTINGS["max_length"]:
        print("warning: some sequences exceed max_length; TRL and directalign truncate them differently, so the "
              "losses may differ", flush=True)
    for system in systems:
        run_child(system, warm, workdir, args.threads)
    runs: dict[str, list[dict]] = {s: [] for s in systems}
    for rep in range(args.reps):
        for system in systems:
            runs[system].append(run_child(system, data, workdir, args.threads))
            r = runs[system][-1]
            print(f"  rep {rep + 1} {system:17s} {args.pairs / r['total_s']:.3f} pairs/s, "
                  f"first loss {r['step_losses'][0]:.6f}, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    flops32, flops16 = matmul_flops("float32"), matmul_flops("bfloat16")
    summary = summarise(runs, info, flops32, flops16)
    print_report(summary, runs, info, flops32, flops16)
    if args.json:
        print(json.dumps(summary))
    return 0


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def summarise(runs: dict, info: dict, flops32: float, flops16: float) -> dict:
    n, tokens, responses = info["pairs"], info["dataset_tokens"], info["response_tokens"]
    body, head = runs["directalign"][0]["parameters"]
    useful = model_flops(body, head, tokens, tokens, responses)
    out: dict = {"pairs": n, "dataset_tokens": tokens, "body_parameters": body, "head_parameters": head,
                 "useful_gflop": useful / 1e9, "matmul_gflops_fp32": flops32 / 1e9,
                 "matmul_gflops_bf16": flops16 / 1e9}
    for system, rs in runs.items():
        key = system.replace("-", "_")
        total, train = _median(rs, "total_s"), _median(rs, "train_s")
        out[f"{key}_pairs_per_s"] = n / total
        out[f"{key}_train_only_pairs_per_s"] = n / train
        out[f"{key}_tokens_per_s"] = tokens / total
        out[f"{key}_setup_s"] = _median(rs, "setup_s")
        out[f"{key}_cpu_s"] = _median(rs, "cpu_s")
        out[f"{key}_peak_rss_mb"] = _median(rs, "peak_rss_mb")
        out[f"{key}_first_loss"] = rs[0]["step_losses"][0]
        out[f"{key}_mfu"] = useful / total / flops32
        executed = model_flops(body, head, *info["positions"][system.removesuffix("-bf16")], responses)
        out[f"{key}_hfu"] = executed / total / (flops16 if system.endswith("bf16") else flops32)
    ours, trl = runs["directalign"][0]["step_losses"], runs["trl"][0]["step_losses"]
    out.update(
        speedup=out["directalign_pairs_per_s"] / out["trl_pairs_per_s"],
        train_only_speedup=out["directalign_train_only_pairs_per_s"] / out["trl_train_only_pairs_per_s"],
        cpu_time_ratio=out["trl_cpu_s"] / out["directalign_cpu_s"],
        rss_ratio=out["directalign_peak_rss_mb"] / out["trl_peak_rss_mb"],
        first_loss_abs_diff=abs(ours[0] - trl[0]),
        max_step_loss_abs_diff=max(abs(a - b) for a, b in zip(ours, trl, strict=True)),
        mfu=out["directalign_mfu"],
    )
    if "directalign-bf16" in runs:
        bf16 = runs["directalign-bf16"][0]
        out.update(
            bf16_speedup_vs_trl_fp32=out["directalign_bf16_pairs_per_s"] / out["trl_pairs_per_s"],
            bf16_first_loss_abs_diff_vs_fp32=abs(bf16["step_losses"][0] - ours[0]),
            bf16_max_step_loss_abs_diff_vs_fp32=max(
                abs(a - b) for a, b in zip(bf16["step_losses"], ours, strict=True)),
            bf16_first_logps_chosen_abs_diff_vs_fp32=abs(bf16["first_logps_chosen"] - runs["directalign"][0][
                "first_logps_chosen"]),
        )
    return out


def print_report(s: dict, runs: dict, info: dict, flops32: float, flops16: float) -> None:
    print(f"\nmachine: {os.cpu_count()} cores; measured matmul {flops32 / 1e9:.0f} GFLOP/s fp32, "
          f"{flops16 / 1e9:.0f} GFLOP/s bf16")
    print(f"{'system':18s} {'pairs/s':>8s} {'train-only':>10s} {'tokens/s':>9s} {'setup s':>8s} {'peak RSS MB':>11s} "
          f"{'first loss':>11s} {'MFU':>6s} {'HFU':>6s} {'CPU s':>7s}")
    for system in runs:
        k = system.replace("-", "_")
        print(f"{system:18s} {s[k + '_pairs_per_s']:8.3f} {s[k + '_train_only_pairs_per_s']:10.3f} "
              f"{s[k + '_tokens_per_s']:9.1f} {s[k + '_setup_s']:8.1f} {s[k + '_peak_rss_mb']:11.0f} "
              f"{s[k + '_first_loss']:11.6f} {s[k + '_mfu']:6.1%} {s[k + '_hfu']:6.1%} {s[k + '_cpu_s']:7.1f}")
    print(f"directalign / TRL: {s['speedup']:.2f}x pairs/s (training loop alone {s['train_only_speedup']:.2f}x), "
          f"{s['rss_ratio']:.2f}x peak RSS; TRL / directalign CPU time {s['cpu_time_ratio']:.2f}x")
    print(f"loss per step, directalign vs TRL: first step |diff| {s['first_loss_abs_diff']:.2e}, "
          f"max over steps {s['max_step_loss_abs_diff']:.2e}")
    for system, rs in runs.items():
        print(f"  {system:17s} " + " ".join(f"{x:.6f}" for x in rs[0]["step_losses"]))
    if "bf16_speedup_vs_trl_fp32" in s:
        print(f"bf16 autocast: {s['bf16_speedup_vs_trl_fp32']:.2f}x TRL fp32 pairs/s; vs directalign fp32: first "
              f"step loss |diff| {s['bf16_first_loss_abs_diff_vs_fp32']:.2e}, max over steps "
              f"{s['bf16_max_step_loss_abs_diff_vs_fp32']:.2e}, first-step mean logps/chosen |diff| "
              f"{s['bf16_first_logps_chosen_abs_diff_vs_fp32']:.2e} nats (HFU against the bf16 matmul rate)")


# ---------------------------------------------------------------- children: one system, one run


def run_trl(data: str) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from directalign.models.loading import load_tokenizer, resolve_model

    model = AutoModelForCausalLM.from_pretrained(resolve_model("smollm2-135m-instruct"), dtype=torch.float32,
                                                 attn_implementation="sdpa")
    tokenizer = load_tokenizer()
    # In memory, so that TRL's precompute cannot be read from a datasets cache of an earlier run either.
    rows = Dataset.from_list([json.loads(line) for line in Path(data).read_text().splitlines()])
    workdir = tempfile.mkdtemp()
    args = DPOConfig(
        output_dir=workdir, per_device_train_batch_size=SETTINGS["batch"],
        gradient_accumulation_steps=SETTINGS["accumulation"], learning_rate=SETTINGS["lr"], beta=SETTINGS["beta"],
        loss_type=["sigmoid"], max_length=SETTINGS["max_length"], num_train_epochs=1, lr_scheduler_type="linear",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, seed=SETTINGS["seed"], bf16=False, use_cpu=True,
        activation_checkpointing=False, precompute_ref_log_probs=True, train_sampling_strategy="sequential",
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
    )
    lora = LoraConfig(r=SETTINGS["lora_r"], lora_alpha=SETTINGS["lora_alpha"], lora_dropout=0.0,
                      target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    step_ends: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, *args, **kwargs):
            step_ends.append(time.perf_counter())

    cpu_start = time.process_time()
    start = time.perf_counter()  # tokenisation, PEFT wrapping and the reference precompute happen in __init__
    trainer = DPOTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer, peft_config=lora,
                         callbacks=[StepTimes()])
    setup_end = time.perf_counter()
    trainer.train()
    cpu_s = time.process_time() - cpu_start
    logs = [e for e in trainer.state.log_history if "loss" in e and "train_runtime" not in e]
    return {
        "total_s": step_ends[-1] - start, "setup_s": setup_end - start, "train_s": step_ends[-1] - setup_end,
        "cpu_s": cpu_s,
        "step_losses": [e["loss"] for e in logs], "first_logps_chosen": logs[0]["logps/chosen"],
        "parameters": _parameters_of_model(),
    }


def run_directalign(data: str, bf16: bool) -> dict:
    from directalign.config import load_config
    from directalign.training import dpo as loop

    marks: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            begin, cpu_begin = time.perf_counter(), time.process_time()
            value = fn(*args, **kwargs)
            marks[name] = time.perf_counter() - begin
            marks[name + "_cpu"] = time.process_time() - cpu_begin
            marks[name + "_end"], marks[name + "_cpu_end"] = time.perf_counter(), time.process_time()
            return value

        return wrapper

    # Instrumentation only: the timers wrap the loop's own functions, which run unchanged.
    loop.prepare_data = timed("tokenise", loop.prepare_data)
    loop.build_policy = timed("load", loop.build_policy)
    loop.precompute_reference = timed("reference", loop.precompute_reference)
    steps: list[tuple[float, dict]] = []
    cfg = load_config("train", overrides=dict(
        data=data, output_dir=tempfile.mkdtemp(), resume=False, eval_split=0, max_length=SETTINGS["max_length"],
        max_prompt_length=SETTINGS["max_length"] - 128, per_device_train_batch_size=SETTINGS["batch"],
        gradient_accumulation_steps=SETTINGS["accumulation"], learning_rate=SETTINGS["lr"], beta=SETTINGS["beta"],
        lora_r=SETTINGS["lora_r"], lora_alpha=SETTINGS["lora_alpha"], lora_target_modules=["q_proj", "v_proj"],
        warmup_ratio=0, seed=SETTINGS["seed"], train_sampling_strategy="sequential", logging_steps=1, save_steps=0,
        layout="packed", max_tokens_per_row=ROW_TOKENS, precompute_ref_log_probs=True, bf16=bf16,
        eval_before_training=False, kl_prompts=0,
    ))
    loop.train(cfg, on_step=lambda step, metrics: steps.append((time.perf_counter(), metrics, time.process_time())))
    start = marks["load_end"]  # after the model is loaded; the tokenisation before it is added below
    return {
        "total_s": steps[-1][0] - start + marks["tokenise"], "setup_s": marks["tokenise"] + marks["reference"],
        "cpu_s": steps[-1][2] - marks["load_cpu_end"] + marks["tokenise_cpu"],
        "train_s": steps[-1][0] - marks["reference_end"], "step_losses": [m["loss"] for _, m, _ in steps],
        "first_logps_chosen": steps[0][1]["logps/chosen"], "parameters": _parameters_of_model(),
    }


def _parameters_of_model() -> tuple[int, int]:
    """(decoder parameters, LM head parameters) of the base model; the LM head is the tied embedding."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from directalign.models.loading import resolve_model

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(resolve_model("smollm2-135m-instruct")))
    head = model.get_output_embeddings().weight.numel()
    return sum(p.numel() for p in model.parameters()) - head, head


if __name__ == "__main__":
    sys.exit(main())

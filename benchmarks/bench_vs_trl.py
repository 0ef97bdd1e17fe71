"""directalign vs TRL 1.16, the same run of one method, each system at its best, in fresh processes.

    python benchmarks/bench_vs_trl.py --data FILE [--method dpo|kto|rm|orpo|simpo] [--pairs 16] [--reps 1] [--bf16]
                                      [--json]
    python benchmarks/bench_vs_trl.py --scaling      # our throughput vs prompt length and responses per prompt

Methods and the TRL trainer each is compared with: dpo (DPOTrainer, sigmoid loss, beta 0.1), kto (KTOTrainer,
beta 0.1, weights 1: each pair gives its chosen response as desirable and its rejected as undesirable), rm (the
Bradley-Terry reward model, `directalign reward-model train`, vs RewardTrainer; LoRA with the score head trained in
full), orpo (trl.experimental's ORPOTrainer, lambda 0.1) and simpo (trl.experimental's CPOTrainer with loss_type
simpo, beta 2, gamma 0.5, no NLL term). The settings of each are in vs_trl_runs.py, which runs the children.

The run: the first N pairs of FILE (any format directalign reads; both systems get the same records, written once
as TRL's conversational JSONL), the embedded SmolLM2-135M-Instruct in fp32, LoRA r 16 / alpha 32 on q_proj and
v_proj, max_length 512, batch 2 x accumulation 4 (8 pairs, KTO examples, per step), one epoch in file order, AdamW
lr 5e-5, linear decay, no warm-up, clipping at 1.0, seed 42. Where the method has a reference (DPO, KTO) both
systems precompute its log-probs before training (TRL's best setting, precompute_ref_log_probs=True;
directalign's cache starts empty in every run); neither uses gradient checkpointing. TRL uses its defaults
otherwise (padded rows); directalign the packed layout with rows of up to 4096 tokens (and release_freed_memory:
true, engine/memory.py), so that each micro-batch of
2 pairs is one row without padding (the reward model's too: its score head reads each response's last token).
With --bf16, directalign also runs with bf16 autocast, compared with TRL in fp32 and with itself; only then is the
bf16 matmul rate measured (on a CPU without native bf16 it is emulated, and slow to measure too).

Each measurement is a fresh subprocess (so peak RSS, ru_maxrss of that process, is per system); after one warm-up
run of each, the systems alternate over --reps repetitions and the medians are reported.

Equal losses: both systems' first-step loss is reported and `first_loss_abs_diff` is checked against 1e-4. ORPO's
totals differ by definition (TRL's NLL term pools the prompt's tokens in; ours is the response NLL of the paper,
losses/reference_free.py), so for ORPO the check is on the odds-ratio term (`first_preference_term_abs_diff`).

Timing: pairs/s = N / (tokenisation + reference precompute + training), model loading excluded, for both; the
training loop alone is reported too. tokens/s counts the same dataset tokens for both systems: prompt + response
of every response of every pair (what a padded-row trainer computes, padding excluded). "CPU s" is the process
CPU time over the same window: on a machine shared with other jobs it tracks the work better than wall time
(run with --threads 1 for that, as spinning OpenMP threads count as CPU time too).

FLOPs, counting matmuls only (attention scores excluded), with B = decoder parameters (106.2M, embedding excluded),
H = LM head parameters (28.3M, the tied embedding), T = tokens through the decoder, R = response tokens: a pass
with gradients costs 4B per token and 4H per response token (input gradients only: the base weights are frozen
and LoRA's 0.9M parameters are negligible), one without 2B and 2H. DPO runs one of each (the policy; the
reference, once); KTO adds a gradient-free policy pass and a reference pass over the mismatched KL completions
(TRL's work, the useful FLOPs of both; directalign executes one pass with gradients and one reference pass over
records of a prompt, its completion and the previous one, for its HFU); ORPO and SimPO run the policy only; the
reward model has no LM head (H = 0). So for DPO
    FLOPs = 4 * B * T + 2 * B * T + 6 * H * R.
MFU uses the dataset tokens for T (the same useful work for both systems, so the MFU ratio is the speedup; a
system that computes each prompt once can exceed 100%); HFU uses the positions each system actually runs,
padding included (TRL: padded rows of a micro-batch; directalign: packed micro-batches). Both are divided by the
measured fp32 matmul rate (a 4096 x 4096 torch.matmul), the bf16 run's HFU by the bf16 rate; HFU is also given
against the rate at the model's own shapes and each system's mean micro-batch (benchmarks/matmul_rate.py). The
rates are measured before the runs and after them and the better kept: on a shared machine a rate measured
during another job's burst would make the HFU look better than it is.
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

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.matmul_rate import matmul_flops, model_shape_flops  # noqa: E402
from benchmarks.vs_trl_runs import METHODS, MODEL, ROW_TOKENS, SETTINGS, run_directalign, run_trl  # noqa: E402

LOSS_TOLERANCE = 1e-4  # equal first-step losses
# Passes per method: (policy with gradients, policy without, reference); see the module docstring.
PASSES = {"dpo": (1, 0, 1), "kto": (1, 1, 2), "orpo": (1, 0, 0), "simpo": (1, 0, 0), "rm": (1, 0, 0)}
# directalign's KTO scores each prompt's graded example and its z0 pair in one record (training/kto.py: kl_groups):
# one pass with gradients and one reference pass over those records, every response through the head.
OUR_PASSES = {"kto": (1, 0, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="preference data file (e.g. hh-rlhf harmless-base test.jsonl.gz)")
    parser.add_argument("--method", choices=list(METHODS), default="dpo", help="the trainer to compare (default dpo)")
    parser.add_argument("--model", default=MODEL, help="a folder or Hub id of the Llama family (default: the embedded "
                        "SmolLM2-135M-Instruct)")
    parser.add_argument("--pairs", type=int, default=16, help="pairs of the timed runs (default 16: one method's "
                        "default run stays under 10 minutes on a 2-core CPU)")
    parser.add_argument("--bf16", action="store_true", help="also run directalign with bf16 autocast")
    parser.add_argument("--reps", type=int, default=1, help="timed runs of each system, alternating (medians)")
    parser.add_argument("--warmup-pairs", type=int, default=2, help="pairs of the warm-up run of each system")
    parser.add_argument("--threads", type=int, help="torch threads in every run (default: torch's, one per core)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    parser.add_argument("--scaling", action="store_true", help="print the scaling table instead")
    parser.add_argument("--child", choices=["trl", "directalign", "directalign-bf16"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("pairs", "reps", "warmup_pairs", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.child:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        if args.child == "trl":
            result = run_trl(args.method, args.data, args.model)
        else:
            result = run_directalign(args.method, args.data, args.child.endswith("bf16"), args.model)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        Path(args.result).write_text(json.dumps(result))
        return 0
    if args.scaling:
        from benchmarks import scaling

        return scaling.main([])  # its defaults (sys.argv holds --scaling, which it does not take)
    if not args.data:
        parser.error("--data is required")
    return compare(args)


# ---------------------------------------------------------------- parent: data, alternation, report


def write_pairs(source: str, n: int, path: Path, method: str = "dpo", model: str = MODEL) -> dict:
    """The first n pairs of `source` as TRL conversational rows (KTO: unpaired prompt/completion/label rows, in
    directalign's order), and their token counts."""
    from directalign.data.formats import load_records
    from directalign.data.tokenize import tokenize_records
    from directalign.data.unpaired import unpair
    from directalign.models.loading import load_tokenizer

    records = load_records(source).records[:n]
    pairs = sum(len(r.pairs) for r in records)
    if METHODS[method].unpaired:
        records = unpair(records)
        rows = [{"prompt": r.prompt, "completion": r.responses[0], "label": r.labels[0]} for r in records]
    else:
        rows = [{"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected} for r in records]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tokenized = tokenize_records(records, load_tokenizer(model), max_length=None, max_prompt_length=None).records
    sequences = [[len(t.prompt_ids) + len(x) for x in t.response_ids] for t in tokenized]
    return {
        "pairs": pairs,
        "dataset_tokens": sum(sum(s) for s in sequences),
        "response_tokens": sum(len(x) for t in tokenized for x in t.response_ids),
        "longest_sequence": max(max(s) for s in sequences),
        "positions": executed_positions(tokenized, sequences, method),
        "micro_batches": -(-len(tokenized) // SETTINGS["batch"]),
    }


def executed_positions(tokenized, sequences, method: str) -> dict:
    """Token positions (padding included) each system runs through the decoder in one pass over the data."""
    from directalign.data.batching import build_batch

    def padded(group):  # TRL: every sequence padded to the batch's longest
        return sum(len(s) for s in group) * max(max(s) for s in group)

    def grouped(records):  # directalign's KTO: prompt j with completion j and completion j-1
        from directalign.training.kto import kl_groups

        return kl_groups(records) if METHODS[method].unpaired else records

    b = SETTINGS["batch"]
    trl = sum(padded(sequences[i : i + b]) for i in range(0, len(sequences), b))
    ours = sum(build_batch(grouped(tokenized[i : i + b]), 0, "packed", ROW_TOKENS).input_ids.numel()
               for i in range(0, len(tokenized), b))
    return {"trl": trl, "directalign": ours}


def model_flops(method: str, body: int, head: int, tokens: int, response_tokens: int, passes=None) -> float:
    """Matmul FLOPs of one epoch of `method` with the reference precomputed (see the module docstring)."""
    with_grad, without, reference = passes or PASSES[method]
    head = 0 if method == "rm" else head
    return (with_grad * (4 * body * tokens + 4 * head * response_tokens)
            + (without + reference) * (2 * body * tokens + 2 * head * response_tokens))


def run_child(system: str, data: Path, workdir: Path, threads: int | None, method: str = "dpo",
              model: str = MODEL) -> dict:
    result = workdir / f"{system}-{time.monotonic_ns()}.json"
    env = dict(os.environ, TQDM_DISABLE="1", TOKENIZERS_PARALLELISM="false", TRL_EXPERIMENTAL_SILENCE="1")
    # A fresh DIRECTALIGN_HOME per run: the reference cache starts empty; the model folder is shared.
    from directalign.models.loading import resolve_model

    home = Path(tempfile.mkdtemp(dir=workdir))
    (home / "models").mkdir()
    model_dir = Path(resolve_model(model))
    (home / "models" / model_dir.name).symlink_to(model_dir)
    env["DIRECTALIGN_HOME"] = str(home)
    cmd = [sys.executable, __file__, "--child", system, "--method", method, "--model", model, "--data", str(data),
           "--result", str(result)]
    if threads:
        cmd += ["--threads", str(threads)]
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=workdir)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"{method} {system} run failed (exit {proc.returncode})")
    return json.loads(result.read_text())


def compare(args) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bench-vs-trl-"))
    data, warm = workdir / "pairs.jsonl", workdir / "warmup.jsonl"
    info = write_pairs(args.data, args.pairs, data, args.method, args.model)
    write_pairs(args.data, args.warmup_pairs, warm, args.method, args.model)
    systems = ["trl", "directalign"] + (["directalign-bf16"] if args.bf16 else [])
    print(f"method {args.method}: directalign vs TRL's {METHODS[args.method].trl_trainer.split(':')[1]}", flush=True)
    print(f"data: first {info['pairs']} pairs of {args.data}; {info['dataset_tokens']} dataset tokens; longest "
          f"sequence {info['longest_sequence']} tokens (max_length {SETTINGS['max_length']})", flush=True)
    if info["longest_sequence"] > SETTINGS["max_length"]:
        print("warning: some sequences exceed max_length; TRL and directalign truncate them differently, so the "
              "losses may differ", flush=True)
    rates = measure_rates(info, args)  # before the runs and after them; the better of the two is kept
    for system in systems:
        run_child(system, warm, workdir, args.threads, args.method, args.model)
    runs: dict[str, list[dict]] = {s: [] for s in systems}
    for rep in range(args.reps):
        for system in systems:
            runs[system].append(run_child(system, data, workdir, args.threads, args.method, args.model))
            r = runs[system][-1]
            print(f"  rep {rep + 1} {system:17s} {info['pairs'] / r['total_s']:.3f} pairs/s, "
                  f"first loss {r['step_losses'][0]:.6f}, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    again = measure_rates(info, args)
    flops32, flops16, shape_rates = (max(rates[0], again[0]), again[1] and max(rates[1], again[1]),
                                     {k: max(v, again[2][k]) for k, v in rates[2].items()})
    summary = summarise(runs, info, flops32, flops16, args.method, shape_rates)
    print_report(summary, runs, info, flops32, flops16)
    if args.json:
        print(json.dumps(summary))
    return 0


def measure_rates(info: dict, args) -> tuple[float, float | None, dict[str, float]]:
    """fp32 square matmul rate, bf16 only when --bf16 runs, and each system's rate at the model's shapes."""
    flops16 = matmul_flops("bfloat16") if args.bf16 else None
    return matmul_flops("float32"), flops16, shape_flops(info, args.method, args.model)


def shape_flops(info: dict, method: str, model: str = MODEL) -> dict[str, float]:
    """Each system's fp32 matmul rate at the model's shapes and its mean micro-batch (benchmarks/matmul_rate.py)."""
    from transformers import AutoConfig

    from directalign.models.loading import resolve_model

    config = AutoConfig.from_pretrained(resolve_model(model))
    head_rows = 0 if method == "rm" else info["response_tokens"] // info["micro_batches"]
    return {system: model_shape_flops(config, positions // info["micro_batches"], head_rows)
            for system, positions in info["positions"].items()}


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def summarise(runs: dict, info: dict, flops32: float, flops16: float | None, method: str = "dpo",
              shape_rates: dict[str, float] | None = None) -> dict:
    n, tokens, responses = info["pairs"], info["dataset_tokens"], info["response_tokens"]
    body, head = runs["directalign"][0]["parameters"]
    useful = model_flops(method, body, head, tokens, responses)
    from directalign.models.cpu import native_bf16

    out: dict = {"method": method, "native_bf16": native_bf16(), "pairs": n, "dataset_tokens": tokens,
                 "body_parameters": body, "head_parameters": head, "useful_gflop": useful / 1e9,
                 "matmul_gflops_fp32": flops32 / 1e9, "matmul_gflops_bf16": None if flops16 is None else flops16 / 1e9}
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
        ours = system.startswith("directalign") and method in OUR_PASSES
        executed = model_flops(method, body, head, info["positions"][system.removesuffix("-bf16")],
                               2 * responses if ours else responses, OUR_PASSES[method] if ours else None)
        out[f"{key}_hfu"] = executed / total / (flops16 if system.endswith("bf16") else flops32)
        if shape_rates and not system.endswith("bf16"):
            out[f"{key}_matmul_gflops_fp32_model_shapes"] = shape_rates[system] / 1e9
            out[f"{key}_hfu_model_shapes"] = executed / total / shape_rates[system]
    ours, trl = runs["directalign"][0], runs["trl"][0]
    term_diff = None
    if ours.get("first_preference_term") is not None and trl.get("first_preference_term") is not None:
        term_diff = abs(ours["first_preference_term"] - trl["first_preference_term"])
    loss_diff = abs(ours["step_losses"][0] - trl["step_losses"][0])
    out.update(
        speedup=out["directalign_pairs_per_s"] / out["trl_pairs_per_s"],
        train_only_speedup=out["directalign_train_only_pairs_per_s"] / out["trl_train_only_pairs_per_s"],
        cpu_time_ratio=out["trl_cpu_s"] / out["directalign_cpu_s"],
        rss_ratio=out["directalign_peak_rss_mb"] / out["trl_peak_rss_mb"],
        first_loss_abs_diff=loss_diff,
        first_preference_term_abs_diff=term_diff,
        first_loss_equal=(term_diff if method == "orpo" else loss_diff) <= LOSS_TOLERANCE,
        max_step_loss_abs_diff=max(abs(a - b) for a, b in zip(ours["step_losses"], trl["step_losses"], strict=True)),
        mfu=out["directalign_mfu"],
        hfu=out["directalign_hfu"],
        hfu_model_shapes=out.get("directalign_hfu_model_shapes"),
    )
    if "directalign-bf16" in runs:
        bf16 = runs["directalign-bf16"][0]
        out.update(
            bf16_speedup_vs_trl_fp32=out["directalign_bf16_pairs_per_s"] / out["trl_pairs_per_s"],
            bf16_first_loss_abs_diff_vs_fp32=abs(bf16["step_losses"][0] - ours["step_losses"][0]),
            bf16_max_step_loss_abs_diff_vs_fp32=max(
                abs(a - b) for a, b in zip(bf16["step_losses"], ours["step_losses"], strict=True)),
        )
        if bf16.get("first_logps_chosen") is not None:
            out["bf16_first_logps_chosen_abs_diff_vs_fp32"] = abs(bf16["first_logps_chosen"]
                                                                  - ours["first_logps_chosen"])
    return out


def print_report(s: dict, runs: dict, info: dict, flops32: float, flops16: float | None) -> None:
    bf16_rate = "" if flops16 is None else f", {flops16 / 1e9:.0f} GFLOP/s bf16"
    bf16_rate += "; native bf16 (AVX512_BF16 or AMX): " + ("yes" if s["native_bf16"] else "no, emulated")
    print(f"\nmachine: {os.cpu_count()} cores; measured matmul {flops32 / 1e9:.0f} GFLOP/s fp32{bf16_rate}")
    print(f"{'system':18s} {'pairs/s':>8s} {'train-only':>10s} {'tokens/s':>9s} {'setup s':>8s} {'peak RSS MB':>11s} "
          f"{'first loss':>11s} {'MFU':>6s} {'HFU':>6s} {'CPU s':>7s}")
    for system in runs:
        k = system.replace("-", "_")
        print(f"{system:18s} {s[k + '_pairs_per_s']:8.3f} {s[k + '_train_only_pairs_per_s']:10.3f} "
              f"{s[k + '_tokens_per_s']:9.1f} {s[k + '_setup_s']:8.1f} {s[k + '_peak_rss_mb']:11.0f} "
              f"{s[k + '_first_loss']:11.6f} {s[k + '_mfu']:6.1%} {s[k + '_hfu']:6.1%} {s[k + '_cpu_s']:7.1f}")
    print(f"directalign / TRL ({s['method']}): {s['speedup']:.2f}x pairs/s (training loop alone "
          f"{s['train_only_speedup']:.2f}x), {s['rss_ratio']:.2f}x peak RSS; TRL / directalign CPU time "
          f"{s['cpu_time_ratio']:.2f}x")
    verdict = "equal" if s["first_loss_equal"] else "NOT equal"
    print(f"loss per step, directalign vs TRL: first step |diff| {s['first_loss_abs_diff']:.2e}, "
          f"max over steps {s['max_step_loss_abs_diff']:.2e}; first step {verdict} within {LOSS_TOLERANCE:g}")
    if s["first_preference_term_abs_diff"] is not None:
        print(f"  the totals differ by the NLL terms' definitions; the odds-ratio term of the first step differs by "
              f"{s['first_preference_term_abs_diff']:.2e}")
    for system, rs in runs.items():
        print(f"  {system:17s} " + " ".join(f"{x:.6f}" for x in rs[0]["step_losses"]))
    for system in ("trl", "directalign"):
        if f"{system}_hfu_model_shapes" in s:
            print(f"{system}: HFU {s[system + '_hfu_model_shapes']:.1%} of the fp32 matmul rate at the model's shapes "
                  f"and its mean micro-batch ({s[system + '_matmul_gflops_fp32_model_shapes']:.0f} GFLOP/s)")
    if "bf16_speedup_vs_trl_fp32" in s:
        logps = s.get("bf16_first_logps_chosen_abs_diff_vs_fp32")
        print(f"bf16 autocast: {s['bf16_speedup_vs_trl_fp32']:.2f}x TRL fp32 pairs/s; vs directalign fp32: first "
              f"step loss |diff| {s['bf16_first_loss_abs_diff_vs_fp32']:.2e}, max over steps "
              f"{s['bf16_max_step_loss_abs_diff_vs_fp32']:.2e}"
              + ("" if logps is None else f", first-step mean logps/chosen |diff| {logps:.2e} nats")
              + " (HFU against the bf16 matmul rate)")


if __name__ == "__main__":
    sys.exit(main())

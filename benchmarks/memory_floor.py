"""The physical floor of a DPO run's peak memory, and how close the run comes to it.

    python benchmarks/memory_floor.py --data FILE [--method dpo] [--pairs 16]

The run is bench_vs_trl.py's (vs_trl_runs.directalign_config: the embedded SmolLM2-135M-Instruct in fp32, LoRA
r 16 on q_proj and v_proj, micro-batches of 2 pairs in one packed row, the reference precomputed). Its floor is
what any trainer of those settings must hold at once at the peak of a step:
- the process before any model: Python, torch, transformers, PEFT and the tokenizer (measured, resident);
- the weights: every parameter's bytes, a tied head counted once (the safetensors file is mapped, so its pages
  count as resident only once touched: the process's growth when the model is built understates them);
- the trainable weights' gradients and AdamW's two moments (3 x 4 bytes each);
- the activations the backward pass needs for the largest micro-batch: every tensor autograd saves, counted
  once per storage, the weights it saves (a frozen linear layer keeps its weight for the input gradient) left
  out (measured with torch.autograd.graph.saved_tensors_hooks over that micro-batch's forward);
- the LM head's logits for one chunk of response tokens (logits_chunk_size x vocabulary x 4 bytes, and as much
  again for their gradient), the one transient the chunked head keeps.
Then the same run, in a fresh process, reports its peak resident memory (ru_maxrss) and the ratio to the floor.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.vs_trl_runs import directalign_config  # noqa: E402

MB = 1024 * 1024


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def saved_bytes(policy, batch) -> int:
    """Bytes of every distinct storage autograd saves for the backward pass of one forward over `batch`."""
    import torch

    from directalign.models.logprobs import sequence_logps

    storages: dict[int, int] = {}
    weights = {p.untyped_storage().data_ptr() for p in policy.parameters()}  # saved too, but counted as weights

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = sequence_logps(policy(batch), batch).sum()
    del loss
    return sum(storages.values())


def floor(method: str, data: str) -> dict:
    import torch

    from directalign.data.batching import build_batch
    from directalign.data.pipeline import prepare_data
    from directalign.models.loading import load_tokenizer
    from directalign.models.logprobs import ResponseLogProbs
    from directalign.models.policy import build_policy

    cfg = directalign_config(method, data)
    tokenizer = load_tokenizer(cfg.model)
    records = prepare_data(cfg, tokenizer).train
    before = resident_mb()
    policy = ResponseLogProbs(build_policy(cfg), cfg.logits_chunk_size).train()
    weights = sum(p.numel() * p.element_size() for p in policy.parameters()) / MB  # parameters() yields a tied one once
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    b = cfg.per_device_train_batch_size
    batches = [build_batch(records[i : i + b], tokenizer.pad_token_id, cfg.layout, cfg.max_tokens_per_row)
               for i in range(0, len(records), b)]
    largest = max(batches, key=lambda x: x.num_tokens)
    activations = saved_bytes(policy, largest) / MB
    vocab = policy.model.get_output_embeddings().weight.shape[0]
    head = 2 * min(cfg.logits_chunk_size, int(largest.gather_pos.numel())) * vocab * 4 / MB
    optimizer = 3 * 4 * trainable / MB
    parts = {"process_mb": before, "weights_mb": weights, "optimizer_mb": optimizer, "activations_mb": activations,
             "head_chunk_mb": head}
    return {**parts, "floor_mb": sum(parts.values()), "largest_micro_batch_tokens": largest.num_tokens,
            "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--method", default="dpo", choices=["dpo", "orpo", "simpo"])
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--floor-only", action="store_true", help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args(argv)
    if args.floor_only:
        print(json.dumps(floor(args.method, args.data)))
        return 0

    from benchmarks.bench_vs_trl import run_child, write_pairs

    workdir = Path(tempfile.mkdtemp())
    pairs = workdir / "pairs.jsonl"
    write_pairs(args.data, args.pairs, pairs, args.method)
    measured = json.loads(subprocess.run([sys.executable, __file__, "--floor-only", "--data", str(pairs), "--method",
                                          args.method], capture_output=True, text=True, check=True).stdout
                          .strip().splitlines()[-1])
    run = run_child("directalign", pairs, workdir, None, args.method)
    peak = run["peak_rss_mb"]
    for key in ("process_mb", "weights_mb", "optimizer_mb", "activations_mb", "head_chunk_mb", "floor_mb"):
        print(f"{key.removesuffix('_mb'):<12s} {measured[key]:8.0f} MB")
    print(f"largest micro-batch: {measured['largest_micro_batch_tokens']} tokens")
    print(f"the run's peak RSS: {peak:.0f} MB = {peak / measured['floor_mb']:.2f}x the floor "
          f"({peak - measured['floor_mb']:.0f} MB above it)")
    print(json.dumps({**measured, "peak_rss_mb": peak, "peak_over_floor": peak / measured["floor_mb"],
                      "run_s": run["total_s"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

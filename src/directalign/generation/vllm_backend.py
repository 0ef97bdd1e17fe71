"""Sample completions with vLLM in this process (Linux, CUDA): `vllm.LLM.chat` with `SamplingParams`.

vllm is imported only when this backend is built, so the rest of directalign runs without it. The LLM holds
its own copy of the weights: after a training step, an online method must push the policy's weights into it
(or rebuild it) before sampling again, or the samples come from the old policy.
"""

from __future__ import annotations

from typing import Any

from directalign.data.types import Message
from directalign.errors import ConfigError
from directalign.generation.base import Completion, GenerationConfig, check_prompts, repeat_greedy


class VLLMGenerator:
    """Generator backed by a vllm.LLM; model is a hub id or folder (built with llm_kwargs) or an LLM."""

    def __init__(self, model: Any, **llm_kwargs: Any):
        try:
            import vllm
        except ImportError as error:
            raise ConfigError(
                "backend 'vllm' needs the vllm package (Linux with a CUDA GPU): pip install vllm; "
                "elsewhere use backend 'transformers', or 'openai' against a running server"
            ) from error
        self._sampling_params = vllm.SamplingParams
        self.llm = vllm.LLM(model=model, **llm_kwargs) if isinstance(model, str) else model

    def generate(self, prompts: list[list[Message]], config: GenerationConfig | None = None) -> list[list[Completion]]:
        config = config or GenerationConfig()
        check_prompts(prompts)
        per_prompt = 1 if config.greedy else config.num_samples
        # One seed per prompt (seed + index): a prompt repeated in the batch still gets its own samples.
        params = [
            self._sampling_params(
                n=per_prompt,
                temperature=config.temperature,
                top_p=config.top_p,
                top_k=config.top_k if config.top_k > 0 else -1,
                max_tokens=config.max_new_tokens,
                seed=None if config.seed is None else config.seed + i,
                stop=config.stop,
            )
            for i in range(len(prompts))
        ]
        outputs = self.llm.chat(prompts, params, use_tqdm=False)
        completions = []
        for output in outputs:
            samples = [
                Completion(o.text, list(o.token_ids), "length" if o.finish_reason == "length" else "stop")
                for o in output.outputs
            ]
            completions.append(repeat_greedy(samples[0], config.num_samples) if config.greedy else samples)
        return completions

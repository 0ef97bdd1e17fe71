"""Sampling whose result for a prompt depends on that prompt's seed only, not on the other prompts in its batch.

The trainers share prompts out over processes; with one seed per prompt, 2 processes sampling half the prompts
each draw exactly what 1 process sampling all of them draws. A generator whose `generate` takes
`prompt_seeds` does this itself (batched); for any other, each prompt is sampled alone with its own seed.
"""

from __future__ import annotations

import inspect
from dataclasses import replace

from directalign.data.types import Message
from directalign.generation.base import Completion, GenerationConfig


def takes_prompt_seeds(generator) -> bool:
    try:
        return "prompt_seeds" in inspect.signature(generator.generate).parameters
    except (TypeError, ValueError):
        return False


def generate_seeded(
    generator, prompts: list[list[Message]], config: GenerationConfig, prompt_seeds: list[int]
) -> list[list[Completion]]:
    """config.num_samples completions per prompt, prompt i sampled with seed prompt_seeds[i]."""
    if len(prompt_seeds) != len(prompts):
        raise ValueError(f"{len(prompt_seeds)} seeds for {len(prompts)} prompts")
    if takes_prompt_seeds(generator):
        return generator.generate(prompts, config, prompt_seeds=prompt_seeds)
    completions = []
    for prompt, seed in zip(prompts, prompt_seeds, strict=True):
        completions += generator.generate([prompt], replace(config, seed=seed))
    return completions

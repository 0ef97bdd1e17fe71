"""sample_generations: the first N held-out prompts answered greedily before and after training, written to
generations.jsonl for the report's before/after table (by the main process; the others wait)."""

from __future__ import annotations

import json

from directalign.engine.files import atomic_write_text
from directalign.engine.sharding import gathered
from directalign.generation.base import GenerationConfig, make_generator

GENERATIONS_FILE = "generations.jsonl"


def write_sample_generations(run, cfg, policy, tokenizer, prompts: list, tag: str, step: int, reward_fn=None):
    prompts = prompts[: cfg.sample_generations]
    # The main process answers; under FSDP (whose forward passes are collective) every process does, alike.
    if prompts and (run.dist.is_main or not run.dist.shares_work):
        with gathered(policy):
            generator = make_generator("transformers", model=policy.model, tokenizer=tokenizer)
            config = GenerationConfig(max_new_tokens=cfg.eval_max_new_tokens, temperature=0.0)
            completions = [group[0] for group in generator.generate(prompts, config)]
    if prompts and run.dist.is_main:
        texts = [c.text for c in completions]
        rewards = reward_fn(prompts, texts) if reward_fn else [None] * len(prompts)
        lines = [
            json.dumps({"stage": tag, "step": step, "prompt": p, "completion": t, "reward": r}, ensure_ascii=False)
            for p, t, r in zip(prompts, texts, rewards, strict=True)
        ]
        path = run.out / GENERATIONS_FILE
        kept = path.read_text() if tag != "before" and path.is_file() else ""
        atomic_write_text(path, kept + "".join(line + "\n" for line in lines))
    run.dist.barrier()

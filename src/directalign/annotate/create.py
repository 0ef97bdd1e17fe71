"""`annotate create-project` end to end: pairs from a file or from two models, gold items, the judge, the project."""

from __future__ import annotations

from pathlib import Path

from directalign.annotate import humaneval
from directalign.annotate.db import Database
from directalign.annotate.projects import (
    HUMANEVAL_GUIDELINES,
    PAIRWISE_GUIDELINES,
    ProjectOptions,
    as_gold,
    create_project,
    get_project,
    pairs_from_file,
    split_gold,
)
from directalign.errors import ConfigError
from directalign.generation.base import GenerationConfig


def create(
    db: Database,
    name: str,
    options: ProjectOptions,
    *,
    data: str | None = None,
    prompts: str | None = None,
    model: str | None = None,
    adapter: str | None = None,
    reference_model: str | None = None,
    reference_adapter: str | None = None,
    generation: GenerationConfig | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    gold: str | None = None,
    gold_count: int = 0,
    judge: str | None = None,
) -> str:
    """Create the project and return a one-paragraph summary of what was made."""
    if (data is None) == (prompts is None):
        raise ConfigError("give either --data FILE (a pairwise project) or --prompts FILE --model ... "
                          "(a blind human evaluation)")
    if prompts is not None:
        if not model:
            raise ConfigError("--prompts needs --model (and --adapter, or --reference-model, for the other side)")
        if not (adapter or reference_model or reference_adapter):
            raise ConfigError("a human evaluation compares two sides: add --adapter, --reference-model or "
                              "--reference-adapter")
        kind, source = "humaneval", prompts
        pairs = humaneval.generate_pairs(humaneval.read_prompts(prompts, limit), model, adapter, reference_model,
                                         reference_adapter, generation, batch_size)
        options.settings.update(model=model, adapter=adapter, reference_model=reference_model or model,
                                reference_adapter=reference_adapter, generation=vars(generation or GenerationConfig()))
        if options.guidelines == PAIRWISE_GUIDELINES:
            options.guidelines = HUMANEVAL_GUIDELINES
    else:
        kind, source = "pairwise", data
        pairs = pairs_from_file(data, limit, shuffle, seed)
    gold_pairs = []
    if gold_count:
        pairs, gold_pairs = split_gold(pairs, gold_count, seed)
    if gold:
        gold_pairs += as_gold(pairs_from_file(gold))
    options.settings.update(seed=seed, limit=limit, shuffle=shuffle, gold_file=gold, gold_count=gold_count)
    create_project(db, name, kind, pairs + gold_pairs, options, str(Path(source)))
    summary = (f"project {name} ({kind}): {len(pairs)} items, {len(gold_pairs)} gold items, overlap "
               f"{options.overlap} -> {len(pairs) * options.overlap} votes to collect")
    if judge:
        judged = humaneval.run_judge(db, get_project(db, name), judge)
        summary += f"; judge {judge} ran on {judged} items"
    return summary

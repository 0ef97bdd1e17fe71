"""`evaluate`: one held-out table of a model (and adapter) beside its reference, what `directalign eval` prints.

The model is a base (embedded name, folder or Hub id) with an optional LoRA adapter; the reference is then the
base without it, or `ref_model`. The data is a file, folder or Hub id, in-memory rows, or "builtin": the
built-in held-out pairs that `train` scores (`builtin_held_out`), so that both report the same number.
"""

from __future__ import annotations

from typing import Any

from directalign.data.builtin import BUILTIN_EVAL_PAIRS, builtin_held_out
from directalign.data.memory import as_data_name
from directalign.models.embedded import DEFAULT_MODEL

BUILTIN = "builtin"


def held_out_records(data: Any, split: str | None = None, config: str | None = None, limit: int | None = None):
    """The records to score: train's own built-in held-out pairs, or those of `data`."""
    if data == BUILTIN:
        return builtin_held_out(limit or BUILTIN_EVAL_PAIRS)
    from directalign.data.formats import load_records

    return load_records(as_data_name(data), split=split, config=config).records[:limit]


def reward_function(reward, data):
    """A reward callable from a spec (builtin, MODULE:FUNCTION, FILE.py:FUNCTION) or a callable; the built-in
    verifier for the built-in pairs."""
    spec = reward or (BUILTIN if data == BUILTIN else None)
    if spec is None or callable(spec):
        return spec
    from directalign.generation.rewards import reward_from_spec

    return reward_from_spec(spec)


def evaluate(
    model: str = DEFAULT_MODEL,
    *,
    adapter: str | None = None,
    ref_model: str | None = None,
    data: Any = BUILTIN,
    data_split: str | None = None,
    data_config: str | None = None,
    beta: float = 0.1,
    max_length: int = 1024,
    max_prompt_length: int = 512,
    batch_size: int = 8,
    limit: int | None = None,
    generate: bool = False,
    samples: int = 1,
    max_new_tokens: int = 64,
    reward=None,
    judge: str | None = None,
    judge_base_url: str | None = None,
    api_key: str | None = None,
    ci: str = "wilson",
    seed: int = 0,
) -> dict:
    """Held-out implicit and log-prob preference accuracy, margin and perplexity; with `generate`, the KL to the
    reference, generated lengths, the mean reward and the win rate (see directalign.evaluation.generation_eval).
    Returns a flat dict; "samples" holds the compared texts when generating."""
    from directalign.data.tokenize import tokenize_records
    from directalign.evaluation.generation_eval import evaluate_model
    from directalign.models.loading import load_model, load_tokenizer
    from directalign.models.logprobs import ResponseLogProbs
    from directalign.models.reference import AdapterReference, FrozenReference

    tokenizer = load_tokenizer(model)
    records = held_out_records(data, data_split, data_config, limit)
    tokenized = tokenize_records(records, tokenizer, max_length=max_length, max_prompt_length=max_prompt_length)
    base = load_model(model)
    if adapter:
        from peft import PeftModel

        base = PeftModel.from_pretrained(base, adapter)
    policy = ResponseLogProbs(base.eval())
    reference = None
    if adapter:
        reference = AdapterReference(policy)
    elif ref_model:
        reference = FrozenReference(load_model(ref_model))
    pairwise = None
    if judge:
        from directalign.judges.backends import judge_from_spec

        pairwise = judge_from_spec(judge, judge_base_url, api_key, batch_size=batch_size)
    return evaluate_model(
        policy, reference, tokenizer, records, tokenized.records, beta=beta, reward_fn=reward_function(reward, data),
        judge=pairwise, generate=generate, num_samples=samples, max_new_tokens=max_new_tokens, ci=ci, seed=seed,
        batch_size=batch_size,
    )

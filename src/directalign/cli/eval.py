"""`directalign eval`: one held-out table of a model (and adapter) beside its reference.

Always: implicit and log-prob preference accuracy, margin and perplexity on the held-out pairs. With
--generate: samples from held-out prompts give the KL to the reference, generated lengths, the mean reward
(--reward) and the win rate against the reference's samples (--reward or --judge), raw and length-controlled.
"""

from __future__ import annotations

import argparse
import json

from directalign.cli.common import COUNT, NONNEGATIVE_INT, number
from directalign.data.builtin import BUILTIN_EVAL_PAIRS, builtin_held_out

BUILTIN = "builtin"


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="held-out accuracy, perplexity, KL, length, reward and win rate")
    p.add_argument(
        "--model", default="smollm2-135m-instruct", help="base model: embedded name, folder or hub id"
    )
    p.add_argument("--adapter", help="LoRA adapter folder; the reference is then the model without it")
    p.add_argument("--ref-model", help="reference model when there is no adapter (default: none)")
    p.add_argument("--data", required=True, help="held-out preference data: a file, folder or Hub id, or 'builtin' "
                   "(the built-in held-out pairs that train scores)")
    p.add_argument("--data-split", help="split of a DatasetDict folder or Hub dataset (default: train)")
    p.add_argument("--data-config", help="configuration of a Hub dataset")
    p.add_argument("--beta", type=number(float, 0, low_open=True), default=0.1)
    p.add_argument("--max-length", type=number(int, 2), default=1024)
    p.add_argument("--max-prompt-length", type=COUNT, default=512)
    p.add_argument("--batch-size", type=COUNT, default=8)
    p.add_argument("--limit", type=COUNT, help="only the first N records (with --data builtin: default "
                   f"{BUILTIN_EVAL_PAIRS}, train's held-out size)")
    p.add_argument("--generate", action="store_true", help="sample from held-out prompts: KL, length, win rate")
    p.add_argument("--samples", type=COUNT, default=1, help="samples per prompt with --generate (default 1)")
    p.add_argument("--max-new-tokens", type=COUNT, default=64)
    p.add_argument("--reward", help="reward function judging samples: builtin, MODULE:FUNCTION or FILE.py:FUNCTION "
                   "(default with --data builtin: builtin)")
    p.add_argument("--judge", help="pairwise judge for the win rate: openai:MODEL, openai:MODEL@URL, local:MODEL, "
                   "reward-model:DIR, reward:MODULE:FUNCTION (see directalign.judges)")
    p.add_argument("--judge-base-url", help="server of an openai: judge (default $OPENAI_BASE_URL, else "
                   "http://localhost:8000/v1)")
    p.add_argument("--api-key", help="of an openai: judge (default $OPENAI_API_KEY, which keeps it out of `ps`)")
    p.add_argument("--ci", choices=["wilson", "bootstrap"], default="wilson", help="win-rate interval")
    p.add_argument("--seed", type=NONNEGATIVE_INT, default=0)
    p.add_argument("--save-samples", help="write the compared samples to this JSONL file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def load_held_out(args: argparse.Namespace) -> list:
    """The records to score: train's own built-in held-out pairs (`builtin_held_out`), or those of --data."""
    if args.data == BUILTIN:
        return builtin_held_out(args.limit or BUILTIN_EVAL_PAIRS)
    from directalign.cli.common import load_data

    return load_data(args.data, split=args.data_split, config=args.data_config).records[: args.limit]


def reward_function(args: argparse.Namespace):
    spec = args.reward or (BUILTIN if args.data == BUILTIN else None)
    if spec is None:
        return None
    from directalign.generation.rewards import reward_from_spec

    return reward_from_spec(spec)


def run(args: argparse.Namespace) -> int:
    from directalign.data.tokenize import tokenize_records
    from directalign.evaluation.generation_eval import evaluate_model, format_table
    from directalign.models.loading import load_adapter, load_model, load_tokenizer
    from directalign.models.logprobs import ResponseLogProbs
    from directalign.models.reference import AdapterReference, FrozenReference

    tokenizer = load_tokenizer(args.model)
    records = load_held_out(args)
    tokenized = tokenize_records(
        records, tokenizer, max_length=args.max_length, max_prompt_length=args.max_prompt_length
    ).records
    model = load_model(args.model)
    reference = None
    if args.adapter:
        model = load_adapter(model, args.adapter)
    policy = ResponseLogProbs(model.eval())
    if args.adapter:
        reference = AdapterReference(policy)
    elif args.ref_model:
        reference = FrozenReference(load_model(args.ref_model))
    judge = None
    if args.judge:
        from directalign.judges.backends import judge_from_spec

        judge = judge_from_spec(args.judge, args.judge_base_url, args.api_key, batch_size=args.batch_size)
    result = evaluate_model(
        policy,
        reference,
        tokenizer,
        records,
        tokenized,
        beta=args.beta,
        reward_fn=reward_function(args),
        judge=judge,
        generate=args.generate,
        num_samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        ci=args.ci,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    samples = result.pop("samples", [])
    if args.save_samples:
        with open(args.save_samples, "w") as f:
            f.write("".join(json.dumps(s) + "\n" for s in samples))
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(result))
        if reference is None:
            print("(no adapter or --ref-model: implicit accuracy, KL and win rate need a reference)")
    return 0

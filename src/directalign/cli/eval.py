"""`directalign eval`: one held-out table of a model (and adapter) beside its reference.

Always: implicit and log-prob preference accuracy, margin and perplexity on the held-out pairs. With
--generate: samples from held-out prompts give the KL to the reference, generated lengths, the mean reward
(--reward) and the win rate against the reference's samples (--reward or --judge), raw and length-controlled.
"""

from __future__ import annotations

import argparse
import json

from directalign.data.builtin import BUILTIN_EVAL_PAIRS


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
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--max-prompt-length", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, help="only the first N records (with --data builtin: default "
                   f"{BUILTIN_EVAL_PAIRS}, train's held-out size)")
    p.add_argument("--generate", action="store_true", help="sample from held-out prompts: KL, length, win rate")
    p.add_argument("--samples", type=int, default=1, help="samples per prompt with --generate (default 1)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--reward", help="reward function judging samples: builtin, MODULE:FUNCTION or FILE.py:FUNCTION "
                   "(default with --data builtin: builtin)")
    p.add_argument("--judge", help="pairwise judge for the win rate: openai:MODEL, openai:MODEL@URL, local:MODEL, "
                   "reward-model:DIR, reward:MODULE:FUNCTION (see directalign.judges)")
    p.add_argument("--judge-base-url", help="server of an openai: judge (default $OPENAI_BASE_URL, else "
                   "http://localhost:8000/v1)")
    p.add_argument("--api-key", help="of an openai: judge (default $OPENAI_API_KEY, which keeps it out of `ps`)")
    p.add_argument("--ci", choices=["wilson", "bootstrap"], default="wilson", help="win-rate interval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-samples", help="write the compared samples to this JSONL file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from directalign.evaluation.generation_eval import format_table
    from directalign.evaluation.heldout import evaluate

    result = evaluate(
        args.model, adapter=args.adapter, ref_model=args.ref_model, data=args.data, data_split=args.data_split,
        data_config=args.data_config, beta=args.beta, max_length=args.max_length,
        max_prompt_length=args.max_prompt_length, batch_size=args.batch_size, limit=args.limit,
        generate=args.generate, samples=args.samples, max_new_tokens=args.max_new_tokens, reward=args.reward,
        judge=args.judge, judge_base_url=args.judge_base_url, api_key=args.api_key, ci=args.ci, seed=args.seed,
    )
    samples = result.pop("samples", [])
    if args.save_samples:
        with open(args.save_samples, "w") as f:
            f.write("".join(json.dumps(s) + "\n" for s in samples))
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(result))
        if not (args.adapter or args.ref_model):
            print("(no adapter or --ref-model: implicit accuracy, KL and win rate need a reference)")
    return 0

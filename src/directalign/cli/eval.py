"""`directalign eval`: preference accuracy and margins of a model (and adapter) on held-out pairs."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="held-out preference accuracy and margins")
    p.add_argument(
        "--model", default="smollm2-135m-instruct", help="base model: embedded name, folder or hub id"
    )
    p.add_argument("--adapter", help="LoRA adapter folder; the reference is then the model without it")
    p.add_argument("--ref-model", help="reference model when there is no adapter (default: none)")
    p.add_argument("--data", required=True, help="held-out preference data file")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--max-prompt-length", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, help="only the first N records")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from directalign.data.formats import load_records
    from directalign.data.tokenize import tokenize_records
    from directalign.evaluation.preference import evaluate_preferences
    from directalign.models.loading import load_model, load_tokenizer
    from directalign.models.logprobs import ResponseLogProbs
    from directalign.models.reference import AdapterReference, FrozenReference

    tokenizer = load_tokenizer(args.model)
    records = load_records(args.data).records[: args.limit]
    tokenized = tokenize_records(
        records, tokenizer, max_length=args.max_length, max_prompt_length=args.max_prompt_length
    ).records
    model = load_model(args.model)
    reference = None
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter)
    policy = ResponseLogProbs(model.eval())
    if args.adapter:
        reference = AdapterReference(policy)
    elif args.ref_model:
        reference = FrozenReference(load_model(args.ref_model))
    result = evaluate_preferences(
        policy,
        tokenized,
        pad_token_id=tokenizer.pad_token_id,
        beta=args.beta,
        reference=reference,
        batch_size=args.batch_size,
    )
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:<22}{value:>10.4f}" if isinstance(value, float) else f"{key:<22}{value:>10}")
        if reference is None:
            print("(no adapter or --ref-model: implicit-reward accuracy needs a reference)")
    return 0

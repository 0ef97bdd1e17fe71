"""Tokenise preference records: the prompt once, then each response, with explicit, counted truncation.

With a chat template the ids are TRL 1.16's (`DPOTrainer._prepare_dataset`): prompt_ids is the template
applied to the prompt with the generation prompt, full_i the template applied to prompt + response_i, and
the response starts where the two diverge: L = min_i common_prefix(prompt_ids, full_i), then prompt_ids[:L]
and full_i[L:]. The prompt ids are therefore the same for every response, and prompt + response_i == full_i.

Without a chat template (or with use_chat_template=False) the text is tokenised with the tokenizer's own
special tokens and the eos token ends each response, again as TRL does: a single-user-message prompt is its
content and the response its text; a multi-turn prompt is written as the Anthropic transcript
"\\n\\nHuman: ...\\n\\nAssistant:" and the response as " text", the form the DPO paper trained on.

Truncation (not TRL's, which cuts prompt + response to max_length from the start): a prompt longer than
max_prompt_length keeps its end, the turns next to the response; then responses that do not fit in
max_length - len(prompt) keep their start.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from directalign.data.readers import PROGRESS_DELAY_S
from directalign.data.types import Message, PreferenceRecord, TokenizedRecord
from directalign.errors import ConfigError

BATCH_SIZE = 256
_Encoded = tuple[
    list[int], list[list[int]], bool
]  # prompt ids, response ids, prompt cut back to the boundary
_TRANSCRIPT_ROLES = {"user": "Human", "assistant": "Assistant", "system": "System"}


@dataclass
class TokenizeStats:
    """Token counts before truncation (for choosing max_length) and what truncation cut.

    chosen_lengths / rejected_lengths cover records with a pair, the first pair's two responses.
    responses_truncated counts responses, not records. prompt_boundary_mismatches counts records whose
    templated prompt is not a prefix of prompt + response (TRL warns once about it): their prompt ids stop
    where the two diverge.
    """

    max_length: int | None
    max_prompt_length: int | None
    chat_template: bool
    prompt_lengths: list[int] = field(default_factory=list)
    chosen_lengths: list[int] = field(default_factory=list)
    rejected_lengths: list[int] = field(default_factory=list)
    num_responses: int = 0
    prompts_truncated: int = 0
    responses_truncated: int = 0
    prompt_boundary_mismatches: int = 0


@dataclass
class TokenizeResult:
    records: list[TokenizedRecord]
    stats: TokenizeStats


def tokenize_records(
    records: Sequence[PreferenceRecord],
    tokenizer: Any,
    *,
    max_length: int | None = 1024,
    max_prompt_length: int | None = 512,
    use_chat_template: bool = True,
) -> TokenizeResult:
    """Tokenise records (see the module docstring); None for a length means no limit."""
    if max_length is not None and (max_prompt_length is None or max_prompt_length >= max_length):
        raise ConfigError(
            f"max_prompt_length ({max_prompt_length}) must be set and below max_length ({max_length}), "
            "so that every response keeps at least one token"
        )
    chat = bool(use_chat_template and getattr(tokenizer, "chat_template", None))
    encode = _encode_chat if chat else _encode_plain
    stats = TokenizeStats(max_length, max_prompt_length, chat)
    tokenized = []
    # Shown only when tokenising lasts longer than PROGRESS_DELAY_S (a few thousand records on a CPU).
    bar = tqdm(total=len(records), desc="tokenising", unit=" records", delay=PROGRESS_DELAY_S, leave=False)
    for start in range(0, len(records), BATCH_SIZE):
        batch = records[start : start + BATCH_SIZE]
        for record, (prompt_ids, response_ids, mismatch) in zip(batch, encode(batch, tokenizer), strict=True):
            stats.prompt_boundary_mismatches += mismatch
            tokenized.append(_truncate(record, prompt_ids, response_ids, stats))
        bar.update(len(batch))
    bar.close()
    return TokenizeResult(tokenized, stats)


def common_prefix_length(ids: Sequence[int], other_ids: Sequence[int]) -> int:
    length = 0
    for token, other_token in zip(ids, other_ids, strict=False):
        if token != other_token:
            break
        length += 1
    return length


def _encode_chat(batch: Sequence[PreferenceRecord], tokenizer: Any) -> Iterator[_Encoded]:
    prompt_ids = _input_ids(
        tokenizer.apply_chat_template(
            [r.prompt for r in batch], add_generation_prompt=True, tokenize=True, return_dict=True
        )
    )
    full_ids = _input_ids(
        tokenizer.apply_chat_template(
            [r.prompt + response for r in batch for response in r.responses], tokenize=True, return_dict=True
        )
    )
    return _split_at_prompt(batch, prompt_ids, full_ids)


def _encode_plain(batch: Sequence[PreferenceRecord], tokenizer: Any) -> Iterator[_Encoded]:
    eos = tokenizer.eos_token or ""
    prompts, fulls = [], []
    for record in batch:
        prompt, responses = _plain_texts(record)
        prompts.append(prompt)
        fulls.extend(prompt + (r if r.endswith(eos) else r + eos) for r in responses)
    return _split_at_prompt(batch, tokenizer(prompts)["input_ids"], tokenizer(fulls)["input_ids"])


def _split_at_prompt(
    batch: Sequence[PreferenceRecord], prompt_ids: list[list[int]], full_ids: list[list[int]]
) -> Iterator[_Encoded]:
    position = 0
    for record, prompt in zip(batch, prompt_ids, strict=True):
        fulls = full_ids[position : position + len(record.responses)]
        position += len(record.responses)
        # Templates that render the prompt alone differently from prompt + response (or tokens merging across
        # the boundary) move the boundary back to where the sequences diverge, as TRL does.
        boundary = min(common_prefix_length(prompt, full) for full in fulls)
        yield prompt[:boundary], [full[boundary:] for full in fulls], boundary < len(prompt)


def _input_ids(encoded: Any) -> list[list[int]]:
    # transformers 5 returns a BatchEncoding with return_dict=True; older versions may return bare ids.
    return encoded if isinstance(encoded, list) else encoded["input_ids"]


def _plain_texts(record: PreferenceRecord) -> tuple[str, list[str]]:
    prompt = record.prompt
    if len(prompt) == 1 and prompt[0]["role"] == "user":
        return prompt[0]["content"], ["".join(m["content"] for m in r) for r in record.responses]
    return _transcript(prompt) + "\n\nAssistant:", [
        _transcript(r).removeprefix("\n\nAssistant:") for r in record.responses
    ]


def _transcript(messages: list[Message]) -> str:
    return "".join(
        f"\n\n{_TRANSCRIPT_ROLES.get(m['role'], m['role'].title())}: {m['content']}" for m in messages
    )


def _truncate(
    record: PreferenceRecord, prompt_ids: list[int], response_ids: list[list[int]], stats: TokenizeStats
) -> TokenizedRecord:
    stats.prompt_lengths.append(len(prompt_ids))
    stats.num_responses += len(response_ids)
    if record.pairs:
        chosen, rejected = record.pairs[0]
        stats.chosen_lengths.append(len(response_ids[chosen]))
        stats.rejected_lengths.append(len(response_ids[rejected]))
    prompt_truncated = stats.max_prompt_length is not None and len(prompt_ids) > stats.max_prompt_length
    if prompt_truncated:
        prompt_ids = prompt_ids[-stats.max_prompt_length :]
        stats.prompts_truncated += 1
    responses_cut = 0
    if stats.max_length is not None:
        budget = stats.max_length - len(prompt_ids)
        responses_cut = sum(len(r) > budget for r in response_ids)
        response_ids = [r[:budget] for r in response_ids]
        stats.responses_truncated += responses_cut
    return TokenizedRecord(
        prompt_ids=prompt_ids,
        response_ids=response_ids,
        pairs=list(record.pairs),
        source=record.source,
        labels=record.labels,
        prompt_truncated=prompt_truncated,
        response_truncated=responses_cut > 0,
    )

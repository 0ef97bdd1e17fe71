"""Turn tokenised records into one forward-pass batch, in one of three layouts.

- "padded": each response is its own row, prompt + response, right-padded (what TRL does); a 2D padding mask.
- "shared": one row per record: the prompt once, then every response after it. A 4D mask lets each response see
  the prompt and itself but not the other responses, and position ids restart after the prompt for each response,
  so the per-response log-probs equal the padded layout's while the prompt is computed once.
- "packed": like "shared", with several records placed in one row up to a token budget (block-diagonal mask), so
  that almost no compute goes to padding; with sdpa, attention runs per record (directalign.models.attention), so a
  long row costs no attention across records. With micro-batches formed by a token budget (token_budget_batches,
  the `max_tokens_per_batch` option), each micro-batch is one such row of about the same size.

Whatever the layout, the batch carries the flat positions whose hidden states predict a response token
(`gather_pos`), the token they predict (`gather_labels`) and the response it belongs to (`gather_response`), so
the log-prob code never needs to know the layout. Only these positions go through the LM head.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from directalign.data.types import TokenizedRecord

LAYOUTS = ("padded", "shared", "packed")


@dataclass
class RecordSpan:
    """Where one record sits in its row (shared and packed layouts): prompt [start, prompt_end), its responses
    [prompt_end, end). response_mask (end - prompt_end, end - start) is what the responses may see of the record:
    the whole prompt, and the earlier tokens of their own response (directalign.models.attention uses it)."""

    start: int
    prompt_end: int
    end: int
    response_mask: torch.Tensor

    def to(self, device: torch.device | str) -> RecordSpan:
        return RecordSpan(self.start, self.prompt_end, self.end, self.response_mask.to(device))


@dataclass
class SequenceBatch:
    input_ids: torch.Tensor  # (rows, T)
    position_ids: torch.Tensor  # (rows, T)
    attention_mask: torch.Tensor  # (rows, T) padding mask, or (rows, 1, T, T) bool: True = may attend
    gather_pos: torch.Tensor  # (N,) flat index into rows * T: hidden state that predicts the token
    gather_labels: torch.Tensor  # (N,) the predicted response token
    gather_response: torch.Tensor  # (N,) which response (0..num_responses-1) the token belongs to
    response_lengths: torch.Tensor  # (num_responses,) tokens scored per response
    chosen_index: torch.Tensor  # (num_pairs,) response index of each pair's preferred response
    rejected_index: torch.Tensor  # (num_pairs,)
    response_record: torch.Tensor  # (num_responses,) which record of the batch each response comes from
    pooled_pos: torch.Tensor  # (num_responses,) flat index of the last token of prompt + response that is not
    # padding (the position a sequence classifier's score head reads, as transformers pools it)
    num_records: int
    num_tokens: int  # real (non-padding) tokens computed
    labels: torch.Tensor | None = None  # (num_responses,) desirability for unpaired data
    ref_logps: torch.Tensor | None = None  # (num_responses,) cached reference log-probs, when every record has them
    record_spans: list[list[RecordSpan]] | None = None  # per row, its records (shared and packed layouts)
    extras: dict = field(default_factory=dict)

    @property
    def num_responses(self) -> int:
        return int(self.response_lengths.numel())

    def to(self, device: torch.device | str) -> SequenceBatch:
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.__dict__.items()}
        if self.record_spans is not None:
            moved["record_spans"] = [[span.to(device) for span in row] for row in self.record_spans]
        return SequenceBatch(**moved)


def _segments(record: TokenizedRecord) -> tuple[list[int], list[list[int]]]:
    return record.prompt_ids, record.response_ids


def build_batch(
    records: list[TokenizedRecord],
    pad_token_id: int,
    layout: str = "shared",
    max_tokens_per_row: int | None = None,
) -> SequenceBatch:
    """Lay out `records` for one forward pass; see the module docstring for the layouts."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "padded":
        rows = [[(i, r)] for i, rec in enumerate(records) for r in range(len(rec.response_ids))]
    elif layout == "shared":
        rows = [[(i, None)] for i in range(len(records))]
    else:
        rows = _pack_rows(records, max_tokens_per_row)
    return _assemble(records, rows, pad_token_id, use_4d_mask=layout != "padded")


def token_budget_batches(order: list[int], token_counts: list[int], budget: int) -> list[list[int]]:
    """Cut `order` into runs of consecutive records of at most `budget` tokens; a longer record goes alone."""
    batches: list[list[int]] = []
    used = 0
    for i in order:
        if batches and used + token_counts[i] <= budget:
            batches[-1].append(i)
            used += token_counts[i]
        else:
            batches.append([i])
            used = token_counts[i]
    return batches


def _pack_rows(records: list[TokenizedRecord], budget: int | None) -> list[list[tuple[int, None]]]:
    """First-fit-decreasing packing of whole records into rows of at most `budget` tokens."""
    budget = budget or max(r.num_tokens for r in records)
    order = sorted(range(len(records)), key=lambda i: -records[i].num_tokens)
    rows: list[list[tuple[int, None]]] = []
    room: list[int] = []
    for i in order:
        need = records[i].num_tokens
        slot = next((k for k, free in enumerate(room) if free >= need), None)
        if slot is None:
            rows.append([])
            room.append(max(budget, need))
            slot = len(rows) - 1
        rows[slot].append((i, None))
        room[slot] -= need
    return rows


def _assemble(records, rows, pad_token_id: int, use_4d_mask: bool) -> SequenceBatch:
    # Response numbering is record order, then response order, whatever the layout.
    counts = [len(rec.response_ids) for rec in records]
    first_response = [0, *itertools.accumulate(counts)][:-1]

    row_tokens, row_positions, row_segments, row_spans = [], [], [], []
    gather_row, gather_at, gather_labels, gather_response = [], [], [], []
    pooled: list[tuple[int, int]] = [(0, 0)] * sum(counts)  # (row, position) of each response's pooled token
    for row_index, row in enumerate(rows):
        ids: list[int] = []
        positions, segments, spans = [], [], []  # segments: (record id, response id or -1 for the prompt, length)
        for rec_i, only_response in row:
            prompt, responses = _segments(records[rec_i])
            prompt_start = len(ids)
            ids += prompt
            positions.append(torch.arange(len(prompt)))
            segments.append((rec_i, -1, len(prompt)))
            wanted = range(len(responses)) if only_response is None else [only_response]
            for r in wanted:
                response = responses[r]
                start = len(ids)
                ids += response
                positions.append(torch.arange(len(prompt), len(prompt) + len(response)))
                segments.append((rec_i, r, len(response)))
                # token k of the response is predicted by the token before it; the first by the prompt's last token.
                predictors = torch.arange(start - 1, start + len(response) - 1)
                predictors[:1] = prompt_start + len(prompt) - 1
                keep = predictors >= prompt_start  # empty prompt: nothing predicts the first token
                gather_row.append(torch.full((int(keep.sum()),), row_index))
                gather_at.append(predictors[keep])
                gather_labels.append(torch.tensor(response, dtype=torch.long)[keep])
                gather_response.append(torch.full((int(keep.sum()),), first_response[rec_i] + r))
                last = _last_kept(response, start, pad_token_id)
                if last is None:
                    last = _last_kept(prompt, prompt_start, pad_token_id)
                pooled[first_response[rec_i] + r] = (row_index, prompt_start if last is None else last)
            if only_response is None:
                lengths = [len(responses[r]) for r in wanted]
                spans.append(RecordSpan(prompt_start, prompt_start + len(prompt), len(ids),
                                        _response_mask(len(prompt), lengths)))
        row_spans.append(spans)
        row_tokens.append(ids)
        row_positions.append(torch.cat(positions) if positions else torch.zeros(0, dtype=torch.long))
        row_segments.append(segments)
    width = max(len(ids) for ids in row_tokens)

    n_rows = len(rows)
    input_ids = torch.full((n_rows, width), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((n_rows, width), dtype=torch.long)
    for i, (ids, pos) in enumerate(zip(row_tokens, row_positions, strict=True)):
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        position_ids[i, : len(pos)] = pos
    if use_4d_mask:
        attention_mask = _segment_mask(row_segments, width)
    else:
        attention_mask = (torch.arange(width)[None, :] < torch.tensor([len(ids) for ids in row_tokens])[:, None]).long()

    gather_response = torch.cat(gather_response)
    pairs = [
        (first_response[i] + c, first_response[i] + j) for i, rec in enumerate(records) for c, j in rec.pairs
    ]
    response_record = [i for i, rec in enumerate(records) for _ in rec.response_ids]
    labels = None
    if all(rec.labels is not None for rec in records) and records:
        labels = torch.tensor([bool(x) for rec in records for x in rec.labels], dtype=torch.bool)
    ref_logps = None
    if records and all(rec.ref_logps is not None for rec in records):
        ref_logps = torch.tensor([x for rec in records for x in rec.ref_logps], dtype=torch.float32)
    return SequenceBatch(
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=attention_mask,
        gather_pos=torch.cat(gather_row) * width + torch.cat(gather_at),
        gather_labels=torch.cat(gather_labels),
        gather_response=gather_response,
        response_lengths=torch.bincount(gather_response, minlength=sum(counts)),
        chosen_index=torch.tensor([c for c, _ in pairs], dtype=torch.long),
        rejected_index=torch.tensor([r for _, r in pairs], dtype=torch.long),
        response_record=torch.tensor(response_record, dtype=torch.long),
        pooled_pos=torch.tensor([row * width + at for row, at in pooled], dtype=torch.long),
        num_records=len(records),
        num_tokens=sum(len(ids) for ids in row_tokens),
        labels=labels,
        ref_logps=ref_logps,
        record_spans=row_spans if use_4d_mask else None,
    )


def _last_kept(tokens: list[int], offset: int, pad_token_id: int) -> int | None:
    """offset + the index of the last token that is not padding, or None."""
    for k in range(len(tokens) - 1, -1, -1):
        if tokens[k] != pad_token_id:
            return offset + k
    return None


def _response_mask(prompt_length: int, response_lengths: list[int]) -> torch.Tensor:
    response = torch.arange(len(response_lengths)).repeat_interleave(torch.tensor(response_lengths))
    n = len(response)
    own = (response[:, None] == response[None, :]) & torch.ones(n, n, dtype=torch.bool).tril()
    return torch.cat([torch.ones(n, prompt_length, dtype=torch.bool), own], dim=1)


def _segment_mask(row_segments: list[list[tuple[int, int, int]]], width: int) -> torch.Tensor:
    """(rows, 1, T, T) bool mask: causal, within one record, and a response never sees another response."""
    mask = torch.zeros((len(row_segments), 1, width, width), dtype=torch.bool)
    for i, segments in enumerate(row_segments):
        lengths = torch.tensor([n for _, _, n in segments])
        record = torch.tensor([rec for rec, _, _ in segments]).repeat_interleave(lengths)
        response = torch.tensor([resp for _, resp, _ in segments]).repeat_interleave(lengths)
        n = int(lengths.sum())
        same_record = record[:, None] == record[None, :]
        visible = (response[None, :] == -1) | (response[:, None] == response[None, :])
        mask[i, 0, :n, :n] = (same_record & visible).tril()
        # Padding attends to itself only, so that no softmax row is empty (an empty one gives NaN in SDPA).
        idx = torch.arange(n, width)
        mask[i, 0, idx, idx] = True
    return mask

"""Turn tokenised records into one forward-pass batch, in one of three layouts.

- "padded": each response is its own row, prompt + response, right-padded (what TRL does); a 2D padding mask.
- "shared": one row per record: the prompt once, then every response after it. A 4D mask lets each response see
  the prompt and itself but not the other responses, and position ids restart after the prompt for each response,
  so the per-response log-probs equal the padded layout's while the prompt is computed once.
- "packed": like "shared", with several records placed in one row up to a token budget (block-diagonal mask), so
  that almost no compute goes to padding.

Whatever the layout, the batch carries the flat positions whose hidden states predict a response token
(`gather_pos`), the token they predict (`gather_labels`) and the response it belongs to (`gather_response`), so
the log-prob code never needs to know the layout. Only these positions go through the LM head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from directalign.data.types import TokenizedRecord

LAYOUTS = ("padded", "shared", "packed")


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
    num_records: int
    num_tokens: int  # real (non-padding) tokens computed
    labels: torch.Tensor | None = None  # (num_responses,) desirability for unpaired data
    extras: dict = field(default_factory=dict)

    @property
    def num_responses(self) -> int:
        return int(self.response_lengths.numel())

    def to(self, device: torch.device | str) -> SequenceBatch:
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.__dict__.items()}
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
    first_response = []
    total = 0
    for rec in records:
        first_response.append(total)
        total += len(rec.response_ids)

    row_tokens, row_positions, row_segments = [], [], []
    gather_pos, gather_labels, gather_response = [], [], []
    response_lengths = [0] * total
    width = 0
    for row in rows:
        ids, pos, seg = [], [], []  # seg: (record id, response id or -1 for prompt) per token
        for rec_i, only_response in row:
            prompt, responses = _segments(records[rec_i])
            prompt_start = len(ids)
            ids += prompt
            pos += range(len(prompt))
            seg += [(rec_i, -1)] * len(prompt)
            wanted = range(len(responses)) if only_response is None else [only_response]
            for r in wanted:
                response = responses[r]
                start = len(ids)
                ids += response
                pos += range(len(prompt), len(prompt) + len(response))
                seg += [(rec_i, r)] * len(response)
                # token k of the response is predicted by the token before it; the first by the prompt's last token.
                predictors = [prompt_start + len(prompt) - 1] + [start + k for k in range(len(response) - 1)]
                resp_id = first_response[rec_i] + r
                for k, p in enumerate(predictors):
                    if p < prompt_start:  # empty prompt: nothing predicts the first token
                        continue
                    gather_pos.append((len(row_tokens), p))
                    gather_labels.append(response[k])
                    gather_response.append(resp_id)
                    response_lengths[resp_id] += 1
        row_tokens.append(ids)
        row_positions.append(pos)
        row_segments.append(seg)
        width = max(width, len(ids))

    n_rows = len(rows)
    input_ids = torch.full((n_rows, width), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((n_rows, width), dtype=torch.long)
    for i, (ids, pos) in enumerate(zip(row_tokens, row_positions, strict=True)):
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        position_ids[i, : len(pos)] = torch.tensor(pos, dtype=torch.long)
    if use_4d_mask:
        attention_mask = _segment_mask(row_segments, width)
    else:
        attention_mask = torch.zeros((n_rows, width), dtype=torch.long)
        for i, ids in enumerate(row_tokens):
            attention_mask[i, : len(ids)] = 1

    flat = torch.tensor([r * width + p for r, p in gather_pos], dtype=torch.long)
    pairs = [
        (first_response[i] + c, first_response[i] + j) for i, rec in enumerate(records) for c, j in rec.pairs
    ]
    response_record = [i for i, rec in enumerate(records) for _ in rec.response_ids]
    labels = None
    if all(rec.labels is not None for rec in records) and records:
        labels = torch.tensor([bool(x) for rec in records for x in rec.labels], dtype=torch.bool)
    return SequenceBatch(
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=attention_mask,
        gather_pos=flat,
        gather_labels=torch.tensor(gather_labels, dtype=torch.long),
        gather_response=torch.tensor(gather_response, dtype=torch.long),
        response_lengths=torch.tensor(response_lengths, dtype=torch.long),
        chosen_index=torch.tensor([c for c, _ in pairs], dtype=torch.long),
        rejected_index=torch.tensor([r for _, r in pairs], dtype=torch.long),
        response_record=torch.tensor(response_record, dtype=torch.long),
        num_records=len(records),
        num_tokens=sum(len(ids) for ids in row_tokens),
        labels=labels,
    )


def _segment_mask(row_segments: list[list[tuple[int, int]]], width: int) -> torch.Tensor:
    """(rows, 1, T, T) bool mask: causal, within one record, and a response never sees another response."""
    n_rows = len(row_segments)
    mask = torch.zeros((n_rows, 1, width, width), dtype=torch.bool)
    for i, seg in enumerate(row_segments):
        n = len(seg)
        record = torch.tensor([s[0] for s in seg])
        response = torch.tensor([s[1] for s in seg])
        same_record = record[:, None] == record[None, :]
        visible = (response[None, :] == -1) | (response[:, None] == response[None, :])
        causal = torch.ones((n, n), dtype=torch.bool).tril()
        mask[i, 0, :n, :n] = same_record & visible & causal
        # Padding attends to itself only, so that no softmax row is empty (an empty one gives NaN in SDPA).
        idx = torch.arange(n, width)
        mask[i, 0, idx, idx] = True
    return mask

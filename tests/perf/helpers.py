"""Records of random token ids for the equivalence tests."""

from __future__ import annotations

import torch

from directalign.data.types import TokenizedRecord


def random_records(seed: int = 0, n: int = 4, k: int = 2, vocab: int = 128,
                   max_prompt: int = 12, max_response: int = 9):
    """n records of k responses each, every pair (a, b) with a < b; prompts of 1..max_prompt-1 tokens."""
    g = torch.Generator().manual_seed(seed)
    records = []
    for i in range(n):
        prompt = torch.randint(3, vocab, (int(torch.randint(1, max_prompt, (1,), generator=g)),), generator=g)
        responses = [
            torch.randint(3, vocab, (int(torch.randint(1, max_response, (1,), generator=g)),), generator=g).tolist()
            for _ in range(k)
        ]
        pairs = [(a, b) for a in range(k) for b in range(a + 1, k)]
        records.append(TokenizedRecord(prompt.tolist(), responses, pairs, source=f"random:{i}"))
    return records

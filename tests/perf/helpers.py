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


def lora_with_nonzero_adapters(model):
    """LoRA r 4 on q_proj and v_proj with random lora_B (PEFT starts it at zero, which would hide adapter bugs)."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return model

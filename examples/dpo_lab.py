"""The textbook DPO lab, with directalign's Python API (docs/api.md).

1. Implement the DPO loss and check it on one pair: policy log-probs -10 (chosen) and -15 (rejected), reference
   log-probs -11 and -14, beta 0.1, against directalign's `dpo_loss` (value and gradient).
2. Train DPO + LoRA on the embedded SmolLM2-135M-Instruct for a few steps on the built-in preference set.
3. Held-out preference accuracy on 20 pairs before and after, from training's own evals and again from
   `evaluate` on the saved adapter: the same 20 pairs (train's held-out split is `eval --data builtin`).

    python examples/dpo_lab.py            # a few minutes on 2 CPU cores, once the model is cached
"""

from __future__ import annotations

import math

import torch

from directalign import TrainConfig, evaluate, train
from directalign.losses import dpo_loss

HELD_OUT_PAIRS = 20


def my_dpo_loss(policy_chosen: float, policy_rejected: float, ref_chosen: float, ref_rejected: float,
                beta: float) -> float:
    """-log sigmoid(beta * h), h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))."""
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return math.log1p(math.exp(-beta * h))  # -log sigmoid(z) = log(1 + e^-z)


def part_1_the_loss() -> None:
    beta, logps = 0.1, (-10.0, -15.0, -11.0, -14.0)
    mine = my_dpo_loss(*logps, beta)
    policy = torch.tensor(logps[:2], dtype=torch.float64, requires_grad=True)
    theirs = dpo_loss(policy[0], policy[1], torch.tensor(logps[2], dtype=torch.float64),
                      torch.tensor(logps[3], dtype=torch.float64), beta)
    theirs.backward()
    h = (logps[0] - logps[2]) - (logps[1] - logps[3])
    # d loss / d log pi(y_w) = -beta * sigmoid(-beta h); d / d log pi(y_l) is its negative.
    grad = -beta / (1 + math.exp(beta * h))
    print(f"1. h = {h:g}, beta*h = {beta * h:g}: my loss {mine:.10f}, directalign's {theirs.item():.10f} "
          f"(difference {abs(mine - theirs.item()):.1e})")
    print(f"   gradient wrt (chosen, rejected) log-probs: ({policy.grad[0]:.6f}, {policy.grad[1]:.6f}); "
          f"by hand ({grad:.6f}, {-grad:.6f})")
    assert abs(mine - theirs.item()) < 1e-12 and abs(policy.grad[0].item() - grad) < 1e-12


def part_2_and_3_train_and_evaluate() -> None:
    config = TrainConfig(
        model="smollm2-135m-instruct", output_dir="runs/dpo-lab", overwrite_output_dir=True,
        builtin_train_pairs=64, builtin_eval_pairs=HELD_OUT_PAIRS, loss_type="sigmoid", beta=0.1,
        learning_rate=5e-4, max_steps=8, per_device_train_batch_size=8, lora_r=16, lora_alpha=32,
        logging_steps=2, save_steps=0, kl_prompts=0,
    )
    result = train(config)
    before, after = result.eval_before, result.metrics
    print(f"2. trained {result.steps} steps of DPO + LoRA; adapter in {result.adapter_dir}")
    print(f"3. held-out implicit accuracy on {after['n_pairs']} pairs: {before['implicit_accuracy']:.3f} before, "
          f"{after['implicit_accuracy']:.3f} after (mean margin {before['mean_margin']:.3f} -> "
          f"{after['mean_margin']:.3f})")
    again = evaluate(adapter=str(result.adapter_dir), data="builtin", limit=HELD_OUT_PAIRS)
    print(f"   evaluate(adapter, data='builtin', limit={HELD_OUT_PAIRS}): implicit accuracy "
          f"{again['implicit_accuracy']:.3f} on {again['n_pairs']} pairs, log-prob accuracy "
          f"{again['reference/logp_accuracy']:.3f} -> {again['logp_accuracy']:.3f}")
    assert again["n_pairs"] == after["n_pairs"]
    assert abs(again["implicit_accuracy"] - after["implicit_accuracy"]) < 1e-9  # the same pairs, the same score


if __name__ == "__main__":
    part_1_the_loss()
    part_2_and_3_train_and_evaluate()

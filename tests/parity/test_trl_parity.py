"""Our DPO loss and metrics equal TRL 1.16's DPOTrainer on the first batch of real hh-rlhf pairs.

One PEFT model serves both sides: TRL builds it from the embedded SmolLM2-135M-Instruct and a LoRA config, then
the LoRA B matrices are set to fixed non-zero values so that the policy differs from its reference (the base
model, adapters disabled, on both sides) and the loss is not log 2. TRL runs its own path: dataset preparation,
its data collator, `compute_loss` and the metrics it logs; we run tokenize_records -> build_batch ->
ResponseLogProbs + AdapterReference -> pair_loss / pair_metrics, in the padded and the prefix-sharing layouts.
"""

from __future__ import annotations

import pytest
import torch

from directalign.config import TrainConfig
from directalign.data.batching import build_batch
from directalign.data.formats import load_records
from directalign.data.tokenize import tokenize_records
from directalign.models.loading import load_model, load_tokenizer
from directalign.models.logprobs import ResponseLogProbs, sequence_logps
from directalign.models.reference import AdapterReference
from directalign.training.objective import pair_loss, pair_metrics, pair_terms

pytestmark = pytest.mark.integration

BATCH = 2  # pairs in TRL's first batch
METRICS = ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
           "logps/rejected"]


@pytest.fixture(scope="module")
def trl_run(tmp_path_factory):
    """TRL's trainer on the first BATCH pairs, its loss and logged metrics, and the shared PEFT model."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from tests.conftest import shared_data_dir

    path = shared_data_dir() / "hh-rlhf-harmless-test" / "test.jsonl.gz"
    if not path.is_file():
        pytest.skip(f"shared data not found at {path} (set DIRECTALIGN_SHARED_DATA)")
    records = load_records(path).records[:BATCH]
    rows = [{"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected} for r in records]
    tokenizer = load_tokenizer()
    args = DPOConfig(
        output_dir=str(tmp_path_factory.mktemp("trl")),
        per_device_train_batch_size=BATCH,
        beta=0.1,
        loss_type=["sigmoid"],
        max_length=None,
        bf16=False,
        use_cpu=True,
        report_to="none",
        activation_checkpointing=False,
        train_sampling_strategy="sequential",
        dataset_num_proc=None,
    )
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = DPOTrainer(
        model=load_model(), args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        peft_config=lora,
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in trainer.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.model.train()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, inputs).item()
    metrics = {name: values[-1] for name, values in trainer._metrics["train"].items()}
    return {"records": records, "tokenizer": tokenizer, "model": trainer.model, "inputs": inputs, "loss": loss,
            "metrics": metrics}


def test_tokens_equal_trl(trl_run):
    tokenized = tokenize_records(trl_run["records"], trl_run["tokenizer"], max_length=None, max_prompt_length=None)
    ours = [rec.prompt_ids + rec.response_ids[i] for i in (0, 1) for rec in tokenized.records]  # TRL: chosen first
    inputs = trl_run["inputs"]
    theirs = [ids[mask.bool()].tolist() for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"],
                                                             strict=True)]
    assert ours == theirs


@pytest.mark.parametrize("layout", ["padded", "shared"])
def test_loss_and_metrics_equal_trl(trl_run, layout):
    tokenizer = trl_run["tokenizer"]
    records = tokenize_records(trl_run["records"], tokenizer, max_length=None, max_prompt_length=None).records
    batch = build_batch(records, tokenizer.pad_token_id, layout)
    policy = ResponseLogProbs(trl_run["model"])
    with torch.no_grad():
        policy_logps = sequence_logps(policy(batch), batch)
        ref_logps = AdapterReference(policy).sequence_logps(batch)
    cfg = TrainConfig(beta=0.1, loss_type="sigmoid")
    terms = pair_terms(policy_logps, ref_logps, batch)
    loss, chosen_rewards, rejected_rewards = pair_loss(cfg, terms)
    ours = pair_metrics(terms, loss, chosen_rewards, rejected_rewards)

    expected = trl_run["metrics"]
    assert abs(trl_run["loss"] - 0.693147) > 1e-3, "the policy should differ from its reference"
    assert ours["loss"] == pytest.approx(trl_run["loss"], abs=1e-4)
    for name in METRICS:
        assert ours[name] == pytest.approx(expected[name], abs=1e-4), name

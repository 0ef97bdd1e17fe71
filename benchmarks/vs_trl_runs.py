"""The children of bench_vs_trl.py: one run of one method by one system (TRL 1.16 or directalign), timed.

Each method is one row of METHODS: the TRL trainer it is compared with, and the settings both sides get beyond
the shared ones (SETTINGS). Both sides read the same JSONL file, written once by the parent: prompt/chosen/rejected
rows, or for KTO the prompt/completion/label rows of directalign's own unpairing (chosen then rejected of each
pair, in file order), so that both see the same examples in the same order. TRL runs sequentially sampled,
without gradient checkpointing (its configs' default is on), with the reference precomputed where the method has
one (DPO, KTO); directalign in the packed layout, with DPO's reference cache starting empty and KTO's reference
run live (its config refuses a precomputed one: the KL term's mismatched pairs are scored afresh each step).
"""

from __future__ import annotations

import importlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROW_TOKENS = 4096  # directalign's packed rows: a micro-batch (and a precompute batch of 8 records) in one row
MODEL = "smollm2-135m-instruct"  # the embedded model; --model takes any folder or Hub id of the Llama family
SETTINGS = dict(max_length=512, batch=2, accumulation=4, lora_r=16, lora_alpha=32, lr=5e-5, seed=42)


@dataclass(frozen=True)
class Method:
    trl_trainer: str  # module:class of TRL 1.16
    trl_config: str
    trl_args: dict  # TRL config values beyond the shared ones
    ours: dict = field(default_factory=dict)  # directalign config values beyond the shared ones
    reference: bool = False  # a reference model: precomputed by TRL, and by directalign unless `ours` says not
    unpaired: bool = False  # KTO: the data file holds prompt/completion/label rows
    legacy_eos: bool = False  # TRL's legacy tokenize_row appends an EOS after the chat template's end of turn


METHODS = {
    "dpo": Method("trl:DPOTrainer", "trl:DPOConfig", dict(beta=0.1, loss_type=["sigmoid"]),
                  dict(loss_type="sigmoid", beta=0.1), reference=True),
    "kto": Method("trl:KTOTrainer", "trl:KTOConfig",
                  dict(beta=0.1, loss_type="kto", desirable_weight=1.0, undesirable_weight=1.0),
                  # directalign cannot precompute KTO's reference: its KL pairs are new every step (config check)
                  dict(loss_type="kto", beta=0.1, desirable_weight=1.0, undesirable_weight=1.0,
                       precompute_ref_log_probs=False),
                  reference=True, unpaired=True),
    # TRL's ORPO beta is the paper's lambda; directalign's beta only scales the logged rewards.
    "orpo": Method("trl.experimental.orpo:ORPOTrainer", "trl.experimental.orpo:ORPOConfig", dict(beta=0.1),
                   dict(loss_type="orpo", orpo_lambda=0.1, beta=0.1), legacy_eos=True),
    # SimPO is TRL's CPOTrainer with loss_type simpo and no NLL term (cpo_alpha 0).
    "simpo": Method("trl.experimental.cpo:CPOTrainer", "trl.experimental.cpo:CPOConfig",
                    dict(loss_type="simpo", beta=2.0, simpo_gamma=0.5, cpo_alpha=0.0),
                    dict(loss_type="simpo", beta=2.0, simpo_gamma=0.5), legacy_eos=True),
    # The Bradley-Terry reward model (`directalign reward-model train`), LoRA with the score head in full.
    "rm": Method("trl:RewardTrainer", "trl:RewardConfig", {}),
}


def _attr(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


# ---------------------------------------------------------------- TRL


def run_trl(method: str, data: str, model_name: str = MODEL) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, TrainerCallback, set_seed

    from directalign.models.loading import load_tokenizer, resolve_model

    spec = METHODS[method]
    tokenizer = load_tokenizer(model_name)
    model_path = resolve_model(model_name)
    model_kwargs = dict(dtype=torch.float32, attn_implementation="sdpa")
    if method == "rm":  # seeded as directalign's run is, so that the fresh score head starts the same
        set_seed(SETTINGS["seed"])
        model = AutoModelForSequenceClassification.from_pretrained(
            model_path, num_labels=1, pad_token_id=tokenizer.pad_token_id, **model_kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_path, **model_kwargs)
    # In memory, so that TRL's precompute cannot be read from a datasets cache of an earlier run either.
    rows = Dataset.from_list([json.loads(line) for line in Path(data).read_text().splitlines()])
    extra = dict(precompute_ref_log_probs=True) if spec.reference else {}
    args = _attr(spec.trl_config)(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=SETTINGS["batch"],
        gradient_accumulation_steps=SETTINGS["accumulation"], learning_rate=SETTINGS["lr"],
        max_length=SETTINGS["max_length"], num_train_epochs=1, lr_scheduler_type="linear", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, seed=SETTINGS["seed"], bf16=False, use_cpu=True,
        gradient_checkpointing=False, train_sampling_strategy="sequential", logging_steps=1, save_strategy="no",
        report_to="none", disable_tqdm=True, **spec.trl_args, **extra,
    )
    lora = LoraConfig(r=SETTINGS["lora_r"], lora_alpha=SETTINGS["lora_alpha"], lora_dropout=0.0,
                      target_modules=["q_proj", "v_proj"], task_type="SEQ_CLS" if method == "rm" else "CAUSAL_LM",
                      modules_to_save=["score"] if method == "rm" else None)
    step_ends: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, *args, **kwargs):
            step_ends.append(time.perf_counter())

    trainer_class = _attr(spec.trl_trainer)
    if spec.legacy_eos:
        _same_tokens_as_ours(trainer_class)
    cpu_start = time.process_time()
    start = time.perf_counter()  # tokenisation, PEFT wrapping and any reference precompute happen in __init__
    trainer = trainer_class(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                                      peft_config=lora, callbacks=[StepTimes()])
    setup_end = time.perf_counter()
    trainer.train()
    cpu_s = time.process_time() - cpu_start
    logs = [e for e in trainer.state.log_history if "loss" in e and "train_runtime" not in e]
    return {
        "total_s": step_ends[-1] - start, "setup_s": setup_end - start, "train_s": step_ends[-1] - setup_end,
        "cpu_s": cpu_s, "step_losses": [e["loss"] for e in logs],
        "first_logps_chosen": logs[0].get("logps/chosen"),
        "first_preference_term": _trl_preference_term(method, logs[0]),
        "parameters": parameters_of_model(model_name),
    }


def _same_tokens_as_ours(trainer_class) -> None:
    """The same tokens on both sides: ORPOTrainer's and CPOTrainer's tokenize_row append an EOS to a response
    whose last token is not one, and SmolLM2's chat template ends a turn with <|im_end|> then a newline, so each
    response would get one more token there (an <|im_end|> after the newline) than in directalign and in TRL's own
    DPOTrainer; the losses, averaged over response tokens, would then differ by that token alone. The append is
    turned off here, in this child process only."""
    sys.modules[trainer_class.__module__].add_eos_token_if_needed = lambda eos, chosen, rejected: (chosen, rejected)


def _trl_preference_term(method: str, first_log: dict) -> float | None:
    """ORPO: the odds-ratio term of TRL's first step, -mean log sigmoid(log odds ratio), without the NLL
    (TRL's NLL pools the prompt's tokens in, ours is the paper's response NLL: losses/reference_free.py)."""
    return -first_log["log_odds_ratio"] if method == "orpo" else None


# ---------------------------------------------------------------- directalign


def run_directalign(method: str, data: str, bf16: bool, model_name: str = MODEL) -> dict:

    spec = METHODS[method]
    if method == "rm":
        from directalign.reward_models import trainer as loop

        entry, loader = loop.train_reward_model, "load_backbone"
    else:
        from directalign.training import dpo as loop

        entry, loader = loop.train, "build_policy"
    marks: dict[str, float] = {"reference": 0.0}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            begin, cpu_begin = time.perf_counter(), time.process_time()
            value = fn(*args, **kwargs)
            marks[name] = time.perf_counter() - begin
            marks[name + "_cpu"] = time.process_time() - cpu_begin
            marks[name + "_end"], marks[name + "_cpu_end"] = time.perf_counter(), time.process_time()
            return value

        return wrapper

    # Instrumentation only: the timers wrap the loop's own functions, which run unchanged.
    loop.prepare_data = timed("tokenise", loop.prepare_data)
    setattr(loop, loader, timed("load", getattr(loop, loader)))
    preference_terms: list[float] = []
    if spec.reference:
        loop.precompute_reference = timed("reference", loop.precompute_reference)
    if method == "orpo":
        loop.pair_loss = _recording_odds_ratio(loop.pair_loss, preference_terms)
    cfg = directalign_config(method, data, bf16, model_name)
    steps: list[tuple[float, dict, float]] = []
    entry(cfg, on_step=lambda step, metrics: steps.append((time.perf_counter(), metrics, time.process_time())))
    start = marks["load_end"]  # after the model is loaded; the tokenisation before it is added below
    first_step = len(preference_terms) // max(len(steps), 1)
    return {
        "total_s": steps[-1][0] - start + marks["tokenise"], "setup_s": marks["tokenise"] + marks["reference"],
        "cpu_s": steps[-1][2] - marks["load_cpu_end"] + marks["tokenise_cpu"],
        "train_s": steps[-1][0] - marks.get("reference_end", start), "step_losses": [m["loss"] for _, m, _ in steps],
        "first_logps_chosen": steps[0][1].get("logps/chosen"),
        "first_preference_term": sum(preference_terms[:first_step]) / first_step if preference_terms else None,
        "parameters": parameters_of_model(model_name),
    }


def directalign_config(method: str, data: str, bf16: bool = False, model_name: str = MODEL, **overrides):
    """The directalign config of `method`'s run: the shared settings, the method's own, then `overrides`."""
    from directalign.config import load_config

    spec = METHODS[method]
    extra = dict(layout="packed", max_tokens_per_row=ROW_TOKENS, release_freed_memory=True)
    if method == "rm":
        extra.update(lora_modules_to_save=["score"])
    else:
        extra.update(kl_prompts=0, **(dict(precompute_ref_log_probs=True) if spec.reference else {}))
    return load_config("reward-model train" if method == "rm" else "train", overrides=dict(
        model=model_name, data=data, output_dir=tempfile.mkdtemp(), resume=False, eval_split=0,
        max_length=SETTINGS["max_length"], max_prompt_length=SETTINGS["max_length"] - 128,
        per_device_train_batch_size=SETTINGS["batch"],
        gradient_accumulation_steps=SETTINGS["accumulation"], learning_rate=SETTINGS["lr"],
        lora_r=SETTINGS["lora_r"], lora_alpha=SETTINGS["lora_alpha"], lora_target_modules=["q_proj", "v_proj"],
        warmup_ratio=0, seed=SETTINGS["seed"], train_sampling_strategy="sequential", logging_steps=1, save_steps=0,
        bf16=bf16, eval_before_training=False, **{**extra, **spec.ours, **overrides},
    ))


def _recording_odds_ratio(pair_loss, out: list[float]):
    """pair_loss, also appending each micro-batch's mean ORPO odds-ratio term (the loss less its NLL, / lambda)."""
    def wrapper(cfg, terms, *args, **kwargs):
        losses, chosen_rewards, rejected_rewards = pair_loss(cfg, terms, *args, **kwargs)
        nll = -terms.policy_chosen / terms.chosen_lengths
        out.append(((losses - nll) / cfg.orpo_lambda).mean().item())
        return losses, chosen_rewards, rejected_rewards

    return wrapper


def parameters_of_model(model_name: str = MODEL) -> tuple[int, int]:
    """(decoder parameters, LM head parameters) of the base model; the LM head is the tied embedding."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from directalign.models.loading import resolve_model

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(resolve_model(model_name)))
    head = model.get_output_embeddings().weight.numel()
    return sum(p.numel() for p in model.parameters()) - head, head

"""The groups of config keys. A command's config is made of the groups it honours (config/commands.py), so a
key that a command does not read is not one of its keys, and setting it is an error naming the command.

Names follow Hugging Face TrainingArguments and TRL's DPOConfig / KTOConfig / GRPOConfig / RewardConfig where one
exists. Each group may define `check(self)` for constraints among its own keys; ranges and choices of single keys
are declared with the key and checked for every group alike (config.keys.check_ranges).
"""

from __future__ import annotations

from dataclasses import dataclass

from directalign.config.keys import key
from directalign.data.builtin import KINDS
from directalign.errors import ConfigError
from directalign.models.embedded import DEFAULT_MODEL

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TORCH_DTYPES = ("float32", "bfloat16", "float16", "auto")
TRACKERS = ("none", "tensorboard", "wandb", "mlflow", "trackio", "all")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")


@dataclass
class ModelKeys:
    model: str = key(DEFAULT_MODEL, "embedded name (smollm2-135m-instruct), a local folder or a hub id")
    attn_implementation: str = key(
        "sdpa", "attention kernel: sdpa, eager, flex_attention (CUDA) or flash_attention_2 (layout padded only)"
    )
    bf16: bool = key(False, "bf16 autocast, fp32 trainable weights; slow on CPUs without native bf16")
    gradient_checkpointing: bool = key(False, "recompute activations in the backward pass: less memory, slower")
    torch_dtype: str = key("float32", "dtype the base weights load in (auto: the checkpoint's); LoRA weights stay "
                           "fp32", choices=TORCH_DTYPES)
    load_in_4bit: bool = key(False, "load the base weights 4-bit (bitsandbytes NF4, QLoRA; CUDA only)")
    load_in_8bit: bool = key(False, "load the base weights 8-bit (bitsandbytes LLM.int8; CUDA only)")
    use_bnb_nested_quant: bool = key(False, "4-bit: also quantise the quantisation constants (QLoRA's double "
                                            "quantisation)")
    disable_dropout: bool = key(False, "set the model's dropout probabilities to 0 (TRL's default: true); "
                                       "lora_dropout still applies")

    def check(self) -> None:
        if self.load_in_4bit and self.load_in_8bit:
            raise ConfigError("load_in_4bit and load_in_8bit: choose one")
        if (self.load_in_4bit or self.load_in_8bit) and not getattr(self, "use_peft", True):
            raise ConfigError("load_in_4bit/load_in_8bit train a LoRA adapter over frozen quantised weights: "
                              "set use_peft true")


@dataclass
class LoraKeys:
    use_peft: bool = key(True, "train a LoRA adapter (false: full fine-tuning)")
    lora_r: int = key(16, "LoRA rank", low=1)
    lora_alpha: int = key(32, "LoRA scale numerator (scale = lora_alpha / lora_r)", low=1)
    lora_dropout: float = key(0.0, "dropout on the LoRA input", low=0, high=1, high_open=True)
    lora_target_modules: list[str] = key(
        help="module names to adapt, or all-linear (PEFT's spelling: every linear layer but the head)",
        factory=lambda: list(ALL_LINEAR),
    )
    lora_layers: int | None = key(None, "adapt only the last N decoder layers (none: all)", low=1)


@dataclass
class OptimKeys:
    learning_rate: float = key(5e-5, "AdamW learning rate", low=0, low_open=True)
    weight_decay: float = key(0.0, "AdamW decoupled weight decay", low=0)
    adam_beta1: float = key(0.9, "AdamW beta1", low=0, high=1, high_open=True)
    adam_beta2: float = key(0.999, "AdamW beta2", low=0, high=1, high_open=True)
    max_grad_norm: float = key(1.0, "clip the gradient norm to this (0: no clipping)", low=0)
    lr_scheduler_type: str = key("linear", "learning-rate schedule after warmup", choices=SCHEDULERS)
    warmup_ratio: float = key(0.1, "warmup as a fraction of the steps (when warmup_steps is 0)", low=0, high=1)
    warmup_steps: int = key(0, "warmup steps (0: use warmup_ratio)", low=0)
    num_train_epochs: float = key(1.0, "epochs over the training set (when max_steps is -1)", low=0, low_open=True)
    max_steps: int = key(-1, "optimizer steps; -1: from num_train_epochs", low=-1)
    per_device_train_batch_size: int = key(4, "records per process per micro-batch", low=1)
    gradient_accumulation_steps: int = key(1, "micro-batches per optimizer step", low=1)
    seed: int = key(42, "seed of the data order, initialisation and sampling", low=0)

    def check(self) -> None:
        if self.max_steps == 0:
            raise ConfigError("max_steps must be -1 (use num_train_epochs) or at least 1; got 0")


@dataclass
class RunKeys:
    output_dir: str = key("runs/dpo", "folder of checkpoints, metrics.jsonl and the final outputs", result=False)
    logging_steps: int = key(5, "write train metrics every N steps", low=1, result=False)
    save_steps: int = key(50, "write a checkpoint every N steps (0: none)", low=0, result=False)
    save_total_limit: int = key(2, "checkpoints kept (older ones are removed)", low=1, result=False)
    resume: bool = key(True, "continue from the last good checkpoint in output_dir", result=False)
    resume_allow_changes: list[str] = key(
        help="keys a resumed run may change although they change the result (e.g. max_steps)",
        factory=list,
        result=False,
    )
    overwrite_output_dir: bool = key(False, "replace a finished or different run in output_dir", result=False)
    num_processes: int | None = key(
        None, "processes this run must have (default: what the launcher started); a shortfall is an error", low=1,
        result=False,
    )
    eval_steps: int | None = key(None, "evaluate on held-out data every N steps (none: before and after only)", low=1)
    eval_before_training: bool = key(True, "evaluate before the first step", result=False)
    release_freed_memory: bool = key(
        False, "return freed buffers to the system (glibc): a lower peak, slower steps with large micro-batches",
        result=False,
    )


@dataclass
class TrackerKeys:
    report_to: list[str] = key(
        help="trackers the metrics also go to: none, tensorboard, wandb, mlflow, trackio or all (a list; "
        "metrics.jsonl is always written)", factory=lambda: ["none"], choices=TRACKERS, result=False,
    )
    logging_dir: str | None = key(None, "folder of the tracker's files (default: output_dir/runs)", result=False)
    run_name: str | None = key(None, "the run's name in the trackers (default: output_dir's name)", result=False)

    def check(self) -> None:
        if "none" in self.report_to and len(self.report_to) > 1:
            raise ConfigError(f"report_to: none cannot be combined with other trackers; got {self.report_to}")


@dataclass
class HubKeys:
    push_to_hub: bool = key(False, "upload the final adapter/model (and merged/) to the Hub; token from HF_TOKEN",
                            result=False)
    hub_model_id: str | None = key(None, "the Hub repository, user/name (default: output_dir's name)",
                                   result=False)
    hub_private_repo: bool | None = key(None, "create the repository private (none: the Hub's default)",
                                        result=False)


@dataclass
class PreferenceDataKeys:
    data: str | None = key(None, "preference file, saved dataset folder or hub dataset id (none: built-in set)")
    data_split: str | None = key(None, "split of a DatasetDict or hub dataset (default: train)")
    data_config: str | None = key(None, "configuration name of a hub dataset")
    eval_data: str | None = key(None, "held-out preference data (default: eval_split of data)")
    eval_data_split: str | None = key(None, "split of eval_data when it is a DatasetDict or hub dataset")
    eval_split: float = key(0.1, "held-out fraction of data when eval_data is not given", low=0, high=1, high_open=True)
    builtin_train_pairs: int = key(192, "training pairs of the built-in set", low=1)
    builtin_eval_pairs: int = key(64, "held-out pairs of the built-in set", low=0)
    max_train_records: int | None = key(None, "use only the first N training records after the split", low=1)
    max_eval_records: int | None = key(None, "use only the first N held-out records", low=1)
    max_length: int = key(1024, "tokens of prompt + response, longer responses are cut", low=2)
    max_prompt_length: int | None = key(
        None, "tokens of the prompt, longer prompts keep their end (none: half of max_length)", low=1
    )
    use_chat_template: bool = key(True, "render conversations with the tokenizer's chat template")
    per_device_eval_batch_size: int = key(8, "records per process per evaluation batch", low=1, result=False)
    max_tokens_per_batch: int | None = key(None, "micro-batches of up to this many tokens instead of a count", low=1)
    train_sampling_strategy: str = key("random", "random: a seeded order per epoch; sequential: file order",
                                       choices=("random", "sequential"))

    @property
    def prompt_length_limit(self) -> int:
        """max_prompt_length, or half of max_length when it is not set (TRL 1.16 has no max_prompt_length)."""
        return self.max_prompt_length if self.max_prompt_length is not None else self.max_length // 2

    def check(self) -> None:
        if self.max_prompt_length is not None and self.max_prompt_length >= self.max_length:
            raise ConfigError(
                f"max_prompt_length ({self.max_prompt_length}) must be smaller than max_length ({self.max_length})"
            )


@dataclass
class LayoutKeys:
    layout: str = key("shared", "batch layout: padded, shared (prompt once for its responses) or packed",
                      choices=("padded", "shared", "packed"))
    max_tokens_per_row: int | None = key(None, "packed layout: tokens per row", low=1)


@dataclass
class ForwardKeys:
    logits_chunk_size: int = key(1024, "response tokens per chunk of the LM head (memory vs speed)", low=1)


@dataclass
class PairLossKeys:
    loss_type: str = key("sigmoid", "the preference loss (see the losses table)")
    beta: float = key(0.1, "strength of the pull to the reference (DPO's beta; IPO's tau)", low=0, low_open=True)
    label_smoothing: float = key(0.0, "assumed label-flip rate (cDPO, robust)", low=0, high=0.5, high_open=True)
    rpo_alpha: float | None = key(None, "add rpo_alpha x the chosen per-token NLL (RPO)", low=0)
    simpo_gamma: float = key(0.5, "SimPO target reward margin", low=0)
    orpo_lambda: float = key(0.1, "ORPO weight of the odds-ratio term", low=0)


@dataclass
class KTOKeys:
    desirable_weight: float = key(1.0, "KTO lambda_D", low=0, low_open=True)
    undesirable_weight: float | str = key(1.0, "KTO lambda_U, or auto: balance the class counts")

    def check(self) -> None:
        weight = self.undesirable_weight
        if weight != "auto" and (isinstance(weight, str) or weight <= 0):
            raise ConfigError(f"undesirable_weight must be a positive number or auto; got {weight!r}")


@dataclass
class ReferenceKeys:
    precompute_ref_log_probs: bool = key(False, "reference log-probs once before training, cached on disk")


@dataclass
class HealthKeys:
    health_checks: bool = key(True, "warn about unhealthy runs; false also disables kl_budget and early stopping")
    health_window: int = key(5, "train log events a trend is judged over", low=2, result=False)
    health_cooldown_steps: int = key(50, "each check warns at most once per this many steps", low=1, result=False)
    kl_budget: float | None = key(None, "nats per sequence of held-out KL; above it the run stops", low=0,
                                  low_open=True)
    length_drift_factor: float = key(1.5, "warn when generated length moves by more than this factor", low=1,
                                     low_open=True, result=False)


@dataclass
class EarlyStoppingKeys:
    early_stopping_metric: str | None = key(None, "stop when this stops improving: eval/NAME or train/NAME")
    early_stopping_patience: int = key(3, "logged values without improvement before stopping", low=1)
    early_stopping_mode: str | None = key(None, "min or max (default: min for losses and kl)", choices=("min", "max"))
    early_stopping_threshold: float = key(0.0, "improvement smaller than this does not count", low=0)


@dataclass
class HeldoutKLKeys:
    kl_prompts: int = key(8, "held-out prompts sampled at each eval for the KL to the reference (0: none)", low=0)
    kl_samples: int = key(2, "samples per prompt for the held-out KL", low=1)
    eval_max_new_tokens: int = key(48, "new tokens of the held-out samples", low=1)


@dataclass
class SampleGenerationKeys:
    sample_generations: int = key(0, "held-out prompts answered before and after training (generations.jsonl)",
                                  low=0, result=False)


@dataclass
class SaveKeys:
    merge: bool = key(False, "also write a merged model that plain from_pretrained loads", result=False)


@dataclass
class PromptKeys:
    prompts: str | None = key(None, "prompt file (a prompt or messages column; preference files too); none: "
                                    "the built-in verifiable tasks")
    eval_prompts: str | None = key(None, "held-out prompts (default: eval_split of prompts)")
    eval_split: float = key(0.1, "held-out fraction of prompts when eval_prompts is not given", low=0, high=1,
                            high_open=True)
    builtin_kinds: list[str] = key(help="built-in task kinds to draw (empty: all)", factory=list, choices=KINDS)
    builtin_train_prompts: int = key(64, "training prompts of the built-in tasks", low=1)
    builtin_eval_prompts: int = key(28, "held-out prompts of the built-in tasks", low=0)
    reward_funcs: list[str] = key(
        help="reward functions: builtin, builtin_content, reward_model:DIR, module:function, file.py:function",
        factory=lambda: ["builtin"],
    )
    reward_weights: list[float] | None = key(None, "weight of each reward function (default: all 1)")

    def check(self) -> None:
        if not self.reward_funcs:
            raise ConfigError("reward_funcs: name at least one reward function (builtin, module:function)")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_funcs):
            raise ConfigError(
                f"reward_weights has {len(self.reward_weights)} values for {len(self.reward_funcs)} reward_funcs"
            )


@dataclass
class SamplingKeys:
    num_generations: int = key(4, "completions sampled per prompt", low=2)
    max_new_tokens: int = key(32, "new tokens per completion", low=1)
    temperature: float = key(1.0, "sampling temperature (1: the policy's own distribution)", low=0, low_open=True)
    top_p: float = key(1.0, "nucleus sampling (1: off)", low=0, high=1, low_open=True)
    top_k: int = key(0, "top-k sampling (0: off)", low=0)
    generation_batch_size: int = key(16, "prompts per generation call", low=1, result=False)
    eval_temperature: float = key(0.0, "temperature of the held-out answers (0: greedy)", low=0)


@dataclass
class GRPOKeys:
    beta: float = key(0.1, "KL coefficient to the reference (0: no reference pass; TRL's GRPO default)", low=0)
    epsilon: float = key(0.2, "clipping range of the probability ratio", low=0, high=1, low_open=True,
                         high_open=True)
    num_iterations: int = key(1, "optimizer steps per generation batch (mu); above 1 the clipping acts", low=1)
    scale_rewards: bool = key(True, "divide advantages by the group's std (false: Dr. GRPO)")


@dataclass
class IterativeKeys:
    num_rounds: int = key(3, "rounds of sample -> score -> pair -> train", low=1)
    prompts_per_round: int = key(32, "training prompts sampled each round", low=1)
    update_reference: bool = key(True, "each round's policy becomes the next round's reference")


JUDGE_RULES = ("flip-tie", "mean-probability")  # judges.pairwise.RULES (config stays free of torch imports)


@dataclass
class JudgeKeys:
    """A pairwise judge as the pair source of online and iterative DPO (training/judged.py)."""

    judge: str | None = key(
        None, "pair source: a judge (openai:MODEL[@URL], local:MODEL, reward-model:DIR, reward:FUNCTION) ranks "
        "each prompt's samples by pairwise wins (both orders), best vs worst; none: the reward functions"
    )
    judge_base_url: str | None = key(None, "server of an openai: judge (default $OPENAI_BASE_URL; key: "
                                           "$OPENAI_API_KEY)", result=False)
    judge_concurrency: int = key(8, "requests an openai: judge keeps in flight", low=1, result=False)
    judge_batch_size: int = key(8, "pairs per forward pass of a local or reward-model judge", low=1, result=False)
    judge_tie_margin: float = key(0.0, "local and score judges: a smaller lead is a tie", low=0)
    judge_rule: str = key("flip-tie", "how the verdicts on both orders combine", choices=JUDGE_RULES)
    judge_swap: bool = key(True, "judge both orders (position debiasing; false: the first order decides)")
    judge_length_penalty: float = key(
        0.0, "selection score = wins / (k - 1) - this x length / max_new_tokens (0: lengths do not count)", low=0
    )
    judge_label_smoothing: bool = key(
        False, "each pair's label_smoothing = 1 - the judge's confidence in it (at most 0.45; losses that read "
        "label_smoothing)"
    )

    def check(self) -> None:
        if self.judge is None:
            defaults = {f.name: f.default for f in JudgeKeys.__dataclass_fields__.values()}
            changed = [k for k, v in defaults.items() if k != "judge" and getattr(self, k) != v]
            if changed:
                raise ConfigError(f"{', '.join(changed)}: set judge too (these keys configure the judge)")


@dataclass
class RewardModelKeys:
    margin: float = key(0.0, "Bradley-Terry margin m: -log sigmoid(r_c - r_r - m)", low=0)
    lora_modules_to_save: list[str] = key(help="modules trained in full beside the adapter", factory=lambda: ["score"])

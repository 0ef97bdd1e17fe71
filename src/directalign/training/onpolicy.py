"""What online DPO, iterative DPO and GRPO are configured with: their config, prompts and reward.

Each method samples completions from the current policy (directalign.generation), scores them with a reward
function `f(prompts, completions, **columns) -> list[float]` (directalign.generation.rewards; a reward model or a
judge wrapped in such a callable works the same), and learns from the scores. Sampled token ids are used as they
are (no decode / re-encode round trip), so the log-probs trained on are those of the sequences the policy produced.
The runs are single-process: generation happens in this process, on the policy's device. Sampling, scoring and
the held-out evaluation they share are in directalign.training.rollout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from directalign.data.types import Message
from directalign.errors import ConfigError, DataError
from directalign.generation.base import GenerationConfig
from directalign.generation.rewards import RewardFunction, combine, load_reward_function
from directalign.training.config import TrainConfig

METHODS = ("online-dpo", "iterative-dpo", "grpo")
PAIR_LOSSES = ("sigmoid", "robust", "ipo", "hinge", "simpo", "orpo", "cpo")


@dataclass
class OnPolicyConfig(TrainConfig):
    """TrainConfig plus the on-policy options; TRL's GRPOConfig / OnlineDPOConfig names where they exist.

    For GRPO, beta is the KL coefficient (0 allowed: no reference pass), as in TRL's GRPOConfig.
    per_device_train_batch_size is prompts per step for online DPO and GRPO, pairs per step for iterative DPO.
    """

    method: str = "online-dpo"  # online-dpo | iterative-dpo | grpo
    output_dir: str | None = None  # default runs/<method>
    prompts: str | None = None  # a file with a prompt (or messages) column; None: the built-in verifiable tasks
    eval_prompts: str | None = None  # held-out prompts; default: eval_split of `prompts`
    builtin_kinds: list[str] = field(default_factory=list)  # built-in task kinds to draw ([] = all)
    builtin_train_prompts: int = 64
    builtin_eval_prompts: int = 28
    reward_funcs: list[str] = field(default_factory=lambda: ["builtin"])  # see build_reward for the names
    reward_weights: list[float] | None = None
    # sampling
    num_generations: int = 4  # completions per prompt
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    generation_batch_size: int = 16  # prompts per generate call
    eval_temperature: float = 0.0  # held-out reward: greedy by default
    # iterative DPO
    num_rounds: int = 3
    prompts_per_round: int = 32
    update_reference: bool = True  # merge each round's LoRA into the base: the next round's reference
    # GRPO
    epsilon: float = 0.2
    num_iterations: int = 1  # optimizer steps per generation batch (mu); > 1 makes the clipping bite
    scale_rewards: bool = True  # divide advantages by the group std (False: Dr. GRPO)

    @property
    def allows_zero_beta(self) -> bool:
        return self.method == "grpo"

    @property
    def needs_reference(self) -> bool:
        if self.method == "grpo":
            return self.beta > 0
        return super().needs_reference

    def validate(self) -> OnPolicyConfig:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if self.output_dir is None:
            self.output_dir = f"runs/{self.method}"
        if self.method != "grpo" and self.loss_type not in PAIR_LOSSES:
            raise ConfigError(f"{self.method} trains on pairs: loss_type must be one of {', '.join(PAIR_LOSSES)}")
        super().validate()
        if self.num_generations < 2:
            raise ConfigError(f"num_generations must be at least 2 to compare completions; got {self.num_generations}")
        if self.num_rounds < 1 or self.prompts_per_round < 1 or self.num_iterations < 1:
            raise ConfigError("num_rounds, prompts_per_round and num_iterations must be at least 1")
        if not 0 < self.epsilon < 1:
            raise ConfigError(f"epsilon must be in (0, 1); got {self.epsilon}")
        if not self.reward_funcs:
            raise ConfigError("reward_funcs: name at least one reward function (builtin, module:function)")
        if self.reward_weights is not None:
            self.reward_weights = [float(w) for w in self.reward_weights]
            if len(self.reward_weights) != len(self.reward_funcs):
                raise ConfigError(
                    f"reward_weights has {len(self.reward_weights)} values for {len(self.reward_funcs)} reward_funcs"
                )
        generation_config(self), eval_generation_config(self)  # raise ConfigError for bad sampling settings now
        return self


def generation_config(cfg: OnPolicyConfig, seed: int | None = None) -> GenerationConfig:
    return GenerationConfig(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        num_samples=cfg.num_generations,
        seed=seed,
    )


def eval_generation_config(cfg: OnPolicyConfig, seed: int | None = None) -> GenerationConfig:
    return GenerationConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.eval_temperature, seed=seed)


# Prompts.


@dataclass
class PromptSet:
    """Chat prompts and, per prompt, the file's other columns (what reward functions receive as **columns)."""

    prompts: list[list[Message]]
    columns: dict[str, list] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)

    def take(self, indices: list[int]) -> PromptSet:
        columns = {k: [v[i] for i in indices] for k, v in self.columns.items()}
        return PromptSet([self.prompts[i] for i in indices], columns)


def builtin_prompt_sets(n_train: int, n_eval: int, kinds: list[str], seed: int) -> tuple[PromptSet, PromptSet]:
    """Train and held-out prompts of the built-in tasks (disjoint facts, categories and numbers; see
    directalign.data.builtin), restricted to `kinds`; the column "kind" names each prompt's task."""
    from directalign.data.builtin import KINDS, builtin_split, task_from_prompt

    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ConfigError(f"builtin_kinds: unknown {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    # The families come in turn, so ask for enough of every kind and keep the wanted ones.
    share = len(KINDS) / len(kinds) if kinds else 1
    train, held = builtin_split(math.ceil(n_train * share), math.ceil(n_eval * share), seed=seed)

    def prompt_set(records, n: int) -> PromptSet:
        prompts = [r.prompt for r in records if not kinds or task_from_prompt(r.prompt[-1]["content"]).kind in kinds]
        prompts = prompts[:n]
        return PromptSet(prompts, {"kind": [task_from_prompt(p[-1]["content"]).kind for p in prompts]})

    return prompt_set(train, n_train), prompt_set(held, n_eval)


def load_prompts(path: str) -> PromptSet:
    """Prompts from a file: rows with `prompt` (string or messages) or `messages` (a trailing assistant turn is
    dropped), other columns kept; or any preference / unpaired data file, whose distinct prompts are taken."""
    from directalign.data.formats import detect_schema, load_records, read_rows

    rows = read_rows(Path(path), None)
    if any(detect_schema(row) for _, row in rows[:50]):
        seen, prompts = set(), []
        for record in load_records(path).records:
            key = repr(record.prompt)
            if key not in seen:
                seen.add(key)
                prompts.append(record.prompt)
        return PromptSet(prompts)
    prompts, columns = [], {}
    for number, row in rows:
        prompt = _row_prompt(row, f"{path}:{number}")
        prompts.append(prompt)
        for key, value in row.items():
            if key not in ("prompt", "messages"):
                columns.setdefault(key, [None] * (len(prompts) - 1)).append(value)
        for values in columns.values():
            values.extend([None] * (len(prompts) - len(values)))
    if not prompts:
        raise DataError(f"{path}: no prompts")
    return PromptSet(prompts, columns)


def _row_prompt(row, place: str) -> list[Message]:
    value = row.get("prompt", row.get("messages")) if isinstance(row, dict) else None
    if isinstance(value, str) and value.strip():
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        messages = [{"role": m["role"], "content": m["content"]} for m in value]
        if messages[-1]["role"] == "assistant" and len(messages) > 1:
            messages = messages[:-1]
        return messages
    raise DataError(f"{place}: expected a prompt (string or messages) or messages field")


def prompt_sets(cfg: OnPolicyConfig) -> tuple[PromptSet, PromptSet]:
    if cfg.prompts is None:
        return builtin_prompt_sets(cfg.builtin_train_prompts, cfg.builtin_eval_prompts, cfg.builtin_kinds, cfg.seed)
    from directalign.data.pipeline import split_records

    train = load_prompts(cfg.prompts)
    if cfg.eval_prompts:
        return train, load_prompts(cfg.eval_prompts)
    kept, held = split_records(list(range(len(train))), cfg.eval_split, cfg.seed)
    return train.take(kept), train.take(held)


# Rewards.


def builtin_content(prompts, completions, **columns) -> list[float]:
    """1.0 when a built-in task's answer has the right content (the number, fact, yes/no or items), whatever its
    format: the content half of the built-in verifier, to weigh correctness above format."""
    from directalign.data.builtin import check
    from directalign.generation.rewards import completion_text

    texts = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
    return [float(check(t, completion_text(c))[0]) for t, c in zip(texts, completions, strict=True)]


def build_reward(cfg: OnPolicyConfig) -> RewardFunction:
    """The configured reward functions, combined with their weights when there are several. Each is "builtin" (the
    built-in tasks' verifier), "builtin_content" (its content half), "reward_model:FOLDER" (a `directalign
    reward-model train` output or a *ForSequenceClassification folder), "module:function" or "file.py:function"."""
    functions = [_reward_function(spec) for spec in cfg.reward_funcs]
    weights = cfg.reward_weights or [1.0] * len(functions)
    if len(functions) == 1 and weights[0] == 1.0:
        return functions[0]
    return combine(list(zip(functions, weights, strict=True)))


def _reward_function(spec: str) -> RewardFunction:
    from directalign.evaluation.generation_eval import builtin_reward

    if spec == "builtin":
        return builtin_reward
    if spec == "builtin_content":
        return builtin_content
    if spec.startswith("reward_model:"):
        from directalign.reward_models.scoring import RewardModel

        return RewardModel.load(spec.removeprefix("reward_model:")).as_reward_function()
    return load_reward_function(spec)

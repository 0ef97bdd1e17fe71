"""Reward functions for online methods (GRPO, online DPO): plain callables, as in GRPO recipes.

A reward function is `f(prompts, completions, **columns) -> list[float]`, one score per completion. prompts
are chat message lists or strings; completions are strings or assistant message lists (the last message's
content is scored); columns are the dataset's other columns, one value per completion (columns["answer"][i]).
The built-ins below are factories that return such callables, named by `__name__` for logging.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from directalign.data.builtin import check, task_from_prompt, verify
from directalign.errors import ConfigError, DataError, DirectAlignError

RewardFunction = Callable[..., list[float]]

LENGTH_UNITS = ("words", "chars", "tokens")
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
_JSON_FENCE = re.compile(r"^```(?:json)?\s*\n(.*?)\n?```$", re.DOTALL)


def completion_text(completion: str | Sequence[dict[str, str]]) -> str:
    """The text to score: the completion itself, or the content of its last message."""
    if isinstance(completion, str):
        return completion
    return completion[-1]["content"] if completion else ""


def _named(name: str, fn: RewardFunction) -> RewardFunction:
    fn.__name__ = fn.__qualname__ = name
    return fn


def target_length(
    target: int, unit: str = "words", tolerance: float | None = None, tokenizer: Any = None
) -> RewardFunction:
    """1.0 at exactly `target` units, falling linearly to 0.0 at target +- tolerance (default: target).

    unit: "words" (split on whitespace), "chars", or "tokens" (needs `tokenizer`; special tokens not counted).
    """
    if unit not in LENGTH_UNITS:
        raise ConfigError(f"target_length: unit must be one of {', '.join(LENGTH_UNITS)}, got {unit!r}")
    if unit == "tokens" and tokenizer is None:
        raise ConfigError("target_length: unit='tokens' needs a tokenizer")
    tolerance = target if tolerance is None else tolerance
    if target < 0 or tolerance <= 0:
        raise ConfigError(f"target_length: need target >= 0 and tolerance > 0, got {target} and {tolerance}")

    def length(text: str) -> int:
        if unit == "words":
            return len(text.split())
        if unit == "chars":
            return len(text)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def reward(prompts, completions, **columns) -> list[float]:
        return [max(0.0, 1.0 - abs(length(completion_text(c)) - target) / tolerance) for c in completions]

    return _named("target_length", reward)


def regex_match(pattern: str, full: bool = False, flags: int = 0) -> RewardFunction:
    """1.0 when the pattern matches the completion (anywhere, or the whole of it with full=True), else 0.0.

    flags: `re` flags, e.g. re.DOTALL so that `.` also crosses newlines in a format like <think>.*</think>.
    """
    try:
        compiled = re.compile(pattern, flags)
    except re.error as error:
        raise ConfigError(f"regex_match: invalid pattern {pattern!r}: {error}") from error
    match = compiled.fullmatch if full else compiled.search

    def reward(prompts, completions, **columns) -> list[float]:
        return [1.0 if match(completion_text(c)) else 0.0 for c in completions]

    return _named("regex_match", reward)


def valid_json(required_keys: Iterable[str] | None = None) -> RewardFunction:
    """1.0 when the completion parses as JSON (a ```json fence around it allowed), else 0.0.

    required_keys: the JSON must then be an object holding every one of these keys.
    """
    keys = list(required_keys or [])

    def score(text: str) -> float:
        text = text.strip()
        fenced = _JSON_FENCE.match(text)
        try:
            value = json.loads(fenced.group(1) if fenced else text)
        except json.JSONDecodeError:
            return 0.0
        if keys and not (isinstance(value, dict) and all(key in value for key in keys)):
            return 0.0
        return 1.0

    def reward(prompts, completions, **columns) -> list[float]:
        return [score(completion_text(c)) for c in completions]

    return _named("valid_json", reward)


def last_number(text: str) -> float | None:
    """The last number written in text ("1,234.5" reads as 1234.5), or None."""
    numbers = _NUMBER.findall(text)
    return float(numbers[-1].replace(",", "")) if numbers else None


def exact_number(answer_column: str = "answer", tol: float = 0.0) -> RewardFunction:
    """1.0 when the last number in the completion is within tol of the row's answer, else 0.0.

    The answer column holds a number or a text whose last number is the answer (GSM8K's "... #### 72").
    """

    def reward(prompts, completions, **columns) -> list[float]:
        if answer_column not in columns:
            raise ConfigError(
                f"exact_number needs the column {answer_column!r}; the batch has {', '.join(sorted(columns))}"
            )
        scores = []
        for i, (completion, answer) in enumerate(zip(completions, columns[answer_column], strict=True)):
            expected = float(answer) if isinstance(answer, int | float) else last_number(str(answer or ""))
            if expected is None:
                raise DataError(f"row {i}: column {answer_column!r} holds no number: {answer!r}")
            predicted = last_number(completion_text(completion))
            scores.append(1.0 if predicted is not None and abs(predicted - expected) <= tol else 0.0)
        return scores

    return _named("exact_number", reward)


def combine(rewards: list[tuple[RewardFunction, float]]) -> RewardFunction:
    """One reward function: the weighted sum of several; reward_breakdown reports its `components`."""
    if not rewards:
        raise ConfigError("combine: give at least one (reward function, weight) pair")
    for item in rewards:
        if not (isinstance(item, tuple) and len(item) == 2 and callable(item[0])):
            raise ConfigError(f"combine: expected (reward function, weight) pairs, got {item!r}")

    def reward(prompts, completions, **columns) -> list[float]:
        return reward_breakdown(reward, prompts, completions, **columns)[0]

    reward.components = [(fn, float(weight)) for fn, weight in rewards]
    return _named("combined", reward)


def reward_breakdown(
    reward_fn: RewardFunction, prompts: Sequence, completions: Sequence, **columns
) -> tuple[list[float], dict[str, list[float]]]:
    """Each completion's total reward, and each component function's own (unweighted) scores by name.

    A function made by `combine` is broken into its components; any other function is its only component.
    Names repeated among the components get a suffix (regex_match, regex_match_2).
    """
    components = getattr(reward_fn, "components", [(reward_fn, 1.0)])
    total = [0.0] * len(completions)
    per_function: dict[str, list[float]] = {}
    for fn, weight in components:
        name = _unique_name(getattr(fn, "__name__", type(fn).__name__), per_function)
        try:
            returned = fn(prompts, completions, **columns)
        except DirectAlignError:
            raise
        except Exception as error:  # noqa: BLE001 (a user's function failed: one line, --debug for the traceback)
            raise ConfigError(
                f"reward function {name} raised {type(error).__name__}: {str(error)[:200]} (--debug shows where)"
            ) from error
        scores = checked_scores(name, returned, len(completions))
        per_function[name] = scores
        total = [t + weight * s for t, s in zip(total, scores, strict=True)]
    return total, per_function


def check_builtin_prompts(prompts: Sequence) -> None:
    for prompt in prompts:
        text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
        try:
            task_from_prompt(text)
        except ValueError:
            raise ConfigError(
                f"reward_funcs: the builtin reward scores only the built-in tasks' prompts, not {text[:60]!r}; "
                "name a reward function for these prompts (--reward-funcs FILE.py:FUNCTION)"
            ) from None


def builtin_reward(prompts: Sequence, completions: Sequence, **columns) -> list[float]:
    """The built-in tasks' verifier as a reward function: content and format, each half of [0, 1]."""
    texts = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
    return [verify(t, completion_text(c)) for t, c in zip(texts, completions, strict=True)]


def builtin_content(prompts: Sequence, completions: Sequence, **columns) -> list[float]:
    """1.0 when a built-in task's answer has the right content (the number, fact, yes/no or items), whatever its
    format: the content half of the verifier, to weigh correctness above format."""
    texts = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
    return [float(check(t, completion_text(c))[0]) for t, c in zip(texts, completions, strict=True)]


def reward_from_spec(spec: str) -> RewardFunction:
    """One reward function by name: "builtin" (the built-in tasks' verifier), "builtin_content" (its content half),
    "reward_model:FOLDER" (a `directalign reward-model train` output or a *ForSequenceClassification folder),
    "module:function" or "path/to/file.py:function"."""
    if spec == "builtin":
        return builtin_reward
    if spec == "builtin_content":
        return builtin_content
    if spec.startswith("reward_model:"):
        from directalign.reward_models.scoring import RewardModel  # loads torch and transformers: only on request

        return RewardModel.load(spec.removeprefix("reward_model:")).as_reward_function()
    return load_reward_function(spec)


def reward_from_specs(
    specs: Sequence[str], weights: Sequence[float] | None = None, prompts: Sequence | None = None
) -> RewardFunction:
    """The named reward functions (see reward_from_spec), combined with their weights when there are several.
    With `prompts`, a built-in reward is refused at once if some prompt is not a built-in task it can score."""
    if prompts is not None and {"builtin", "builtin_content"} & set(specs):
        check_builtin_prompts(prompts)
    functions = [reward_from_spec(spec) for spec in specs]
    weights = list(weights) if weights else [1.0] * len(functions)
    if len(functions) == 1 and weights[0] == 1.0:
        return functions[0]
    return combine(list(zip(functions, weights, strict=True)))


def load_reward_function(spec: str) -> RewardFunction:
    """Import a user's reward function from "package.module:function" or "path/to/file.py:function"."""
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise ConfigError(f'reward function must be "module:function" or "path/to/file.py:function", got {spec!r}')
    module = _load_file(Path(module_name)) if module_name.endswith(".py") else _import(module_name, spec)
    if not hasattr(module, attr):
        public = [name for name in vars(module) if not name.startswith("_")]
        close = difflib.get_close_matches(attr, public, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{module_name} has no {attr!r}{hint}")
    fn = getattr(module, attr)
    if not callable(fn):
        raise ConfigError(f"{spec} is a {type(fn).__name__}, not a function")
    return fn


def _import(module_name: str, spec: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is None or not (module_name + ".").startswith(error.name + "."):
            raise  # the user's module imports something missing: its own traceback says what
        raise ConfigError(f"cannot import {module_name!r} for reward function {spec!r}: {error}") from error


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"reward function file {path} does not exist")
    name = f"_directalign_rewards_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name while it executes
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as error:
        raise ConfigError(f"reward function file {path}:{error.lineno}: {error.msg}") from error
    except Exception as error:  # noqa: BLE001 (the user's module failed at import: say where, --debug for more)
        raise ConfigError(f"reward function file {path} failed to import: {type(error).__name__}: {error}") from error
    return module


def _unique_name(name: str, taken: dict[str, list[float]]) -> str:
    if name not in taken:
        return name
    suffix = 2
    while f"{name}_{suffix}" in taken:
        suffix += 1
    return f"{name}_{suffix}"


def checked_scores(name: str, scores: Any, expected: int) -> list[float]:
    if not isinstance(scores, Sequence) or len(scores) != expected:
        got = len(scores) if isinstance(scores, Sequence) else type(scores).__name__
        raise ConfigError(f"reward function {name} returned {got} scores for {expected} completions")
    try:
        values = [float(s) for s in scores]
    except (TypeError, ValueError) as error:
        raise ConfigError(f"reward function {name} returned a score that is not a number: {error}") from error
    bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
    if bad is not None:
        # A NaN reward would make every advantage and pair of its group NaN or arbitrary: refuse it.
        raise ConfigError(f"reward function {name} returned {values[bad]} for completion {bad}; rewards must be "
                          "finite numbers")
    return values

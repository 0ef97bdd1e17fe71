"""The loss registry: each loss registers itself beside its function, with what it needs.

A registration names the loss (the `loss_type` value), one line on what it is, whether it compares against a
reference policy, the data it trains on ("paired": chosen/rejected pairs; "unpaired": desirable/undesirable
examples, KTO; "grouped": scored groups of samples, GRPO) and the config keys it reads. Config validation
(which keys a loss honours), the trainers (build a reference or not), the health checks, `--help` and the README's
table all read this one registry, so adding a paired loss is one function plus one `@register_loss`.

A paired loss is a function (terms: PairTerms, cfg) -> per-pair loss (num_pairs,); `rewards` names how its
implicit rewards are logged: "log_ratio" beta * (log pi - log pi_ref), "per_token" beta * log pi / |y|,
"logp" beta * log pi.

This module imports no torch: config validation and `--help` read the registrations from the loss modules'
source (`declared`, the same decorator calls, parsed rather than run), and the functions themselves are
imported only when a trainer asks for one (`loss_function`). A test checks that both views agree.
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from directalign.errors import ConfigError

DATA_KINDS = ("paired", "unpaired", "grouped")
REWARD_KINDS = ("log_ratio", "per_token", "logp", "none")


@dataclass(frozen=True)
class LossSpec:
    name: str
    fn: Callable | None  # None in the declared (parsed) view
    summary: str
    reference: bool
    data: str
    keys: tuple[str, ...]
    rewards: str = "log_ratio"


@dataclass
class PairTerms:
    """The pair-level quantities of one batch, each a (num_pairs,) tensor; ref_* are None without a reference."""

    policy_chosen: object
    policy_rejected: object
    ref_chosen: object | None
    ref_rejected: object | None
    chosen_lengths: object
    rejected_lengths: object


LOSSES: dict[str, LossSpec] = {}


def register_loss(
    name: str, *, summary: str, reference: bool, data: str, keys: tuple[str, ...], rewards: str = "log_ratio"
) -> Callable[[Callable], Callable]:
    """Decorator: register `fn` as loss `name` (see the module docstring)."""
    if data not in DATA_KINDS or rewards not in REWARD_KINDS:
        raise ValueError(f"loss {name}: data must be one of {DATA_KINDS}, rewards one of {REWARD_KINDS}")

    def decorate(fn: Callable) -> Callable:
        if name in LOSSES and LOSSES[name].fn is not fn:
            raise ValueError(f"loss {name!r} is registered twice")
        LOSSES[name] = LossSpec(name, fn, summary, reference, data, tuple(keys), rewards)
        return fn

    return decorate


def imported() -> dict[str, LossSpec]:
    """The registry with its functions: every loss module imported (which registers its losses)."""
    from directalign.losses import FAMILIES

    for family in FAMILIES:  # each registers its losses on first import (later imports are cached no-ops)
        importlib.import_module(f"directalign.losses.{family}")
    return LOSSES


@functools.cache
def declared() -> dict[str, LossSpec]:
    """The registrations as the loss modules declare them, read from their source without importing them."""
    from directalign.losses import FAMILIES

    specs: dict[str, LossSpec] = {}
    for family in FAMILIES:
        tree = ast.parse((Path(__file__).parent / f"{family}.py").read_text())
        for node in ast.walk(tree):
            for decorator in getattr(node, "decorator_list", []):
                if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", "") == "register_loss":
                    name = ast.literal_eval(decorator.args[0])
                    options = {k.arg: ast.literal_eval(k.value) for k in decorator.keywords}
                    specs[name] = LossSpec(name, None, options["summary"], options["reference"], options["data"],
                                           tuple(options["keys"]), options.get("rewards", "log_ratio"))
    return specs


def loss_names(*data: str) -> list[str]:
    """Registered loss names, paired first, then unpaired, then grouped (in declaration order within each);
    only those training on `data` kinds when given."""
    specs = sorted(declared().values(), key=lambda s: DATA_KINDS.index(s.data))  # sorted() is stable
    return [s.name for s in specs if not data or s.data in data]


def loss_spec(name: str, allowed: tuple[str, ...] = DATA_KINDS, where: str = "loss_type") -> LossSpec:
    """The registration of `name` (without its function), or a ConfigError naming the losses that fit
    `allowed` data kinds."""
    spec = declared().get(name)
    if spec is None or spec.data not in allowed:
        names = loss_names(*allowed)
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where} must be one of {', '.join(names)}; got {name!r}{hint}")
    return spec


def loss_function(name: str) -> Callable:
    """The registered function of loss `name` (importing the loss modules, and so torch)."""
    return imported()[name].fn


def losses_table(*data: str) -> str:
    """A Markdown table of the registered losses: what `--help` and the README show."""
    lines = ["| loss_type | what it is | reference | data | keys it reads |", "|---|---|---|---|---|"]
    for name in loss_names(*data):
        s = declared()[name]
        keys = ", ".join(f"`{k}`" for k in s.keys)
        lines.append(f"| `{name}` | {s.summary} | {'yes' if s.reference else 'no'} | {s.data} | {keys} |")
    return "\n".join(lines)

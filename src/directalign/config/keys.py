"""A config key: its default, one line of help and its allowed values, declared once.

Every key of every command is a dataclass field made by `key(...)`. Its metadata is the one source that
validation (`check_ranges`), the command line (`--key value`), `--help` and the resume comparison read, so a key
cannot be documented in one place and checked in another.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import MISSING, Field

from directalign.errors import ConfigError


def key(
    default: object = MISSING,
    help: str = "",
    *,
    factory: typing.Callable[[], object] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    choices: tuple | None = None,
    result: bool = True,
) -> Field:
    """A config field. low/high bound a number (inclusive unless *_open); choices list the allowed values (each
    item of a list); result=False marks keys that cannot change the trained weights (logging, checkpoint
    cadence, output folder), which a resumed run may change."""
    meta = {
        "help": help,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
        "choices": choices,
        "result": result,
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def key_fields(config_class: type) -> list[Field]:
    return list(dataclasses.fields(config_class))


def default_of(f: Field) -> object:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def describe_range(f: Field) -> str:
    """The allowed values of a key in words: "in (0, 1]", ">= 1", "one of a, b"."""
    m = f.metadata
    if m.get("choices"):
        return "one of " + ", ".join(map(str, m["choices"]))
    low, high = m.get("low"), m.get("high")
    if low is not None and high is not None:
        return f"in {'(' if m['low_open'] else '['}{low:g}, {high:g}{')' if m['high_open'] else ']'}"
    if low is not None:
        return f"{'>' if m['low_open'] else '>='} {low:g}"
    if high is not None:
        return f"{'<' if m['high_open'] else '<='} {high:g}"
    return ""


def check_ranges(config: object, command: str) -> None:
    """Raise ConfigError for the first key whose value is outside its declared range or choices."""
    for f in key_fields(type(config)):
        value = getattr(config, f.name)
        if value is None:
            continue
        m = f.metadata
        items = value if isinstance(value, list) else [value]
        if m.get("choices") and not all(item in m["choices"] for item in items):
            bad = next(item for item in items if item not in m["choices"])
            raise ConfigError(f"{command}: {f.name} must be {describe_range(f)}; got {bad!r}")
        numbers = [v for v in items if isinstance(v, int | float) and not isinstance(v, bool)]
        for number in numbers:
            if isinstance(number, float) and not math.isfinite(number):
                raise ConfigError(f"{command}: {f.name} must be a finite number; got {number}")
            low, high = m.get("low"), m.get("high")
            below = low is not None and (number <= low if m["low_open"] else number < low)
            above = high is not None and (number >= high if m["high_open"] else number > high)
            if below or above:
                raise ConfigError(f"{command}: {f.name} must be {describe_range(f)}; got {number}")


def convert(config_class: type, name: str, value: object) -> object:
    """A YAML or command-line value as the field's type; for a union, the first type that reads it."""
    hint = typing.get_type_hints(config_class)[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    bases = [a for a in args if a is not type(None)] if isinstance(hint, types.UnionType) else [hint]
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{name} cannot be empty")
    for base in bases[:-1]:
        try:
            return _as_type(name, value, base)
        except ConfigError:
            continue
    return _as_type(name, value, bases[-1])


def _as_type(name: str, value: object, base: type) -> object:
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError(value)
        if typing.get_origin(base) is list:
            (item_type,) = typing.get_args(base) or (str,)
            items = [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else value
            if not isinstance(items, list | tuple):
                raise ValueError(value)
            return [_as_type(name, item, item_type) for item in items]
        if base is int:
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value) if isinstance(value, str | float) else value
            if not isinstance(number, int | float) or not float(number).is_integer():
                raise ValueError(value)
            return int(number)
        if base is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if base is str:
            if isinstance(value, dict | list):
                raise ValueError(value)
            return str(value)
        return base(value)
    except (TypeError, ValueError, OverflowError) as err:
        raise ConfigError(f"{name}: cannot read {value!r} as {_type_name(base)}") from err


def _type_name(base: object) -> str:
    if typing.get_origin(base) is list:
        return "a comma-separated list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(base, str(base))


def type_name(config_class: type, name: str) -> str:
    """The key's type as --help shows it: int, float, bool, text, list, with "or none" when it may be empty."""
    hint = typing.get_type_hints(config_class)[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    bases = [a for a in args if a is not type(None)] if isinstance(hint, types.UnionType) else [hint]
    names = []
    for base in bases:
        if typing.get_origin(base) is list:
            names.append("list")
        else:
            names.append({bool: "bool", int: "int", float: "float", str: "text"}.get(base, "value"))
    return " | ".join(names) + (" | none" if optional else "")

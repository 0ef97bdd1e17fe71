"""From YAML files, `--key value` tokens and keyword arguments to a validated command config, and the key
listing every command's `--help` prints.

A key is refused unless the command honours it: an unknown key gets the closest valid names, and a key that
belongs to another command says which commands take it (`grpo --label-smoothing 0.1` is an error, never a
silently ignored value).
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from pathlib import Path

import yaml

from directalign.config.commands import COMMANDS
from directalign.config.keys import convert, default_of, describe_range, type_name
from directalign.config.trl import default_differences, looks_like_trl, translate
from directalign.errors import ConfigError

GROUP_TITLES = {
    "ModelKeys": "model",
    "LoraKeys": "LoRA",
    "LayoutKeys": "batch layout",
    "ForwardKeys": "forward pass",
    "PreferenceDataKeys": "data",
    "PromptKeys": "prompts and rewards",
    "SamplingKeys": "sampling",
    "PairLossKeys": "loss",
    "KTOKeys": "KTO",
    "ReferenceKeys": "reference",
    "GRPOKeys": "GRPO",
    "IterativeKeys": "iterative rounds",
    "RewardModelKeys": "reward model",
    "OptimKeys": "optimisation",
    "HealthKeys": "run health",
    "EarlyStoppingKeys": "early stopping",
    "HeldoutKLKeys": "held-out KL",
    "SampleGenerationKeys": "sample generations",
    "SaveKeys": "final save",
    "TrackerKeys": "trackers",
    "HubKeys": "the Hub",
    "RunKeys": "run, logging and checkpoints",
}


def config_class(command: str | type) -> type:
    if isinstance(command, type):
        return command
    if command not in COMMANDS:
        raise ConfigError(f"unknown command {command!r}; commands with configs: {', '.join(COMMANDS)}")
    return COMMANDS[command]


def _owners(name: str) -> list[str]:
    return [command for command, cls in COMMANDS.items() if name in cls.__dataclass_fields__]


def apply_values(config, values: dict, origin: str):
    """Set each key of `values` on config (converted to the key's type), refusing keys the command lacks."""
    fields = {f.name for f in dataclasses.fields(config)}
    for raw_key, value in values.items():
        name = str(raw_key).replace("-", "_")
        if name not in fields:
            raise ConfigError(f"{origin}: {unknown_key_message(config.command, name, fields)}")
        setattr(config, name, convert(type(config), name, value))
    return config


def unknown_key_message(command: str, name: str, fields) -> str:
    owners = _owners(name)
    if owners:
        return f"{command} does not take {name!r} (a key of {', '.join(owners)}); it would be ignored here"
    close = difflib.get_close_matches(name, sorted(fields), n=2, cutoff=0.5)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    return f"unknown key {name!r} for {command}{hint}"


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the config: {str(err).splitlines()[0]}") from err
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a config is a mapping of key: value, got {type(values).__name__}")
    return values


def load_config(command: str | type, path: str | Path | None = None, overrides: dict | None = None,
                origin: str = "command line"):
    """A validated config of `command` (a name such as "train" or a config class): its defaults, then the YAML
    file (a TRL or alignment-handbook config is translated, config/trl.py), then the overrides (command-line or
    keyword values)."""
    config = config_class(command)()
    if path is not None:
        values = read_yaml(path)
        if looks_like_trl(values, set(config.__dataclass_fields__)):
            translated, notes = translate(values, config, config.command, str(path))
            differences = default_differences(values, config)
            for line in notes + ([f"{path}: {differences}"] if differences else []):
                print(f"note: {line}", file=sys.stderr)
            values = translated
        apply_values(config, values, str(path))
    apply_values(config, overrides or {}, origin)
    return config.validate()


def parse_cli_overrides(tokens: list[str]) -> dict:
    """`--key value`, `--key=value` and bare `--flag` (true) into a dict; dash and underscore spellings alike."""
    values: dict = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(f"command line: expected --key value, got {token!r}")
        name = token[2:]
        if "=" in name:
            name, value = name.split("=", 1)
            i += 1
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            value = tokens[i + 1]
            i += 2
        else:
            value, i = "true", i + 1
        values[name.replace("-", "_")] = value
    return values


def keys_help(command: str | type) -> str:
    """Every key of the command, grouped, with its type, default, allowed range and one line of help."""
    cls = config_class(command)
    lines = []
    for group in cls.groups():
        lines.append(f"{GROUP_TITLES.get(group.__name__, group.__name__)}:")
        for name in group.__dataclass_fields__:
            f = cls.__dataclass_fields__[name]
            default = default_of(f)
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            allowed = describe_range(f)
            detail = f"{type_name(cls, name)}, default {shown}" + (f", {allowed}" if allowed else "")
            lines.append(f"  --{name.replace('_', '-'):<30} {f.metadata.get('help', '')} ({detail})")
    return "\n".join(lines)

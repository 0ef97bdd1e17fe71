"""What the commands that train share on the command line: `--config FILE`, any key as `--key value`, and a
`--help` that lists every key of the command (type, default, range, one line) from the one source, the config
dataclasses; the losses table for the commands with a loss_type."""

from __future__ import annotations

import argparse
import math
import sys

from directalign.config import keys_help, load_config, parse_cli_overrides


class KeysHelpParser(argparse.ArgumentParser):
    """A parser whose --help appends its command's keys, built only when help is asked for, and whose usage
    errors are one line."""

    command: str | None = None
    with_losses: tuple[str, ...] = ()

    def error(self, message: str):
        """A usage error as one line and exit 1, like every other user error (argparse prints its whole usage
        block and exits 2)."""
        self.exit(1, f"error: {self.prog}: {message} (see {self.prog} --help)\n")

    def format_help(self) -> str:
        text = super().format_help()
        if self.command is None:
            return text
        text += "\nconfig keys (--key value, or key: value in --config FILE):\n" + keys_help(self.command) + "\n"
        if self.with_losses:
            from directalign.losses.registry import losses_table

            text += "\nlosses (loss_type):\n" + losses_table(*self.with_losses) + "\n"
        return text


def number(kind: type = int, low: float | None = None, high: float | None = None, low_open: bool = False):
    """An argparse type for a flag that is not a config key: a finite int or float in [low, high] (low excluded
    with low_open), so that a bad value is argparse's one-line error naming the flag and its range."""
    if low is not None and high is not None:
        allowed = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
    elif low is not None:
        allowed = f"{'>' if low_open else '>='} {low:g}"
    else:
        allowed = "a finite number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        below = low is not None and (value <= low if low_open else value < low)
        if not math.isfinite(value) or below or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {allowed}; got {text}")
        return value

    parse.__name__ = kind.__name__  # what argparse calls the type in its messages
    return parse


COUNT = number(int, 1)  # at least one: a batch size, a limit, a number of samples
NONNEGATIVE_INT = number(int, 0)  # a seed, a number of bootstrap resamples (0: none)
FRACTION = number(float, 0, 1)  # a share, a similarity, an agreement
FINITE = number(float)


def add_config_command(subparsers, name: str, command: str, help: str, description: str, losses=()):
    """A subcommand taking --config, --data/--model/--output-dir shortcuts and any key of `command`."""
    p = subparsers.add_parser(
        name, help=help, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.command, p.with_losses = command, tuple(losses)  # main() makes every parser a KeysHelpParser
    p.add_argument("--config", help="YAML file of config keys (a TRL config is read too)")
    p.set_defaults(accepts_extra=True, config_command=command)
    return p


def config_from_args(args: argparse.Namespace, command: str, default_config: str | None = None):
    """The validated config: defaults, then --config FILE (or default_config), then the --key value tokens."""
    overrides = parse_cli_overrides(args.extra)
    return load_config(command, args.config or default_config, overrides)


def load_data(path: str, split: str | None = None, config: str | None = None):
    """load_records for a command: the rows it skipped are said on stderr (stdout may be --json)."""
    from directalign.data.formats import load_records

    loaded = load_records(path, split=split, config=config)
    for line in loaded.notes():
        print(line, file=sys.stderr)
    return loaded

"""What the commands that train share on the command line: `--config FILE`, any key as `--key value`, and a
`--help` that lists every key of the command (type, default, range, one line) from the one source, the config
dataclasses; the losses table for the commands with a loss_type."""

from __future__ import annotations

import argparse

from directalign.config import keys_help, load_config, parse_cli_overrides


class KeysHelpParser(argparse.ArgumentParser):
    """A parser whose --help appends its command's keys, built only when help is asked for."""

    command: str | None = None
    with_losses: tuple[str, ...] = ()

    def format_help(self) -> str:
        text = super().format_help()
        if self.command is None:
            return text
        text += "\nconfig keys (--key value, or key: value in --config FILE):\n" + keys_help(self.command) + "\n"
        if self.with_losses:
            from directalign.losses.registry import losses_table

            text += "\nlosses (loss_type):\n" + losses_table(*self.with_losses) + "\n"
        return text


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

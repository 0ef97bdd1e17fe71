"""`directalign data ...`: inspect, check and filter preference data."""

from __future__ import annotations

import importlib

# Modules adding subcommands to the `data` group, each through register(data_subparsers).
DATA_COMMAND_MODULES = ["data_inspect", "data_quality"]


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="inspect, check and filter preference data")
    data_subparsers = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    for name in DATA_COMMAND_MODULES:
        try:
            module = importlib.import_module(f"directalign.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"directalign.cli.{name}":
                raise
            continue
        module.register(data_subparsers)
    p.set_defaults(func=lambda args: p.print_help() or 2)

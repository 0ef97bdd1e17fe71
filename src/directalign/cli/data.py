"""`directalign data ...`: inspect, check, aggregate and filter preference data."""

from __future__ import annotations

from directalign.cli import data_inspect, data_quality


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="inspect, check, aggregate and filter preference data")
    data_subparsers = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    data_inspect.register(data_subparsers)
    data_quality.register(data_subparsers)
    p.set_defaults(func=lambda args: p.print_help() or 2)

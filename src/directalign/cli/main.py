"""The `directalign` command: one module per subcommand, each thin (parse -> call the library -> print)."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import warnings

# Before torch (and its OpenMP runtime) loads: waiting threads sleep instead of spinning, so a busy machine does not
# slow training several-fold (GNU OpenMP spins by default). A value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from directalign import __version__
from directalign.cli.common import KeysHelpParser
from directalign.errors import DirectAlignError, RunInterrupted
from directalign.secrets import redact

# Each module has register(subparsers) which adds its parser and sets `func` to a callable(args) -> int.
COMMAND_MODULES = ["train", "eval", "data", "report", "sweep", "reward_model", "onpolicy", "demo", "judge", "synth",
                   "annotate"]


def build_parser() -> argparse.ArgumentParser:
    parser = KeysHelpParser(prog="directalign", description=__doc__)
    parser.add_argument("--version", action="version", version=f"directalign {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=KeysHelpParser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"directalign.cli.{name}").register(subparsers)
    return parser


def os_error_message(err: OSError) -> str:
    where = " -> ".join(str(name) for name in (err.filename, err.filename2) if name is not None)
    what = err.strerror or str(err)
    if err.errno == errno.ENOSPC:
        what += "; free space and rerun (a training run resumes from its last checkpoint)"
    return f"{where}: {what}" if where else what


def main(argv: list[str] | None = None) -> int:
    # peft asks transformers for a deprecated attribute on every LoRA model; it is not the user's to fix.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    argv = sys.argv[1:] if argv is None else argv
    if int(os.environ.get("RANK", "0")) != 0:  # launched with several processes: the main one prints results
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    debug = "--debug" in argv
    try:
        try:
            args, extra = parser.parse_known_args(argv)
            if extra and not getattr(args, "accepts_extra", False):
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
        except SystemExit as done:  # --help, --version, or a usage error (already printed): its exit code
            return done.code if isinstance(done.code, int) else 1
        if not hasattr(args, "func"):
            parser.print_help()
            return 2
        args.extra = extra
        return int(args.func(args) or 0)
    except RunInterrupted as err:
        print(f"\n{redact(str(err))}", file=sys.stderr)
        return err.exit_code
    except DirectAlignError as err:
        if debug:
            raise
        print(f"error: {redact(str(err))}", file=sys.stderr)
        return 1
    except OSError as err:
        # What the file system refused (a path through a file, a full disk, no permission) is the user's to fix.
        if debug:
            raise
        print(f"error: {redact(os_error_message(err))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if debug:
            raise
        print("\ninterrupted: nothing was half-written; the last checkpoint, if any, is complete", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

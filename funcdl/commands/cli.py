"""The ``funcdl`` command line. Each subcommand lives in its own module under ``funcdl/commands`` and
exposes ``register(subparsers)``; this file only collects them. It is the one place where ``funcdl``
reaches ``models`` (inside the commands that train or sample).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# module names under funcdl.commands, in the order ``funcdl --help`` lists them
COMMANDS = ["gradcheck", "train", "catalog", "plot", "sample", "hf", "quantize", "prune", "export", "explain",
            "landscape", "detect"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="funcdl",
        description="funcdl: deep learning as mathematics in JAX (hand-derived gradients, checked).",
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"funcdl.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"funcdl.commands.{name}":
                continue  # a command not written yet
            raise
        module.register(sub)
    return parser


# failures a user can cause and fix (a wrong name, option, shape or path; a damaged or busy run directory): one
# line on stderr and exit code 2 instead of a traceback (``funcdl --debug ...`` shows the traceback)
USER_ERRORS = (ValueError, KeyError, TypeError, OSError, RuntimeError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # the reader went away (``funcdl models | head``): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(f"funcdl {args.command}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if args.debug:
            raise
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"funcdl {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

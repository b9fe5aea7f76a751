"""The ``psmpi`` command (also ``python -m psmpi``): look at, export, merge and clean results
files, draw a report, and test a study on one pset per map.

A shell over library functions (:mod:`psmpi.tools`, the store), which may import any of psmpi:
each command is a module with its ``add_parser(subparsers)`` and ``run(args)``; what they
share is in ``common``.

Every command that reads a file opens it read-only, without taking the writer's lock and
without HDF5 file locking, and reads only committed rows (``n_committed``), so it works while
a survey is writing the file. Commands that write (``merge``, ``clean``) take the lock and
refuse a file that a running survey holds.

Exit status: 0 done, nothing bad found; 1 done, and the answer is bad (``failures`` found
failed psets, ``test`` found a failing map, ``check`` found damage, ``clean`` was declined);
2 usage error, or the command could not do its job (a missing or non-psmpi file, an unknown map, a file being
written by a survey, a missing optional dependency); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from ..errors import PsmpiError
from . import check, clean, export, failures, merge, report, show, status, test
from .common import EPILOG, EXIT_BAD, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CliError

__all__ = [
    "EXIT_BAD",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "build_parser",
    "main",
]

# In the order `psmpi --help` lists them.
COMMANDS = (status, show, failures, export, report, test, clean, check, merge)


def build_parser() -> argparse.ArgumentParser:
    """The ``psmpi`` parser: every command's subparser, its ``run`` as ``args.run``."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="psmpi", description="Look at, export, merge and clean psmpi results files; "
        "draw a report of a survey; test a study on one pset per map.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"psmpi {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def _show_warning(message: Warning | str, *_: Any, **__: Any) -> None:
    print(f"psmpi: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``psmpi`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.run(args)
    except BrokenPipeError:  # `psmpi show ... | head`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (PsmpiError, KeyError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"psmpi {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("psmpi: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED

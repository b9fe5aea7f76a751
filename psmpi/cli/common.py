"""What the commands share: exit codes, the usage error, the parser's epilog and options,
and text helpers for tables, times and counts."""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import PsmpiError
from ..study.post import is_null

EXIT_OK, EXIT_BAD, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
REPORT_EXTRA = "pip install 'psmpi[report]'"

EPILOG = """\
exit status: 0 done; 1 done and the answer is bad (failed psets in `failures`, a failing
map in `test`, damage found by `check`, a declined prompt in `clean`); 2 usage error or the
command could not do its job (missing or non-psmpi file, unknown map, a file locked by a
running survey, a missing optional dependency); 130 interrupted.

Reading commands work while a survey writes the file: they see every committed row.
"""


class CliError(PsmpiError):
    """A problem the user can fix, reported as ``psmpi: error: ...`` with exit status 2."""


def add_command(subparsers: Any, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """A subcommand's parser, with the common epilog."""
    return subparsers.add_parser(name, help=help, description=description, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)


def add_map_option(p: argparse.ArgumentParser, many: bool = True) -> None:
    if many:
        p.add_argument("-m", "--map", action="append", metavar="NAME",
                       help="only this map (repeatable); default every map")
    else:
        p.add_argument("-m", "--map", metavar="NAME",
                       help="the map; may be left out when the file holds one map")


def ago(t: float | None) -> str:
    """POSIX time ``t`` as how long ago, e.g. ``5 min ago``; ``-`` for None."""
    if t is None:
        return "-"
    seconds = max(0.0, time.time() - t)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def clock(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).isoformat(sep=" ", timespec="seconds")


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned first column, right-aligned others."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in cells)


def or_unknown(value: int | None) -> Any:
    return "?" if value is None else value


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def pset_text(row: pd.Series) -> str:
    """The pset of a stored row (no ``_`` columns, no nulls) as a dict's repr."""
    items = {k: v.item() if isinstance(v, np.generic) else v
             for k, v in row.items() if not str(k).startswith("_") and not is_null(v)}
    return repr(items)


def confirm(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise CliError(f"refusing to {question} without asking: pass --yes")
    return input(f"{question}? [y/N] ").strip().lower() in ("y", "yes")

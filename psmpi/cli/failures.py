"""``psmpi failures``: the failed psets of each map, with exceptions and tracebacks."""

from __future__ import annotations

import argparse
from typing import Any

import pandas as pd

from .. import layout
from ..tools.summary import common_failures, failures
from .common import (
    EXIT_BAD,
    EXIT_OK,
    add_command,
    add_map_option,
    clock,
    plural,
    pset_text,
)

KINDS = ("exception", "bad_result", "unpicklable", "unstorable", "crashed")


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "failures", "failed psets with their exceptions and tracebacks",
                    "Print every pset whose latest attempt failed and that has no result yet: "
                    "its values, the kind of failure, where and when it ran, the exception and "
                    "the traceback. Exit status 1 if there is any, 0 if none.")
    p.add_argument("file", metavar="FILE")
    add_map_option(p)
    p.add_argument("--all", action="store_true",
                   help="every failed attempt, also of psets that succeeded later")
    p.add_argument("--kind", choices=KINDS, help="only failures of this kind")
    p.add_argument("--short", action="store_true", help="one line per failure, no traceback")
    p.set_defaults(run=run)


def describe_failure(row: pd.Series, short: bool) -> str:
    """One failure row as text: one line if ``short``, else with where it ran and its traceback."""
    index, kind, message = int(row[layout.PSET_INDEX]), row[layout.KIND], row[layout.EXCEPTION]
    if short:
        return f"pset {index}  {kind}  {message}  {pset_text(row)}"
    where = ""
    if pd.notna(row[layout.TIME_UTC]):  # a skipped crashed pset did not run at all
        where = (f" on host {row[layout.HOST]}, rank {row[layout.RANK]}, pid {row[layout.PID]}, "
                 f"started {clock(row[layout.TIME_UTC].timestamp())}")
    lines = [f"--- pset {index} ({kind}){where}", f"    pset: {pset_text(row)}", f"    {message}"]
    tb = str(row[layout.TRACEBACK] or "").rstrip()
    if tb:
        lines += ["    " + line for line in tb.splitlines()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    found = 0
    for name, df in failures(args.file, args.map, every=args.all, kind=args.kind).items():
        found += len(df)
        which = plural(len(df), "failed attempt" if args.all else "failed pset")
        counts = (", ".join(f"{k}: {n}" for k, n in df[layout.KIND].value_counts().items())
                  if len(df) else "")
        print(f"map {name!r}: {which}{'' if args.all else ' without a result'}"
              f"{f' ({counts})' if counts else ''}")
        for _, row in df.iterrows():
            print(describe_failure(row, args.short))
        common = common_failures(df)
        if len(common) and common.iloc[0] > 1:
            print("most common:")
            for message, n in common.items():
                print(f"  {n} x {message}")
        print()
    if found and not args.all:
        print("Running the study again retries them (crashed ones once PSMPI_MAX_ATTEMPTS "
              "allows); `psmpi test STUDY.py` runs one pset of each map in this process.")
    return EXIT_BAD if found else EXIT_OK

"""``psmpi show``: the rows of each map as a table, filtered (``--where``), sorted, cut."""

from __future__ import annotations

import argparse
import re
import shutil
from collections.abc import Sequence
from typing import Any

import h5py
import pandas as pd

from .. import layout
from ..store import Table, bookkeeping, reading
from ..study.post import filter_rows
from ..tools.summary import selected_maps, table
from .common import EXIT_OK, CliError, add_command, add_map_option, plural

_WHERE = re.compile(r"^\s*([^<>=!~\s]+)\s*(==|=|!=|<=|>=|<|>|~)\s*(.*?)\s*$")


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "show", "print rows, filtered by column values",
                    "Print the committed rows of each map (pset and result columns; -a adds "
                    "the bookkeeping columns _rank, _host, _time_utc, _pset_runtime, ...).")
    p.add_argument("file", metavar="FILE")
    add_map_option(p)
    p.add_argument("-w", "--where", action="append", default=[], metavar="COND",
                   help="keep rows where COND holds: COLUMN OP VALUE with OP one of "
                   "= != < <= > >= (numbers, strings, true/false) or ~ (regular expression "
                   "search); repeatable, all must hold. Example: -w 'a>=2' -w 'name~^run'")
    p.add_argument("-c", "--columns", metavar="A,B,...", help="only these columns, in this order")
    p.add_argument("-a", "--all", action="store_true", help="include bookkeeping columns (_*)")
    p.add_argument("-s", "--sort", action="append", metavar="COLUMN",
                   help="sort by this column (repeatable)")
    p.add_argument("-n", "--limit", type=int, default=50, metavar="N",
                   help="print at most N rows per map (default 50; 0: all)")
    p.add_argument("--failures", action="store_true",
                   help="show the failures table instead of the results")
    p.set_defaults(run=run)


def _parse_where(text: str) -> tuple[str, str, str]:
    match = _WHERE.match(text)
    if match is None:
        raise CliError(f"--where {text!r} is not COLUMN OP VALUE with OP one of "
                       f"= != < <= > >= ~ (e.g. --where 'a>=2' or --where 'name~foo')")
    return match.group(1), match.group(2), match.group(3)


def _typed(value: str, series: pd.Series, where: str) -> Any:
    if pd.api.types.is_bool_dtype(series.dtype):
        lowered = value.lower()
        if lowered not in ("true", "false", "1", "0"):
            raise CliError(f"--where {where!r}: column {series.name!r} holds booleans; use true or false")
        return lowered in ("true", "1")
    if isinstance(series.dtype, pd.DatetimeTZDtype):  # _time_utc: a time without a zone is UTC
        try:
            stamp = pd.Timestamp(value)
        except ValueError:
            raise CliError(f"--where {where!r}: column {series.name!r} holds times, "
                           f"{value!r} is not one (e.g. 2026-12-05T14:30)") from None
        return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
    if pd.api.types.is_numeric_dtype(series.dtype):
        try:
            return float(value)
        except ValueError:
            raise CliError(f"--where {where!r}: column {series.name!r} holds numbers, "
                           f"{value!r} is not one") from None
    return value


def where_conditions(df: pd.DataFrame, conditions: Sequence[str]) -> list[tuple[str, str, Any]]:
    """``--where`` texts as :func:`psmpi.filter_rows` conditions, values typed by their column."""
    out = []
    for text in conditions:
        column, op, raw = _parse_where(text)
        if op == "~" or column not in df.columns:  # filter_rows names an unknown column
            out.append((column, op, raw))
        else:
            out.append((column, "==" if op == "=" else op, _typed(raw, df[column], text)))
    return out


def _visible_columns(found: Table, kind: str, wanted: list[str] | None, every: bool) -> list[str]:
    columns = [bookkeeping.current_name(c) for c in found.columns]
    if wanted:
        unknown = [c for c in wanted if c not in columns]
        if unknown:
            raise CliError(f"no column {unknown[0]!r} in {found}; its columns are {columns}")
        return wanted
    if every:
        return columns
    shown = [c for c in columns if not c.startswith("_")]
    return shown + [layout.KIND, layout.EXCEPTION] if kind == "failures" else shown


def _read_frames(f: h5py.File, args: argparse.Namespace,
                 kind: str) -> list[tuple[str, pd.DataFrame, list[str]]]:
    frames = []
    wanted = args.columns.split(",") if args.columns else None
    for name in selected_maps(f, args.map):
        found = table(f, name, kind)
        if found is None or found.n_rows == 0:
            frames.append((name, pd.DataFrame(), []))
            continue
        visible = _visible_columns(found, kind, wanted, args.all)
        # Rows are shown in pset order, not in the order they were committed.
        needed = [_parse_where(w)[0] for w in args.where] + list(args.sort or []) + [
            layout.PSET_INDEX]
        stored = bookkeeping.stored_names(found.columns)
        present = {bookkeeping.current_name(c) for c in found.columns}
        extra = [c for c in needed if c in present and c not in visible]
        df = found.read(columns=[stored.get(c, c) for c in visible + extra])
        frames.append((name, bookkeeping.readable(df), visible))
    return frames


def run(args: argparse.Namespace) -> int:
    kind = "failures" if args.failures else "results"
    frames = reading(args.file, lambda f: _read_frames(f, args, kind))
    width = shutil.get_terminal_size((120, 24)).columns
    for name, df, visible in frames:
        total = len(df)
        if total:
            df = filter_rows(df, where_conditions(df, args.where))
            if layout.PSET_INDEX in df.columns:
                df = df.sort_values(layout.PSET_INDEX, kind="stable")
            if args.sort:
                missing = [c for c in args.sort if c not in df.columns]
                if missing:
                    raise CliError(f"--sort {missing[0]!r}: no such column; the columns are {visible}")
                df = df.sort_values(args.sort, kind="stable")
        matched = len(df)
        if args.limit:
            df = df.head(args.limit)
        # The failures table holds attempts: a pset that failed twice has two rows there.
        unit = "failed attempt" if kind == "failures" else "row"
        what = f"{matched} of {plural(total, unit)}" if args.where else plural(total, unit)
        cut = f", first {len(df)} shown (--limit 0 shows all)" if len(df) < matched else ""
        print(f"map {name!r} ({kind}): {what}{cut}")
        if len(df):
            with pd.option_context("display.width", width, "display.max_columns", None):
                print(df[visible].to_string(index=False, max_colwidth=60))
        print()
    return EXIT_OK

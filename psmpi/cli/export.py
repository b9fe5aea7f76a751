"""``psmpi export``: one map's rows to CSV or Parquet."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import h5py
import numpy as np
import pandas as pd

from ..store import bookkeeping, reading
from ..tools.summary import selected_maps, table
from .common import EXIT_OK, REPORT_EXTRA, CliError, add_command, add_map_option


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "export", "write one map's rows to CSV or Parquet",
                    "Write the committed rows of one map to CSV or Parquet. Array results become "
                    "JSON lists in CSV and list columns in Parquet.")
    p.add_argument("file", metavar="FILE")
    add_map_option(p, many=False)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--csv", metavar="OUT", help="CSV file to write ('-': standard output)")
    target.add_argument("--parquet", metavar="OUT",
                        help=f"Parquet file to write (needs pyarrow: {REPORT_EXTRA})")
    p.add_argument("--failures", action="store_true", help="export the failures table instead")
    p.add_argument("--no-bookkeeping", action="store_true", help="leave out the _* columns")
    p.set_defaults(run=run)


def _one_map(f: h5py.File, wanted: str | None) -> str:
    names = selected_maps(f, [wanted] if wanted else None)
    if len(names) != 1:
        raise CliError(f"{f.filename} holds {len(names)} maps {names}; choose one with --map NAME")
    return names[0]


def _exportable(df: pd.DataFrame, as_text: bool) -> pd.DataFrame:
    """Array cells as lists (parquet) or JSON text (CSV); other columns unchanged."""
    df = df.copy()
    for column in df.columns:
        if df[column].dtype == object and df[column].map(lambda v: isinstance(v, np.ndarray)).any():
            lists = df[column].map(lambda v: v.tolist() if isinstance(v, np.ndarray) else None)
            df[column] = lists.map(lambda v: None if v is None else json.dumps(v)) if as_text else lists
    return df


def run(args: argparse.Namespace) -> int:
    kind = "failures" if args.failures else "results"

    def read(f: h5py.File) -> tuple[str, pd.DataFrame]:
        name = _one_map(f, args.map)
        found = table(f, name, kind)
        return name, bookkeeping.readable(found.read()) if found is not None else pd.DataFrame()

    name, df = reading(args.file, read)
    if args.no_bookkeeping:
        df = df[[c for c in df.columns if not str(c).startswith("_")]]
    if args.csv is not None:
        target = sys.stdout if args.csv == "-" else args.csv
        _exportable(df, as_text=True).to_csv(target, index=False)
        out = "stdout" if args.csv == "-" else args.csv
    else:
        try:
            import pyarrow  # noqa: F401  (pandas needs it for parquet)
        except ImportError:
            raise CliError(f"export --parquet needs pyarrow, which is not installed: "
                           f"{REPORT_EXTRA}") from None
        _exportable(df, as_text=False).to_parquet(args.parquet, index=False)
        out = args.parquet
    print(f"psmpi: wrote {len(df)} rows of map {name!r} ({kind}) to {out}", file=sys.stderr)
    return EXIT_OK

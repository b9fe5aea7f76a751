"""``psmpi report``: a PNG and an HTML page of progress, per-worker timeline and runtimes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import h5py
import pandas as pd

from .. import layout
from ..store import bookkeeping, reading
from ..tools.summary import selected_maps, status, table
from .common import EXIT_OK, REPORT_EXTRA, add_command, add_map_option


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "report",
                    "PNG + HTML pictures: progress, per-worker timeline, runtimes",
                    "Draw progress over time, a timeline of which worker (MPI rank or process) "
                    "ran which pset when, and the distribution of pset runtimes, to a PNG and an "
                    f"HTML page embedding it. Needs matplotlib ({REPORT_EXTRA}).")
    p.add_argument("file", metavar="FILE")
    add_map_option(p)
    p.add_argument("-o", "--output", metavar="PNG",
                   help="the PNG to write (default FILE without .h5 plus -report.png); the "
                   "HTML page gets the same name with .html")
    p.add_argument("--no-html", action="store_true", help="write the PNG only")
    p.set_defaults(run=run)


def _timing_frames(f: h5py.File,
                   maps: Sequence[str] | None) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """The columns the report draws from, per map and table; ``_time_utc`` in POSIX seconds."""
    columns = [layout.TIME_UTC, layout.PSET_RUNTIME, layout.HOST, layout.RANK, layout.PID]
    out = {}
    for name in selected_maps(f, maps):
        frames = []
        for kind in layout.TABLE_KINDS:
            found = table(f, name, kind)
            if found is None or found.n_rows == 0:
                frames.append(pd.DataFrame(columns=columns + [layout.KIND]))
            else:
                wanted = columns + ([layout.KIND] if kind == "failures" else [])
                stored = [bookkeeping.stored_name(found.columns, c) for c in wanted]
                frames.append(bookkeeping.with_current_names(found.read(columns=stored)))
        out[name] = (frames[0], frames[1])
    return out


def _default_report_path(path: str) -> str:
    stem, ext = os.path.splitext(path)
    return (stem if ext in (".h5", ".hdf5") else path) + "-report.png"


def run(args: argparse.Namespace) -> int:
    from ..tools import report  # matplotlib is imported only here

    summaries = status(args.file, args.map)
    frames = reading(args.file, lambda f: _timing_frames(f, args.map))
    png = args.output or _default_report_path(args.file)
    html = None if args.no_html else os.path.splitext(png)[0] + ".html"
    report.write_report(args.file, frames, [s.as_dict() for s in summaries], png, html)
    print(f"psmpi: wrote {png}" + (f" and {html}" if html else ""), file=sys.stderr)
    return EXIT_OK

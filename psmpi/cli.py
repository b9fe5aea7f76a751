"""The ``psmpi`` command (also ``python -m psmpi``): look at, export, merge and clean results
files, draw a report, and test a study on one pset per map.

Every command that reads a file opens it read-only, without taking the writer's lock and
without HDF5 file locking, and reads only committed rows (``n_committed``), so it works while
a survey is writing the file. Commands that write (``merge``, ``clean``) take the lock and
refuse a file that a running survey holds.

Exit status: 0 done, nothing bad found; 1 done, and the answer is bad (``failures`` found
failed psets, ``test`` found a failing map, ``check`` found damage, ``clean`` was declined); 2 usage error, or the
command could not do its job (a missing or non-psmpi file, an unknown map, a file being
written by a survey, a missing optional dependency); 130 interrupted.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime
import glob
import json
import os
import re
import runpy
import shutil
import socket
import sys
import time
import traceback
import warnings
from typing import Any, Callable, Sequence, TypeVar

import h5py
import numpy as np
import pandas as pd

from . import bookkeeping, layout
from .attempts import AttemptLog
from .errors import PsmpiError, StoreError
from .lock import pid_alive, read_owner, release_lock, take_lock
from .post import filter_rows
from .stalls import read_running, seconds_text
from .store import Store, Table, check, maps_in, open_h5, reading

EXIT_OK, EXIT_BAD, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
REPORT_EXTRA = "pip install 'psmpi[report]'"
_COPY_CHUNK = 4096
T = TypeVar("T")


class CliError(PsmpiError):
    """A problem the user can fix, reported as ``psmpi: error: ...`` with exit status 2."""


# ---------------------------------------------------------------------- reading files
def _reading(path: str, read: Callable[[h5py.File], T]) -> T:
    """``read(file)`` on ``path`` opened read-only, retried if a writer was mid-flush; a
    damaged file is a StoreError naming what is damaged (:func:`psmpi.store.reading`)."""
    return reading(path, read)


def _table(f: h5py.File, name: str, kind: str) -> Table | None:
    group = f[name]
    return Table(group[kind]) if kind in group else None


def _selected_maps(f: h5py.File, wanted: Sequence[str] | None) -> list[str]:
    names = maps_in(f)
    for name in wanted or ():
        if name not in names:
            raise CliError(f"{f.filename} has no map {name!r}; its maps are {names}")
    return list(wanted) if wanted else names


def _one_map(f: h5py.File, wanted: Sequence[str] | None) -> str:
    names = _selected_maps(f, wanted)
    if len(names) != 1:
        raise CliError(f"{f.filename} holds {len(names)} maps {names}; choose one with --map NAME")
    return names[0]


def unresolved_failures(results: Table | None, failures: Table | None) -> np.ndarray:
    """Rows of ``failures`` whose pset has no result: the latest failed attempt of each pset.

    A pset is its (``_pset_index``, ``_pset_hash``) pair: a failure is resolved when a later
    run committed a result for the same pset.
    """
    if failures is None or failures.n_rows == 0:
        return np.empty(0, dtype=np.int64)
    fail = pd.DataFrame({"i": failures.read_column(layout.PSET_INDEX),
                         "h": failures.read_column(layout.PSET_HASH)})
    fail = fail.drop_duplicates(keep="last")
    if results is not None and results.n_rows:
        done = pd.MultiIndex.from_arrays([results.read_column(layout.PSET_INDEX),
                                          results.read_column(layout.PSET_HASH)])
        fail = fail[~pd.MultiIndex.from_frame(fail).isin(done)]
    return fail.index.to_numpy(dtype=np.int64)


@dataclasses.dataclass
class MapSummary:
    """What a file says about one map."""

    name: str
    done: int
    failed: int
    crashed: int
    total: int | None
    first_start: float | None
    last_end: float | None

    @property
    def remaining(self) -> int | None:
        """psets never tried (or running now); None when the total is unknown."""
        if self.total is None:
            return None
        return max(0, self.total - self.done - self.failed - self.crashed)

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "remaining": self.remaining}


def _raw_column(table: Table, name: str) -> np.ndarray:
    """Column ``name`` as stored, also in a table of an older psmpi that named it otherwise."""
    return table.read_column(bookkeeping.stored_name(table.columns, name))


def _time_span(table: Table | None) -> tuple[float | None, float | None]:
    if table is None or table.n_rows == 0:
        return None, None
    start = _raw_column(table, layout.TIME_UTC)  # POSIX seconds
    end = start + np.nan_to_num(_raw_column(table, layout.PSET_RUNTIME))
    if not np.isfinite(start).any():
        return None, None
    return float(np.nanmin(start)), float(np.nanmax(end))


def summarise_map(f: h5py.File, name: str) -> MapSummary:
    results, failures = _table(f, name, "results"), _table(f, name, "failures")
    rows = unresolved_failures(results, failures)
    crashed = 0
    if rows.size:
        kinds = failures.read_column(layout.KIND)[rows]
        crashed = int((kinds == "crashed").sum())
    total = f[name].attrs.get(layout.N_PSETS_ATTR)
    spans = [s for s in (_time_span(results), _time_span(failures)) if s[0] is not None]
    return MapSummary(name=name, done=results.n_rows if results else 0,
                      failed=int(rows.size) - crashed, crashed=crashed,
                      total=None if total is None else int(total),
                      first_start=min((s[0] for s in spans), default=None),
                      last_end=max((s[1] for s in spans), default=None))


def summarise_file(path: str, maps: Sequence[str] | None = None) -> list[MapSummary]:
    """A :class:`MapSummary` of every map of ``path`` (or of ``maps``), from committed rows."""
    return _reading(path, lambda f: [summarise_map(f, n) for n in _selected_maps(f, maps)])


def lock_owner(path: str) -> tuple[int, str] | None:
    """(pid, host) of the process whose lock on ``path`` is live; None if none is.

    A lock of a dead pid on this host is not live; on another host, liveness cannot be
    checked, so any readable lock counts.
    """
    try:
        owner = read_owner(layout.lock_path(path))  # never reopens a lock this process holds
        pid, host = int(owner["pid"]), str(owner["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host == socket.gethostname() and not pid_alive(pid):
        return None
    return pid, host


def running_now(path: str) -> dict | None:
    """What the workers of the survey writing ``path`` hold now (``<path>.running``).

    Only while the writer's lock is live, and only the file that writer wrote: one left by
    a killed run is ignored.
    """
    owner = lock_owner(path)
    return None if owner is None else read_running(path, *owner)


def writer_of(path: str) -> str | None:
    """Who holds the lock of ``path``, in words; None if nobody."""
    lock = layout.lock_path(path)
    try:
        owner = read_owner(lock)  # never opens a lock this process holds: that would drop it
        pid, host = int(owner["pid"]), str(owner["host"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return f"locked by {lock}, which cannot be read"
    if host == socket.gethostname() and not pid_alive(pid):
        return f"stale lock {lock}: pid {pid} is dead (the next run or `psmpi clean` removes it)"
    job = owner.get("slurm_job_id")
    return (f"being written by pid {pid} on {host}{f' (Slurm job {job})' if job else ''} "
            f"since {owner.get('started')}")


def _ago(t: float | None) -> str:
    if t is None:
        return "-"
    seconds = max(0.0, time.time() - t)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def _clock(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).isoformat(sep=" ", timespec="seconds")


def _text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned first column, right-aligned others."""
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in cells)


def _or_unknown(value: int | None) -> Any:
    return "?" if value is None else value


# ---------------------------------------------------------------------- status
def cmd_status(args: argparse.Namespace) -> int:
    summaries = summarise_file(args.file, args.map)
    writer = writer_of(args.file)
    running = running_now(args.file)
    if args.json:
        print(json.dumps({"file": args.file, "writer": writer, "running": running,
                          "maps": [s.as_dict() for s in summaries]}, indent=2))
        return EXIT_OK
    print(f"{args.file}: {len(summaries)} map{'s' * (len(summaries) != 1)}; "
          f"{writer or 'no survey is writing it'}")
    if running is not None:
        print(_running_text(running))
    if not summaries:
        return EXIT_OK
    rows = [(s.name, _or_unknown(s.total), s.done, s.failed, s.crashed, _or_unknown(s.remaining),
             _ago(s.last_end)) for s in summaries]
    print(_text_table(("map", "total", "done", "failed", "crashed", "remaining", "last finished"),
                      rows))
    if any(s.total is None for s in summaries):
        print("?: this file does not record how many psets the map was given; running the "
              "study again computes whatever is missing")
    if any(s.failed or s.crashed for s in summaries):
        print(f"failed psets: psmpi failures {args.file}")
    return EXIT_OK


def _running_text(running: dict) -> str:
    """What the workers hold now, longest first, from a ``.running`` report."""
    holders = running["holders"]
    stalled = f", {running['stalled']} stalled" if running.get("stalled") else ""
    lines = [f"map {running['map']!r} running: {running['busy']} worker(s) busy{stalled} "
             f"(as of {running['updated']}, {_ago(running.get('updated_unix'))})"]
    if holders:
        rows = [(h["worker"], h["host"], _short_indexes(h["indexes"]),
                 seconds_text(h["seconds"]), _since(h["since"]), h["state"]) for h in holders]
        lines.append(_text_table(("worker", "host", "psets", "held for", "since", "state"),
                                 rows))
        lines += [f"  {h['worker']}: {'; '.join(h['psets'])}" for h in holders
                  if h["state"] != "fine" and h["psets"]]
    if running["busy"] > len(holders):
        lines.append(f"  (the {len(holders)} longest-held of {running['busy']} shown)")
    return "\n".join(lines)


def _since(text: str) -> str:
    """An ISO time as the time of day if it is today, else date and time."""
    try:
        t = datetime.datetime.fromisoformat(text)
    except ValueError:
        return text
    today = t.date() == datetime.datetime.now(t.tzinfo).date()
    return t.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M:%S")


def _short_indexes(indexes: list[int]) -> str:
    return ",".join(map(str, indexes[:3])) + (f" +{len(indexes) - 3}" if len(indexes) > 3 else "")


# ---------------------------------------------------------------------- show
_WHERE = re.compile(r"^\s*([^<>=!~\s]+)\s*(==|=|!=|<=|>=|<|>|~)\s*(.*?)\s*$")


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


def _visible_columns(table: Table, kind: str, wanted: list[str] | None, every: bool) -> list[str]:
    columns = [bookkeeping.current_name(c) for c in table.columns]
    if wanted:
        unknown = [c for c in wanted if c not in columns]
        if unknown:
            raise CliError(f"no column {unknown[0]!r} in {table}; its columns are {columns}")
        return wanted
    if every:
        return columns
    shown = [c for c in columns if not c.startswith("_")]
    return shown + [layout.KIND, layout.EXCEPTION] if kind == "failures" else shown


def _read_frames(f: h5py.File, args: argparse.Namespace, kind: str) -> list[tuple[str, pd.DataFrame, list[str]]]:
    frames = []
    wanted = args.columns.split(",") if args.columns else None
    for name in _selected_maps(f, args.map):
        table = _table(f, name, kind)
        if table is None or table.n_rows == 0:
            frames.append((name, pd.DataFrame(), []))
            continue
        visible = _visible_columns(table, kind, wanted, args.all)
        needed = [_parse_where(w)[0] for w in args.where] + list(args.sort or [])
        stored = bookkeeping.stored_names(table.columns)
        present = {bookkeeping.current_name(c) for c in table.columns}
        extra = [c for c in needed if c in present and c not in visible]
        df = table.read(columns=[stored.get(c, c) for c in visible + extra])
        frames.append((name, bookkeeping.readable(df), visible))
    return frames


def cmd_show(args: argparse.Namespace) -> int:
    kind = "failures" if args.failures else "results"
    frames = _reading(args.file, lambda f: _read_frames(f, args, kind))
    width = shutil.get_terminal_size((120, 24)).columns
    for name, df, visible in frames:
        total = len(df)
        if total:
            df = filter_rows(df, where_conditions(df, args.where))
            if args.sort:
                missing = [c for c in args.sort if c not in df.columns]
                if missing:
                    raise CliError(f"--sort {missing[0]!r}: no such column; the columns are {visible}")
                df = df.sort_values(args.sort, kind="stable")
        matched = len(df)
        if args.limit:
            df = df.head(args.limit)
        what = f"{matched} of {total} rows" if args.where else f"{total} rows"
        cut = f", first {len(df)} shown (--limit 0 shows all)" if len(df) < matched else ""
        print(f"map {name!r} ({kind}): {what}{cut}")
        if len(df):
            with pd.option_context("display.width", width, "display.max_columns", None):
                print(df[visible].to_string(index=False, max_colwidth=60))
        print()
    return EXIT_OK


# ---------------------------------------------------------------------- failures
def _read_failures(f: h5py.File, args: argparse.Namespace) -> list[tuple[str, pd.DataFrame]]:
    out = []
    for name in _selected_maps(f, args.map):
        failures = _table(f, name, "failures")
        if failures is None or failures.n_rows == 0:
            out.append((name, pd.DataFrame()))
            continue
        if args.all:
            rows = np.arange(failures.n_rows)
        else:
            rows = unresolved_failures(_table(f, name, "results"), failures)
        out.append((name, bookkeeping.readable(failures.read(rows=rows))))
    return out


def _pset_text(row: pd.Series) -> str:
    items = {k: v.item() if isinstance(v, np.generic) else v
             for k, v in row.items() if not str(k).startswith("_") and not _is_null(v)}
    return repr(items)


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _describe_failure(row: pd.Series, short: bool) -> str:
    index, kind, message = int(row[layout.PSET_INDEX]), row[layout.KIND], row[layout.EXCEPTION]
    if short:
        return f"pset {index}  {kind}  {message}  {_pset_text(row)}"
    where = ""
    if pd.notna(row[layout.TIME_UTC]):  # a skipped crashed pset did not run at all
        where = (f" on host {row[layout.HOST]}, rank {row[layout.RANK]}, pid {row[layout.PID]}, "
                 f"started {_clock(row[layout.TIME_UTC].timestamp())}")
    lines = [f"--- pset {index} ({kind}){where}", f"    pset: {_pset_text(row)}", f"    {message}"]
    tb = str(row[layout.TRACEBACK] or "").rstrip()
    if tb:
        lines += ["    " + line for line in tb.splitlines()]
    return "\n".join(lines)


def cmd_failures(args: argparse.Namespace) -> int:
    found = 0
    for name, df in _reading(args.file, lambda f: _read_failures(f, args)):
        if args.kind and len(df):
            df = df[df[layout.KIND] == args.kind]
        found += len(df)
        which = _plural(len(df), "failed attempt" if args.all else "failed pset")
        counts = ", ".join(f"{k}: {n}" for k, n in df[layout.KIND].value_counts().items()) if len(df) else ""
        print(f"map {name!r}: {which}{'' if args.all else ' without a result'}"
              f"{f' ({counts})' if counts else ''}")
        for _, row in df.iterrows():
            print(_describe_failure(row, args.short))
        common = df[layout.EXCEPTION].value_counts().head(5) if len(df) else pd.Series(dtype=int)
        if len(common) and common.iloc[0] > 1:
            print("most common:")
            for message, n in common.items():
                print(f"  {n} x {message}")
        print()
    if found and not args.all:
        print("Running the study again retries them (crashed ones once PSMPI_MAX_ATTEMPTS "
              "allows); `psmpi test STUDY.py` runs one pset of each map in this process.")
    return EXIT_BAD if found else EXIT_OK


# ---------------------------------------------------------------------- export
def _exportable(df: pd.DataFrame, as_text: bool) -> pd.DataFrame:
    """Array cells as lists (parquet) or JSON text (CSV); other columns unchanged."""
    df = df.copy()
    for column in df.columns:
        if df[column].dtype == object and df[column].map(lambda v: isinstance(v, np.ndarray)).any():
            lists = df[column].map(lambda v: v.tolist() if isinstance(v, np.ndarray) else None)
            df[column] = lists.map(lambda v: None if v is None else json.dumps(v)) if as_text else lists
    return df


def cmd_export(args: argparse.Namespace) -> int:
    kind = "failures" if args.failures else "results"

    def read(f: h5py.File) -> tuple[str, pd.DataFrame]:
        name = _one_map(f, [args.map] if args.map else None)
        table = _table(f, name, kind)
        return name, bookkeeping.readable(table.read()) if table is not None else pd.DataFrame()

    name, df = _reading(args.file, read)
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


# ---------------------------------------------------------------------- report
def _timing_frames(f: h5py.File, maps: Sequence[str] | None) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """The columns the report draws from, per map and table; ``_time_utc`` in POSIX seconds."""
    columns = [layout.TIME_UTC, layout.PSET_RUNTIME, layout.HOST, layout.RANK, layout.PID]
    out = {}
    for name in _selected_maps(f, maps):
        frames = []
        for kind in layout.TABLE_KINDS:
            table = _table(f, name, kind)
            if table is None or table.n_rows == 0:
                frames.append(pd.DataFrame(columns=columns + [layout.KIND]))
            else:
                wanted = columns + ([layout.KIND] if kind == "failures" else [])
                stored = [bookkeeping.stored_name(table.columns, c) for c in wanted]
                frames.append(bookkeeping.with_current_names(table.read(columns=stored)))
        out[name] = (frames[0], frames[1])
    return out


def _default_report_path(path: str) -> str:
    stem, ext = os.path.splitext(path)
    return (stem if ext in (".h5", ".hdf5") else path) + "-report.png"


def cmd_report(args: argparse.Namespace) -> int:
    from . import report  # matplotlib is imported only here

    summaries = summarise_file(args.file, args.map)
    frames = _reading(args.file, lambda f: _timing_frames(f, args.map))
    png = args.output or _default_report_path(args.file)
    html = None if args.no_html else os.path.splitext(png)[0] + ".html"
    report.write_report(args.file, frames, [s.as_dict() for s in summaries], png, html)
    print(f"psmpi: wrote {png}" + (f" and {html}" if html else ""), file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------------- test
# A test run writes nothing anywhere: no results file, log, backup, git commit or metrics.
TEST_ENV = {"PSMPI_OUT": "none", "PSMPI_VERBOSE": "3", "PSMPI_LOGFILE": "0", "PSMPI_GIT": "0",
            "PSMPI_BACKUP": "0", "PSMPI_SIMULATE": "0", "PSMPI_CARBON_SERVER": "none"}


@dataclasses.dataclass
class _MapCall:
    name: str
    results: Any = None       # MapResults
    error: str | None = None  # the traceback when map() itself raised


def _record_maps(calls: list[_MapCall]) -> contextlib.AbstractContextManager:
    """While active, each ``psmpi.map`` call's MapResults (or its error) is recorded in ``calls``."""
    from .api import observing_maps

    def record(name: str, results: Any, error: BaseException | None) -> None:
        text = None if error is None else "".join(traceback.format_exception(error))
        calls.append(_MapCall(name, results, text))

    return observing_maps(record)


def _run_script(script: str, argv: list[str]) -> str | None:
    """Run ``script`` as ``__main__`` in this process; the traceback if it failed, else None."""
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [script, *argv]
    sys.path.insert(0, os.path.dirname(script))
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (None, 0):
            return f"the script exited with status {exc.code}"
    except KeyboardInterrupt:
        raise
    except BaseException:
        return traceback.format_exc()
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return None


def _judge(call: _MapCall) -> tuple[str, list[str]]:
    """("PASS" | "FAIL" | "EMPTY", lines explaining) for one map() call."""
    if call.error is not None:
        return "FAIL", [f"map() raised before computing:", *call.error.rstrip().splitlines()]
    res = call.results
    missing = res.missing.df
    if len(missing):
        lines = []
        for _, row in missing.iterrows():
            lines.append(f"pset {int(row[layout.PSET_INDEX])} {_pset_text(row)}: "
                         f"{row[layout.KIND]}: {row[layout.EXCEPTION]}")
            lines += str(row.get(layout.TRACEBACK) or "").rstrip().splitlines()
        return "FAIL", lines
    if not len(res.results):
        return "EMPTY", ["no psets: nothing was tested"]
    text = repr(next(res.iterdicts()))
    return "PASS", [f"{_plural(res.stats.computed, 'pset')} computed in {res.stats.wall_seconds:.2f} s: "
                    f"{text if len(text) <= 300 else text[:297] + '...'}"]


def cmd_test(args: argparse.Namespace) -> int:
    script = os.path.abspath(args.script)
    if not os.path.isfile(script):
        raise CliError(f"{args.script} does not exist; give the study script, e.g. psmpi test study.py")
    env = {**TEST_ENV, "PSMPI_LIMIT": str(args.limit), "PSMPI_BACKEND": args.backend}
    os.environ.update(env)
    print("psmpi test: " + " ".join(f"{k}={v}" for k, v in sorted(env.items()))
          + f" python {args.script}", file=sys.stderr, flush=True)
    calls: list[_MapCall] = []
    with _record_maps(calls):
        script_error = _run_script(script, args.args)
    sys.stdout.flush()
    failed = 0
    print(f"\npsmpi test {args.script}:")
    for call in calls:
        verdict, lines = _judge(call)
        failed += verdict == "FAIL"
        print(f"{verdict:5} {call.name}: {lines[0]}")
        for line in lines[1:]:
            print("      " + line)
    if script_error is not None and not any(c.error for c in calls):
        failed += 1
        print("FAIL  the script itself:")
        for line in script_error.rstrip().splitlines():
            print("      " + line)
    if not calls:
        print("FAIL  the script made no psmpi.map() call: nothing was tested")
        return EXIT_BAD
    passed = sum(_judge(c)[0] != "FAIL" for c in calls)
    print(f"{passed} of {len(calls)} maps passed"
          + ("; the script itself failed" if script_error is not None else ""))
    return EXIT_BAD if failed else EXIT_OK


# ---------------------------------------------------------------------- merge and clean
class _Dedup:
    """Which rows of one map to copy so that no pset is stored twice.

    Results: a pset (``_pset_hash``) stored n times in one source and m times in another is
    kept max(n, m) times (identical psets of one run are separate psets). Failures: a failed
    attempt is kept once, and only if no other source has a result for that pset and no
    other source already gave failures for it (so a pset failing in two overlapping inputs
    counts once).
    """

    def __init__(self) -> None:
        self.present: collections.Counter = collections.Counter()  # copies from earlier sources
        self.seen: collections.Counter = collections.Counter()     # copies in this source so far
        self.result_sources: dict[str, set[int]] = collections.defaultdict(set)
        self.failure_source: dict[str, int] = {}
        self.attempts: set[tuple] = set()

    def results(self, rows: list[dict], source: int) -> list[bool]:
        keep = []
        for row in rows:
            h = row[layout.PSET_HASH]
            self.seen[h] += 1
            self.result_sources[h].add(source)
            keep.append(self.seen[h] > self.present[h])
        return keep

    def end_of_source(self) -> None:
        for h, n in self.seen.items():
            self.present[h] = max(self.present[h], n)
        self.seen.clear()

    def failures(self, rows: list[dict], source: int) -> list[bool]:
        keep = []
        for row in rows:
            h = row.get(layout.PSET_HASH)
            attempt = tuple(None if _is_null(v) else v for v in (
                h, row.get(layout.PSET_INDEX), row.get(layout.TIME_UTC), row.get(layout.PID),
                row.get(layout.HOST)))
            elsewhere = bool(self.result_sources.get(h, set()) - {source})
            owner = self.failure_source.setdefault(h, source)
            keep.append(not elsewhere and owner == source and attempt not in self.attempts)
            self.attempts.add(attempt)
        return keep


def _rows(table: Table, lo: int, hi: int) -> list[dict]:
    """Committed rows [lo, hi) of ``table`` as dicts without their null values, under
    today's column names (so a merge writes an older psmpi's files with them); pickled values
    as :class:`~psmpi.values.PickleBytes`, stored again as the same pickles."""
    table.unpickle = "keep"
    columns = [(bookkeeping.current_name(name), *table.read_slice(name, lo, hi))
               for name in table.columns]
    rows = []
    for i in range(hi - lo):
        rows.append({name: values[i] for name, values, nulls in columns
                     if nulls is None or not nulls[i]})
    return rows


def _copy_table(source: Table, target: Table, keep_rows: Callable[[list[dict]], list[bool]],
                where: str) -> int:
    copied = 0
    for lo in range(0, source.n_rows, _COPY_CHUNK):
        rows = _rows(source, lo, min(source.n_rows, lo + _COPY_CHUNK))
        kept = [row for row, keep in zip(rows, keep_rows(rows)) if keep]
        for row in kept:
            problem = target.admit(row)
            if problem is not None:
                raise CliError(f"cannot merge {where}: {problem}. The maps of that name hold "
                               f"different results; merge them under different names")
        target.append(kept)
        copied += len(kept)
    return copied


def copy_maps(sources: Sequence[str], target: str, skip: Sequence[str] = ()) -> dict[str, int]:
    """Write the maps of ``sources`` (but ``skip``) into the new file ``target``, deduplicated.

    Results of every source are copied before failures, so that a failure can be dropped
    when another source has the pset's result (see :class:`_Dedup`). Uses the Store/Table
    API, so the target is a psmpi file like any other. Returns rows copied per map.
    """
    unique = list({os.path.realpath(s): s for s in sources}.values())  # a file once
    copied: collections.Counter = collections.Counter()
    dedup: dict[str, _Dedup] = collections.defaultdict(_Dedup)
    with Store.open(target) as store:
        for kind in layout.TABLE_KINDS:
            for k, source in enumerate(unique):
                with open_h5(source, "r") as f:
                    for name in maps_in(f):
                        table = _table(f, name, kind)
                        if name in skip or table is None:
                            continue
                        d = dedup[name]
                        keep = d.results if kind == "results" else d.failures
                        copied[name] += _copy_table(table, store.table(name, kind),
                                                    lambda rows: keep(rows, k),
                                                    f"map {name!r} ({kind}) of {source}")
                        if kind == "results":
                            d.end_of_source()
    return dict(copied)


def _check_psmpi_file(path: str) -> None:
    with open_h5(path, "r"):
        pass


def _rewrite(final: str, sources: Sequence[str], skip: Sequence[str] = ()) -> dict[str, int]:
    """Build the merged file beside ``final`` and move it into place, holding final's lock."""
    lock = take_lock(final)  # refuses a file a running survey writes
    tmp = layout.merging_path(final, os.getpid())
    try:
        counts = copy_maps(sources, tmp, skip)
        os.replace(tmp, final)
        for name in skip:  # crash counts of a removed map must not blame a future one
            AttemptLog(final, name).save({})
        return counts
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        release_lock(lock)


def cmd_merge(args: argparse.Namespace) -> int:
    for path in args.inputs:
        _check_psmpi_file(path)
        writer = writer_of(path)
        if writer and writer.startswith("being written"):
            print(f"psmpi: warning: {path} is {writer}; only its committed rows are merged",
                  file=sys.stderr)
    sources = list(args.inputs)
    if os.path.exists(args.out):
        _check_psmpi_file(args.out)  # never overwrite a file that is not ours
        sources.insert(0, args.out)
    counts = _rewrite(args.out, sources)
    total = sum(counts.values())
    print(f"psmpi: {args.out} now holds {_plural(len(counts), 'map')}; {_plural(total, 'row')} "
          f"({', '.join(f'{n}: {c}' for n, c in counts.items()) or 'none'})", file=sys.stderr)
    return EXIT_OK


def _leftovers(path: str) -> list[str]:
    """Temporary files of psmpi processes that died while creating or merging ``path``."""
    found = []
    for tmp in glob.glob(glob.escape(path) + ".*.tmp"):
        match = re.fullmatch(layout.LEFTOVER_TMP, tmp[len(path) + 1:])
        if match and not pid_alive(int(match.group(1) or match.group(2))):
            found.append(tmp)
            found += [layout.lock_path(tmp)] if os.path.exists(layout.lock_path(tmp)) else []
    return found


def _simulation_copy(path: str) -> str | None:
    """The copy a ``simulate=True`` run made of ``path``, if there is one and it is psmpi's."""
    stem, ext = os.path.splitext(path)
    copy = stem + layout.SIMULATE_SUFFIX + (ext or ".h5")
    try:
        _check_psmpi_file(copy)
    except StoreError:
        return None
    return copy


def _clean_targets(path: str, backups: bool) -> list[str]:
    """What ``psmpi clean FILE`` removes: the file and everything psmpi made beside it."""
    simulation = _simulation_copy(path)
    files = [path, layout.attempts_path(path)]
    files += [simulation, layout.attempts_path(simulation)] if simulation else []
    found = [f for f in files if os.path.exists(f)] + _leftovers(path)
    if backups:
        found += sorted(glob.glob(glob.escape(path) + layout.BACKUP_INFIX + "*"))
    return found


def _confirm(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise CliError(f"refusing to {question} without asking: pass --yes")
    return input(f"{question}? [y/N] ").strip().lower() in ("y", "yes")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _remove_maps(path: str, names: list[str], yes: bool, dry_run: bool) -> int:
    done = sum(s.done for s in summarise_file(path, names))
    what = f"map{'s' * (len(names) > 1)} {', '.join(map(repr, names))} ({_plural(done, 'result')}) from {path}"
    if dry_run:
        print(f"would remove {what}")
        return EXIT_OK
    if not _confirm(f"remove {what}", yes):
        print("nothing removed")
        return EXIT_BAD
    _rewrite(path, [path], skip=names)
    print(f"psmpi: removed {what}", file=sys.stderr)
    return EXIT_OK


def cmd_clean(args: argparse.Namespace) -> int:
    path = args.file
    if os.path.exists(path):
        _check_psmpi_file(path)  # never delete a file psmpi did not write
    elif args.map:
        raise CliError(f"{path} does not exist")
    if args.map:
        return _remove_maps(path, args.map, args.yes, args.dry_run)
    targets = _clean_targets(path, args.backups)
    lock = [layout.lock_path(path)] if os.path.exists(layout.lock_path(path)) else []
    if not targets and not lock:
        raise CliError(f"{path} does not exist; nothing to clean")
    described = []
    for target in targets:
        if target == path:
            summaries = summarise_file(path)
            described.append(f"{path} ({_plural(len(summaries), 'map')}, "
                             f"{_plural(sum(s.done for s in summaries), 'result')})")
        else:
            described.append(target)
    described += [f"{lock[0]} (if its process is dead)"] if lock else []
    what = ", ".join(described)
    if args.dry_run:
        print("would remove:\n" + "\n".join("  " + d for d in described))
        return EXIT_OK
    if not _confirm(f"remove {what}", args.yes):
        print("nothing removed")
        return EXIT_BAD
    simulation = _simulation_copy(path)
    held = [take_lock(p) for p in [path] + ([simulation] if simulation else [])]
    try:  # the locks refuse a running survey and reclaim a dead one's
        for target in targets:
            with contextlib.suppress(FileNotFoundError):
                os.remove(target)
    finally:
        for lock_file in held:
            release_lock(lock_file)
    print(f"psmpi: removed {what}", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------------- check
def cmd_check(args: argparse.Namespace) -> int:
    report = check(args.file)
    if args.json:
        print(json.dumps(dataclasses.asdict(report) | {"damaged": report.damaged}, indent=1))
    else:
        print(report.text())
    return EXIT_BAD if report.damaged else EXIT_OK


# ---------------------------------------------------------------------- parser
EPILOG = """\
exit status: 0 done; 1 done and the answer is bad (failed psets in `failures`, a failing
map in `test`, damage found by `check`, a declined prompt in `clean`); 2 usage error or the command could not do its
job (missing or non-psmpi file, unknown map, a file locked by a running survey, a missing
optional dependency); 130 interrupted.

Reading commands work while a survey writes the file: they see every committed row.
"""


def _add_map_option(p: argparse.ArgumentParser, many: bool = True) -> None:
    if many:
        p.add_argument("-m", "--map", action="append", metavar="NAME",
                       help="only this map (repeatable); default every map")
    else:
        p.add_argument("-m", "--map", metavar="NAME",
                       help="the map; may be left out when the file holds one map")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="psmpi", description="Look at, export, merge and clean psmpi results files; "
        "draw a report of a survey; test a study on one pset per map.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"psmpi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = command("status", "progress of every map: total, done, failed, crashed, remaining",
                "Per map: psets done (committed results), failed and crashed (psets whose "
                "latest attempt failed and that have no result), total and remaining (when "
                "the file records the total), and when the last pset finished. Also says "
                "whether a survey is writing the file now and, while it runs, which worker "
                "(rank or process, host) holds which psets for how long, marking stalled "
                "ones and those past timeout=.")
    p.add_argument("file", metavar="FILE")
    _add_map_option(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=cmd_status)

    p = command("show", "print rows, filtered by column values",
                "Print the committed rows of each map (pset and result columns; -a adds "
                "the bookkeeping columns _rank, _host, _time_utc, _pset_runtime, ...).")
    p.add_argument("file", metavar="FILE")
    _add_map_option(p)
    p.add_argument("-w", "--where", action="append", default=[], metavar="COND",
                   help="keep rows where COND holds: COLUMN OP VALUE with OP one of "
                   "= != < <= > >= (numbers, strings, true/false) or ~ (regular expression "
                   "search); repeatable, all must hold. Example: -w 'a>=2' -w 'name~^run'")
    p.add_argument("-c", "--columns", metavar="A,B,...", help="only these columns, in this order")
    p.add_argument("-a", "--all", action="store_true", help="include bookkeeping columns (_*)")
    p.add_argument("-s", "--sort", action="append", metavar="COLUMN", help="sort by this column (repeatable)")
    p.add_argument("-n", "--limit", type=int, default=50, metavar="N",
                   help="print at most N rows per map (default 50; 0: all)")
    p.add_argument("--failures", action="store_true", help="show the failures table instead of the results")
    p.set_defaults(run=cmd_show)

    p = command("failures", "failed psets with their exceptions and tracebacks",
                "Print every pset whose latest attempt failed and that has no result yet: "
                "its values, the kind of failure, where and when it ran, the exception and "
                "the traceback. Exit status 1 if there is any, 0 if none.")
    p.add_argument("file", metavar="FILE")
    _add_map_option(p)
    p.add_argument("--all", action="store_true",
                   help="every failed attempt, also of psets that succeeded later")
    p.add_argument("--kind", choices=("exception", "bad_result", "unpicklable", "unstorable", "crashed"),
                   help="only failures of this kind")
    p.add_argument("--short", action="store_true", help="one line per failure, no traceback")
    p.set_defaults(run=cmd_failures)

    p = command("export", "write one map's rows to CSV or Parquet",
                "Write the committed rows of one map to CSV or Parquet. Array results become "
                "JSON lists in CSV and list columns in Parquet.")
    p.add_argument("file", metavar="FILE")
    _add_map_option(p, many=False)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--csv", metavar="OUT", help="CSV file to write ('-': standard output)")
    target.add_argument("--parquet", metavar="OUT", help=f"Parquet file to write (needs pyarrow: {REPORT_EXTRA})")
    p.add_argument("--failures", action="store_true", help="export the failures table instead")
    p.add_argument("--no-bookkeeping", action="store_true", help="leave out the _* columns")
    p.set_defaults(run=cmd_export)

    p = command("report", "PNG + HTML pictures: progress, per-worker timeline, runtimes",
                "Draw progress over time, a timeline of which worker (MPI rank or process) "
                f"ran which pset when, and the distribution of pset runtimes, to a PNG and an "
                f"HTML page embedding it. Needs matplotlib ({REPORT_EXTRA}).")
    p.add_argument("file", metavar="FILE")
    _add_map_option(p)
    p.add_argument("-o", "--output", metavar="PNG",
                   help="the PNG to write (default FILE without .h5 plus -report.png); the "
                   "HTML page gets the same name with .html")
    p.add_argument("--no-html", action="store_true", help="write the PNG only")
    p.set_defaults(run=cmd_report)

    p = command("test", "run one pset of each map of a study, in this process",
                "Run the study script in this process with PSMPI_LIMIT=1 PSMPI_BACKEND=serial "
                "PSMPI_OUT=none PSMPI_VERBOSE=3 (and PSMPI_LOGFILE=0 PSMPI_GIT=0 "
                "PSMPI_BACKUP=0 PSMPI_SIMULATE=0 PSMPI_CARBON_SERVER=none): each map computes "
                "one pset, nothing is written, tracebacks are printed, breakpoints in the "
                "worker work. Prints PASS or FAIL per map; exit status 1 if a map failed or "
                "the script raised.")
    p.add_argument("script", metavar="STUDY.py")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="arguments for the script")
    p.add_argument("--limit", type=int, default=1, metavar="N", help="psets per map (default 1)")
    p.add_argument("--backend", default="serial", choices=("serial", "multiprocessing"),
                   help="default serial: the worker runs in this process")
    p.set_defaults(run=cmd_test)

    p = command("clean", "delete a results file (or maps of it) and what psmpi made beside it",
                "Delete FILE and what psmpi made beside it: its attempt counts FILE.attempts, "
                "the copy a simulate=True run made (FILE without .h5 plus .simulate.h5), "
                "temporary files of dead psmpi processes, and the lock if the survey that "
                "wrote it is dead. Backups (FILE.bak-*) only with --backups; calc directories "
                "never. With --map, remove only those maps (the file is rewritten without "
                "them). Refuses a file a running survey holds. Asks first, unless --yes.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-m", "--map", action="append", metavar="NAME", help="remove only this map (repeatable)")
    p.add_argument("--backups", action="store_true", help="also remove the backups FILE.bak-*")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")
    p.add_argument("-n", "--dry-run", action="store_true", help="say what would be removed, remove nothing")
    p.set_defaults(run=cmd_clean)

    p = command("check", "verify every checksum of a file: what is damaged, what is intact",
                "Read every map, table, column and null mask of FILE chunk by chunk, "
                "verifying the checksums psmpi writes, and print what is damaged (map, "
                "column, row ranges) and which rows are intact in every column. Exit status "
                "1 if anything is damaged, 0 if nothing, 2 if the file cannot be opened at all.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(run=cmd_check)

    p = command("merge", "combine the maps of several results files into one",
                "Copy every map of IN... into OUT (added to what OUT already holds). A pset "
                "stored in several inputs is kept once (identical psets of one run stay "
                "separate rows). OUT is written whole and moved into place, so it is never "
                "half-merged; a file a running survey holds is refused.")
    p.add_argument("out", metavar="OUT")
    p.add_argument("inputs", nargs="+", metavar="IN")
    p.set_defaults(run=cmd_merge)
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

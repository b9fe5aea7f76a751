"""What comes back becomes rows: the :class:`Recorder` turns outcomes into rows of the results
and failures tables, the :class:`RowWriter` buffers them and commits them in batches.

Every row carries the bookkeeping columns :data:`BOOK_COLUMNS`, gathered in their order.
"""

from __future__ import annotations

import array
import itertools
import math
import pickle
import time
import traceback
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import config, layout, params
from ..errors import PsetTimeout, StoreError
from ..results import MapProgress
from ..store import Table, bookkeeping
from ..store.bookkeeping import RunStamp
from ..worker import task
from .crashguard import GivenUp

if TYPE_CHECKING:  # the reporter is only called: rows.py need not sit above progress.py
    import pandas as pd

    from ..watch.progress import Reporter

# Bookkeeping columns of every row, collected per row as a tuple in this order and written
# as arrays: cheaper than seven more keys in every row dict.
BOOK_COLUMNS = (layout.PSET_INDEX, layout.PSET_HASH, layout.RANK, layout.HOST, layout.PID,
                layout.TIME_UTC, layout.PSET_RUNTIME)


# Commit once the buffered results of rows that came pickled (those with arrays, say)
# reach this size, however few rows: buffering must not hold gigabytes.
COMMIT_BYTES = 64 * 2**20


class RowWriter:
    """Buffers rows and commits them in batches, remembering where each pset's row went."""

    def __init__(self, results: Table, failures: Table, settings: config.Settings,
                 stamp: RunStamp):
        self.tables = {"results": results, "failures": failures}
        self.stamp = stamp
        self.buffers: dict[str, list[dict]] = {"results": [], "failures": []}
        self.books: dict[str, list[tuple]] = {"results": [], "failures": []}
        # Groups that came as columns: (values, BOOK_COLUMNS values), both {key: list}
        self.chunks: dict[str, list[tuple[dict, dict]]] = {"results": [], "failures": []}
        self.n_buffered = 0
        self.buffered_bytes = 0  # pickled size of the results buffered row by row
        self.stored_rows = {"results": array.array("q"), "failures": array.array("q")}
        self.stored_indexes = {"results": array.array("q"), "failures": array.array("q")}
        self.commit_rows = settings.commit_rows
        self.commit_seconds = settings.commit_seconds
        self.oldest: float | None = None
        self.failed = False

    def add(self, kind: str, row: dict, book: tuple) -> str | None:
        """Buffer ``row`` (with its BOOK_COLUMNS values) for table ``kind``; why not, if not."""
        problem = self.tables[kind].admit(row)
        if problem is None:
            self.buffers[kind].append(row)
            self.books[kind].append(book)
            self.buffered(1)
        return problem

    def add_columns(self, kind: str, values: dict[str, Sequence], book: dict[str, Sequence]
                    ) -> str | None:
        """Buffer rows given as columns (``book``: BOOK_COLUMNS as lists); why not, if not."""
        problem = self.tables[kind].admit_columns(values)
        if problem is None:
            self.chunks[kind].append((values, book))
            self.buffered(len(book[layout.PSET_INDEX]))
        return problem

    def buffered(self, n: int) -> None:
        self.n_buffered += n
        if self.oldest is None:
            self.oldest = time.monotonic()

    def note_resumed(self, index: int, row: int) -> None:
        self.stored_rows["results"].append(row)
        self.stored_indexes["results"].append(index)

    def note_resumed_many(self, indexes: np.ndarray, rows: np.ndarray) -> None:
        self.stored_rows["results"].frombytes(rows.astype(np.int64).tobytes())
        self.stored_indexes["results"].frombytes(indexes.astype(np.int64).tobytes())

    def due(self) -> bool:
        return self.n_buffered >= self.commit_rows or self.buffered_bytes >= COMMIT_BYTES or (
            self.oldest is not None and time.monotonic() - self.oldest >= self.commit_seconds)

    def commit(self) -> None:
        if self.failed:
            return  # the file refused a write: retrying would fail again and hide why
        for kind, rows in self.buffers.items():
            if rows:
                book = dict(zip(BOOK_COLUMNS, zip(*self.books[kind])))
                self.append(kind, self.tables[kind].transpose(rows), book)
                rows.clear()
                self.books[kind].clear()
            chunks = self.chunks[kind]
            while chunks:  # one append per set of keys; nearly always just one
                keys = tuple(chunks[0][0])
                same = [chunk for chunk in chunks if tuple(chunk[0]) == keys]
                values = {key: joined(chunk[0][key] for chunk in same) for key in keys}
                book = {key: joined(chunk[1][key] for chunk in same) for key in BOOK_COLUMNS}
                self.append(kind, values, book)
                chunks[:] = [chunk for chunk in chunks if tuple(chunk[0]) != keys]
        self.n_buffered = self.buffered_bytes = 0
        self.oldest = None

    def append(self, kind: str, values: dict[str, Any], book: dict[str, Any]) -> None:
        """Commit rows given as columns to table ``kind``, remembering where they went."""
        columns = {key: np.array(book[key]) for key in BOOK_COLUMNS}
        columns.update(self.stamp.columns(columns[layout.PSET_INDEX]))
        table = self.tables[kind]
        # a table an older psmpi began keeps its names for the columns it renamed since
        for name, stored_name in bookkeeping.stored_names(table.columns).items():
            columns[stored_name] = columns.pop(name)
        try:
            stored = table.append_values(values, len(columns[layout.PSET_INDEX]), columns)
        except StoreError:
            self.failed = True
            raise
        self.stored_rows[kind].extend(stored)
        self.stored_indexes[kind].frombytes(columns[layout.PSET_INDEX].astype(np.int64).tobytes())

    def stored_pset_indexes(self) -> np.ndarray:
        """The pset indexes of this map's rows stored so far (resumed ones too), both tables."""
        return np.concatenate([np.frombuffer(self.stored_indexes[kind], dtype=np.int64)
                               for kind in ("results", "failures")])

    def read(self, kind: str, user_columns_only: bool = False) -> pd.DataFrame:
        """This map's rows of table ``kind``, in pset order, as :func:`psmpi.read` gives them."""
        indexes = np.frombuffer(self.stored_indexes[kind], dtype=np.int64)
        rows = np.frombuffer(self.stored_rows[kind], dtype=np.int64)
        table = self.tables[kind]
        columns = [c for c in table.columns if not c.startswith("_")] if user_columns_only else None
        return bookkeeping.readable(table.read(rows=rows[np.argsort(indexes, kind="stable")],
                                               columns=columns))


class Recorder:
    """Turns what comes back into rows: results, failures of every kind, bookkeeping columns.

    Each recorded pset leaves ``inflight`` and is counted in ``progress``; each failure is
    also told to the ``reporter`` and kept as given in :attr:`failed_psets` (for
    ``missing.to_psets()``).
    """

    def __init__(self, writer: RowWriter, inflight: dict[int, dict], progress: MapProgress,
                 reporter: Reporter, name: str):
        self.writer = writer
        self.inflight = inflight
        self.progress = progress
        self.reporter = reporter
        self.name = name
        self.failed_psets: dict[int, dict] = {}  # index -> pset as given, of failed psets
        self.timed_out: set[int] = set()  # psets stored as timeouts by a PsetTimeout

    def record(self, outcome: task.GroupOutcome) -> None:
        """Turn one group's outcomes into rows of the results or failures table.

        The whole group in one piece when it came as columns and the table takes them;
        otherwise pset by pset (failures, rich values, a column the table cannot take as
        it is), so that only the psets that cannot be stored fail.
        """
        rows = None
        if outcome.columns is not None:
            if self.record_columns(outcome):
                return
            columns = [_as_list(column) for column in outcome.columns.values()]
            rows = [dict(zip(outcome.columns, values)) for values in zip(*columns)]
        if outcome.span is not None:  # a span's psets as dicts, from here on
            self.inflight.unfold(outcome.span[0])
            if rows is not None:
                rows = [{**self.inflight[index], **row}
                        for index, row in zip(outcome.indexes, rows)]
        self.record_rows(outcome, rows)

    def record_rows(self, outcome: task.GroupOutcome, rows: list[dict] | None) -> None:
        """Store a group pset by pset: ``rows`` (its columns as rows), or its payloads if None."""
        errors = outcome.errors
        writer = self.writer
        for i, index in enumerate(outcome.indexes):
            pset = self.inflight.pop(index)
            # Workers hash the psets (in parallel); a group lost with its process did not.
            digest = outcome.digest(i) or params.pset_hash(pset)
            book = (index, digest, outcome.rank, outcome.host, outcome.pid, outcome.t_starts[i],
                    outcome.runtimes[i])
            error = errors.get(i)
            if error is None:
                if rows is None:
                    payload = outcome.payloads[i]
                    writer.buffered_bytes += len(payload)
                    error = self.store_result(pset, payload, book)
                else:
                    error = self.store_row(rows[i] if rows else dict(pset), book)
                if error is None:
                    self.progress.finished += 1
                    continue
            self.store_failure(pset, book, error)

    def record_columns(self, outcome: task.GroupOutcome) -> bool:
        """Store a group that came as columns in one piece; False if the table refuses it.

        A span's pset columns are rebuilt here from the grid, as numpy arrays: no Python
        object per row.
        """
        indexes, span = outcome.indexes, outcome.span
        n = len(indexes)
        if span is None:
            values = outcome.columns
            index_column: Any = indexes
        else:
            values = self.inflight.grid.columns(*span)
            values.update(outcome.columns)
            index_column = np.arange(*span, dtype=np.int64)
        book = dict(zip(BOOK_COLUMNS, (index_column, outcome.digest_column(),
                                       np.full(n, outcome.rank, np.int64), np.full(n, outcome.host),
                                       np.full(n, outcome.pid, np.int64), outcome.t_starts,
                                       outcome.runtimes)))
        if self.writer.add_columns("results", values, book) is not None:
            return False
        if span is not None:
            self.inflight.pop_span(span)
        else:
            self.inflight.drop(indexes)
        self.progress.finished += n
        return True

    def store_result(self, pset: dict, payload: bytes, book: tuple):
        try:
            result = pickle.loads(payload)
        except Exception as exc:
            return (task.UNPICKLABLE, "the result was pickled on the worker but cannot be "
                    "unpickled here: " + task.describe(exc), traceback.format_exc())
        row = dict(pset)
        row.update(result)
        return self.store_row(row, book)

    def store_row(self, row: dict, book: tuple):
        problem = self.writer.add("results", row, book)
        return None if problem is None else (task.UNSTORABLE, problem, "")

    def store_failure(self, pset: dict, book: tuple, error: tuple) -> None:
        kind, message, traceback_text = error
        self.failed_psets[book[0]] = pset  # as given, for missing.to_psets()
        row = dict(pset)
        row.update({layout.KIND: kind, layout.EXCEPTION: task.encodable(message),
                    layout.TRACEBACK: task.encodable(traceback_text)})
        problem = self.writer.add("failures", row, book)
        index = book[0]
        if problem is not None:
            raise StoreError(f"pset {index} cannot be stored in map {self.name!r} "
                             f"of {self.writer.tables['failures']}: {problem}. The psets differ "
                             f"from the ones this map was run with before; use a new name= or "
                             f"out=")
        self.progress.failures += 1
        self.progress.exceptions += kind == task.EXCEPTION
        self.reporter.failure(index, kind, message, traceback_text, pset, book[2:5])

    def store_given_up(self, given_up: Iterable[GivenUp]) -> None:
        """Store the psets the crash guard gave up on; no worker ran them in this run."""
        for g in given_up:
            book = (g.index, g.digest, -1, "", -1, math.nan, math.nan)
            self.store_failure(g.pset, book, (g.kind, g.message, ""))

    def store_timeouts(self, exc: PsetTimeout, timeout: float | None) -> None:
        """Store the psets of a run ended by a timeout as ``timeout`` failures.

        They stay in flight, and in :attr:`timed_out`: each such run is one attempt, so the
        crash guard gives up on a pset that times out on every run after ``max_attempts``.
        """
        for rank, pid, held in exc.timed_out:
            message = (f"ran past timeout={timeout} s per pset on rank {rank} "
                       f"(host {held.host}, pid {pid}): held for {held.seconds:.1f} s with "
                       f"{len(held.indexes)} pset(s); the run was ended "
                       f"(mpi abort_on_timeout) and counts as an attempt")
            t_start = time.time() - held.seconds
            for index in held.indexes:
                pset = self.inflight.get(index)
                if pset is None or index in self.timed_out:
                    continue
                self.timed_out.add(index)
                book = (index, params.pset_hash(pset), rank, held.host, pid, t_start, math.nan)
                self.store_failure(pset, book, (task.TIMEOUT, message, ""))


def joined(lists: Iterable[Sequence]) -> Sequence:
    """One sequence of the items of ``lists``, in order: a numpy array if all are arrays of
    one dtype (never an int converted to float here: the store decides that)."""
    lists = list(lists)
    if all(type(part) is np.ndarray for part in lists) and \
            len({part.dtype for part in lists}) == 1:
        return np.concatenate(lists)
    return list(itertools.chain.from_iterable(map(_as_list, lists)))


def _as_list(part: Sequence) -> Sequence:
    """A column part as Python values; packed digests (``S32``) as the str they stand for."""
    if type(part) is not np.ndarray:
        return part
    return part.astype(str).tolist() if part.dtype.kind == "S" else part.tolist()

"""The one orchestration loop of a map: psets -> groups -> backend -> store -> MapResults.

::

    psets ──checked──▶ skip committed (resume) ──▶ Grouper ──groups──▶ Backend
                                                      ▲                   │ GroupOutcome
                                                      └── observe ◀───────┤ (completion order)
                                                                          ▼
    MapResults ◀── read committed rows ◀── Store (two-phase commit) ◀── RowWriter

Only this module (on the driver, rank 0 under MPI) writes the store.
"""

from __future__ import annotations

import array
import itertools
import math
import operator
import os
import pickle
import sys
import time
import traceback
from typing import Any, Callable, Iterable, Iterator, NoReturn, Sequence

import numpy as np
import pandas as pd

from . import bookkeeping, config, layout, params, task, workflow
from .attempts import AttemptLog, Suspects
from .bookkeeping import RunStamp
from .backends import Backend
from .errors import PsetError, PsetTimeout, StoreError
from .grouping import Grouper
from .perf import PerfCollector
from .progress import Reporter
from .results import MapProgress, MapResults, Missing
from .source import ResumeIndex, batches, checked_psets
from .stalls import Watch
from .stopping import EXIT_INCOMPLETE, StopRequest, until_stopped
from .store import Store, Table


def default_out_path() -> str:
    """<script name>.h5 in the working directory; psmpi.h5 when there is no script."""
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    stem = os.path.splitext(os.path.basename(script))[0] if script else ""
    return (stem or "psmpi") + ".h5"


def out_path(out: Any) -> str | None:
    if out is config.AUTO:
        return default_out_path()
    return None if out is None else os.fspath(out)


first = operator.itemgetter(0)  # the pset index of an (index, pset) pair

# Psets hashed and looked up at once when resuming: one numpy query per batch.
RESUME_BATCH = 4096

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

    def read(self, kind: str, user_columns_only: bool = False) -> pd.DataFrame:
        """This map's rows of table ``kind``, in pset order, as :func:`psmpi.read` gives them."""
        indexes = np.frombuffer(self.stored_indexes[kind], dtype=np.int64)
        rows = np.frombuffer(self.stored_rows[kind], dtype=np.int64)
        table = self.tables[kind]
        columns = [c for c in table.columns if not c.startswith("_")] if user_columns_only else None
        return bookkeeping.readable(table.read(rows=rows[np.argsort(indexes, kind="stable")],
                                               columns=columns))


class MapRun:
    """The state of one map() call while it runs."""

    def __init__(self, worker: Callable, psets: Any, settings: config.Settings,
                 backend: Backend, name: str, stop: StopRequest):
        self.settings = settings
        self.backend = backend
        self.name = name
        self.task = task.Task(worker, name, backend.name, settings.user_kwargs,
                              calc_dir=settings.calc_dir, timeout=settings.timeout)
        self.stream, self.length = checked_psets(psets)
        self.progress = MapProgress()
        self.reporter = Reporter(settings, name, backend.name, backend.n_workers)
        self.inflight: dict[int, dict] = {}
        self.stop = stop
        self.abandoned = 0  # psets in flight when the drain period ran out
        self.perf = PerfCollector()
        self.log: AttemptLog | None = None  # groups handed out, for poison psets
        self.suspects = Suspects({}, settings.max_attempts)
        self.watch: Watch | None = None  # stalled workers; set up once the store is open
        self.timed_out: set[int] = set()  # psets stored as timeouts by a PsetTimeout
        self.failed_psets: dict[int, dict] = {}  # index -> pset as given, of failed psets

    def todo(self, resume: ResumeIndex | None, writer: RowWriter) -> Iterator[tuple[int, dict]]:
        """Psets still to compute: committed ones skipped, at most ``limit`` new ones."""
        stream = self.stream if resume is None else self.skip_committed(resume, writer)
        return itertools.islice(stream, self.settings.limit or None)

    def skip_committed(self, resume: ResumeIndex, writer: RowWriter):
        for batch in batches(self.stream, RESUME_BATCH):
            rows = resume.take([params.pset_hash(pset) for _, pset in batch])
            for (index, pset), row in zip(batch, rows.tolist()):
                if row < 0:
                    yield index, pset
                else:
                    writer.note_resumed(index, row)
                    self.suspects.committed(index)
                    self.progress.resumed += 1
                    self.progress.finished += 1

    def handed_out(self, groups: Iterable[list]) -> Iterator[list]:
        """Remember what each group holds until its outcome comes back."""
        for group in groups:
            if self.log is not None:
                self.log.sent(list(map(first, group)))
            self.inflight.update(group)
            yield group

    def record(self, outcome: task.GroupOutcome, writer: RowWriter) -> None:
        """Turn one group's outcomes into rows of the results or failures table."""
        errors = outcome.errors
        if self.log is not None:
            self.log.returned(outcome.indexes)
        self.perf.add(outcome)
        rows = None
        if outcome.columns is not None:
            if self.record_columns(outcome, writer):
                return
            # a column the table cannot take as it is: row by row, to find which psets fail
            rows = [dict(zip(outcome.columns, values)) for values in zip(*outcome.columns.values())]
        for i, index in enumerate(outcome.indexes):
            pset = self.inflight.pop(index)
            runtime = outcome.runtimes[i]
            # Workers hash the psets (in parallel); a group lost with its process did not.
            digest = outcome.digests[i] or params.pset_hash(pset)
            book = (index, digest, outcome.rank, outcome.host, outcome.pid, outcome.t_starts[i],
                    runtime)
            error = errors.get(i)
            if error is None:
                if rows is None:
                    payload = outcome.payloads[i]
                    writer.buffered_bytes += len(payload)
                    error = self.store_result(pset, payload, book, writer)
                else:
                    error = self.store_row(rows[i] if rows else dict(pset), book, writer)
                if error is None:
                    self.progress.finished += 1
                    continue
            self.store_failure(pset, book, error, writer)

    def store_result(self, pset: dict, payload: bytes, book: tuple, writer: RowWriter):
        try:
            result = pickle.loads(payload)
        except Exception as exc:
            return (task.UNPICKLABLE, "the result was pickled on the worker but cannot be "
                    "unpickled here: " + task.describe(exc), traceback.format_exc())
        row = dict(pset)
        row.update(result)
        return self.store_row(row, book, writer)

    @staticmethod
    def store_row(row: dict, book: tuple, writer: RowWriter):
        problem = writer.add("results", row, book)
        return None if problem is None else (task.UNSTORABLE, problem, "")

    def record_columns(self, outcome: task.GroupOutcome, writer: RowWriter) -> bool:
        """Store a group that came as columns in one piece; False if the table refuses it."""
        indexes = outcome.indexes
        n = len(indexes)
        book = {layout.PSET_INDEX: indexes, layout.PSET_HASH: outcome.digests,
                layout.RANK: [outcome.rank] * n, layout.HOST: [outcome.host] * n,
                layout.PID: [outcome.pid] * n,
                layout.TIME_UTC: outcome.t_starts, layout.PSET_RUNTIME: outcome.runtimes}
        if writer.add_columns("results", outcome.columns, book) is not None:
            return False
        pop = self.inflight.pop
        for index in indexes:
            pop(index)
        self.progress.finished += n
        return True

    def store_failure(self, pset: dict, book: tuple, error: tuple, writer: RowWriter) -> None:
        kind, message, traceback_text = error
        self.failed_psets[book[0]] = pset  # as given, for missing.to_psets()
        row = dict(pset)
        row.update({layout.KIND: kind, layout.EXCEPTION: task.encodable(message),
                    layout.TRACEBACK: task.encodable(traceback_text)})
        problem = writer.add("failures", row, book)
        index = book[0]
        if problem is not None:
            raise StoreError(f"pset {index} cannot be stored in map {self.name!r} "
                             f"of {writer.tables['failures']}: {problem}. The psets differ from "
                             f"the ones this map was run with before; use a new name= or out=")
        self.progress.failures += 1
        self.progress.exceptions += kind == task.EXCEPTION
        self.reporter.failure(index, kind, message, traceback_text, pset, book[2:5])

    def execute(self, store: Store) -> MapResults:
        started = time.monotonic()
        results_table = store.table(self.name, "results")
        failures_table = store.table(self.name, "failures")
        writer = RowWriter(results_table, failures_table, self.settings,
                           self.stamp(results_table, failures_table))
        committed_before = results_table.n_rows
        # repeat=True: every pset is computed again, as a new row with new ids.
        resume = None if not committed_before or self.settings.repeat else \
            ResumeIndex(results_table.read_column(layout.PSET_HASH, decode=False))
        self.progress.total = self.estimated_total(committed_before)
        self.reporter.start(self.progress, store.path)
        if self.length is not None and store.path is not None:
            store.note_planned(self.name, self.length)
        if store.path is not None and not self.backend.survives_crashes:
            self.log = AttemptLog(store.path, self.name)
            self.suspects = Suspects(self.log.load(), self.settings.max_attempts)
        todo = self.suspects.sort(self.todo(resume, writer))
        if self.settings.cost is not None:
            todo = most_expensive_first(todo, self.settings.cost)
        grouper = Grouper(todo, self.backend.n_workers,
                          self.estimated_todo(committed_before), self.settings.group_size)
        groups = self.handed_out(until_stopped(grouper, self.stop))
        self.watch = Watch(self.backend, self.reporter, self.perf.runtimes, self.inflight,
                           self.task.timeout, store.path, self.name)
        try:
            try:
                if self.consume(self.backend.run(self.task, groups), writer, grouper):
                    self.skip_crashed(writer)
                    self.run_alone(writer)
            except PsetTimeout as exc:
                self.store_timeouts(exc, writer)
                raise
        finally:
            self.watch.close()
            try:
                writer.commit()  # whatever came back is kept, even when interrupted
            finally:
                self.save_attempts(writer)
        self.progress.active = len(self.inflight)
        if not self.stop.requested:
            self.progress.total = self.progress.finished + self.progress.failures
            if not self.settings.limit:
                self.progress.stale = committed_before - self.progress.resumed
        results = self.results(writer, time.monotonic() - started, store.path)
        self.reporter.finish(self.progress, store.path or "memory", results.stats,
                             self.stop.name if self.stop.requested else "")
        return results

    def stamp(self, *tables: Table) -> RunStamp:
        """This run's ids: the next run_seq and pset_seq after those stored in ``tables``.

        The largest of the whole columns, not of the last rows: ``psmpi merge`` may have
        appended rows of another file with smaller numbers.
        """
        last_run, last_pset = -1, -1
        for table in tables:
            if table.n_rows and layout.RUN_SEQ in table.columns:
                last_run = max(last_run, int(table.read_column(layout.RUN_SEQ).max()))
                last_pset = max(last_pset, int(table.read_column(layout.PSET_SEQ).max()))
        return RunStamp(self.task.run_id, self.task.pset_key, last_run + 1, last_pset + 1,
                        self.settings.calc_dir)

    def consume(self, outcomes: Iterator[task.GroupOutcome | None], writer: RowWriter,
                grouper: Grouper | None) -> bool:
        """Record outcomes as they come; False if the drain period ran out first."""
        try:
            for outcome in outcomes:
                if outcome is not None:  # None: a heartbeat while workers compute
                    if grouper is not None:
                        grouper.observe(outcome)
                    self.record(outcome, writer)
                if writer.due():
                    writer.commit()
                self.progress.active = len(self.inflight)
                self.watch.poll(time.monotonic())
                self.reporter.update(self.progress)
                if self.stop.requested and self.stop.elapsed() > self.settings.drain_seconds:
                    self.abandoned = self.progress.active
                    self.backend.abandon()
                    return False
            return True
        finally:
            # Left early (a second signal or an error here): the backend drops the groups in
            # flight now, not once the generator is collected, after Python's exit waited
            # for them.
            close = getattr(outcomes, "close", None)
            if close is not None:
                close()

    def skip_crashed(self, writer: RowWriter) -> None:
        """Store psets that died with their process max_attempts times as crashed failures.

        A pset whose runs ended by running past ``timeout=`` (a ``timeout`` failure row of
        the same pset is stored) is stored as a ``timeout`` failure instead.
        """
        timed_out = self.stored_timeouts(writer) if self.suspects.crashed else {}
        for index, pset, count in self.suspects.crashed:
            digest = self.suspects.counts[index].digest  # hashed when it was held back
            if timed_out.get(index) == digest:
                kind = task.TIMEOUT
                message = (f"this pset ran past timeout={self.task.timeout} s and the run "
                           f"was aborted {count} times, so it is skipped. Raise timeout=, "
                           f"or run again with PSMPI_MAX_ATTEMPTS={count + 1} or delete "
                           f"{self.log.path}")
            else:
                kind = task.CRASHED
                message = (f"the process running this pset died {count} times (a crash, the "
                           f"out-of-memory killer, or a job stopped while it ran), so it is "
                           f"skipped. Fix the cause, then run again with "
                           f"PSMPI_MAX_ATTEMPTS={count + 1} or delete {self.log.path}")
            book = (index, digest, -1, "", -1, math.nan, math.nan)
            self.store_failure(pset, book, (kind, message, ""), writer)

    @staticmethod
    def stored_timeouts(writer: RowWriter) -> dict[int, str]:
        """pset index -> pset hash of the ``timeout`` failure rows stored by earlier runs."""
        failures = writer.tables["failures"]
        if not failures.n_rows or layout.KIND not in failures.columns:
            return {}
        kinds = failures.read_column(layout.KIND)
        rows = np.flatnonzero(kinds == task.TIMEOUT)
        indexes = failures.read_column(layout.PSET_INDEX)[rows]
        digests = failures.read_column(layout.PSET_HASH)[rows]
        return {int(i): d.decode() if isinstance(d, bytes) else str(d)
                for i, d in zip(indexes, digests)}

    def store_timeouts(self, exc: PsetTimeout, writer: RowWriter) -> None:
        """Store the psets of a run ended by a timeout as ``timeout`` failures.

        They stay in flight for :meth:`save_attempts`: each such run is one attempt, so a
        pset that times out on every run is skipped after ``max_attempts`` (skip_crashed).
        """
        for rank, pid, held in exc.timed_out:
            message = (f"ran past timeout={self.task.timeout} s per pset on rank {rank} "
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
                self.store_failure(pset, book, (task.TIMEOUT, message, ""), writer)

    def run_alone(self, writer: RowWriter) -> None:
        """Run the psets that were running at two deaths one at a time, each committed.

        Alone, a pset that kills the run again is the only one blamed for it.
        """
        for item in self.suspects.alone_in_order():
            if self.stop.requested:
                return
            outcomes = self.backend.run(self.task, self.handed_out(iter([[item]])))
            if not self.consume(outcomes, writer, None):
                return
            writer.commit()

    def save_attempts(self, writer: RowWriter) -> None:
        """Keep the attempt counts of psets not done yet; this run ended in Python."""
        if self.log is None:
            return
        counts = self.suspects.counts
        if counts:
            # stored as failures and yet not done: a timeout counts as an attempt
            crashed = {index for index, _, _ in self.suspects.crashed} | self.timed_out
            for kind in ("results", "failures"):
                for index in np.frombuffer(writer.stored_indexes[kind], dtype=np.int64).tolist():
                    if index not in crashed:
                        counts.pop(index, None)
        for index, pset in self.inflight.items():
            self.suspects.abandoned(index, pset)
        self.log.save(counts)

    def estimated_total(self, committed: int) -> int:
        if self.length is None:
            return 0
        limit = self.settings.limit
        return min(self.length, committed + limit) if limit else self.length

    def estimated_todo(self, committed: int) -> int | None:
        if self.length is None:
            return None
        todo = max(0, self.length - committed)
        return min(todo, self.settings.limit) if self.settings.limit else todo

    def results(self, writer: RowWriter, wall: float, path: str | None) -> MapResults:
        if self.settings.keep_results:
            rows = writer.read("results", user_columns_only=True)
        else:
            rows = pd.DataFrame()
        missing = Missing(writer.read("failures"), psets=self.failed_psets)
        stats = self.perf.stats(self.backend.name, self.backend.n_workers, wall)
        return MapResults(self.name, path, rows.reset_index(drop=True), missing,
                          self.progress, stats)


def joined(lists: Iterable[list]) -> list:
    """One list of the items of ``lists``, in order."""
    return list(itertools.chain.from_iterable(lists))


def most_expensive_first(todo, cost: Callable) -> Iterator[tuple[int, dict]]:
    """The psets sorted by ``cost(pset)``, highest first (ties keep pset order).

    Longest-first dispatch leaves only short psets for the end, so no worker finishes long
    after the others. It needs every pending pset in memory once.
    """
    items = list(todo)
    costs = []
    for index, pset in items:
        try:
            value = float(cost(pset))
        except Exception as exc:
            raise PsetError(f"cost() failed for pset {index} {pset!r}: {task.describe(exc)}; "
                            f"it must return a number for every pset") from exc
        if value != value:
            raise PsetError(f"cost() returned NaN for pset {index} {pset!r}")
        costs.append(-value)
    order = sorted(range(len(items)), key=costs.__getitem__)
    return iter([items[i] for i in order])


def run_map(worker: Callable, psets: Any, settings: config.Settings, backend: Backend,
            name: str) -> MapResults:
    """Run one map to the end, or drain and exit with EXIT_INCOMPLETE on a stop signal."""
    path, worker = workflow.prepare(settings, out_path(settings.out), worker)
    with StopRequest() as stop:
        run = MapRun(worker, psets, settings, backend, name, stop)
        try:
            with Store.open(path, fsync_interval=settings.fsync_interval) as store:
                results = run.execute(store)
        except PsetTimeout as exc:
            run.reporter.abort(exc)
            exit_timed_out(run, exc, path)
        except BaseException as exc:
            run.reporter.abort(exc)  # into the run log, and the progress bar taken down
            raise
    if stop.requested:
        exit_incomplete(run, results)
    progress = results.progress
    workflow.record_in_git(settings, path, name, run.task.run_id,
                           f"{progress.finished} finished, {progress.failures} failed")
    return results


def exit_timed_out(run: MapRun, exc: PsetTimeout, path: str | None) -> NoReturn:
    """A pset ran past timeout= and the backend cannot stop it: end the run, to be rerun.

    What came back is committed and the timed-out psets are stored as ``timeout`` failures
    (run.execute did both). The backend is abandoned, so under MPI the job is aborted at
    exit with EXIT_INCOMPLETE: the worker stuck in the pset cannot be stopped otherwise.
    """
    run.backend.abandon()
    print(f"psmpi [{run.name}]: {exc}. {run.progress.finished} psets done and committed to "
          f"{path or 'memory'}; run the same command again to compute the rest (a pset "
          f"that keeps timing out is skipped after max_attempts={run.settings.max_attempts} "
          f"runs). Exit status {EXIT_INCOMPLETE}.", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_INCOMPLETE)


def exit_incomplete(run: MapRun, results: MapResults) -> NoReturn:
    """Tell the user what is done and what is left, then exit so a job can requeue."""
    where = results.path or "memory (out=None: nothing is kept)"
    lost = f"; {run.abandoned} psets in flight were abandoned" if run.abandoned else ""
    print(f"psmpi [{run.name}]: stopped by {run.stop.name} after {run.stop.elapsed():.1f} s of "
          f"draining{lost}. {results.progress.finished} psets done and committed to {where}. "
          f"Run the same command again to compute the rest. Exit status {EXIT_INCOMPLETE}.",
          file=sys.stderr, flush=True)
    raise SystemExit(EXIT_INCOMPLETE)

"""The one orchestration loop of a map: psets -> groups -> backend -> store -> MapResults.

::

    psets ─checked─▶ skip committed ─▶ hold back suspects ─▶ Grouper ─groups─▶ Backend
                        (resume)          (CrashGuard)          ▲                 │ GroupOutcomes
                                                                └─── observe ◀────┤ as they complete
                                                                                  ▼
    MapResults ◀── read committed rows ◀── Store (two-phase commit) ◀── RowWriter ◀── Recorder

Psets given as a grid (``psmpi.params.product`` of value lists) on a backend that takes
spans skip the per-pset stages: the grid travels with the task, committed psets are
skipped by hashing the grid in bulk, and the Grouper cuts index ranges (Spans) from what is
left (psmpi.worker.spans). When the backend is done, the crash guard's suspects: given up
(stored as failures), or run alone, one at a time (crashguard.py). Only the driver (rank 0
under MPI) writes the store: this module and its RowWriter (rows.py).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn

import numpy as np

from .. import config, layout, params
from ..backends import Backend
from ..errors import PsetTimeout, SetupError
from ..results import MapProgress, MapResults
from ..stopping import EXIT_INCOMPLETE, StopRequest, until_stopped
from ..store import Store, Table
from ..store.bookkeeping import RunStamp
from ..watch.perf import PerfCollector
from ..watch.progress import Reporter
from ..watch.stalls import Watch
from ..worker import task
from . import workflow
from .costmodel import LearnedOrder
from .crashguard import CrashGuard, NoCrashGuard, crash_guard
from .grouping import Grouper
from .inflight import InFlight
from .recorder import Recorder, RowWriter
from .sharding import Shard, pset_cost, select, shard_for
from .source import ResumeIndex, batches, checked_psets, grid_of


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


# Psets hashed and looked up at once when resuming: one numpy query per batch.
RESUME_BATCH = 4096
# The same for a grid's psets (hashed in bulk, spans.py), in runs of indexes to compute.
RESUME_BLOCK = 65536


def runs_of(indexes: np.ndarray) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of each run of consecutive values of the sorted ``indexes``."""
    if not len(indexes):
        return
    breaks = np.flatnonzero(np.diff(indexes) != 1) + 1
    starts = indexes[np.concatenate(([0], breaks))]
    stops = indexes[np.concatenate((breaks - 1, [len(indexes) - 1]))] + 1
    yield from zip(starts.tolist(), stops.tolist())


class MapRun:
    """The state of one map() call while it runs."""

    def __init__(self, worker: Callable, psets: Any, settings: config.Settings,
                 backend: Backend, name: str, stop: StopRequest, shard: Shard | None = None):
        self.settings = settings
        self.backend = backend
        self.name = name
        if settings.gpus_per_worker:  # too few devices: an error before any compute
            backend.check_gpus(settings.gpus_per_worker)
        self.task = task.Task(worker, name, backend.name, settings.user_kwargs,
                              calc_dir=settings.calc_dir, timeout=settings.timeout,
                              # a dry run calls no user code: no set-up either
                              setup=None if settings.simulate else settings.setup,
                              gpus_per_worker=settings.gpus_per_worker)
        self.stream, self.length = checked_psets(psets)
        # psets of a grid, when they may travel as index ranges (Spans): see uses_spans
        self.grid = grid_of(psets) if backend.takes_spans and shard is None \
            and settings.cost is None else None
        self.shard, self.study_length, self.fingerprint = shard, self.length, ""
        if shard is not None:  # only this shard's psets, under their study indexes
            self.stream, self.length, self.fingerprint = select(
                shard, self.stream, self.length, settings.cost, name)
        self.progress = MapProgress()
        self.reporter = Reporter(settings, name, backend.name, backend.n_workers)
        self.inflight = InFlight(self.grid)
        self.stop = stop
        self.abandoned = 0  # psets in flight when the drain period ran out
        self.perf = PerfCollector(backend.name)
        self.learned: LearnedOrder | None = None  # cost="auto": the order learned on the fly
        # Set up by execute once the store is open:
        self.store: Store
        self.writer: RowWriter
        self.recorder: Recorder
        self.guard: CrashGuard | NoCrashGuard
        self.watch: Watch  # stalled workers

    def execute(self, store: Store) -> MapResults:
        """Run the map into ``store``, as drawn at the top of this module."""
        started = time.monotonic()
        self.store = store
        self.writer = self.row_writer(store)
        committed_before = self.writer.tables["results"].n_rows
        resume = self.resume_index(self.writer.tables["results"])
        self.start(store, committed_before)
        if self.uses_spans():  # a grid: groups are index ranges
            self.task.grid = self.grid
            grouper = Grouper(None, self.backend.n_workers,
                              self.estimated_todo(0 if resume is None else committed_before),
                              self.settings.group_size, runs=self.todo_runs(resume))
        else:
            todo = self.ordered(self.todo(resume))  # checked, committed skipped, suspects held back
            grouper = Grouper(todo, self.backend.n_workers, self.estimated_todo(committed_before),
                              self.settings.group_size,
                              self.learned)
        try:
            self.compute(grouper)  # groups to the backend; outcomes observed and recorded
        finally:
            self.wind_down()
        self.settle_progress(committed_before)
        self.note_length_found(store)
        return self.finish(time.monotonic() - started, store.path)

    def uses_spans(self) -> bool:
        """Whether the groups can be Spans of the grid: its psets in order, no suspect of
        an earlier crash to hold back."""
        return self.grid is not None and not self.guard.holds_back()

    def todo_runs(self, resume: ResumeIndex | None) -> Iterator[tuple[int, int]]:
        """Runs ``(start, stop)`` of grid indexes still to compute: committed psets
        skipped (hashed in bulk, a block at a time), at most ``limit`` new ones."""
        left = self.settings.limit or len(self.grid)
        for start in range(0, len(self.grid), RESUME_BLOCK):
            stop = min(len(self.grid), start + RESUME_BLOCK)
            todo = np.arange(start, stop) if resume is None else self.not_committed(
                resume, start, stop)
            todo = todo[:left]
            left -= len(todo)
            yield from runs_of(todo)
            if not left:
                return

    def not_committed(self, resume: ResumeIndex, start: int, stop: int) -> np.ndarray:
        """The indexes of ``[start, stop)`` with no committed row; those with one noted."""
        rows = resume.take(self.grid.hashes(start, stop))
        done = rows >= 0
        n_done = int(done.sum())
        if n_done:
            self.writer.note_resumed_many(np.flatnonzero(done) + start, rows[done])
            self.progress.resumed += n_done
            self.progress.finished += n_done
        return np.flatnonzero(~done) + start

    def row_writer(self, store: Store) -> RowWriter:
        results, failures = store.table(self.name, "results"), store.table(self.name, "failures")
        return RowWriter(results, failures, self.settings, self.stamp(results, failures))

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

    def resume_index(self, results: Table) -> ResumeIndex | None:
        """The hashes of the psets committed before, to skip them; None if none are skipped."""
        # repeat=True: every pset is computed again, as a new row with new ids.
        if not results.n_rows or self.settings.repeat:
            return None
        return ResumeIndex(results.read_column(layout.PSET_HASH, decode=False))

    def start(self, store: Store, committed_before: int) -> None:
        """Say the map starts; set up what records it, guards it and watches its workers."""
        self.progress.total = self.estimated_total(committed_before)
        self.reporter.start(self.progress, store.path)
        if self.length is not None and store.path is not None:
            store.note_planned(self.name, self.length)
        if self.shard is not None and store.path is not None:
            store.note_map_attrs(self.name, self.shard_attrs())
        self.recorder = Recorder(self.writer, self.inflight, self.progress, self.reporter,
                                 self.name)
        self.guard = crash_guard(store.path, self.name, self.backend.survives_crashes,
                                 self.settings.max_attempts, self.task.timeout)
        self.watch = Watch(self.backend, self.reporter, self.perf.runtimes, self.inflight,
                           self.task.timeout, store.path, self.name)

    def note_length_found(self, store: Store) -> None:
        """A shard of psets from a generator: once every pset was read, how many there are
        (of the shard and of the study), so that ``psmpi status`` can call it complete."""
        stream = self.stream
        if self.length is not None or store.path is None or self.shard is None \
                or not getattr(stream, "exhausted", False) or self.stop.requested \
                or self.settings.limit:
            return
        store.note_planned(self.name, self.progress.total)
        store.note_map_attrs(self.name, {layout.STUDY_N_PSETS_ATTR: np.int64(stream.seen)})

    def shard_attrs(self) -> dict:
        """What ``psmpi merge`` and ``psmpi status`` need to know of this shard."""
        shard = self.shard
        return {layout.SHARD_ATTR: np.array([shard.k, shard.n], dtype=np.int64),
                layout.STUDY_FINGERPRINT_ATTR: self.fingerprint,
                layout.STUDY_N_PSETS_ATTR: np.int64(-1 if self.study_length is None
                                                    else self.study_length),
                layout.SHARD_RESUBMIT_ATTR: json.dumps(shard.resubmit_info())}

    def todo(self, resume: ResumeIndex | None) -> Iterator[tuple[int, dict]]:
        """Psets still to compute: committed ones skipped, at most ``limit`` new ones."""
        stream = self.stream if resume is None else self.skip_committed(resume)
        return itertools.islice(stream, self.settings.limit or None)

    def skip_committed(self, resume: ResumeIndex):
        for batch in batches(self.stream, RESUME_BATCH):
            rows = resume.take([params.pset_hash(pset) for _, pset in batch])
            for (index, pset), row in zip(batch, rows.tolist()):
                if row < 0:
                    yield index, pset
                else:
                    self.writer.note_resumed(index, row)
                    self.guard.committed(index)
                    self.progress.resumed += 1
                    self.progress.finished += 1

    def ordered(self, todo: Iterable[tuple[int, dict]]) -> Iterable[tuple[int, dict]]:
        """``todo`` without the psets the crash guard holds back; with cost=, dearest first
        (cost="auto": longest predicted first, by a model learned from the runtimes)."""
        todo = self.guard.hold_back(todo)
        if self.settings.cost == "auto":
            self.learned = LearnedOrder(todo, self.backend.n_workers)
            return self.learned
        if self.settings.cost is not None:
            todo = most_expensive_first(todo, self.settings.cost)
        return todo

    def compute(self, grouper: Grouper) -> None:
        """Hand the groups to the backend and record what comes back; then the suspects."""
        groups = self.handed_out(until_stopped(grouper, self.stop))
        # Workers that free up during a long commit get their next group at once.
        with self.store.serving_between_columns(self.backend.tend):
            try:
                if self.consume(self.backend.run(self.task, groups), grouper):
                    self.recorder.store_given_up(
                        self.guard.given_up(self.writer.tables["failures"]))
                    self.run_alone()
            except PsetTimeout as exc:
                self.recorder.store_timeouts(exc, self.task.timeout)
                raise

    def handed_out(self, groups: Iterable[list]) -> Iterator[list]:
        """Remember what each group holds until its outcome comes back."""
        for group in groups:
            self.guard.sent(group)
            self.inflight.add(group)
            yield group

    def consume(self, outcomes: Iterator[task.GroupOutcome | None], grouper: Grouper | None
                ) -> bool:
        """Record outcomes as they come; False if the drain period ran out first."""
        try:
            for outcome in outcomes:
                if outcome is not None and outcome.setup_error is not None:
                    self.setup_failed(outcome)
                if outcome is not None:  # None: a heartbeat while workers compute
                    self.observe(outcome, grouper)
                    self.recorder.record(outcome)
                if self.writer.due():
                    self.writer.commit()
                self.count_active()
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

    def setup_failed(self, outcome: task.GroupOutcome) -> NoReturn:
        """A worker's set-up raised: stop the map. Its psets never ran, so they count as
        no attempt; what came back before is committed as the map winds down."""
        for index in outcome.indexes:
            self.inflight.pop(index, None)
        self.guard.returned(outcome.indexes)
        message, remote = outcome.setup_error
        where = {"mpi": f"rank {outcome.rank}", "serial": "this process (serial backend)"
                 }.get(self.backend.name, "worker process")
        raise SetupError(
            f"the set-up function {self.task.setup_name}() raised {message} on {where} "
            f"(host {outcome.host}, pid {outcome.pid}), so the map {self.name!r} stopped "
            f"before that worker ran any pset; results committed so far are kept. Fix the "
            f"set-up and run again. Its traceback on the worker:\n{remote}",
            outcome.rank, outcome.host, outcome.pid, remote)

    def observe(self, outcome: task.GroupOutcome, grouper: Grouper | None) -> None:
        """Learn from a group that came back: runtimes for grouping, and it is safe now."""
        if grouper is not None:
            grouper.observe(outcome)
        if self.learned is not None:
            self.learned.observe(outcome)
        self.guard.returned(outcome.indexes)
        self.perf.add(outcome)

    def run_alone(self) -> None:
        """Run the psets the crash guard held back one at a time, each committed."""
        for item in self.guard.alone():
            if self.stop.requested:
                return
            outcomes = self.backend.run(self.task, self.handed_out(iter([[item]])))
            if not self.consume(outcomes, None):
                return
            self.writer.commit()

    def wind_down(self) -> None:
        """Whatever came back is kept, even when interrupted; then the crash guard's record."""
        self.watch.close()
        try:
            self.writer.commit()
        finally:
            self.guard.save(self.writer.stored_pset_indexes(), self.recorder.timed_out,
                            self.inflight)

    def count_active(self) -> None:
        """Psets in flight: those running (active) and those the backend holds back
        until their resources are free (queued)."""
        queued = min(self.backend.queued(), len(self.inflight))
        self.progress.queued = queued
        self.progress.active = len(self.inflight) - queued

    def settle_progress(self, committed_before: int) -> None:
        self.progress.queued = 0
        self.progress.active = len(self.inflight)
        if not self.stop.requested:
            self.progress.total = self.progress.finished + self.progress.failures
            if not self.settings.limit:
                self.progress.stale = committed_before - self.progress.resumed

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

    def finish(self, wall: float, path: str | None) -> MapResults:
        """This map's rows read back, and the closing report."""
        import pandas as pd

        from ..missing import Missing

        if self.settings.keep_results:
            rows = self.writer.read("results", user_columns_only=True)
        else:
            rows = pd.DataFrame()
        missing = Missing(self.writer.read("failures"), psets=self.recorder.failed_psets)
        stats = self.perf.stats(self.backend.name, self.backend.n_workers, wall)
        results = MapResults(self.name, path, rows.reset_index(drop=True), missing,
                             self.progress, stats)
        self.reporter.finish(self.progress, path or "memory", stats,
                             self.stop.name if self.stop.requested else "")
        return results


def most_expensive_first(todo, cost: Callable) -> Iterator[tuple[int, dict]]:
    """The psets sorted by ``cost(pset)``, highest first (ties keep pset order).

    Longest-first dispatch leaves only short psets for the end, so no worker finishes long
    after the others. It needs every pending pset in memory once.
    """
    items = list(todo)
    costs = [-pset_cost(cost, index, pset) for index, pset in items]
    order = sorted(range(len(items)), key=costs.__getitem__)
    return iter([items[i] for i in order])


def run_map(worker: Callable, psets: Any, settings: config.Settings, backend: Backend,
            name: str) -> MapResults:
    """Run one map to the end, or drain and exit with EXIT_INCOMPLETE on a stop signal."""
    shard = shard_for(settings.shard, os.environ, settings.job_script)
    path = out_path(settings.out)
    if shard is not None and path is not None:  # every shard its own file, beside the study's
        path = layout.shard_path(path, shard.k, shard.n)
    path, worker = workflow.prepare(settings, path, worker)
    with StopRequest() as stop:
        run = MapRun(worker, psets, settings, backend, name, stop, shard)
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

"""psmpi.Executor: a ``concurrent.futures.Executor`` for adaptive surveys, durable and resumable.

::

    user thread                         driver thread (the only one that runs the backend)
    ───────────                         ──────────────────────────────────────────────────
    submit(worker, pset) ─▶ in the file?  ── yes: a done future, read from the file
                              │ no
                              ▼
                         Submissions queue ─groups─▶ Backend ─outcomes─▶ Recorder/RowWriter
                         (empty group: nothing        (keeps collecting,        │ commit what
                          now, ask again soon)         waits on the queue)      ▼ arrived
    future.result() ◀──────────────────────────────── resolve the committed rows' futures

A future resolves only after its row is committed, so no decision is ever taken on a result
that a crash could still lose. Running the same script again replays what is in the file:
the k-th submission of identical psets gets the k-th stored row, at once, without compute.

The driver thread is the only one that calls the backend (and so MPI); the file is read by
the user thread only before that thread starts (the rows to resume from). Under mpiexec the
worker ranks serve from the constructor on, as for ``map()``, and never return.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import contextlib
import math
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from . import api, config, layout, params
from .driver import workflow
from .driver.crashguard import CrashGuard, NoCrashGuard
from .driver.grouping import Grouper
from .driver.run import MapRun, out_path
from .driver.source import PsetChecker, ResumeIndex
from .errors import ConfigError, PsetFailed, SetupError
from .stopping import EXIT_INCOMPLETE, StopRequest
from .store import Store

__all__ = ["Executor", "ExecutorStopped"]


class ExecutorStopped(SystemExit):
    """A stop signal drained the Executor: futures not committed raise this.

    It is a SystemExit with status 75 (EXIT_INCOMPLETE): a script waiting on a future exits
    as ``map()`` does on a signal, and running it again resumes.
    """

    def __init__(self, message: str):
        super().__init__(EXIT_INCOMPLETE)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Submissions:
    """The queue of submitted psets, cut into groups as the backend asks for them.

    Iterating never blocks: with nothing queued it yields an empty group (the backend asks
    again soon, and may wait with :meth:`wait_for_work`). It ends once the Executor is shut
    down and the queue is empty, or at once on a stop signal.
    """

    def __init__(self, n_workers: int, group_size: int | None, stop: StopRequest,
                 futures: dict[int, tuple[concurrent.futures.Future, dict]],
                 inflight: dict[int, dict], guard: CrashGuard | NoCrashGuard | None = None):
        self.queue: collections.deque[tuple[int, dict]] = collections.deque()
        self.ready = threading.Condition()
        self.closed = False
        self.stop = stop
        self.futures = futures
        self.inflight = inflight
        self.guard = guard or NoCrashGuard()
        self.n_workers = max(1, n_workers)
        # Sizes groups from the runtimes measured so far (fed by MapRun.observe).
        self.sizer = Grouper(iter(()), n_workers, None, group_size)
        # The crash guard's suspects: each runs alone, nothing beside it, so that a death
        # is blamed on it only; and the psets given up on, to be stored as failures.
        self.alone: set[int] = set()
        self.running_alone: int | None = None
        self.given_up: list[tuple[int, dict, int]] = []  # (index, pset, attempts)

    def put(self, index: int, pset: dict, alone: bool = False) -> None:
        with self.ready:
            self.queue.append((index, pset))
            if alone:
                self.alone.add(index)
            self.ready.notify_all()

    def give_up(self, index: int, pset: dict, attempts: int) -> None:
        with self.ready:
            self.given_up.append((index, pset, attempts))
            self.ready.notify_all()

    def take_given_up(self) -> list[tuple[int, dict, int]]:
        with self.ready:
            taken, self.given_up = self.given_up, []
            return taken

    def close(self) -> None:
        with self.ready:
            self.closed = True
            self.ready.notify_all()

    def __iter__(self) -> Submissions:
        return self

    def __next__(self) -> list[tuple[int, dict]]:
        with self.ready:
            if self.stop.requested or (self.closed and not self.queue and not self.given_up):
                raise StopIteration
            taken = self.take()
        group = [(index, pset) for index, pset in taken
                 if self.futures[index][0].set_running_or_notify_cancel()]
        for index, _ in taken:
            if self.futures[index][0].cancelled():
                del self.futures[index]
        if group:
            self.guard.sent(group)  # in the attempt log before a worker gets it
        self.inflight.update(group)
        return group

    def take(self) -> list[tuple[int, dict]]:
        """The next group from the queue (with ``ready`` held); empty if nothing may go now."""
        if self.running_alone is not None:
            if self.running_alone in self.inflight:
                return []  # a suspect runs: nothing beside it
            self.running_alone = None
        if self.queue and self.queue[0][0] in self.alone:
            if self.inflight:
                return []  # a suspect is next: wait for the workers to empty
            index, pset = self.queue.popleft()
            self.alone.discard(index)
            self.running_alone = index
            return [(index, pset)]
        # Split what is queued evenly over the workers, in groups of a measured size,
        # up to the next suspect.
        size = min(self.sizer.next_size(), math.ceil(len(self.queue) / self.n_workers))
        taken = []
        while self.queue and len(taken) < size and self.queue[0][0] not in self.alone:
            taken.append(self.queue.popleft())
        return taken

    def wait_for_work(self, seconds: float) -> None:
        """Wait up to ``seconds`` until something is submitted, or the end."""
        with self.ready:
            if (not self.queue and not self.given_up and not self.closed
                    and not self.stop.requested):
                self.ready.wait(seconds)


class Executor(concurrent.futures.Executor):
    """Run psets as they are submitted, on any backend, each result committed to HDF5.

    Parameters
    ----------
    **kwargs
        Any setting of ``map()``: ``out``, ``name`` (the group in the file; default
        ``"executor"``), ``backend``, ``ncores``, ``verbose``, ``user_kwargs``, ...
        resolved as for ``map()`` (environment > these > ``init()`` > defaults).

    Notes
    -----
    ``submit(worker, pset)`` returns a Future whose ``result()`` is the pset's row (the pset
    and what the worker returned) once it is committed; a failed pset raises
    :class:`psmpi.PsetFailed`. A pset already in the file (resume) gives a done future at
    once. One Executor runs one worker. A stop signal (SIGTERM, SIGUSR1, SIGINT) drains the
    psets in flight, commits them, and every other future raises :class:`ExecutorStopped`
    (``SystemExit(75)``): run the script again to go on.

    Examples
    --------
    >>> import psmpi
    >>> def square(pset):
    ...     return {"y": pset["x"] ** 2}
    >>> with psmpi.Executor(backend="serial", out=None, verbose=0) as ex:
    ...     ex.submit(square, {"x": 3}).result()["y"]
    9
    """

    def __init__(self, **kwargs: Any):
        config.check_kwargs(kwargs, "Executor()")
        api.refuse_if_executor_running("another Executor was made")
        if not api._session.initialised:
            api.init()
        self.settings = config.resolve(kwargs, api._session.init_kwargs)
        if self.settings.simulate:
            raise ConfigError("Executor() cannot simulate: simulate= needs the psets up front; "
                              "use map()")
        self.backend = api.backend_for(self.settings)  # under mpiexec, ranks > 0 serve here
        self.name = self.settings.name or api.default_name(_named("executor"))
        self.path, _ = workflow.prepare(self.settings, out_path(self.settings.out), _named(""))
        self.lock = threading.Lock()  # submissions: indexes, the resume index, the queue
        self.exits = contextlib.ExitStack()
        self.stop = self.exits.enter_context(StopRequest())
        try:
            self.store = self.exits.enter_context(
                Store.open(self.path, fsync_interval=self.settings.fsync_interval))
        except BaseException:
            self.exits.close()
            raise
        # The backend is this Executor's until close(): no map() or other Executor meanwhile.
        api._session.executor = self.name
        self.exits.callback(setattr, api._session, "executor", None)
        self.futures: dict[int, tuple[concurrent.futures.Future, dict]] = {}
        self.run: MapRun | None = None
        self.source: Submissions | None = None
        self.thread: threading.Thread | None = None
        self.worker: Callable | None = None
        self.next_index = 0
        self.resume: ResumeIndex | None = None
        self.stored: list[dict] = []  # the rows committed before, to resume from
        self.error: BaseException | None = None  # what ended the driver thread
        self.shut = False
        self.started = time.monotonic()
        try:
            self.read_committed()
        except BaseException:
            self.exits.close()
            raise
        atexit.register(self.shutdown_at_exit)

    # -- the user thread

    def read_committed(self) -> None:
        """The rows committed before, and the index that matches submissions to them."""
        results = self.store.table(self.name, "results")
        if not results.n_rows or self.settings.repeat:
            return
        self.resume = ResumeIndex(results.read_column(layout.PSET_HASH, decode=False))
        self.stored = records(results.read(columns=[c for c in results.columns
                                                    if not c.startswith("_")]))

    def submit(self, worker: Callable, pset: dict, /, *args: Any, **kwargs: Any
               ) -> concurrent.futures.Future:
        """Run ``worker(pset)``; a Future of the pset's row, done once it is committed."""
        if args or kwargs:
            raise TypeError("Executor.submit(worker, pset) takes one pset (a dict) and no "
                            "other arguments; pass constants with user_kwargs=")
        checker = PsetChecker()
        if not checker.check(0, pset):
            checker.raise_if_any(None)
        with self.lock:
            self.refuse_if_done()
            self.start(worker)
            future: concurrent.futures.Future = concurrent.futures.Future()
            index = self.next_index
            self.next_index += 1
            row = -1 if self.resume is None else int(self.resume.take([params.pset_hash(pset)])[0])
            if row >= 0:  # committed by an earlier run: the same answer, no compute
                self.run.guard.committed(index)
                future.set_running_or_notify_cancel()
                future.set_result(dict(self.stored[row]))
                self.run.progress.resumed += 1
                self.run.progress.finished += 1
            else:
                self.futures[index] = (future, pset)
                self.hand_over(index, pset)
            self.run.progress.total = self.next_index
            return future

    def hand_over(self, index: int, pset: dict) -> None:
        """Queue the pset; a suspect of the crash guard runs alone, or is given up on."""
        suspects = getattr(self.run.guard, "suspects", None)
        if suspects is None or index not in suspects.counts:
            self.source.put(index, pset)
            return
        alone, crashed = len(suspects.alone), len(suspects.crashed)
        if list(suspects.hold_back([(index, pset)])):
            self.source.put(index, pset)  # a first-time suspect, or another pset than before
        elif len(suspects.crashed) > crashed:
            self.source.give_up(*suspects.crashed[-1])
        else:  # held back to run alone
            assert len(suspects.alone) > alone
            self.source.put(index, pset, alone=True)

    def refuse_if_done(self) -> None:
        if self.shut:
            raise RuntimeError("cannot submit to an Executor after shutdown()")
        if self.stop.requested:
            raise ExecutorStopped(self.stopped_message())
        if self.error is not None:
            raise RuntimeError("the Executor's driver failed; see the error above") from self.error

    def start(self, worker: Callable) -> None:
        """On the first submission: set up the run of ``worker`` and start the driver."""
        if self.worker is not None:
            if worker is not self.worker:
                raise ConfigError(f"Executor {self.name!r} runs {self.worker!r}; got "
                                  f"{worker!r}. One Executor runs one worker (its rows form one "
                                  f"map in the file): use another Executor with its own name=")
            return
        self.worker = worker
        run = MapRun(worker, [], self.settings, self.backend, self.name, self.stop)
        run.length = None  # unknown: psets arrive as they are submitted
        run.writer = run.row_writer(self.store)
        run.start(self.store, run.writer.tables["results"].n_rows)
        self.run = run
        self.source = Submissions(self.backend.n_workers, self.settings.group_size, self.stop,
                                  self.futures, run.inflight, run.guard)
        self.seen = {"results": 0, "failures": 0}  # rows of the writer resolved so far
        self.thread = threading.Thread(target=self.drive, name=f"psmpi-executor-{self.name}",
                                       daemon=True)
        self.thread.start()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submissions; with ``wait``, return once every pset is committed.

        Raises :class:`ExecutorStopped` if a stop signal drained the run, and what ended the
        driver thread if it failed.
        """
        with self.lock:
            if self.shut:
                return
            self.shut = True
            if cancel_futures and self.source is not None:
                with self.source.ready:
                    for index, _ in self.source.queue:
                        self.futures.pop(index)[0].cancel()
                    self.source.queue.clear()
        if self.source is not None:
            self.source.close()
        if not wait:
            return  # the driver thread ends by itself; atexit closes the file
        self.close()
        if self.error is not None:
            raise self.error
        if self.stop.requested:
            raise ExecutorStopped(self.stopped_message())

    def close(self) -> None:
        """Wait for the driver thread, then close the file and say how it went."""
        if self.thread is not None:
            self.thread.join()
        if self.exits is None:
            return
        exits, self.exits = self.exits, None
        try:
            if self.run is not None:
                run = self.run
                run.progress.active = len(run.inflight)
                stats = run.perf.stats(self.backend.name, self.backend.n_workers,
                                       time.monotonic() - self.started)
                run.reporter.finish(run.progress, self.path or "memory", stats,
                                    self.stop.name if self.stop.requested else "")
        finally:
            exits.close()
        if self.stop.requested:
            print(self.stopped_message(), file=sys.stderr, flush=True)

    def shutdown_at_exit(self) -> None:
        """At exit: what was submitted is finished and committed (or drained on a signal)."""
        try:
            self.shutdown(wait=True)
        except (Exception, SystemExit):
            pass  # already raised to the user, or the exit status is being decided

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self.shutdown(wait=True)
        except ExecutorStopped:
            if exc is None:
                raise
        return False

    def stopped_message(self) -> str:
        done = self.run.progress.finished if self.run is not None else 0
        return (f"psmpi [{self.name}]: stopped by {self.stop.name}; {done} psets done and "
                f"committed to {self.path or 'memory'}. Run the same script again to go on "
                f"(what is committed is replayed from the file). Exit status {EXIT_INCOMPLETE}.")

    # -- the driver thread

    def drive(self) -> None:
        """Run the backend on the submissions; commit what arrives, then resolve it."""
        run = self.run
        try:
            outcomes = self.backend.run(run.task, self.source)
            try:
                for outcome in outcomes:
                    if outcome is not None and outcome.setup_error is not None:
                        run.setup_failed(outcome)  # raises SetupError: every future gets it
                    if outcome is not None:
                        run.observe(outcome, self.source.sizer)
                        run.recorder.record(outcome)
                    given_up = self.source.take_given_up()
                    if given_up:  # died with their process max_attempts times: failures
                        run.recorder.store_given_up(
                            [run.guard.giving_up(index, pset, count, {})
                             for index, pset, count in given_up])
                        self.commit()
                    # Whatever arrived is committed together, once the backend has handed
                    # over all that arrived (None: every backend yields it after a burst, and
                    # before it waits for submissions), or when a batch is due. Not after each
                    # outcome: at the end of a study that committed the last results one by
                    # one, at 10-40 ms each on a loaded machine.
                    if run.writer.n_buffered and (outcome is None or run.writer.due()):
                        self.commit()
                    run.count_active()
                    run.watch.poll(time.monotonic())
                    run.reporter.update(run.progress)
                    if self.stop.requested and self.stop.elapsed() > self.settings.drain_seconds:
                        self.backend.abandon()
                        break
            finally:
                outcomes.close()
        except BaseException as exc:  # noqa: BLE001 - handed to the user thread, raised there
            self.error = exc
        finally:
            self.wind_down()

    def commit(self) -> None:
        self.run.writer.commit()
        self.resolve_committed()

    def resolve_committed(self) -> None:
        """Resolve the futures of the rows the last commit stored, reading them back."""
        writer = self.run.writer
        for kind in ("results", "failures"):
            rows = np.frombuffer(writer.stored_rows[kind], dtype=np.int64)[self.seen[kind]:]
            indexes = np.frombuffer(writer.stored_indexes[kind], dtype=np.int64)[self.seen[kind]:]
            self.seen[kind] += len(rows)
            if not len(rows):
                continue
            table = writer.tables[kind]
            columns = [c for c in table.columns if not c.startswith("_")]
            if kind == "failures":
                columns += [layout.KIND, layout.EXCEPTION, layout.TRACEBACK]
            for index, row in zip(indexes.tolist(), records(table.read(rows, columns))):
                future, pset = self.futures.pop(index)
                if kind == "results":
                    future.set_result(row)
                else:
                    future.set_exception(PsetFailed(pset, row[layout.KIND], row[layout.EXCEPTION],
                                                    row[layout.TRACEBACK]))

    def wind_down(self) -> None:
        """Commit what came back, save the crash guard's counts; futures left without a row
        get the reason."""
        run = self.run
        try:
            try:
                if self.error is None or run.writer.n_buffered:
                    self.commit()
            finally:
                with self.lock:
                    run.guard.save(run.writer.stored_pset_indexes(), run.recorder.timed_out,
                                   run.inflight)
        except BaseException as exc:  # noqa: BLE001
            self.error = self.error or exc
        if isinstance(self.error, SetupError):  # the user's own error: as it is
            reason: BaseException = self.error
        elif self.error is not None:
            reason = RuntimeError(f"psmpi Executor {self.name!r} failed: {self.error!r}")
            reason.__cause__ = self.error
        else:
            reason = ExecutorStopped(self.stopped_message())
        with self.lock:
            for future, _ in list(self.futures.values()):
                if not future.done():
                    if future.running() or future.set_running_or_notify_cancel():
                        future.set_exception(reason)
            self.futures.clear()


def _named(name: str) -> Callable:
    """A stand-in function called ``name``, for helpers that name things after a worker."""
    def stand_in(pset):
        return pset
    stand_in.__name__ = name
    return stand_in


def records(frame) -> list[dict]:
    """The rows of ``frame`` as dicts of Python values (what ``to_dict("records")`` gives,
    at a fraction of its cost for the few rows of one commit)."""
    columns = list(frame.columns)
    values = [frame[column].tolist() for column in columns]
    return [dict(zip(columns, row)) for row in zip(*values)]

"""The multiprocessing backend: a pool of local worker processes.

Built on ``concurrent.futures.ProcessPoolExecutor`` because it reports a dead worker
(``BrokenProcessPool``) where ``multiprocessing.Pool`` hangs forever. When a worker process
dies, the groups that were in flight are re-run one at a time in a fresh pool; a group that
kills its worker while alone is split into single psets, and a pset that still kills its
worker alone is recorded as crashed. The survey goes on.

A worker function that calls ``sys.exit()`` is treated like one that kills its process, but
it is told apart: the pool reports it, so its group is split at once (the pool stays
healthy) and the pset that calls it alone is recorded as crashed, naming the exit code.

A pool is never left to join workers that will not stop. Workers ignore SIGTERM and SIGINT
(a Ctrl-C in the terminal, or Slurm's SIGTERM to every process of the job, must let the
driver drain them), so a pool whose results nobody will read (it broke, the drain ran out,
the run was left by a second signal or an error) has its processes SIGKILLed before it is
shut down. Python >= 3.12 otherwise terminates and joins them forever when a worker dies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from typing import NamedTuple

import numpy as np

from ..errors import ConfigError
from ..stopping import ignore_stop_signals
from ..store.lock import pid_alive
from ..worker import setup as worker_setup
from ..worker import task as task_module
from ..worker.task import CRASHED, EXCEPTION, GroupOutcome, Task, describe, failed_outcome
from .base import Group, Held, Options, crashed, option, resolve_ncores
from .pool import HEARTBEAT_SECONDS, PoolBackend

# How often psets are checked against their timeout.
POLL_SECONDS = HEARTBEAT_SECONDS
START_METHODS = tuple(multiprocessing.get_all_start_methods())
# How long a new worker process waits for a slot below the number of workers (its
# predecessor is still exiting) before it takes a higher one.
SLOT_WAIT_SECONDS = 5.0
# How long a discarded pool's manager thread may take to finish once its workers are dead.
JOIN_SECONDS = 10.0
# How often a worker process looks whether the process that started it is still there.
PARENT_CHECK_SECONDS = 1.0


class WorkerExit(NamedTuple):
    """A pool process's answer when the worker function called ``sys.exit(code)``."""

    code: object


def run_group(task: Task, group: Group) -> GroupOutcome | WorkerExit:
    """What a pool process runs: one group through the worker function.

    Task makes every Exception data; what gets past it would otherwise be raised again on
    the driver and end the survey (SystemExit with the worker's exit code).
    """
    try:
        return task(group, rank=worker_number())
    except SystemExit as exc:
        return WorkerExit(exc.code)
    except BaseException as exc:  # as on ray: the group fails, nothing is retried
        return failed_outcome(group, EXCEPTION, f"on the worker process: {describe(exc)}",
                              traceback.format_exc())


def worker_number() -> int:
    """This pool process's number, 1..ncores, as its rows' ``_rank``: its worker slot plus
    one, as worker ranks under MPI count from 1 (a process that replaces one takes over its
    number); 0 in a process without a slot."""
    return worker_setup.SLOT + 1 if worker_setup.SLOT is not None else 0


class Beacons:
    """Shared memory where each worker process says which pset it runs and since when.

    One row per worker process, ``[pid, pset index, start]`` (start 0 while idle): the worker writes its row
    before each pset (``task.BEACON``, two stores, no lock, no message), the driver reads all
    rows about five times a second. That is how the driver knows who holds which pset for
    how long (a ProcessPoolExecutor does not say), even for a stopped or hung worker.
    """

    def __init__(self, context, n_slots: int):
        self.raw = context.RawArray("d", 3 * n_slots)
        self.lock = context.Lock()
        self.rows = np.frombuffer(self.raw, dtype=np.float64).reshape(n_slots, 3)

    def running(self) -> list[tuple[int, int, float]]:
        """``(pid, pset index, start)`` of every live worker process that runs a pset now."""
        first, second = self.rows.tolist(), self.rows.tolist()
        # A row that changed between the two copies was being written: it is skipped until
        # the next read, never read torn.
        return [(int(pid), int(index), start) for (pid, index, start), again in zip(first, second)
                if start > 0 and again[2] == start and pid_alive(int(pid))]


def watch_driver(driver: int) -> None:
    """End this worker process once the driver (process ``driver``) is gone.

    A driver killed outright (SIGKILL, the out-of-memory killer) cannot stop its pool, and
    its workers ignore SIGTERM and SIGINT. Waiting for their next group does not notice
    either: every forked worker holds the write end of the pool's queue too, so the read
    never ends. Under forkserver the parent is the fork server, which in turn lives as long
    as any worker does: so the driver is watched by its pid, and the parent as well (a
    changed parent pid cannot be a reused one).
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent and (parent == driver or pid_alive(driver)):
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="psmpi-driver-watch", daemon=True).start()


def start_worker(raw, lock, workers: int | None = None, driver: int | None = None) -> None:
    """Initializer of each worker process: claim a beacon row, then ignore stop signals.

    The lowest free row: its number is the process's worker slot (its GPUs, see
    psmpi.worker.setup), so a process that replaces one that ended takes over its slot. A
    pool never has more live processes than ``workers``, and the rows of a discarded pool
    are cleared (:meth:`MultiprocessingBackend.discard_pool`); but a replacement may start
    while the process it replaces is still exiting, so it waits a moment for a slot below
    ``workers`` to free up rather than take one beyond them.
    """
    ignore_stop_signals()
    if driver is not None:
        watch_driver(driver)
    rows = np.frombuffer(raw, dtype=np.float64).reshape(-1, 3)
    deadline = time.monotonic() + SLOT_WAIT_SECONDS
    while True:
        with lock:
            free = [slot for slot, row in enumerate(rows)
                    if int(row[0]) == 0 or not pid_alive(int(row[0]))]  # free, or its process ended
            late = time.monotonic() > deadline
            if free and (workers is None or free[0] < workers or late):
                rows[free[0]] = (os.getpid(), -1, 0.0)
                task_module.BEACON = rows[free[0]]
                worker_setup.SLOT = free[0]
                return
            if late:  # no row at all: unwatched, and in no slot (GPUs would fail loudly)
                worker_setup.SLOT = len(rows)
                return
        time.sleep(0.01)


@dataclasses.dataclass(frozen=True)
class MultiprocessingOptions(Options):
    """``multiprocessing={...}``."""

    start_method: str | None = option(
        None, f"be one of {', '.join(START_METHODS)} or None (fork on Linux, else forkserver "
              f"or spawn)", lambda value: value is None or value in START_METHODS)


class MultiprocessingBackend(PoolBackend):
    name = "multiprocessing"
    options_class = MultiprocessingOptions
    survives_crashes = True  # a dead worker process fails its psets; the pool goes on

    def __init__(self, options, ncores=None, max_tasks_per_child=None):
        super().__init__(options, ncores, max_tasks_per_child)
        if max_tasks_per_child and sys.version_info < (3, 11):
            raise ConfigError(f"max_tasks_per_child={max_tasks_per_child} needs Python >= 3.11 "
                              f"on the multiprocessing backend (ProcessPoolExecutor has it "
                              f"since 3.11); this is Python {sys.version.split()[0]}. Use a "
                              f"newer Python, backend='ray', or leave max_tasks_per_child unset")
        self.workers = resolve_ncores(ncores)
        self.context = multiprocessing.get_context(self.start_method())
        self.executor: ProcessPoolExecutor | None = None
        # Rows for more processes than run at once: replaced and recycled workers take the
        # rows of ended ones.
        self.beacons = Beacons(self.context, 2 * self.workers + 4)
        self.timed_out: dict[int, float] = {}  # pset index -> seconds it ran when killed
        self.next_check = 0.0
        self.timeout: float | None = None  # of the map running

    def start_method(self) -> str:
        method = self.options.start_method
        if method:
            return method
        # fork needs no `if __name__ == "__main__"` guard in the user's script, but Python
        # refuses it with max_tasks_per_child, and it is unsafe on macOS.
        if sys.platform == "linux" and not self.max_tasks_per_child:
            return "fork"
        return "forkserver" if sys.platform != "win32" else "spawn"

    @property
    def n_workers(self) -> int:
        return self.workers

    def pool(self) -> ProcessPoolExecutor:
        if self.executor is None:
            kwargs = {}
            if self.max_tasks_per_child:
                kwargs["max_tasks_per_child"] = self.max_tasks_per_child
            self.executor = ProcessPoolExecutor(
                self.workers, mp_context=self.context, initializer=start_worker,
                initargs=(self.beacons.raw, self.beacons.lock, self.workers, os.getpid()),
                **kwargs)
        return self.executor

    def discard_pool(self, kill: bool = False) -> None:
        """Shut the pool down; ``kill``: its workers' results are not wanted, SIGKILL them.

        A broken pool is always killed: since Python 3.12 it terminates (SIGTERM, which our
        workers ignore) and joins its remaining workers while holding the lock shutdown()
        needs, and before, it waited for their groups, which are re-run anyway.
        """
        executor, self.executor = self.executor, None
        if executor is None:
            return
        if kill or executor._broken:
            kill_workers(executor)
            manager = executor._executor_manager_thread
            executor.shutdown(wait=False, cancel_futures=True)
            if manager is not None:
                manager.join(JOIN_SECONDS)  # dead workers: it ends at once; never wait forever
        else:
            executor.shutdown(wait=True, cancel_futures=True)  # idle workers exit on their own
        # Its processes are gone (a killed one may linger a moment as a zombie): the next
        # pool's workers take the slots from 0 again, and with them the same GPUs. A worker
        # SIGKILLed inside start_worker died holding the lock, which then stays taken
        # forever; no process of the old pool is left to use it, so the next pool gets a
        # new one.
        self.beacons.lock = self.context.Lock()
        self.beacons.rows[:] = 0.0

    def start(self, task: Task) -> Task:
        self.timeout = task.timeout
        return task

    def submit(self, task: Task, group: Group, again: bool) -> bool:
        try:
            self.pending[self.pool().submit(run_group, task, group)] = group
        except BrokenProcessPool:
            # A worker died and the pool knows before our futures say so. This group never
            # ran: the skeleton keeps it for later; the futures in flight report the crash.
            if not self.pending:
                self.discard_pool()
            return False
        return True

    def wait(self, seconds: float) -> list[Future]:
        done, _ = wait_futures(self.pending, timeout=seconds, return_when=FIRST_COMPLETED)
        return list(done)

    def watch(self) -> None:
        self.enforce_timeout()

    def collect(self, future: Future, group: Group) -> list[GroupOutcome]:
        try:
            outcome = future.result()
        except BrokenProcessPool:
            if self.timed_out:
                return self.after_timeout(group)
            outcomes = self.lost_with_pool(group, crashed)
            self.discard_pool()
            return outcomes
        if isinstance(outcome, WorkerExit):
            # The pool is fine (the process reported it), so the psets of a larger group
            # are simply run again one by one, ahead of new groups.
            return self.split(group, lambda alone: failed_outcome(alone, CRASHED,
                                                                  exit_message(outcome.code)))
        return [outcome]

    def drop(self) -> None:
        self.discard_pool(kill=True)

    def held(self) -> list[Held]:
        now = time.time()
        return [Held(f"process {pid}", task_module.HOST, (index,), now - start)
                for pid, index, start in self.beacons.running()]

    def enforce_timeout(self) -> None:
        """Kill the worker process of every pset that has run longer than the timeout.

        SIGKILL, because a pset past its time may be stuck where no signal handler runs (C
        code, a hung read) or stopped (SIGSTOP). The pool then breaks and
        :meth:`after_timeout` sorts out what was in flight.
        """
        now = time.monotonic()
        if self.timeout is None or now < self.next_check:
            return
        self.next_check = now + POLL_SECONDS
        wall = time.time()
        for pid, index, start in self.beacons.running():
            if wall - start > self.timeout and index not in self.timed_out:
                self.timed_out[index] = wall - start
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def after_timeout(self, group: Group) -> list[GroupOutcome]:
        """The pool broke because psmpi killed workers whose pset ran past its timeout.

        The culprits are known, so nobody is a suspect: each pset that timed out becomes a
        ``timeout`` failure, and everything else that was in flight is handed out again
        (psets a killed worker had finished were lost with it and run once more).
        """
        broken = [group] + list(self.pending.values())
        self.pending.clear()
        self.discard_pool(kill=True)
        timed_out, self.timed_out = self.timed_out, {}
        outcomes = []
        for members in broken:
            outcomes += self.fail_timed_out(
                members, timed_out, lambda seconds: timeout_message(self.timeout, seconds))
        return outcomes

    def close(self) -> None:
        self.discard_pool()

    def abandon(self) -> None:
        self.discard_pool(kill=True)


def timeout_message(limit: float, seconds: float) -> str:
    return (f"the pset ran longer than timeout={limit:g} s; its worker process was killed "
            f"after {seconds:.1f} s")


def exit_message(code: object) -> str:
    call = "sys.exit()" if code is None else f"sys.exit({code!r})"
    return (f"the worker function called {call} on this pset, which ends the process running "
            f"it; the pset is stored as crashed and the survey goes on")


def kill_workers(executor: ProcessPoolExecutor) -> None:
    """SIGKILL the pool's processes (they ignore SIGTERM); it has no public handle on them."""
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        try:
            process.kill()
        except (OSError, ValueError):  # already gone, or already closed by the pool
            pass

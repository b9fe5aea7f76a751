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

import collections
import contextlib
import multiprocessing
import os
import signal
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Iterator, NamedTuple

import numpy as np

from .. import task as task_module
from ..errors import ConfigError
from ..lock import pid_alive
from ..stopping import ignore_stop_signals
from ..task import CRASHED, EXCEPTION, TIMEOUT, GroupOutcome, Task, describe, failed_outcome
from .base import Backend, Group, Held

# How long wait() may block: bounds how late a signal (Ctrl-C, SIGTERM) is acted on.
POLL_SECONDS = 0.2
# Groups in flight per worker: one running, one queued, so a worker never waits for us.
IN_FLIGHT_PER_WORKER = 2

CRASH_MESSAGE = ("the worker process died while running this pset "
                 "(killed by a signal, os._exit(), a segfault or out of memory)")
# How long a discarded pool's manager thread may take to finish once its workers are dead.
JOIN_SECONDS = 10.0


class WorkerExit(NamedTuple):
    """A pool process's answer when the worker function called ``sys.exit(code)``."""

    code: object


def run_group(task: Task, group: Group) -> GroupOutcome | WorkerExit:
    """What a pool process runs: one group through the worker function.

    Task makes every Exception data; what gets past it would otherwise be raised again on
    the driver and end the survey (SystemExit with the worker's exit code).
    """
    try:
        return task(group)
    except SystemExit as exc:
        return WorkerExit(exc.code)
    except BaseException as exc:  # as on ray: the group fails, nothing is retried
        return failed_outcome(group, EXCEPTION, f"on the worker process: {describe(exc)}",
                              traceback.format_exc())


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


def start_worker(raw, lock) -> None:
    """Initializer of each worker process: claim a beacon row, then ignore stop signals."""
    ignore_stop_signals()
    rows = np.frombuffer(raw, dtype=np.float64).reshape(-1, 3)
    with lock:
        for row in rows:
            pid = int(row[0])
            if pid == 0 or not pid_alive(pid):  # free, or left by a process that ended
                row[:] = (os.getpid(), -1, 0.0)
                task_module.BEACON = row
                return


def available_cores() -> int:
    """Cores this process may run on (respects cpusets and Slurm's binding)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_ncores(ncores: int | None) -> int:
    """ncores=None: all cores; negative: leave that many free; at least 1."""
    total = available_cores()
    if ncores is None:
        return total
    return max(1, total + ncores) if ncores < 0 else ncores


class MultiprocessingBackend(Backend):
    name = "multiprocessing"
    survives_crashes = True  # a dead worker process fails its psets; the pool goes on

    def __init__(self, options, ncores=None, max_tasks_per_child=None):
        super().__init__(options, ncores, max_tasks_per_child)
        unknown = set(options) - {"start_method"}
        if unknown:
            raise ConfigError(f"multiprocessing={{...}} got unknown option(s) {sorted(unknown)}; "
                              f"known: ['start_method']")
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

    def start_method(self) -> str:
        method = self.options.get("start_method")
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
                initargs=(self.beacons.raw, self.beacons.lock), **kwargs)
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

    def run(self, task: Task, groups: Iterator[Group]) -> Iterator[GroupOutcome]:
        pending: dict[Future, Group] = {}
        suspects: collections.deque[Group] = collections.deque()
        # run before new groups: refused by a broken pool, or split after a sys.exit()
        held: collections.deque[Group] = collections.deque()
        groups = iter(groups)
        exhausted = False
        try:
            while True:
                if suspects:
                    # After a crash, run suspects alone: whichever kills its worker is guilty.
                    if not pending:
                        group = suspects.popleft()
                        pending[self.pool().submit(run_group, task, group)] = group
                else:
                    exhausted = self.refill(task, groups, pending, held, exhausted)
                if not pending:
                    if exhausted and not suspects and not held:
                        return
                    continue
                done, _ = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                self.enforce_timeout(task)
                if not done:
                    yield None  # heartbeat: lets the driver report progress and keep deadlines
                for future in done:
                    group = pending.pop(future, None)
                    if group is None:  # already moved to suspects by an earlier crash
                        continue
                    try:
                        outcome = future.result()
                    except BrokenProcessPool:
                        if self.timed_out:
                            yield from self.after_timeout(task, group, pending, held)
                        else:
                            yield from self.handle_crash(group, pending, suspects)
                        continue
                    if isinstance(outcome, WorkerExit):
                        yield from self.handle_exit(group, outcome.code, held)
                    else:
                        yield outcome
        finally:
            if pending:
                # Left early (a second stop signal, an error on the driver, the drain ran
                # out): nobody will read these groups' results, so do not wait for them.
                self.discard_pool(kill=True)

    def refill(self, task: Task, groups: Iterator[Group], pending: dict,
               held: collections.deque, exhausted: bool) -> bool:
        """Submit groups until every worker has its queue full; True once groups ran out."""
        while len(pending) < IN_FLIGHT_PER_WORKER * self.workers:
            if held:
                group = held.popleft()
            elif exhausted:
                break
            else:
                group = next(groups, None)
                if group is None:
                    return True
            try:
                pending[self.pool().submit(run_group, task, group)] = group
            except BrokenProcessPool:
                # A worker died and the pool knows before our futures say so. This group
                # never ran: keep it for later; the futures in flight report the crash.
                held.appendleft(group)
                if not pending:
                    self.discard_pool()
                break
        return exhausted

    def handle_crash(self, group: Group, pending: dict, suspects: collections.deque
                     ) -> Iterator[GroupOutcome]:
        """A worker died: rebuild the pool and decide who is guilty."""
        ran_alone = not pending
        # Every group in flight died with the pool; all of them become suspects.
        for other in list(pending):
            suspects.append(pending.pop(other))
        self.discard_pool()
        if ran_alone and len(group) == 1:
            yield crashed(group)
        elif ran_alone:
            suspects.extendleft([[item] for item in reversed(group)])
        else:
            suspects.appendleft(group)

    def held(self) -> list[Held]:
        now = time.time()
        return [Held(f"process {pid}", task_module.HOST, (index,), now - start)
                for pid, index, start in self.beacons.running()]

    def enforce_timeout(self, task: Task) -> None:
        """Kill the worker process of every pset that has run longer than ``task.timeout``.

        SIGKILL, because a pset past its time may be stuck where no signal handler runs (C
        code, a hung read) or stopped (SIGSTOP). The pool then breaks and
        :meth:`after_timeout` sorts out what was in flight.
        """
        now = time.monotonic()
        if task.timeout is None or now < self.next_check:
            return
        self.next_check = now + POLL_SECONDS
        wall = time.time()
        for pid, index, start in self.beacons.running():
            if wall - start > task.timeout and index not in self.timed_out:
                self.timed_out[index] = wall - start
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def after_timeout(self, task: Task, group: Group, pending: dict, held: collections.deque
                      ) -> Iterator[GroupOutcome]:
        """The pool broke because psmpi killed workers whose pset ran past its timeout.

        The culprits are known, so nobody is a suspect: each pset that timed out becomes a
        ``timeout`` failure, and everything else that was in flight is handed out again
        (psets a killed worker had finished were lost with it and run once more).
        """
        broken = [group] + [pending.pop(future) for future in list(pending)]
        self.discard_pool(kill=True)
        timed_out, self.timed_out = self.timed_out, {}
        for members in broken:
            again = [item for item in members if item[0] not in timed_out]
            for item in members:
                if item[0] in timed_out:
                    yield failed_outcome([item], TIMEOUT, timeout_message(task.timeout, timed_out[item[0]]))
            if again:
                held.appendleft(again)

    @staticmethod
    def handle_exit(group: Group, code: object, held: collections.deque
                    ) -> Iterator[GroupOutcome]:
        """The worker function called sys.exit(): split the group; alone, the pset failed.

        The pool is fine (the process reported it), so the psets of a larger group are
        simply run again one by one, ahead of new groups.
        """
        if len(group) == 1:
            yield failed_outcome(group, CRASHED, exit_message(code))
        else:
            held.extendleft([item] for item in reversed(group))

    def close(self) -> None:
        self.discard_pool()

    def abandon(self) -> None:
        self.discard_pool(kill=True)


def timeout_message(limit: float, seconds: float) -> str:
    return (f"the pset ran longer than timeout={limit:g} s; its worker process was killed "
            f"after {seconds:.1f} s")


def crashed(group: Group) -> GroupOutcome:
    return failed_outcome(group, CRASHED, CRASH_MESSAGE)


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

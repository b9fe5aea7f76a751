"""The skeleton of the backends that hand groups to a pool of workers (multiprocessing, ray).

:meth:`PoolBackend.run` is written once: it keeps ``IN_FLIGHT_PER_WORKER`` groups per worker
in flight (one running, one queued, so a worker never waits for the driver), refills from
the driver's groups as results come back, yields None every ``HEARTBEAT_SECONDS`` while it
waits (the driver reports progress, commits and ends a drain on time), and runs the groups
it was told to run again before new ones. The rules for a worker that died or ran past the
timeout are here too: a group alone on a dead worker is split into single psets, a single
pset is failed; a worker whose death breaks the whole pool (multiprocessing) makes every
group in flight a suspect, run one at a time; psets past the timeout fail and the rest of
their group runs again. Each backend decides which rule applies (ray retries a task
itself first; only a broken ProcessPoolExecutor loses every group in flight).

An empty group from the driver (a :class:`psmpi.Executor` with nothing submitted) means
"nothing now, not the end": the skeleton keeps collecting, waits on results in short steps
while a worker has room, waits on the driver's queue when nothing is in flight, and yields
None after every burst of outcomes so the driver commits them at once.

A backend supplies the primitives: :meth:`~PoolBackend.submit` (into ``self.pending``),
:meth:`~PoolBackend.wait`, :meth:`~PoolBackend.collect` (the outcomes of a finished
handle, or none, having put its psets up to run again) and :meth:`~PoolBackend.drop`
(forget what is in flight, stopping its workers).
"""

from __future__ import annotations

import abc
import collections
from collections.abc import Callable, Iterator
from typing import Any

from ..worker.task import TIMEOUT, GroupOutcome, Task, failed_outcome
from .base import Backend, Group, wait_for_groups

# While waiting, run() yields None this often: it bounds how late the driver reports,
# commits and acts on a signal.
HEARTBEAT_SECONDS = 0.2
# While some worker has room and the driver had nothing to hand out (an Executor waiting
# for submissions), wait for results this long at a time, then ask the driver again.
STARVED_POLL_SECONDS = 0.002
# Groups in flight per worker: one running, one queued, so a worker never waits for us.
IN_FLIGHT_PER_WORKER = 2


class PoolBackend(Backend):
    """Groups handed to a pool of workers; subclasses supply the primitives."""

    def __init__(self, options, ncores=None, max_tasks_per_child=None):
        super().__init__(options, ncores, max_tasks_per_child)
        self.pending: dict[Any, Any] = {}  # handle -> what the backend keeps of its group
        # Groups to run before new ones (split, refused, or the rest of a killed group).
        self.again: collections.deque[Group] = collections.deque()
        # Groups that were in flight when a worker died and took the pool with it: they
        # run one at a time, so whichever kills its worker is known to be guilty.
        self.suspects: collections.deque[Group] = collections.deque()
        self.exhausted = False  # the driver's groups ran out
        self.starved = False  # the driver had nothing to hand out at the last refill

    # -- what a backend supplies

    def start(self, task: Task) -> Any:
        """Called once per map before anything is submitted; returns what submit() takes as
        ``task`` (ray: a reference to the task in its object store)."""
        return task

    def capacity(self) -> int:
        """How many workers to keep busy now (read before each refill)."""
        return self.n_workers

    @abc.abstractmethod
    def submit(self, task: Any, group: Group, again: bool) -> bool:
        """Hand ``group`` to the pool, recording it in ``self.pending``; False if the pool
        refused it (it is then kept to run first). ``again``: it ran before, or was split."""

    @abc.abstractmethod
    def wait(self, seconds: float) -> list:
        """The handles in ``self.pending`` that finished, waiting at most ``seconds``."""

    def watch(self) -> None:
        """After each wait: look at the workers (stalls, timeouts); cheap when called often."""

    @abc.abstractmethod
    def collect(self, handle: Any, record: Any) -> list[GroupOutcome]:
        """The outcomes of a finished ``handle`` (``record``: what submit() kept of it, already
        taken out of ``self.pending``). Psets to run again go to :meth:`split`,
        :meth:`lost_with_pool` or :meth:`fail_timed_out`, which return the outcomes."""

    @abc.abstractmethod
    def drop(self) -> None:
        """The map is left with groups in flight: stop their workers, nobody will read them."""

    # -- the skeleton

    def run(self, task: Task, groups: Iterator[Group]) -> Iterator[GroupOutcome | None]:
        handle = self.start(task)
        source, groups = groups, iter(groups)
        self.exhausted = self.starved = False
        try:
            while True:
                self.refill(handle, groups)
                if not self.pending:
                    if self.again or self.suspects:
                        continue  # the pool refused a group: it was rebuilt, try again
                    if self.exhausted:
                        return
                    wait_for_groups(source, HEARTBEAT_SECONDS)  # nothing submitted yet
                    yield None
                    continue
                # A free worker must not wait a heartbeat for work submitted meanwhile.
                done = self.wait(STARVED_POLL_SECONDS if self.starved else HEARTBEAT_SECONDS)
                self.watch()
                if not done:
                    yield None  # heartbeat: the driver reports progress and keeps deadlines
                    continue
                outcomes = []
                for finished in done:
                    record = self.pending.pop(finished, None)
                    if record is not None:  # None: lost with the pool to an earlier crash
                        outcomes += self.collect(finished, record)
                # Workers get their next groups before the driver stores these outcomes.
                self.refill(handle, groups)
                yield from outcomes
                yield None  # all that arrived was yielded: the driver may commit it now
        finally:
            if self.pending:
                # Left early (a second stop signal, an error on the driver, the drain ran
                # out): nobody will read these groups' results, so do not wait for them.
                self.drop()
            self.forget()

    def refill(self, task: Any, groups: Iterator[Group]) -> None:
        """Submit groups until every worker has its queue full (after a crash: the suspects,
        one at a time); sets ``exhausted`` once the driver's groups ran out."""
        if self.suspects:
            if not self.pending:
                group = self.suspects.popleft()
                if not self.submit(task, group, again=True):
                    self.suspects.appendleft(group)
            return
        self.starved = False
        limit = IN_FLIGHT_PER_WORKER * self.capacity()
        while len(self.pending) < limit:
            again = bool(self.again)
            if again:
                group = self.again.popleft()
            elif self.exhausted:
                break
            else:
                group = next(groups, None)
                if group is None:
                    self.exhausted = True
                    break
                self.starved = not group
                if self.starved:  # nothing to hand out now (an Executor): ask again soon
                    break
            if not self.submit(task, group, again):
                self.again.appendleft(group)  # it never ran: first in line once the pool is back
                break

    def forget(self) -> None:
        """Drop every group the map still had (it ended, or was left)."""
        self.pending.clear()
        self.again.clear()
        self.suspects.clear()

    # -- the rules for dead workers and timeouts, for collect()

    def split(self, group: Group, failed: Callable[[Group], GroupOutcome],
              into: collections.deque[Group] | None = None) -> list[GroupOutcome]:
        """``group``'s worker died while it ran alone: a single pset is guilty (``failed``
        says how); a larger group's psets run next, one at a time, in order, to find it."""
        if len(group) == 1:
            return [failed(group)]
        self.run_alone(group, into)
        return []

    def run_alone(self, group: Group, into: collections.deque[Group] | None = None) -> None:
        """Run each pset of ``group`` as a group of its own, next, in order."""
        (self.again if into is None else into).extendleft([item] for item in reversed(group))

    def lost_with_pool(self, group: Group, failed: Callable[[Group], GroupOutcome]
                       ) -> list[GroupOutcome]:
        """``group``'s worker died and broke the pool, taking every group in flight with it.

        All of them become suspects. If ``group`` ran alone it is guilty (split, or failed
        when single); else it runs first, alone.
        """
        ran_alone = not self.pending
        self.suspects.extend(self.pending.values())
        self.pending.clear()
        if ran_alone:
            return self.split(group, failed, into=self.suspects)
        self.suspects.appendleft(group)
        return []

    def fail_timed_out(self, group: Group, seconds: dict[int, float],
                       message: Callable[[float], str]) -> list[GroupOutcome]:
        """Psets of ``group`` killed past the timeout (pset index -> seconds it ran) fail,
        with ``message(seconds)``; the group's other psets run again, next."""
        rest = [item for item in group if item[0] not in seconds]
        if rest:
            self.again.appendleft(rest)
        return [failed_outcome([item], TIMEOUT, message(seconds[item[0]]))
                for item in group if item[0] in seconds]

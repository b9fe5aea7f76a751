"""The ensemble backend: psets that each launch an MPI application on cores reserved for it.

Chosen by ``psmpi.map(worker, psets, resources=...)`` outside an MPI launch. The driver's
process is the only Python process: every pset runs in a thread of it, holding the hosts,
cores and GPUs the :class:`~psmpi.backends.scheduling.Scheduler` placed it on while its
worker function runs (``psmpi.context().reservation``; the worker calls
:func:`psmpi.run_mpi`, which launches on exactly those). The allocation is read once per
map (:func:`psmpi.backends.allocation.detect`).

Every pset the driver has to hand out is read and checked before anything starts, so a
pset asking more than the allocation holds is refused before any compute. On a stop
signal no waiting pset starts; those running get the drain period, then are stopped. Psets run one
per thread (groups are split); the threads mostly wait for their launched program.
``timeout=`` of the map does not apply (a thread cannot be stopped): give ``run_mpi`` its
own ``timeout``.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from ..errors import ConfigError
from ..stopping import stop_requested
from ..worker import context, launches
from ..worker.task import EXCEPTION, HOST, GroupOutcome, Task, describe, failed_outcome
from . import allocation as allocation_module
from .base import Backend, Group, Held, Options, option, wait_for_groups
from .scheduling import MAX_PASSES, CpuPool, Scheduler, request_for

HEARTBEAT_SECONDS = 0.2


@dataclasses.dataclass(frozen=True)
class EnsembleOptions(Options):
    """``ensemble={...}``; ``resources`` is filled in from ``map(resources=...)``."""

    resources: object = option(None, "be a dict or a function of the pset returning one",
                               lambda value: value is None or isinstance(value, dict)
                               or callable(value))
    hosts: str | None = option(None, "be a host list like 'node1:8,node2:8' or a host file")
    max_passes: int = option(MAX_PASSES, "be an integer >= 0", lambda value: value >= 0)
    bind: bool | None = option(None, "be True, False or None (pin the applications to their "
                                     "cores when the allocation is this machine's)")


class EnsembleBackend(Backend):
    name = "ensemble"
    options_class = EnsembleOptions
    # The applications run in processes of their own: one that dies fails its pset alone.
    survives_crashes = True

    def __init__(self, options, ncores=None, max_tasks_per_child=None):
        super().__init__(options, ncores, max_tasks_per_child)
        env = dict(os.environ)
        if self.options.hosts:
            env["PSMPI_HOSTS"] = self.options.hosts
        self.allocation = allocation_module.detect(env)
        self.started: dict[int, tuple[str, float]] = {}  # pset index -> (thread, start)
        self.scheduler: Scheduler | None = None  # of the map running now
        self.cpus = self.pinned_cpus()  # core ids to pin applications to, or None
        self.pool: CpuPool | None = None  # of the map running now, when pinning

    @property
    def n_workers(self) -> int:
        return self.allocation.cores

    def run(self, task: Task, groups: Iterator[Group]) -> Iterator[GroupOutcome | None]:
        scheduler = self.scheduler = Scheduler(self.allocation, self.options.max_passes)
        self.pool = CpuPool(self.cpus) if self.cpus else None
        done: queue.Queue = queue.Queue()
        psets: dict[int, dict] = {}
        source, groups = groups, iter(groups)
        try:
            yield from self.loop(task, groups, source, scheduler, psets, done)
        finally:
            if scheduler.running:
                # Left with applications running (the drain ran out, a second signal, an
                # error on the driver): nobody will read them; they must not outlive us.
                launches.stop_all()
            self.started.clear()
            self.scheduler = self.pool = None

    def loop(self, task: Task, groups: Iterator[Group], source: Any, scheduler: Scheduler,
             psets: dict[int, dict], done: queue.Queue) -> Iterator[GroupOutcome | None]:
        """The body of :meth:`run`."""
        exhausted = False
        while True:
            if not exhausted:
                exhausted = self.take_all(groups, scheduler, psets)
            if stop_requested():  # draining: the psets not started stay to do (resume)
                exhausted = True
                scheduler.waiting.clear()
            for index, placement in scheduler.start():
                if self.pool is not None:
                    placement = self.pool.take(index, placement)
                self.launch(task, (index, psets.pop(index)), placement, done)
            if scheduler.idle:
                if exhausted:
                    return
                wait_for_groups(source, HEARTBEAT_SECONDS)  # an Executor: nothing yet
                yield None
                continue
            try:
                index, outcome = done.get(timeout=HEARTBEAT_SECONDS)
            except queue.Empty:
                yield None
                continue
            scheduler.release(index)
            self.started.pop(index, None)
            if self.pool is not None:
                self.pool.give_back(index)
            yield outcome
            yield None

    def take_all(self, groups: Iterator[Group], scheduler: Scheduler,
                 psets: dict[int, dict]) -> bool:
        """Queue (checked) every pset the driver has now; True once its groups ran out."""
        resources = self.options.resources
        while True:
            group = next(groups, None)
            if group is None:
                return True
            if not group:
                return False
            for index, pset in group:
                request = request_for(resources, pset, index)
                scheduler.check(index, f"pset {index} {pset}", request)
                scheduler.add(index, request)
                psets[index] = pset

    def launch(self, task: Task, item: tuple[int, dict], placement: Any,
               done: queue.Queue) -> None:
        """Run ``item`` in a thread holding ``placement``; its outcome goes to ``done``."""
        index = item[0]
        name = f"psmpi-ensemble-{index}"
        self.started[index] = (name, time.monotonic())

        def work() -> None:
            context.reserve(placement)
            try:
                outcome = task([item], rank=0)
            except BaseException as exc:  # never lose the pset's slot: report it failed
                outcome = failed_outcome([item], EXCEPTION, f"in the ensemble thread: "
                                         f"{describe(exc)}")
            finally:
                context.reserve(None)
            done.put((index, outcome))

        # daemon: a driver leaving early does not wait for applications nobody will read
        threading.Thread(target=work, name=name, daemon=True).start()

    def pinned_cpus(self) -> list[int] | None:
        """The core ids applications are pinned to, or None: by default when the
        allocation is this machine's own cores; ``bind=True`` also pins on a one-host
        ``PSMPI_HOSTS`` naming this machine with no more cores than it may use."""
        bind, allocation = self.options.bind, self.allocation
        if bind is False or (bind is None and allocation.source != "this machine"):
            return None
        try:
            cpus = sorted(os.sched_getaffinity(0))
        except AttributeError:  # macOS, Windows: no affinity to set
            cpus = []
        node = allocation.nodes[0]
        local = len(allocation.nodes) == 1 and node.name in ("localhost", socket.gethostname())
        if not local or node.cores > len(cpus):
            if bind is None:
                return None
            raise ConfigError(f"ensemble={{'bind': True}} pins applications to this machine's "
                              f"cores, but the allocation is {allocation.describe()} and this "
                              f"process may use {len(cpus) or 'no known'} cores; drop bind, "
                              f"or describe this machine (PSMPI_HOSTS=localhost:N, N <= "
                              f"{len(cpus)})")
        return cpus[:node.cores]

    def queued(self) -> int:
        scheduler = self.scheduler
        return len(scheduler.waiting) if scheduler is not None else 0

    def held(self) -> list[Held]:
        now = time.monotonic()
        return [Held(f"thread {name}", HOST, (index,), now - start)
                for index, (name, start) in list(self.started.items())]

    def check_gpus(self, gpus_per_worker: int) -> None:
        if gpus_per_worker:
            raise ConfigError("gpus_per_worker= does not apply to resources=: ask for GPUs per "
                              "pset with resources={'gpus_per_rank': N}")

    def abandon(self) -> None:
        launches.stop_all()
        self.close()

"""Which psets of an ensemble run now, and on which cores and GPUs: pure, no processes.

Each pset asks for a :class:`Request` (``resources=`` of ``psmpi.map``: a dict, or a function
of the pset returning one). The :class:`Scheduler` keeps the psets waiting in arrival
order (the driver sends the dearest first when ``cost=`` is given), starts every one that
fits in what is free now, so small psets back-fill the holes a big one cannot use, and
never lets one wait forever: once the oldest waiting pset has been passed over
``max_passes`` times, nothing behind it starts until it has started, so the cores freed by
the psets that end are kept for it. What runs at once never exceeds the allocation.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from ..errors import ConfigError, PsetError
from .allocation import Allocation, Node

KEYS = ("ranks", "cores_per_rank", "gpus_per_rank", "nodes")
# How many times the oldest waiting pset may see others start in its place.
MAX_PASSES = 20


@dataclasses.dataclass(frozen=True)
class Request:
    """What one pset needs: ``ranks`` MPI ranks, each with ``cores_per_rank`` cores and
    ``gpus_per_rank`` GPUs on one node; ``nodes``: spread over exactly that many whole
    nodes, used by no other pset."""

    ranks: int = 1
    cores_per_rank: int = 1
    gpus_per_rank: int = 0
    nodes: int | None = None

    @property
    def cores(self) -> int:
        return self.ranks * self.cores_per_rank


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a pset runs: ``hosts`` as (name, ranks, GPU ids) with its ranks on each."""

    hosts: tuple[tuple[str, int, tuple[str, ...]], ...]
    cores_per_rank: int
    whole_nodes: bool = False
    slurm: bool = False  # the allocation is a Slurm job's: launch with srun
    # The core ids reserved on this machine, rank after rank (cores_per_rank each), when
    # the allocation is this machine's own cores (see CpuPool); () when not pinned.
    cpus: tuple[int, ...] = ()

    @property
    def ranks(self) -> int:
        return sum(ranks for _, ranks, _ in self.hosts)

    @property
    def gpus(self) -> tuple[str, ...]:
        return tuple(gpu for _, _, gpus in self.hosts for gpu in gpus)


def request_for(resources: Mapping | Callable | None, pset: Mapping, index: int) -> Request:
    """The :class:`Request` of ``pset`` from ``resources=``; PsetError naming the pset if it is
    not a dict of positive integers with known keys."""
    asked = resources(dict(pset)) if callable(resources) else resources
    asked = {} if asked is None else asked
    if not isinstance(asked, Mapping):
        raise PsetError(f"resources= for pset {index} {dict(pset)} gave {asked!r}; it must be "
                        f"a dict with keys among {', '.join(KEYS)}")
    unknown = sorted(set(asked) - set(KEYS), key=str)
    if unknown:
        raise PsetError(f"resources= for pset {index} {dict(pset)} has unknown key(s) "
                        f"{unknown}; use {', '.join(KEYS)}")
    for key, value in asked.items():
        least = 0 if key == "gpus_per_rank" else 1
        if value is None and key == "nodes":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise PsetError(f"resources= for pset {index} {dict(pset)}: {key} must be an "
                            f"integer >= {least}, not {value!r}")
    return Request(**asked)


def place(request: Request, free: Mapping[str, tuple[int, tuple[str, ...]]],
          nodes: tuple[Node, ...]) -> Placement | None:
    """Where ``request`` fits in ``free`` (node name -> free cores, free GPU ids), or None.

    Whole nodes (``nodes=``): the first that are entirely free. Else one node if any holds
    every rank (the fullest such, to keep big holes for big psets), else ranks spread over
    nodes in order.
    """
    per_rank_cores, per_rank_gpus = request.cores_per_rank, request.gpus_per_rank

    def fits(name: str) -> int:  # ranks that fit on node ``name`` now
        cores, gpus = free[name]
        by_gpus = len(gpus) // per_rank_gpus if per_rank_gpus else math.inf
        return int(min(cores // per_rank_cores, by_gpus))

    def on(name: str, ranks: int) -> tuple[str, int, tuple[str, ...]]:
        return (name, ranks, free[name][1][:ranks * per_rank_gpus])

    if request.nodes:
        idle = [n for n in nodes if free[n.name][0] == n.cores and len(free[n.name][1]) == len(n.gpus)]
        if len(idle) < request.nodes:
            return None
        chosen, ranks, hosts = idle[:request.nodes], request.ranks, []
        for i, node in enumerate(chosen):
            share = ranks // request.nodes + (i < ranks % request.nodes)
            if share > fits(node.name):
                return None
            hosts.append(on(node.name, share))
        return Placement(tuple(hosts), per_rank_cores, whole_nodes=True)
    whole = [n.name for n in nodes if fits(n.name) >= request.ranks]
    if whole:
        best = min(whole, key=lambda name: free[name][0])
        return Placement((on(best, request.ranks),), per_rank_cores)
    hosts, left = [], request.ranks
    for node in nodes:
        take = min(fits(node.name), left)
        if take:
            hosts.append(on(node.name, take))
            left -= take
    return Placement(tuple(hosts), per_rank_cores) if left == 0 else None


class Scheduler:
    """Psets waiting and running on ``allocation``; see the module's docstring."""

    def __init__(self, allocation: Allocation, max_passes: int = MAX_PASSES):
        self.allocation = allocation
        self.max_passes = max_passes
        self.free = {n.name: (n.cores, n.gpus) for n in allocation.nodes}
        self.waiting: collections.OrderedDict[Hashable, list] = collections.OrderedDict()
        self.running: dict[Hashable, Placement] = {}

    def check(self, key: Any, what: str, request: Request) -> None:
        """PsetError, before any compute, if ``request`` cannot fit even in an empty
        allocation. ``what`` names the pset."""
        empty = {n.name: (n.cores, n.gpus) for n in self.allocation.nodes}
        if place(request, empty, self.allocation.nodes) is None:
            need = (f"{request.ranks} rank(s) x {request.cores_per_rank} core(s)"
                    + (f" x {request.gpus_per_rank} GPU(s)" if request.gpus_per_rank else "")
                    + (f" on {request.nodes} whole node(s)" if request.nodes else ""))
            raise ConfigError(f"{what} asks for {need}, which can never fit in the allocation: "
                              f"{self.allocation.describe()}. Ask for less (resources=), or "
                              f"run in a larger allocation (PSMPI_HOSTS, Slurm's --nodes)")

    def add(self, key: Hashable, request: Request) -> None:
        """Queue a pset (already :meth:`check`-ed)."""
        self.waiting[key] = [request, 0]

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    def start(self) -> list[tuple[Hashable, Placement]]:
        """The waiting psets to start now, in queue order, with their placements (their
        resources are taken until :meth:`release`)."""
        started, passed_over = [], []
        for key, entry in list(self.waiting.items()):
            placement = place(entry[0], self.free, self.allocation.nodes)
            if placement is None:
                if entry[1] >= self.max_passes:
                    break  # it has waited long enough: what frees up is kept for it
                passed_over.append(entry)
                continue
            for earlier in passed_over:  # a later pset starts in their place
                earlier[1] += 1
            passed_over = []
            placement = dataclasses.replace(placement, slurm=self.allocation.slurm)
            self.take(placement)
            del self.waiting[key]
            self.running[key] = placement
            started.append((key, placement))
        return started

    def take(self, placement: Placement) -> None:
        for name, ranks, gpus in placement.hosts:
            cores, free_gpus = self.free[name]
            if placement.whole_nodes:
                self.free[name] = (0, ())
            else:
                self.free[name] = (cores - ranks * placement.cores_per_rank,
                                   tuple(g for g in free_gpus if g not in gpus))

    def release(self, key: Hashable) -> None:
        """``key`` ended: its cores and GPUs are free again."""
        placement = self.running.pop(key)
        nodes = {n.name: n for n in self.allocation.nodes}
        for name, ranks, gpus in placement.hosts:
            if placement.whole_nodes:
                self.free[name] = (nodes[name].cores, nodes[name].gpus)
                continue
            cores, free_gpus = self.free[name]
            back = set(free_gpus) | set(gpus)
            self.free[name] = (cores + ranks * placement.cores_per_rank,
                               tuple(g for g in nodes[name].gpus if g in back))


class CpuPool:
    """Which of this machine's core ids are free, so that applications running at once get
    disjoint cores (the :class:`Scheduler` already makes sure enough are free)."""

    def __init__(self, cpus: list[int]):
        self.free = sorted(cpus)
        self.taken: dict[Hashable, tuple[int, ...]] = {}

    def take(self, key: Hashable, placement: Placement) -> Placement:
        """``placement`` with the lowest free core ids reserved for ``key``."""
        want = placement.ranks * placement.cores_per_rank
        if want > len(self.free):  # the scheduler counts cores: this cannot happen
            raise RuntimeError(f"psmpi bug: {want} cores placed but only {self.free} free")
        self.taken[key], self.free = tuple(self.free[:want]), self.free[want:]
        return dataclasses.replace(placement, cpus=self.taken[key])

    def give_back(self, key: Hashable) -> None:
        self.free = sorted(self.free + list(self.taken.pop(key)))

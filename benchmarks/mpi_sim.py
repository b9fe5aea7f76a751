"""Rank 0's real master loop fed by simulated workers, in one process, without MPI.

psmpi's :class:`~psmpi.backends.mpi.Master` and the driver behind it (grouping, recording,
the HDF5 commits, the stall watch) run unchanged; only the communicator under them is fake.
:class:`SimComm` implements the few calls the master makes (``isend``, ``Improbe``,
``Irecv``, ``test``) and plays every worker: a group sent to rank r is unpickled, run
through the real :class:`~psmpi.worker.task.Task` (so the DONE message rank 0 unpickles and
records is the real outcome), and "finishes" after its simulated duration on a virtual clock.

The virtual clock is rank 0's own CPU time, plus the time it would have slept (skipped, not
slept), minus the CPU time the simulated workers took in this process. So rank 0's real
per-message cost sets the pace, as on a dedicated core, and the shared machine's load does
not (it is CPU time, not wall time). What the fake communicator cannot show, MPI's own cost
per message (matched probe, the pkl5 count message, progress), is charged as a constant
``mpi_seconds`` = (per message received, per message sent); see ``benchmarks/mpi_scale.py``.

Efficiency is measured in the steady state: over the window from the moment the last
worker started its first group of the full size (the first groups hold one pset, until
every worker reported a duration) to the moment the first worker ran out of work for good,
the share of worker time spent computing. The psets come from a generator (no known
length), so groups do not shrink towards the end and the window is the survey's body.
Rank 0's CPU per group is measured over the same window.

Limits: one process plays every worker, so a simulated cell costs real time (~50-100 µs per
group here) and cells of millions of psets are modelled instead (mpi_scale.py); the CPU
rank 0 spends still rises when other processes share the cores (~20 % with 64-128 busy
ranks beside it), since caches and context switches are not free.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import itertools
import math
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Iterator

import cloudpickle

import psmpi.backends.mpi as mpi
from psmpi import config
from psmpi.backends.base import Backend
from psmpi.driver import recorder, run
from psmpi.driver.grouping import MAX_GROUP_SIZE, Grouper
from psmpi.watch import progress, stalls

# Modules whose clock becomes the virtual one while a simulation runs.
CLOCKED = (mpi, recorder, run, stalls, progress)
# Time a message takes from one rank to another (MPI latency on a cluster network).
LATENCY_SECONDS = 5e-6
# With VirtualClock(cpu=False): rank 0's cost of an improbe that finds nothing, and (the
# mpi_seconds of balance()) of a message received (unpickle, record) and sent. Rough values
# of this machine: its turnaround is ~1 ms a group (psmpi/backends/mpi.py).
PROBE_SECONDS = 5e-6
FIXED_MPI_SECONDS = (5e-4, 2e-4)


class VirtualClock:
    """Rank 0's time: its CPU time since start, plus sleeps skipped, minus excluded CPU."""

    def __init__(self, cpu: bool = True):
        # cpu=False: rank 0's CPU does not count, only the charges (a fixed cost per message
        # and per empty probe): the same code then gives the same schedule every run
        self.cpu = cpu
        self.origin = time.process_time()
        self.excluded = 0.0
        self.skipped = 0.0  # sleeps and charges
        self.slept = 0.0

    def now(self) -> float:
        if not self.cpu:
            return self.skipped
        return time.process_time() - self.origin - self.excluded + self.skipped

    def sleep(self, seconds: float) -> None:
        self.skipped += max(0.0, seconds)
        self.slept += max(0.0, seconds)

    def charge(self, seconds: float) -> None:
        """Advance the clock as if rank 0 had spent ``seconds`` of CPU."""
        self.skipped += seconds

    def busy(self) -> float:
        """Rank 0's CPU so far (charges included, sleeps not)."""
        return self.now() - self.slept

    @contextlib.contextmanager
    def paused(self):
        """CPU spent inside is not rank 0's (a simulated worker's)."""
        c0 = time.process_time()
        try:
            yield
        finally:
            self.excluded += time.process_time() - c0


class VirtualTime:
    """Stands in for the ``time`` module in the CLOCKED modules."""

    def __init__(self, clock: VirtualClock):
        self.clock = clock
        self.epoch = time.time()

    def monotonic(self) -> float:
        return self.clock.now()

    perf_counter = monotonic

    def sleep(self, seconds: float) -> None:
        self.clock.sleep(seconds)

    def time(self) -> float:
        return self.epoch + self.clock.now()

    def __getattr__(self, name):
        return getattr(time, name)


@contextlib.contextmanager
def virtual_time(clock: VirtualClock):
    fake = VirtualTime(clock)
    saved = [module.time for module in CLOCKED]
    for module in CLOCKED:
        module.time = fake
    try:
        yield
    finally:
        for module, real in zip(CLOCKED, saved):
            module.time = real


class Done:
    """A completed request: what ``request.test()`` returns once it is done."""

    def __init__(self, obj=None):
        self.obj = obj

    def test(self):
        return True, self.obj


class Arrived:
    """A matched message of pickled bytes: ``Irecv`` copies them into rank 0's buffer (the
    Receipt unpickles them: rank 0's cost, as with MPI)."""

    def __init__(self, data: bytes):
        self.data = data

    def Irecv(self, spec) -> Completed:
        buffer = spec[0]
        buffer[:] = self.data
        return Completed()


class Completed:
    """A completed MPI request."""

    @staticmethod
    def Test() -> bool:
        return True


class Status:
    source = -1
    tag = mpi.DONE_TAG
    count = 0

    def Get_source(self) -> int:
        return self.source

    def Get_tag(self) -> int:
        return self.tag

    def Get_count(self, datatype) -> int:
        return self.count


class FakeMPI:
    ANY_SOURCE = ANY_TAG = -1
    BYTE = "byte"

    @staticmethod
    def Is_finalized() -> bool:
        return False


class SimComm:
    """The communicator rank 0 sees: every other rank is a simulated worker.

    Messages to a worker: pickled on rank 0 (its real cost), then, with the clock paused,
    run by the worker (the real Task on the group) and answered with a DONE message that
    becomes visible to rank 0 once the virtual clock passes the group's end.
    """

    def __init__(self, clock: VirtualClock, n_ranks: int, pset_seconds: float | Callable,
                 mpi_seconds: tuple[float, float] = (0.0, 0.0), latency: float = LATENCY_SECONDS,
                 durations: list[float] | None = None, listener: bool = True,
                 worker_polls: bool = False):
        self.clock = clock
        # seconds of every pset, or a function of the pset giving its seconds
        self.pset_seconds = pset_seconds
        self.durations = durations  # seconds of each pset by index; None: pset_seconds each
        self.listener = listener    # a worker thread answers TAKE while a group computes
        # An idle worker notices a group at its next poll (Worker.next_message's backoff);
        # False: at once
        self.worker_polls = worker_polls
        self.recv_seconds, self.send_seconds = mpi_seconds
        self.latency = latency
        # (visible at, seq, rank, tag, data)
        self.pending: list[tuple[float, int, int, int, bytes]] = []
        self.seq = itertools.count()
        self.free_at = [0.0] * n_ranks       # when each worker finishes what it holds
        self.tasks: dict[bytes, object] = {}  # digest -> Task, unpickled once
        self.busy: list[tuple[int, float, float, int]] = []  # (rank, start, end, psets)
        # (rank, start, runtimes, indexes) of each group
        self.pset_runs: list[tuple[int, float, list[float], list[int]]] = []
        # Per rank, the groups it got whose DONE is not yet due: [send id, start, end, DONE's
        # seq, busy entry], in order (take-back: a queued group not started can be given back)
        self.queues: list[list[list]] = [[] for _ in range(n_ranks)]
        self.last_message = [0.0] * n_ranks  # when each worker last received a message
        self.cancelled: set[int] = set()      # seqs of DONE messages of groups given back
        self.given = 0                        # groups given back
        self.messages = 0
        # [virtual time, rank 0's CPU so far, psets] at each group sent: costs in any window
        self.sent: list[list] = []

    def isend(self, obj, dest: int, tag: int) -> Done:
        data = pickle.dumps(obj, protocol=5)
        self.clock.charge(self.send_seconds)
        self.messages += 1
        sent = self.clock.now()
        entry = [sent, self.clock.busy(), 0]
        self.sent.append(entry)
        with self.clock.paused():
            entry[2] = self.deliver(dest, data, sent)
        return Done()

    def Improbe(self, source: int, tag: int, status: Status) -> Arrived | None:
        while self.pending and self.pending[0][1] in self.cancelled:
            heapq.heappop(self.pending)
        if not self.pending or self.pending[0][0] > self.clock.now():
            if not self.clock.cpu:
                self.clock.charge(PROBE_SECONDS)
            return None
        _, _, rank, tag, data = heapq.heappop(self.pending)
        status.source, status.tag, status.count = rank, tag, len(data)
        self.clock.charge(self.recv_seconds)
        self.messages += 1
        return Arrived(data)

    def deliver(self, rank: int, data: bytes, sent: float) -> int:
        """Worker ``rank`` gets a message: it queues the group and answers when done.
        Returns the psets of the group."""
        kind, run_id, payload = pickle.loads(data)
        arrival = sent + self.latency
        queue = self.queues[rank]
        while queue and queue[0][2] + self.latency <= arrival:
            queue.pop(0)  # its DONE is sent: no TAKE can reach it any more
        if kind == getattr(mpi, "TAKE", None):
            self.take(rank, run_id, payload, arrival)
            self.last_message[rank] = arrival
            return 0
        if kind != mpi.GROUP:
            return 0  # STOP and the like: the simulation ends with the map
        self.last_message[rank] = arrival
        send_id = payload[3] if len(payload) > 3 else None  # None: psmpi without take-back
        outcome, start, end = self.run_group(rank, payload, arrival)
        seq = self.post(end + self.latency, rank,
                        (mpi.DONE, run_id, outcome if send_id is None else (send_id, outcome)))
        queue.append([send_id, start, end, seq, self.busy[-1]])
        return len(outcome.indexes)

    def take(self, rank: int, run_id: int, send_id: int, arrival: float) -> None:
        """Rank 0 asks group #send_id back: the worker gives it back (GIVEN) if it has not
        started when the TAKE is read; else its DONE answers."""
        queue = self.queues[rank]
        entry = next((entry for entry in queue if entry[0] == send_id), None)
        if entry is None or entry[1] <= arrival:
            return  # started (or done): its DONE answers
        if entry is not queue[-1]:
            raise AssertionError("the simulated worker gives back only its last group")
        _, start, _, seq, busy = queue.pop()
        # Read by the listener thread at its next poll, or by the main thread when the group
        # before it ends (it answers every TAKE before it starts a group).
        read = min(start, self.listener_poll(rank, arrival)) if self.listener else start
        self.cancelled.add(seq)
        self.busy.remove(busy)
        self.free_at[rank] = start
        self.given += 1
        self.post(read + self.latency, rank, (mpi.GIVEN, run_id, send_id))

    def listener_poll(self, rank: int, arrival: float) -> float:
        """When the worker's listener thread next polls at or after ``arrival``: it backs off
        from LISTENER_POLL_MIN to poll_max since the last message it received."""
        poll, delay = self.last_message[rank], 0.0
        while poll < arrival:
            poll += delay
            delay = min(mpi.POLL_MAX, max(mpi.LISTENER_POLL_MIN, mpi.POLL_GROWTH * delay))
        return poll

    @staticmethod
    def idle_poll(idle_since: float, arrival: float) -> float:
        """When a worker idle since ``idle_since`` next polls at or after ``arrival``: it
        spins SPIN_SECONDS, then sleeps from POLL_MIN growing to POLL_MAX, or to
        ALERT_POLL_MAX in its first ALERT_SECONDS (mpi.Backoff)."""
        if arrival <= idle_since + mpi.SPIN_SECONDS:
            return arrival
        poll, delay = idle_since + mpi.SPIN_SECONDS, 0.0
        while poll < arrival:
            poll += delay
            cap = mpi.ALERT_POLL_MAX if poll < idle_since + mpi.ALERT_SECONDS else mpi.POLL_MAX
            delay = min(cap, max(mpi.POLL_MIN, mpi.POLL_GROWTH * delay))
        return poll

    def run_group(self, rank: int, payload: tuple, arrival: float):
        """The real Task on the group, stamped with its simulated start and runtimes."""
        digest, blob, group = payload[:3]
        if blob is not None and digest not in self.tasks:
            self.tasks[digest] = cloudpickle.loads(blob)
        outcome = self.tasks[digest](group, rank)
        n = len(outcome.indexes)
        if callable(self.pset_seconds):
            runtimes = [float(self.pset_seconds(pset)) for _, pset in group]
        elif self.durations is not None:
            runtimes = [self.durations[index] for index in outcome.indexes]
        else:
            runtimes = [self.pset_seconds] * n
        start = max(arrival, self.free_at[rank])
        if self.worker_polls and arrival > self.free_at[rank]:
            start = self.idle_poll(self.free_at[rank], arrival)
        end = start + sum(runtimes)
        self.free_at[rank] = end
        self.busy.append((rank, start, end, n))
        self.pset_runs.append((rank, start, runtimes, list(outcome.indexes)))
        outcome = outcome._replace(runtimes=runtimes, group_seconds=end - start)
        return outcome, start, end

    def post(self, visible: float, rank: int, obj) -> int:
        """A message from worker ``rank`` that rank 0 sees from ``visible`` on (an outcome
        on DONE_TAG, anything else on TAG, as the real worker sends them)."""
        seq = next(self.seq)
        tag = mpi.DONE_TAG if obj[0] == mpi.DONE else mpi.TAG
        heapq.heappush(self.pending, (visible, seq, rank, tag, pickle.dumps(obj, protocol=5)))
        return seq


class SimMaster(mpi.Master):
    """The real Master on a SimComm (its __init__ would start MPI)."""

    def __init__(self, comm: SimComm, size: int):
        self.MPI, self.world, self.comm, self.status = FakeMPI, comm, comm, Status()
        self.setup(size)
        self.listens = [comm.listener] * size  # what each worker's HELLO would say
        self.stopped, self.abandoned = True, False  # no STOP round at exit


class SimBackend(mpi.MPIBackend):
    """MPIBackend around a SimMaster."""

    def __init__(self, master: SimMaster, options: dict):
        Backend.__init__(self, options)
        self.settings = dataclasses.asdict(self.options)
        self.master, self.layout = master, None


def worker(pset: dict) -> dict:
    return {"y": pset["i"] * 0.5}


def psets(n: int) -> Iterator[dict]:
    """A generator: the length is unknown, so groups keep their size to the end."""
    return ({"i": i} for i in range(n))


@dataclasses.dataclass
class SimResult:
    workers: int
    pset_seconds: float
    group_size: int | None
    psets: int
    groups: int
    efficiency: float          # steady state (see the module docstring); NaN: no window
    overall: float             # work / (workers × time to the last result)
    cost_per_group: float      # rank 0's CPU seconds per group sent in the window (MPI charge
                               # included): its cost in the steady state
    utilisation: float         # share of rank 0's time busy in the window
    group_psets: float         # mean psets of the groups sent in the window
    virtual_seconds: float
    real_seconds: float


def full_group_size(workers: int, pset_seconds: float) -> int:
    """The adaptive group size once every worker reported a duration (psmpi's Grouper)."""
    target = Grouper([], workers, None, None).target_seconds()
    return max(1, min(MAX_GROUP_SIZE, int(target / pset_seconds)))


def planned_psets(workers: int, pset_seconds: float, rounds: int, group_size: int | None
                  ) -> int:
    """Psets for ``rounds`` full-size groups per worker, plus the first groups of one."""
    size = group_size or full_group_size(workers, pset_seconds)
    return rounds * workers * size + (0 if group_size else 2 * workers)


def simulate(workers: int, pset_seconds: float, rounds: int = 4, group_size: int | None = None,
             mpi_seconds: tuple[float, float] = (0.0, 0.0), directory: str | None = None) -> SimResult:
    """Run one map of ``rounds`` groups per worker (at the expected group size) through the
    real master and driver on a SimComm; the file is written in ``directory`` (a temporary
    one by default)."""
    n_psets = planned_psets(workers, pset_seconds, rounds, group_size)
    clock = VirtualClock()
    comm = SimComm(clock, workers + 1, pset_seconds, mpi_seconds)
    backend = SimBackend(SimMaster(comm, workers + 1), {})
    real0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        where = directory or stack.enter_context(tempfile.TemporaryDirectory(prefix="psmpi-sim-"))
        settings = config.resolve({"group_size": group_size, "verbose": 0, "keep_results": False,
                                   "out": os.path.join(where, "sim.h5")}, {})
        stack.enter_context(virtual_time(clock))
        start = clock.now()
        result = run.run_map(worker, psets(n_psets), settings, backend, "sim")
        assert result.progress.finished == n_psets, result.progress
    first = min(sent for sent, _, _ in comm.sent)
    last_end = max(end for _, _, end, _ in comm.busy)
    window = steady_window(comm.busy, workers)
    efficiency = cost = utilisation = group_psets = math.nan
    if window is not None:
        efficiency = busy_share(comm.busy, workers, *window)
        cost, utilisation, group_psets = master_cost(comm.sent, *window)
    return SimResult(workers, pset_seconds, group_size, n_psets, len(comm.busy), efficiency,
                     n_psets * pset_seconds / (workers * (last_end - first)), cost, utilisation,
                     group_psets, clock.now() - start, time.perf_counter() - real0)


def steady_window(busy: list[tuple[int, float, float, int]], workers: int
                  ) -> tuple[float, float] | None:
    """From the moment the last worker started its first group of the full size (at least
    half the largest group: the first groups are of one pset, until every worker reported
    a duration) to the moment the first worker finished its last group; None if empty."""
    full = max(n for *_, n in busy) / 2
    first_start: dict[int, float] = {}
    last_end: dict[int, float] = {}
    for rank, start, end, n in busy:
        if n >= full:
            first_start[rank] = min(first_start.get(rank, math.inf), start)
        last_end[rank] = max(last_end.get(rank, -math.inf), end)
    if len(first_start) < workers:
        return None
    t1, t2 = max(first_start.values()), min(last_end.values())
    return (t1, t2) if t2 > t1 else None


def busy_share(busy: list[tuple[int, float, float, int]], workers: int, t1: float, t2: float
               ) -> float:
    """Share of the workers' time in [t1, t2] spent computing."""
    computing = sum(max(0.0, min(end, t2) - max(start, t1)) for _, start, end, _ in busy)
    return computing / (workers * (t2 - t1))


def master_cost(sent: list[list], t1: float, t2: float) -> tuple[float, float, float]:
    """Rank 0's CPU per group sent in [t1, t2], its busy share of that time, and the mean
    psets of those groups."""
    inside = [entry for entry in sent if t1 <= entry[0] <= t2]
    if len(inside) < 2:
        return math.nan, math.nan, math.nan
    (ta, ca, _), (tb, cb, _) = inside[0], inside[-1]
    psets = sum(n for _, _, n in inside[1:]) / (len(inside) - 1)
    return (cb - ca) / (len(inside) - 1), (cb - ca) / (tb - ta), psets


@dataclasses.dataclass
class MapResult:
    """One simulated map of given psets: its makespan and where the workers' time went."""
    makespan: float            # virtual seconds from the map call to the last pset's end
    head: float                # shares of workers × makespan: before a worker's first pset,
    gaps: float                # between two of its psets (the master's turnaround),
    tail: float                # after its last one
    groups: int
    order: list[int]           # pset indexes in the order they started
    master_cpu: float          # rank 0's CPU seconds over the map (MPI charges included)
    real_seconds: float


def simulate_map(function, pset_list: list[dict], pset_seconds: Callable[[dict], float],
                 workers: int, options: dict, mpi_seconds: tuple[float, float] = (0.0, 0.0),
                 directory: str | None = None) -> MapResult:
    """Run ``psmpi.map(function, pset_list, **options)`` through the real master and driver
    on a SimComm whose workers take ``pset_seconds(pset)`` virtual seconds per pset
    (``options["mpi"]``: the MPI backend's options, as in ``psmpi.init(mpi=...)``)."""
    clock = VirtualClock()
    comm = SimComm(clock, workers + 1, pset_seconds, mpi_seconds)
    options = dict(options)
    backend = SimBackend(SimMaster(comm, workers + 1), options.pop("mpi", {}))
    real0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        where = directory or stack.enter_context(tempfile.TemporaryDirectory(prefix="psmpi-sim-"))
        settings = config.resolve({"verbose": 0, "keep_results": False,
                                   "out": os.path.join(where, "sim.h5"), **options}, {})
        stack.enter_context(virtual_time(clock))
        start, busy0 = clock.now(), clock.busy()
        result = run.run_map(function, pset_list, settings, backend, "sim")
        busy1 = clock.busy()
        assert result.progress.finished == len(pset_list), result.progress
    end = max(e for _, _, e, _ in comm.busy)
    makespan = end - start
    head = gaps = tail = 0.0
    for rank in range(1, workers + 1):
        runs = sorted((s, r) for k, s, r, _ in comm.pset_runs if k == rank)
        if not runs:
            head += makespan
            continue
        head += runs[0][0] - start
        gaps += sum(b[0] - (a[0] + sum(a[1])) for a, b in zip(runs, runs[1:]))
        tail += end - (runs[-1][0] + sum(runs[-1][1]))
    total = workers * makespan
    started = []  # (start, index) of every pset
    for _, group_start, runtimes, indexes in comm.pset_runs:
        offsets = itertools.accumulate([0.0] + runtimes[:-1])
        started.extend((group_start + offset, index) for offset, index in zip(offsets, indexes))
    order = [index for _, index in sorted(started)]
    return MapResult(makespan, head / total, gaps / total, tail / total, len(comm.busy), order,
                     busy1 - busy0, time.perf_counter() - real0)


# ---------------------------------------------------------------------- load balance
@dataclasses.dataclass
class BalanceResult:
    cost: bool
    makespan: float       # virtual seconds of the map call
    efficiency: float     # max(sum / workers, max) / makespan, as benchmarks/mpi_balance.py
    ceiling: float        # the same of greedy list scheduling in list order, zero overhead
    groups: int           # groups run (given back ones not counted)
    given: int            # groups given back (take-back)

    @property
    def of_ceiling(self) -> float:
        return self.efficiency / self.ceiling


def nap(pset: dict) -> dict:
    """mpi_balance.py's worker, without the sleep: the SimComm stamps the duration."""
    return {"slept": pset["duration"]}


def balance(cost: bool = False, listener: bool = True, mpi_options: dict | None = None,
            cpu: bool = False, mpi_seconds: tuple[float, float] | None = None,
            seed: int | None = None) -> BalanceResult:
    """benchmarks/mpi_balance.py's map (200 lognormal psets, 8 workers, in list order or,
    with ``cost``, cost=the duration) through the real master and driver on simulated
    workers that poll as psmpi's do. ``cpu``: rank 0's time is its CPU time plus
    ``mpi_seconds`` (default none); else only fixed charges (default FIXED_MPI_SECONDS),
    which makes the run deterministic. ``seed``: another sample of the durations."""
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    import mpi_balance
    seed = mpi_balance.SEED if seed is None else seed
    workers, d = mpi_balance.WORKERS, mpi_balance.durations(seed)
    if mpi_seconds is None:
        mpi_seconds = (0.0, 0.0) if cpu else FIXED_MPI_SECONDS
    if cpu:  # as mpi_balance.py: a first map of zero-duration psets warms rank 0 up
        warm = SimComm(VirtualClock(cpu), workers + 1, 0.0, durations=[0.0] * workers)
        with tempfile.TemporaryDirectory(prefix="psmpi-sim-") as where:
            run.run_map(nap, [{"i": i, "duration": 0.0} for i in range(workers)],
                        config.resolve({"verbose": 0, "out": os.path.join(where, "w.h5")}, {}),
                        SimBackend(SimMaster(warm, workers + 1), mpi_options or {}), "warmup")
    clock = VirtualClock(cpu)
    comm = SimComm(clock, workers + 1, math.nan, mpi_seconds, durations=d, listener=listener,
                   worker_polls=True)
    backend = SimBackend(SimMaster(comm, workers + 1), mpi_options or {})
    with tempfile.TemporaryDirectory(prefix="psmpi-sim-") as where:
        options = {"verbose": 0, "keep_results": False, "out": os.path.join(where, "b.h5")}
        if cost:
            options["cost"] = lambda p: p["duration"]
        settings = config.resolve(options, {})
        with virtual_time(clock):
            start = clock.now()
            result = run.run_map(nap, mpi_balance.make_psets(seed), settings, backend, "bench")
            makespan = clock.now() - start
        assert result.progress.finished == len(d), result.progress
    lb = mpi_balance.lower_bound(seed)
    return BalanceResult(cost, makespan, lb / makespan, lb / mpi_balance.list_schedule(d),
                         len(comm.busy), comm.given)


def main() -> None:
    import argparse
    parser = argparse.ArgumentParser(description="benchmarks/mpi_balance.py's workload on "
                                     "simulated workers (rank 0's real master and driver)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-listener", action="store_true",
                        help="workers answer TAKE only between groups")
    parser.add_argument("--cpu", action="store_true",
                        help="rank 0's time is its CPU time (not deterministic)")
    args = parser.parse_args()
    print("| psmpi | cost= | efficiency median (min – max) | / in-order ceiling | groups | "
          "given back |\n|---|---|---|---|---|---|")
    import psmpi
    for cost in (False, True):
        runs = [balance(cost, listener=not args.no_listener, cpu=args.cpu)
                for _ in range(args.reps)]
        effs = sorted(r.efficiency for r in runs)
        mid = runs[[r.efficiency for r in runs].index(effs[len(effs) // 2])]
        print(f"| {os.path.dirname(os.path.dirname(psmpi.__file__))} | {'yes' if cost else 'no'} "
              f"| {mid.efficiency:.3f} ({effs[0]:.3f} – {effs[-1]:.3f}) | {mid.of_ceiling:.3f} "
              f"| {mid.groups} | {mid.given} |")


if __name__ == "__main__":
    main()

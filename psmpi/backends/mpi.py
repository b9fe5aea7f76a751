"""The MPI backend: rank 0 is a load-balancing master, every other rank a worker.

The same script runs on every rank (``mpiexec -n N python study.py``). ``init()`` (or the
first ``map()``) constructs this backend on every rank. On rank 0 it returns and the script
goes on; on every other rank the constructor never returns: the rank serves groups until
rank 0 says stop, then finalizes MPI and exits with status 0. Only rank 0 runs user code
after ``init()``. With a single process the survey runs in process, with a warning.

Protocol. Run ids and pset indexes travel in the payload, never in tags; the tag only tells
an outcome (DONE_TAG) from everything else (TAG)::

    rank 0: Master                                        rank r > 0: Worker
    ──────────────                                        ──────────────────
    any time: note r's host, pid, and whether it     ◀─── (HELLO, -, (host, pid, listens))
      can give a queued group back while it computes       at start
    run(task, groups): a worker slot is free?             messages go to a pending queue in
      group = a given-back group, else next(groups)       order; the main thread receives
        (pulled only now; a list of (index, pset),        between groups, a listener thread
        or for a params grid a Span (start, stop):
        the grid travels in the Task)
      ─── (GROUP, run_id, (digest, blob|None, group,       (with MPI_THREAD_MULTIPLE) while
                           send_id)) ─────────────────▶   a group computes
          blob only if r has not got this digest yet      oldest pending group: unpack it
          ledger: r holds it since now (or, if r is       (blob: load the Task, keep it),
          busy, since r's previous group comes back)      outcome = task(group, r)
      poll: Improbe(ANY_SOURCE, ANY_TAG), spin   ◀─── (DONE, run_id, (send_id, outcome)),
            0.2 ms, then sleep 0.1 → 20 ms                 on DONE_TAG; not waiting for
      an outcome's envelope frees r's slot at once;        rank 0 to take it in, the next
        its bytes may come later (Receipt), checked        pending group starts (at most
        against the ledger once in                         MAX_UNSENT on their way; the
                                                           listener moves them on)
      receive all that arrived, refill the freed           poll for the next message
      workers, then yield all those outcomes (the
      driver writes HDF5 while the workers compute,
      calling tend() between the columns it writes:
      receive and refill meanwhile); None
      every 0.2 s while nothing arrives; outcomes
      of a run the driver abandoned are dropped;
      take-back of groups queued behind a running
      one (so that groups start about in list order):
      behind a straggler (run > 2 × what its psets
      take on average, and 0.1 s; it gets no second
      group then); while the driver has nothing to
      hand out, one per idle worker, from the ranks
      whose running group has run longest:
      ─── (TAKE, run_id, send_id) ─────────────────────▶ still pending (not started)?
          ledger: marked asked back; the group stays        drop it from pending, and
          r's until one of the two answers arrives:    ◀─── (GIVEN, run_id, send_id)
            GIVEN: off r's ledger, resent to the next       already started: ignore the
              idle worker (never queued behind a busy       TAKE, its DONE answers
              one); DONE: it had started, as usual      ◀─── (DONE, run_id, (send_id, outcome))
          (MPI keeps messages between two ranks in order, across tags too as rank 0
          probes ANY_TAG: a TAKE is read after its GROUP, and a GIVEN's envelope comes
          before that of the DONE of any group the worker started later; so
          exactly one of GIVEN and DONE comes back, and a pset is never lost nor doubled)
      every second with timeout= and
      abort_on_timeout: a group held longer than
      timeout × its size raises PsetTimeout (the
      driver commits, exits 75, the job aborts)
    held(): from the ledger, the group each rank runs
      and for how long (no message: a SIGSTOPped
      rank shows up as holding its group ever longer)
    at exit (atexit):
      ─── (STOP, -, -) to every worker ────────────────▶ stop serving
      drain until every BYE has arrived              ◀─── (BYE, -, -)
      (workers still busy with groups nobody           MPI.Finalize(); C exit(0)
       will collect: MPI Abort)

An empty group from the driver (a :class:`psmpi.Executor` waiting for submissions) leaves
the free workers idle without ending the run; the master's idle sleep then ends as soon as
something is submitted. After a burst of outcomes the master yields None, so the driver
commits them together at once.

Nobody waits in a blocking MPI call: MPICH's blocking calls spin at 100 % of a core and
hold back Python signal handlers until they return. Every wait is ``improbe``/``test`` plus a
sleep that grows while idle; rank 0 never even waits for an outcome's bytes, so it stays
responsive while a worker that is computing holds back a large message on a transport that
needs the sender to move it. Messages to workers go through ``mpi4py.util.pkl5``; messages
to rank 0 are one buffer of pickled bytes each (an outcome over 2 GiB counted in 1-MiB
blocks), so results of any size travel on any MPI.

An exception inside psmpi on a worker rank prints its traceback stamped with rank and host
and aborts the job; so does an uncaught exception in the script on rank 0
(``sys.excepthook``), so a psmpi job never hangs an allocation, even under plain ``python``.

A rank that stops or hangs inside a pset cannot be told apart from a slow one, nor stopped
alone (MPI cannot kill one rank of a job): ``held()`` lets the driver report it
(:mod:`psmpi.watch.stalls`), and ``timeout=`` is reported, or with ``abort_on_timeout`` ends the
whole job so that a requeue takes over (the pset counts as an attempt, see
:mod:`psmpi.store.attempts`).
"""

from __future__ import annotations

import atexit
import collections
import ctypes
import dataclasses
import hashlib
import heapq
import itertools
import os
import pickle
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import cloudpickle

from ..errors import BackendError, InternalError, PsetTimeout, warn
from ..stopping import EXIT_INCOMPLETE, ignore_stop_signals
from ..worker import setup as worker_setup
from ..worker.spans import group_indexes
from ..worker.task import HOST, GroupOutcome, Task
from . import base
from .base import Backend, Group, Held, Options, option

# Tags, far below the 32767 that every MPI guarantees. Rank 0 tells an outcome from the
# other messages by its tag alone, so it frees the worker's slot as soon as the outcome's
# envelope shows, while the outcome itself may still be on its way (see Receipt).
TAG = 27          # everything but outcomes: GROUP, STOP (pkl5), HELLO, BYE (pickled bytes)
DONE_TAG = 28     # an outcome, one message of pickled bytes
BLOCKS_TAG = 29   # an outcome over 2 GiB, in blocks of BLOCK bytes (zero-padded)
# Outcomes over 2 GiB travel as a count of blocks: the count of bytes would overflow the
# int of an MPI-3 library (Open MPI 4); pickle ignores the padding after its STOP opcode.
BLOCK = 1 << 20
INT_MAX = 2**31 - 1
# Outcomes a worker may have on their way to rank 0 while it computes its next group: it
# never waits for rank 0 to take one in (rank 0 may be writing the file), but a worker far
# ahead of rank 0 holds their bytes, so beyond this many it waits for the oldest.
MAX_UNSENT = 2
# message kinds, item 0 of each
GROUP, DONE, STOP, BYE, HELLO = "group", "done", "stop", "bye", "hello"
TAKE, GIVEN = "take", "given"  # rank 0 asks a queued group back; the worker gives it back

# Each wait first polls without sleeping for this long: while groups flow, the next message
# is usually this close (at group_size=1 a sleep of even 0.1 ms per message, on master and
# worker, made the cost per pset 0.4 ms), and a rank that then goes idle has spent 0.2 ms.
SPIN_SECONDS = 2e-4
# First sleep of a poll loop after the spin: a reply to a worker that just finished usually
# arrives within a fraction of a millisecond.
POLL_MIN = 1e-4
# Each idle poll sleeps this much longer than the last: a message is noticed at most 25 %
# of the idle time late. A greedy loop of small maps: 10 ms per map (doubling: 45 ms).
POLL_GROWTH = 1.25
# A worker's listener thread (receiving while a group computes) never spins and sleeps at
# least this long: it takes CPU from the group, and a TAKE may wait a few milliseconds.
LISTENER_POLL_MIN = 1e-3
# Longest sleep between two polls: bounds how late an idle rank notices a message. A wake-up
# costs 40-80 us of CPU here, so 20 ms keeps an idle rank under ~0.5 % of a core.
POLL_MAX = 0.02
# ... except in a worker's first ALERT_SECONDS without a group: a map that follows the last
# one soon (a study's next stage, a loop of maps, the map after a warm-up) reaches the
# workers within ALERT_POLL_MAX, not up to POLL_MAX later. Measured (benchmarks/mpi_balance
# .py, 8 workers, 1.1-s maps): 20-40 ms lost before the first pset, 2.4 % of the workers'
# time; at most ~3 % of a core for ALERT_SECONDS after each group, then ~0.5 % as before.
ALERT_POLL_MAX = 0.002
ALERT_SECONDS = 2.0
# The master's longest sleep is this share of the typical group duration, at least the floor:
# a worker waits ~0.5 % of its compute time for the master, whose idle CPU stays small.
MASTER_LATENCY_SHARE = 0.005
MASTER_POLL_FLOOR = 0.001
# A second group queued on a busy worker hides the master's turnaround (~1 ms per group
# here); behind a long group it would wait while other workers run dry, so the master takes
# it back for an idle worker (TAKE/GIVEN, see the module docstring). Measured before
# take-back, with the Grouper waiting for a sample per worker (benchmarks/mpi_balance.py,
# 200 lognormal psets, 8 workers): efficiency 0.885 with two in flight against 0.839 with
# one, and 0.977 against 0.956 with cost=. So two is the default;
# in_flight=None queues a second group only once groups are measured to be shorter than:
PREFETCH_BELOW_SECONDS = 0.02
EWMA_WEIGHT = 0.2  # weight of the newest group in the running mean of group durations
# A running group that has run STRAGGLER_FACTOR times what its psets take on average, and at
# least STRAGGLER_MIN_SECONDS (a TAKE costs a message and, for the straggler, its second
# group), is a straggler: the group queued behind it is taken back for the next idle worker,
# and its rank gets no second group until it returns. So a queued group starts about when it
# would with one group at a time (list order). Simulated (benchmarks/mpi_sim.py balance(): 8
# workers, 200 lognormal psets; 12 samples × 9 message costs), efficiency / greedy in list
# order, mean (10th percentile, worst): no take-back 0.984 (0.906, 0.699); take-back for
# idle workers only 0.999 (0.953, 0.851); with stragglers 1.003 (0.967, 0.944); with cost=,
# efficiency 0.940 (0.874, 0.870), 0.968 (0.910, 0.878), 0.976 (0.939, 0.893). Other factors
# and minimums did no better (benchmarks/results-mpi.md).
STRAGGLER_FACTOR = 2.0
STRAGGLER_MIN_SECONDS = 0.1
# Looking for stragglers costs a pass over the ranks with a queued group: it is done every
# this share of max(STRAGGLER_MIN_SECONDS, the mean group), and no more often than keeps it
# under ~1 % of rank 0 (~1 us a rank: 100 us of interval per rank; with 4,000 workers every
# 0.4 s).
STRAGGLER_CHECK_SHARE = 0.25
STRAGGLER_CHECK_PER_RANK = 1e-4
# While waiting for results, run() yields None this often: the driver reports progress and
# ends a drain on time.
HEARTBEAT_SECONDS = 0.2
# At exit, how long workers still busy with groups nobody wants (a map that raised) may take
# before the job is aborted. After abandon() (a drain ran out) there is no grace.
EXIT_GRACE_SECONDS = 10.0
# Pause between printing why the job aborts and aborting it: the launcher forwards output
# asynchronously and tears everything down on Abort (without it, 2 of 10 messages were lost).
ABORT_GRACE_SECONDS = 0.5
# With abort_on_timeout, how often rank 0 looks for groups held past their timeout.
TIMEOUT_CHECK_SECONDS = 1.0
# Test hook: "worker-internal:<rank>" makes that rank fail inside psmpi's own service loop.
FAULT_ENV = "PSMPI_TEST_FAULT"

@dataclasses.dataclass(frozen=True)
class MPIOptions(Options):
    """``mpi={...}``."""

    # groups per worker: 1, 2, or None (2 only while groups are short)
    in_flight: int | None = option(2, "be 1, 2 or None (adaptive)",
                                   lambda value: value in (None, 1, 2))
    poll_max: float = option(POLL_MAX, "be seconds in (0, 0.2]",
                             lambda value: 0 < value <= 0.2)
    # a pset past timeout=: False reports it (the driver warns); True ends the run with
    # the pset stored as a timeout failure and aborts the job, so a requeue takes over
    abort_on_timeout: bool = option(False, "be True or False")


def checked_options(options: dict[str, Any]) -> dict[str, Any]:
    """The ``mpi={...}`` options with defaults filled in, as the dict the master and the
    workers read; ConfigError on a bad one."""
    return dataclasses.asdict(base.checked_options(MPIOptions, "mpi", options))


def import_mpi():
    """mpi4py's MPI module (initialising MPI), or a BackendError saying what to install."""
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as exc:  # RuntimeError: mpi4py without an MPI library
        raise BackendError(f"backend 'mpi' needs mpi4py and an MPI library ({exc}); install "
                           f"them with: pip install 'psmpi[mpi]' (or build mpi4py against "
                           f"your cluster's MPI)") from exc
    return MPI


class Backoff:
    """Sleeps between polls: none for ``spin`` seconds, then from ``shortest`` growing up to
    a cap, which is at most ALERT_POLL_MAX for the first ``alert`` seconds."""

    def __init__(self, spin: float = SPIN_SECONDS, shortest: float = POLL_MIN,
                 alert: float = 0.0):
        self.spin, self.shortest, self.alert = spin, shortest, alert
        self.reset()

    def reset(self) -> None:
        self.delay = 0.0
        now = time.monotonic()
        self.spin_until, self.alert_until = now + self.spin, now + self.alert

    def sleep(self, cap: float, sleeper: Callable[[float], None] = time.sleep) -> None:
        now = time.monotonic()
        if now < self.spin_until:
            return
        if now < self.alert_until:
            cap = min(cap, ALERT_POLL_MAX)
        sleeper(min(self.delay, cap))
        self.delay = min(cap, max(self.shortest, POLL_GROWTH * self.delay))


def wait(request, cap: float = POLL_MAX) -> Any:
    """Complete a request (pkl5's, MPI's or a Receipt) by polling; return what it received
    (None for a send)."""
    backoff = Backoff()
    while True:
        done, obj = request.test()
        if done:
            return obj
        backoff.sleep(cap)


class Receipt:
    """The receive of one message of pickled bytes (a worker's HELLO, BYE or outcome),
    started as soon as its envelope shows and completed by polling (:meth:`test`).

    Rank 0 never waits on one: on a transport that moves a large message only while the
    sender calls MPI, an outcome completes once its worker polls again, after its next group.
    """

    def __init__(self, MPI, message, status):
        self.source, self.tag = status.Get_source(), status.Get_tag()
        datatype = blocks_type(MPI) if self.tag == BLOCKS_TAG else MPI.BYTE
        count = status.Get_count(datatype)
        self.buffer = bytearray(count * (BLOCK if self.tag == BLOCKS_TAG else 1))
        self.request = message.Irecv([self.buffer, count, datatype])

    def test(self) -> tuple[bool, Any]:
        """(True, the message) once it has arrived, else (False, None)."""
        if not self.request.Test():
            return False, None
        return True, pickle.loads(self.buffer)


def send_pickled(MPI, world, obj: Any, tag: int) -> tuple[Any, bytes]:
    """Start sending ``obj`` to rank 0 as one message of pickled bytes (over 2 GiB, as
    blocks on BLOCKS_TAG); return the request and the buffer, which must live until it
    completes."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) <= INT_MAX:
        return world.Isend([data, len(data), MPI.BYTE], 0, tag), data
    data += bytes(-len(data) % BLOCK)
    return world.Isend([data, len(data) // BLOCK, blocks_type(MPI)], 0, BLOCKS_TAG), data


_blocks_type = None


def blocks_type(MPI):
    """The MPI datatype of BLOCK contiguous bytes (committed once)."""
    global _blocks_type
    if _blocks_type is None:
        _blocks_type = MPI.BYTE.Create_contiguous(BLOCK).Commit()
    return _blocks_type


def abort(world, what: str) -> NoReturn:
    """Print the current traceback stamped with rank and host, then abort the whole job."""
    say_and_abort(world, f"psmpi: {what} on MPI rank {world.Get_rank()} of {world.Get_size()} "
                         f"(host {HOST}, pid {os.getpid()}); aborting the job:\n"
                         f"{traceback.format_exc()}")


def say_and_abort(world, text: str, status: int = 1) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.write(text)
    sys.stderr.flush()
    time.sleep(ABORT_GRACE_SECONDS)
    world.Abort(status)
    os._exit(status)  # Abort does not return; this only satisfies NoReturn


class MPIBackend(Backend):
    """Rank 0 hands groups to ranks 1..N-1 as they free up; see the module docstring.

    ``ncores`` and ``max_tasks_per_child`` do not apply: the launcher decides the ranks.
    """

    name = "mpi"
    options_class = MPIOptions
    takes_spans = True  # a Span travels as two ints; the grid goes once, with the task

    def __init__(self, options, ncores=None, max_tasks_per_child=None):
        super().__init__(options, ncores, max_tasks_per_child)
        self.settings = dataclasses.asdict(self.options)  # what the master and workers read
        MPI = import_mpi()
        world = MPI.COMM_WORLD
        self.master: Master | None = None
        self.layout = node_layout(MPI) if world.Get_size() > 1 else None
        if world.Get_size() == 1:
            warn("psmpi: backend 'mpi' has a single MPI process, so the psets run in "
                 "this process one after the other; start the script with "
                 "`mpiexec -n N python script.py` (N >= 2: rank 0 coordinates, "
                 "N-1 ranks compute)", RuntimeWarning)
        elif world.Get_rank() > 0:
            Worker(MPI, self.settings).serve_forever()
        else:
            self.master = Master.instance(MPI)

    @classmethod
    def available(cls) -> bool:
        try:
            import mpi4py  # noqa: F401  (the package only: importing MPI would initialise it)
        except ImportError:
            return False
        return True

    @property
    def n_workers(self) -> int:
        return 1 if self.master is None else self.master.n_workers

    def run(self, task: Task, groups: Iterator[Group]) -> Iterator[GroupOutcome | None]:
        if self.master is None:  # a single process: in process, like the serial backend
            for group in groups:
                if not group:  # nothing to run yet (an Executor), not the end
                    base.wait_for_groups(groups, HEARTBEAT_SECONDS)
                    yield None
                    continue
                yield task(group, 0)
            return
        yield from self.master.run(task, groups, self.settings)

    def check_gpus(self, gpus_per_worker: int) -> None:
        if self.layout is None:  # a single process: like the serial backend
            super().check_gpus(gpus_per_worker)
            return
        for host, workers, devices in self.layout.nodes:
            worker_setup.check_enough_gpus(gpus_per_worker, workers, devices,
                                           f"(worker ranks) on host {host}")

    def tend(self) -> None:
        if self.master is not None:
            self.master.tend(self.settings)

    def held(self) -> list[Held]:
        # In a single process the driver waits inside the pset: nothing to tell.
        return [] if self.master is None else self.master.held()

    def close(self) -> None:
        # Worker ranks cannot be restarted, and psmpi.api replaces its backend whenever a
        # map's settings differ from the previous one's; so closing releases this instance
        # only, and the workers are stopped once, at exit (Master.shutdown via atexit).
        self.master = None

    def abandon(self) -> None:
        # A worker busy in user code cannot be interrupted: its group is dropped when it
        # comes back, and busy workers are aborted at exit, at once, with EXIT_INCOMPLETE.
        if self.master is not None:
            self.master.abandoned = True
        self.close()


@dataclasses.dataclass(frozen=True)
class NodeLayout:
    """Where this rank sits on its node, and (on rank 0) every node's workers and GPUs."""

    local_rank: int              # this rank's number among the ranks of its node
    slot: int | None             # its number among the worker ranks (> 0) of its node
    nodes: list[tuple[str, int, tuple[str, ...]]]  # rank 0: (host, worker ranks, GPUs) per node


_layout: NodeLayout | None = None


def node_layout(MPI) -> NodeLayout:
    """The ranks of each node, from MPI itself (``COMM_TYPE_SHARED``: one communicator per
    shared-memory node), whatever launcher started the job. Collective: every rank calls it
    once, when it first constructs the backend; later calls (rank 0 may construct the
    backend again for a map with other settings) return what the first found.

    A worker's GPU slot counts only worker ranks: rank 0 computes nothing, so on its node the
    devices go to the other ranks.
    """
    global _layout
    if _layout is None:
        world = MPI.COMM_WORLD
        rank = world.Get_rank()
        node = world.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
        try:
            ranks = node.allgather(rank)
            local_rank = node.Get_rank()
        finally:
            node.Free()
        workers = sorted(r for r in ranks if r > 0)
        # One entry per node, sent by its lowest rank (the GPUs it sees are the node's).
        mine = (HOST, len(workers), worker_setup.node_gpus()) if rank == min(ranks) else None
        gathered = world.gather(mine, root=0)
        nodes = [entry for entry in gathered if entry is not None] if rank == 0 else []
        _layout = NodeLayout(local_rank, workers.index(rank) if rank > 0 else None, nodes)
    return _layout


class Job:
    """One run() call on the master: its task, its groups, and how long groups take."""

    def __init__(self, run_id: int, task: Task, groups: Iterator[Group]):
        self.run_id = run_id
        # cloudpickle, so that user_kwargs holding lambdas or closures travel too.
        self.blob = cloudpickle.dumps(task)
        self.digest = hashlib.blake2b(self.blob, digest_size=16).digest()
        self.groups = iter(groups)
        self.source = groups  # what the driver passed: an Executor's can be woken on submit
        self.exhausted = False
        self.starved = False  # the driver had nothing to hand out at the last pull
        self.outstanding = 0  # groups pulled from the driver whose outcome has not arrived
        # Groups given back, to resend: a heap of (send id, group), so the one pulled first
        # goes out first, as it would have with one group at a time
        self.taken: list[tuple[int, Group]] = []
        self.taking = 0  # TAKE messages sent whose group has not come back (GIVEN or DONE)
        self.arrived: collections.deque[GroupOutcome] = collections.deque()
        self.started = time.monotonic()
        self.returned = 0
        self.group_seconds = 0.0  # running mean of compute time per group
        self.pset_seconds: float | None = None  # running mean per pset; None: none measured

    def next_group(self) -> Group | None:
        """The next group: one a worker gave back, else one pulled from the driver only now
        that a worker is free; None at the end, or when the driver has nothing to hand out
        now (``starved``: an Executor, ask again soon)."""
        if self.taken:
            return heapq.heappop(self.taken)[1]
        group = None if self.exhausted else next(self.groups, None)
        self.exhausted = group is None
        self.starved = group is not None and not group
        self.outstanding += bool(group)
        return group or None

    def arrive(self, outcome: GroupOutcome) -> None:
        seconds, count = outcome.measured()
        weight = EWMA_WEIGHT if self.returned else 1.0
        self.group_seconds += weight * (seconds - self.group_seconds)
        if count:  # groups grow and shrink: a straggler is judged by its own size
            weight = EWMA_WEIGHT if self.pset_seconds is not None else 1.0
            self.pset_seconds = (self.pset_seconds or 0.0) + weight * (
                seconds / count - (self.pset_seconds or 0.0))
        self.returned += 1
        self.outstanding -= 1
        self.arrived.append(outcome)

    def typical_seconds(self) -> float:
        """Measured group duration; before any came back, a lower bound: time so far."""
        return self.group_seconds if self.returned else time.monotonic() - self.started


class Master:
    """Rank 0's side: one per process, kept across maps and backend instances."""

    _instance: Master | None = None

    @classmethod
    def instance(cls, MPI) -> Master:
        if cls._instance is None:
            cls._instance = cls(MPI)
        return cls._instance

    def __init__(self, MPI):
        from mpi4py.util import pkl5
        self.MPI, self.world = MPI, MPI.COMM_WORLD
        self.comm = pkl5.Intracomm(self.world)
        self.status = MPI.Status()
        self.setup(self.world.Get_size())
        self.stopped = self.abandoned = False
        install_excepthook(self.world)
        # Registered after mpi4py was imported, so it runs before mpi4py finalizes MPI.
        atexit.register(self.shutdown)

    def setup(self, size: int) -> None:
        """The bookkeeping of ``size - 1`` workers, all idle (no MPI calls)."""
        self.n_workers = size - 1
        self.inflight = [0] * size            # groups sent to each rank and not yet back
        self.idle = collections.deque(range(1, size))  # ranks with nothing to do
        self.single: collections.deque[int] = collections.deque()  # ranks with one group
        self.last_digest: list[bytes | None] = [None] * size  # the task each rank holds
        self.sends: list = []                 # pending isends: their buffers must live on
        # outcomes whose envelope showed, bytes coming, with their group's ledger entry
        self.receiving: list[tuple[Receipt, list]] = []
        self.run_id = 0
        self.job: Job | None = None           # the run in progress, for tend()
        # The ledger: per rank, [run id, group, monotonic time it started or None if queued,
        # send id, asked back (TAKE sent)] of each group sent and not back, oldest first. The
        # head is the one running.
        self.holding: list[collections.deque[list]] = [collections.deque() for _ in range(size)]
        self.queued: set[int] = set()         # ranks holding a group behind their running one
        # From each worker's HELLO (which may come after its first groups): it has a listener
        # thread, so it gives a queued group back while it computes. Without one it would give
        # it back only as it starts it, and taking back then costs more than it gains
        # (benchmarks/mpi_sim.py balance(), 12 lognormal samples × 9 message costs: mean
        # efficiency / list order 0.975 against 0.984 without take-back).
        self.listens: list[bool] = [False] * size
        self.send_ids = itertools.count(1)    # names each group sent, for TAKE/GIVEN/DONE
        self.next_straggler_check = 0.0       # monotonic time of the next look for stragglers
        self.hosts: list[str] = ["unknown host"] * size  # from each worker's HELLO
        self.pids: list[int] = [-1] * size

    def run(self, task: Task, groups: Iterator[Group], settings: dict
            ) -> Iterator[GroupOutcome | None]:
        self.run_id += 1
        self.job = Job(self.run_id, task, groups)
        try:
            yield from self.serve_job(self.job, task, settings)
        finally:
            self.job = None

    def serve_job(self, job: Job, task: Task, settings: dict
                  ) -> Iterator[GroupOutcome | None]:
        # Workers still busy with a group of an abandoned run may take a second group.
        self.single = collections.deque(r for r, n in enumerate(self.inflight) if n == 1)
        backoff, last_yield = Backoff(), time.monotonic()
        yielded = False  # an outcome since the last None
        watch_timeout = task.timeout is not None and settings["abort_on_timeout"]
        next_timeout_check = last_yield + TIMEOUT_CHECK_SECONDS
        while True:
            self.drain(job)
            self.refill(job, settings)  # before yielding: the driver stores while workers compute
            now = time.monotonic()
            if watch_timeout and now >= next_timeout_check:
                next_timeout_check = now + TIMEOUT_CHECK_SECONDS
                timed_out = self.past_timeout(task.timeout, now)
                if timed_out:
                    self.await_receipts(job, EXIT_GRACE_SECONDS)
                    while job.arrived:  # what came back is committed before the abort
                        yield job.arrived.popleft()
                    raise self.timeout_error(task.timeout, timed_out)
            if job.arrived:
                backoff.reset()
                # All of it, not one per pass: a saturated master receives many messages a
                # pass, and the driver must keep pace (with one a pass, 1,000 simulated
                # workers got every pset in groups of one before the grouper had measured
                # a single duration: benchmarks/mpi_sim.py).
                while job.arrived:
                    yield job.arrived.popleft()
                yielded, last_yield = True, time.monotonic()
            elif yielded or now - last_yield >= HEARTBEAT_SECONDS:
                # None also once all that arrived was yielded: the driver may commit it now
                yielded = False
                yield None
                last_yield = time.monotonic()
            elif job.exhausted and not job.outstanding:
                return
            else:
                self.reap_sends()
                # Starved (an Executor): a submission ends the sleep, a free worker gets it now.
                backoff.sleep(self.poll_cap(job, settings),
                              (lambda s: base.wait_for_groups(job.source, s)) if job.starved
                              else time.sleep)

    def tend(self, settings: dict) -> None:
        """Between two yields of :meth:`run` (the driver committing): receive what came
        and refill the workers that freed up; the outcomes wait for the next yield."""
        if self.job is not None:
            self.drain(self.job)
            self.refill(self.job, settings)

    def poll_cap(self, job: Job, settings: dict) -> float:
        share = MASTER_LATENCY_SHARE * job.typical_seconds()
        return min(settings["poll_max"], max(MASTER_POLL_FLOOR, share))

    def drain(self, job: Job | None) -> int:
        """Receive every message that has arrived; return how many were goodbyes.

        An outcome frees its worker's slot as soon as its envelope shows (the worker has
        moved on); it reaches the job once its bytes are in (:meth:`collect`).
        """
        byes = 0
        while True:
            message = self.world.Improbe(self.MPI.ANY_SOURCE, self.MPI.ANY_TAG, self.status)
            if message is None:
                break
            receipt = Receipt(self.MPI, message, self.status)
            source = receipt.source
            if receipt.tag != TAG:
                self.receiving.append((receipt, self.finished(source, job)))
                continue
            kind, run_id, payload = wait(receipt)  # a few bytes: in at once
            if kind == BYE:
                byes += 1
            elif kind == HELLO:
                self.hosts[source], self.pids[source], self.listens[source] = payload
            elif kind == GIVEN:
                self.given_back(source, run_id, payload, job)
            else:
                raise InternalError(f"rank 0 got a {kind!r} message from rank {source}")
        self.collect(job)
        return byes

    def finished(self, rank: int, job: Job | None) -> list:
        """``rank`` sent its running group's outcome (its envelope came in): free the slot.
        Returns the group's ledger entry, to check the outcome against once it is in."""
        holding = self.holding[rank]
        if not holding:
            raise InternalError(f"rank {rank} returned a group, but the ledger has none")
        entry = holding[0]
        if entry[4] and job is not None and entry[0] == job.run_id:
            job.taking -= 1  # asked back too late: it had started
        self.free_slot(rank)
        return entry

    def await_receipts(self, job: Job, seconds: float) -> None:
        """Let outcomes whose envelope came in arrive, for at most ``seconds``: their
        worker may be the one stuck in a pset, holding the rest of a large message back."""
        deadline, backoff = time.monotonic() + seconds, Backoff()
        while self.receiving and time.monotonic() < deadline:
            self.collect(job)
            backoff.sleep(POLL_MAX)

    def collect(self, job: Job | None) -> None:
        """Hand the job each outcome whose bytes are in (outcomes of a run the driver
        abandoned, because it raised mid-map, are dropped: nobody wants them)."""
        if not self.receiving:
            return
        waiting = []
        for receipt, entry in self.receiving:
            done, message = receipt.test()
            if not done:
                waiting.append((receipt, entry))
                continue
            kind, run_id, payload = message
            if kind != DONE:
                raise InternalError(f"rank 0 got a {kind!r} message from rank "
                                    f"{receipt.source} with the tag of an outcome")
            self.arrived(receipt.source, entry, run_id, payload, job)
        self.receiving = waiting

    def arrived(self, rank: int, entry: list, run_id: int, payload: tuple, job: Job | None
                ) -> None:
        """The outcome ``payload`` (send id, outcome) of ``rank``'s group ``entry`` is in."""
        send_id, outcome = payload
        if send_id != entry[3]:
            raise InternalError(f"rank {rank} returned group #{send_id}, but the ledger had "
                                f"#{entry[3]} running")
        if job is not None and run_id == job.run_id:
            job.arrive(outcome)
        # else: a group of a run the driver abandoned (it raised mid-map): nobody wants it

    def done(self, rank: int, run_id: int, payload: tuple, job: Job | None) -> None:
        """``rank``'s outcome with its envelope and bytes at once (in process, as in tests
        and benchmarks/mpi_sim.py)."""
        holding = self.holding[rank]
        if not holding or holding[0][3] != payload[0]:
            raise InternalError(f"rank {rank} returned group #{payload[0]}, but the ledger "
                                f"has it running #{holding[0][3] if holding else None}")
        self.arrived(rank, self.finished(rank, job), run_id, payload, job)

    def free_slot(self, rank: int) -> None:
        # Entries of ``single`` whose rank no longer has exactly one group are skipped later.
        self.inflight[rank] -= 1
        (self.idle if self.inflight[rank] == 0 else self.single).append(rank)
        holding = self.holding[rank]
        holding.popleft()
        if holding:  # the queued group starts as soon as the previous one's result is sent
            holding[0][2] = time.monotonic()
        if len(holding) < 2:
            self.queued.discard(rank)

    def given_back(self, rank: int, run_id: int, send_id: int, job: Job | None) -> None:
        """``rank`` gave back queued group #send_id unstarted: off its ledger, to be resent
        (dropped if its run was abandoned)."""
        holding = self.holding[rank]
        entry = next((entry for entry in holding if entry[3] == send_id), None)
        if entry is None or not entry[4]:
            raise InternalError(f"rank {rank} gave back group #{send_id}, which rank 0 did "
                                f"not ask back from it")
        was_running = entry is holding[0]
        holding.remove(entry)
        if was_running and holding:  # its result was sent: the next one starts now
            holding[0][2] = time.monotonic()
        if len(holding) < 2:
            self.queued.discard(rank)
        self.inflight[rank] -= 1
        (self.idle if self.inflight[rank] == 0 else self.single).append(rank)
        if job is not None and run_id == job.run_id:
            job.taking -= 1
            heapq.heappush(job.taken, (send_id, entry[1]))

    def take_back(self, job: Job) -> None:
        """The driver has nothing to hand out now: ask back one queued group of this run for
        each idle worker, from the ranks whose running group has run longest. A group comes
        back either GIVEN (not started: resent to an idle worker) or DONE (it had started)."""
        wanted = len(self.idle) - job.taking
        if wanted <= 0 or not self.queued:
            return
        now = time.monotonic()
        asked = sorted(((self.holding[rank][0][2] or now, rank, entry)
                        for rank in self.queued if self.listens[rank]
                        for entry in self.askable(rank, job)),
                       key=lambda item: item[:2])
        for _, rank, entry in asked[:wanted]:
            self.ask_back(job, rank, entry)

    def straggles(self, rank: int, job: Job, now: float) -> bool:
        """Whether rank's running group of this run has run STRAGGLER_FACTOR times what its
        psets take on average, and STRAGGLER_MIN_SECONDS (never before a pset was timed)."""
        holding = self.holding[rank]
        if not holding or job.pset_seconds is None:
            return False
        run_id, group, started = holding[0][:3]
        if run_id != job.run_id or started is None:
            return False
        expected = job.pset_seconds * len(group)
        return now - started > max(STRAGGLER_MIN_SECONDS, STRAGGLER_FACTOR * expected)

    def take_back_from_stragglers(self, job: Job, now: float) -> None:
        """Ask back the groups of this run queued behind a straggler."""
        self.next_straggler_check = now + max(
            STRAGGLER_CHECK_SHARE * max(STRAGGLER_MIN_SECONDS, job.typical_seconds()),
            STRAGGLER_CHECK_PER_RANK * len(self.queued))
        for rank in self.queued:
            if self.listens[rank] and self.straggles(rank, job, now):
                for entry in self.askable(rank, job):
                    self.ask_back(job, rank, entry)

    def askable(self, rank: int, job: Job) -> list[list]:
        """The ledger entries of ``rank``'s queued groups of this run not yet asked back."""
        return [entry for entry in itertools.islice(self.holding[rank], 1, None)
                if entry[0] == job.run_id and not entry[4]]

    def ask_back(self, job: Job, rank: int, entry: list) -> None:
        entry[4] = True
        job.taking += 1
        self.sends.append(self.comm.isend((TAKE, job.run_id, entry[3]), rank, TAG))

    def refill(self, job: Job, settings: dict) -> None:
        """Give idle workers a group, then (if worthwhile) busy ones their next one, but not
        stragglers; take back the groups queued behind stragglers and, while the driver has
        nothing to hand out, one for each idle worker."""
        prefetch = self.prefetch(job, settings)
        while self.idle and self.send_next(self.idle[0], job):
            rank = self.idle.popleft()
            if prefetch:
                self.single.append(rank)
        now = time.monotonic()
        # A group given back goes to the next idle worker, never queued behind a busy one.
        while prefetch and not self.idle and self.single and not job.taken:
            rank = self.single[0]
            if (self.inflight[rank] == 1 and not self.straggles(rank, job, now)
                    and not self.send_next(rank, job)):
                break
            self.single.popleft()  # sent its second group, a straggler, or a stale entry
        if self.queued and now >= self.next_straggler_check:
            self.take_back_from_stragglers(job, now)
        if job.exhausted or job.starved:
            self.take_back(job)

    def prefetch(self, job: Job, settings: dict) -> bool:
        if settings["in_flight"] is not None:
            return settings["in_flight"] >= 2
        return job.returned >= self.n_workers and job.group_seconds < PREFETCH_BELOW_SECONDS

    def send_next(self, rank: int, job: Job) -> bool:
        group = job.next_group()
        if group is None:
            return False
        blob = None if self.last_digest[rank] == job.digest else job.blob
        self.last_digest[rank] = job.digest
        send_id = next(self.send_ids)
        self.sends.append(self.comm.isend((GROUP, job.run_id, (job.digest, blob, group, send_id)),
                                          rank, TAG))
        holding = self.holding[rank]
        holding.append([job.run_id, group, None if holding else time.monotonic(), send_id, False])
        if len(holding) >= 2:
            self.queued.add(rank)
        self.inflight[rank] += 1
        return True

    def held(self) -> list[Held]:
        """The group each rank runs for the current run, and for how long (the ledger)."""
        now = time.monotonic()
        return [self.holder(rank, entry, now) for rank, entry in self.running()]

    def running(self) -> Iterator[tuple[int, list]]:
        """(rank, ledger entry) of each rank running a group of the current run."""
        for rank, holding in enumerate(self.holding):
            if holding and holding[0][0] == self.run_id:
                yield rank, holding[0]

    def holder(self, rank: int, entry: list, now: float) -> Held:
        group, started = entry[1], entry[2]
        return Held(f"rank {rank}", self.hosts[rank], tuple(group_indexes(group)),
                    now - started)

    def past_timeout(self, timeout: float, now: float) -> list[tuple[int, int, Held]]:
        """(rank, pid, Held) of each rank holding its group longer than timeout × its size.

        For a group of one pset that is the pset's timeout; for a larger one, some pset of
        it certainly ran past it (which one cannot be seen from here).
        """
        return [(rank, self.pids[rank], self.holder(rank, entry, now))
                for rank, entry in self.running()
                if now - entry[2] > timeout * len(entry[1])]

    def timeout_error(self, timeout: float, timed_out: list[tuple[int, int, Held]]
                      ) -> PsetTimeout:
        where = "; ".join(
            f"pset{'s' * (len(h.indexes) != 1)} {', '.join(map(str, h.indexes))} on rank "
            f"{rank} (host {h.host}, pid {pid}), held for {h.seconds:.1f} s"
            for rank, pid, h in timed_out)
        return PsetTimeout(f"past timeout={timeout:g} s per pset: {where}. "
                           f"mpi={{'abort_on_timeout': True}}: what came back is committed, "
                           f"the pset is stored as a timeout failure, and the job is aborted "
                           f"with status {EXIT_INCOMPLETE} so that a requeue takes over",
                           timed_out)

    def reap_sends(self) -> None:
        """Forget sends that completed (called while idle, when testing them is free)."""
        self.sends = [request for request in self.sends if not request.test()[0]]

    def shutdown(self) -> None:
        """At exit: stop every worker and await each goodbye; abort workers still busy."""
        if self.stopped or self.MPI.Is_finalized():
            return
        self.stopped = True
        try:
            for rank in range(1, self.n_workers + 1):
                self.sends.append(self.comm.isend((STOP, None, None), rank, TAG))
            deadline = time.monotonic() + (0.0 if self.abandoned else EXIT_GRACE_SECONDS)
            waiting, backoff = self.n_workers, Backoff()
            while waiting:
                byes = self.drain(None)  # outcomes of abandoned groups are dropped
                waiting -= byes
                if waiting and any(self.inflight) and time.monotonic() > deadline:
                    self.abort_busy_workers()
                if not byes:
                    backoff.sleep(POLL_MAX)
            for request in self.sends:
                wait(request)
            while self.receiving:  # every worker said BYE after its last outcome was sent
                self.collect(None)
                backoff.sleep(POLL_MAX)
        except BaseException:  # Ctrl-C while waiting for busy workers included: never hang
            abort(self.world, "error while stopping the workers")

    def abort_busy_workers(self) -> NoReturn:
        busy = [rank for rank, n in enumerate(self.inflight) if n]
        status = EXIT_INCOMPLETE if self.abandoned else 1
        say_and_abort(self.world, f"psmpi: at exit, worker rank(s) {busy} still run groups "
                                  f"nobody will collect; aborting the job (status {status})\n",
                      status)


def install_excepthook(world) -> None:
    """Abort the job on an uncaught exception in the script on rank 0.

    Otherwise rank 0 would wait at exit for workers busy with groups nobody wants, or, under
    plain ``python`` (not ``-m mpi4py``), hang in MPI_Finalize.
    """
    previous = sys.excepthook

    def abort_on_uncaught(exc_type, exc, tb):
        previous(exc_type, exc, tb)
        say_and_abort(world, f"psmpi: uncaught {exc_type.__name__} on MPI rank 0 (host {HOST}); "
                             f"aborting all {world.Get_size()} ranks\n")

    sys.excepthook = abort_on_uncaught


def exit_now(status: int) -> NoReturn:
    """End a worker rank without returning into the user's script.

    Not sys.exit(): SystemExit would unwind through the script (finally blocks, context
    managers around init()) and run its atexit handlers on every rank. Not os._exit() either:
    it skips the C library's exit handlers, which MPICH needs (Hydra then reports the rank as
    killed by signal 9). The C library's exit() runs those and no Python-level handler.
    """
    try:
        libc_exit = ctypes.CDLL(None).exit
    except (OSError, AttributeError):  # no C library by that name (Windows)
        os._exit(status)
    libc_exit(status)
    os._exit(status)  # exit() does not return


class Worker:
    """A rank > 0: run groups for rank 0 until it says stop.

    Messages from rank 0 go to ``pending`` in their order; a TAKE removes its group from
    there if it has not started (and says GIVEN), else is ignored (the group's DONE tells).
    While a group computes, a listener thread receives them, so that a group queued behind
    a long one can be given back at once; otherwise the main thread does, between groups.
    ``mpi_lock`` makes the two take turns: the main thread holds it except while computing.
    """

    def __init__(self, MPI, settings: dict):
        from mpi4py.util import pkl5
        self.MPI, self.world = MPI, MPI.COMM_WORLD
        self.comm = pkl5.Intracomm(self.world)
        self.rank = self.world.Get_rank()
        self.poll_max = settings["poll_max"]
        self.task: Task | None = None
        self.digest: bytes | None = None
        self.fault = os.environ.get(FAULT_ENV) == f"worker-internal:{self.rank}"
        self.status = MPI.Status()
        self.pending: collections.deque[tuple] = collections.deque()  # (kind, run_id, payload)
        # The task of a group given back before it was unpacked: the master sends it once.
        self.spare: tuple[bytes, bytes] | None = None
        self.mpi_lock = threading.Lock()
        # Two threads calling MPI need MPI_THREAD_MULTIPLE (mpi4py asks for it by default).
        self.listens = MPI.Query_thread() == MPI.THREAD_MULTIPLE
        # (request, buffer) of each message started to rank 0 and not known to be in
        self.unsent: collections.deque[tuple[Any, bytes]] = collections.deque()
        layout = node_layout(MPI)
        worker_setup.SLOT, worker_setup.LOCAL_RANK = layout.slot, layout.local_rank

    def serve_forever(self) -> NoReturn:
        # Rank 0 decides when the job ends (the launcher signals every rank): a worker dying
        # on SIGTERM, SIGUSR1 or Ctrl-C would kill the job before rank 0 drained and saved.
        ignore_stop_signals()
        self.mpi_lock.acquire()  # held to the end: the listener never calls MPI after serve()
        try:
            if self.listens:
                threading.Thread(target=self.listen, name="psmpi-listener", daemon=True).start()
            # Tells rank 0 where this rank runs, for reports of stalled workers.
            self.send((HELLO, None, (HOST, os.getpid(), self.listens)), TAG)
            self.serve()
            self.settle_unsent(0)
            wait(self.send((BYE, None, None), TAG)[0], self.poll_max)
        except SystemExit:  # Task turns Exceptions into data; sys.exit() gets through
            abort(self.world, "the worker function called sys.exit()")
        except BaseException:
            abort(self.world, "internal error in psmpi's worker service loop")
        sys.stdout.flush()
        sys.stderr.flush()
        self.MPI.Finalize()
        exit_now(0)

    def serve(self) -> None:
        """Run groups in the order they came, until STOP. Holds ``mpi_lock`` except while
        computing."""
        while True:
            kind, run_id, payload = self.next_message()
            if kind == STOP:
                return
            group = self.unpack(payload)
            self.mpi_lock.release()  # the listener receives while this group computes
            try:
                outcome = self.task(group, self.rank)
            finally:
                self.mpi_lock.acquire()
            # Not waiting for rank 0 to take it in: the next pending group starts now, and
            # the listener thread moves the outcome on while it computes.
            self.send((DONE, run_id, (payload[3], outcome)), DONE_TAG)
            self.settle_unsent(MAX_UNSENT)

    def settle_unsent(self, keep: int) -> None:
        """Wait until at most ``keep`` messages to rank 0 are still on their way."""
        while len(self.unsent) > keep:
            wait(self.unsent.popleft()[0], self.poll_max)

    def send(self, obj: Any, tag: int) -> tuple[Any, bytes]:
        """Start sending ``obj`` to rank 0 (``mpi_lock`` held); it completes in the
        background (``unsent``)."""
        sending = send_pickled(self.MPI, self.world, obj, tag)
        self.unsent.append(sending)
        return sending

    def progress(self) -> None:
        """Let MPI move the messages to rank 0 on their way; forget those that arrived
        (``mpi_lock`` held)."""
        while self.unsent and self.unsent[0][0].Test():
            self.unsent.popleft()

    def next_message(self) -> tuple:
        """The oldest pending GROUP or STOP, once every TAKE that arrived was answered."""
        backoff = Backoff(alert=ALERT_SECONDS)
        while True:
            self.progress()
            if self.receive_arrived():
                backoff.reset()
            if self.pending:
                return self.pending.popleft()
            backoff.sleep(self.poll_max)

    def listen(self) -> NoReturn:
        """The listener thread: receive, and move the outcomes on their way to rank 0,
        while the main thread computes (it holds the lock otherwise)."""
        try:
            backoff = Backoff(spin=0.0, shortest=LISTENER_POLL_MIN)
            while True:
                with self.mpi_lock:
                    self.progress()
                    if self.receive_arrived():
                        backoff.reset()
                backoff.sleep(self.poll_max)
        except BaseException:
            abort(self.world, "internal error in psmpi's worker listener thread")

    def receive_arrived(self) -> bool:
        """Receive every message that has arrived (``mpi_lock`` held); whether any had."""
        received = False
        while True:
            message = self.comm.improbe(0, TAG, self.status)
            if message is None:
                return received
            received = True
            kind, run_id, payload = wait(message.irecv(), self.poll_max)
            if kind == TAKE:
                self.give_back(run_id, payload)
            elif kind in (GROUP, STOP):
                self.pending.append((kind, run_id, payload))
            else:
                raise InternalError(f"worker got a {kind!r} message")

    def give_back(self, run_id: int, send_id: int) -> None:
        """Rank 0 asks group #send_id back: give it if it has not started. If it has, its
        DONE answers (MPI keeps rank 0's messages in order, so a TAKE never comes before
        its GROUP)."""
        for item in self.pending:
            if item[0] == GROUP and item[2][3] == send_id:
                self.pending.remove(item)
                digest, blob = item[2][:2]
                if blob is not None:  # later groups of this task come without it
                    self.spare = (digest, blob)
                self.send((GIVEN, run_id, send_id), TAG)
                return

    def unpack(self, payload: tuple) -> Group:
        digest, blob, group, _ = payload
        if blob is None and digest != self.digest and self.spare and self.spare[0] == digest:
            blob = self.spare[1]
        if blob is not None:
            self.task, self.digest = cloudpickle.loads(blob), digest
        if digest != self.digest:
            raise InternalError("got a group of a task this worker never received")
        if self.fault:
            raise InternalError(f"fault injected by {FAULT_ENV}={os.environ[FAULT_ENV]}")
        return group

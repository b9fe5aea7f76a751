"""The ray backend: groups of psets as ray tasks, on a local ray or an existing cluster.

``init(backend="ray")`` starts a local ray with ``ncores`` CPUs, or with ``ray={"address":
...}`` connects to a running cluster. Ray is started or connected once per process and left
running until the interpreter exits: later maps and backends reuse it, and a ray that the
user initialised is never shut down by psmpi.

Each group from the driver becomes one ray task. A pset that carries per-pset options
(``{"a": 1, "ray": {"num_gpus": 1}}``, split off by :mod:`psmpi.driver.source` into a
:class:`~psmpi.backends.resources.ResourcedPset`) becomes a task of its own with those options. The
driver keeps ``IN_FLIGHT_PER_WORKER`` tasks per task slot of the cluster in flight
(:mod:`psmpi.backends.pool`, the skeleton shared with multiprocessing): one
running, one waiting in ray's queue for whichever worker frees up first. The cluster's
CPUs are read again every ``CAPACITY_SECONDS``, so a cluster that grows or shrinks stays full.

Failures. An exception in the worker function is data (:class:`~psmpi.worker.task.Task`). When the
ray worker running a task dies (killed, segfault, ``os._exit``, out of memory, a lost node),
ray runs the task again, up to ``max_retries`` times. A group that still fails is split into
single psets, each with the same retries, and a pset whose worker still dies is recorded as
``crashed``. An exception that escapes Task on the worker (say, the worker function cannot
be unpickled on a node that lacks one of its modules) fails the group's psets with kind
``exception``, without retries: running them again would fail again.

Watching. Ray cannot tell the driver when a task starts or which pset it is on, and a
report per group would cost as much as the group, so workers speak up only when it
matters. A watchdog thread in each ray worker reports a group that has run
``REPORT_AFTER`` seconds, with the pset it is on, again each time the pset changes and
every ``REPORT_EVERY`` seconds; groups expected to take at least ``ANNOUNCE_MIN_SECONDS``
(and those of a worker function not timed yet, and reruns) also announce their start, so a
worker stopped at once is seen too. Reports go to a small actor the driver reads every
``POLL_SECONDS``. From them
:meth:`RayBackend.held` lists who holds what, and with ``timeout=`` the driver kills
(``ray.cancel(force=True)``) a task whose pset has run longer: that pset becomes a
``timeout`` failure and the group's other psets run again. A worker silent for
``SILENT_SECONDS`` (stopped, or a C call holding the GIL) is timed by what it last said: a
group that may be on any of several psets is killed after ``timeout`` seconds of silence
and its psets run again one per task, where the stuck one is caught for certain.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import itertools
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from ..errors import BackendError, ConfigError, warn
from ..worker import context
from ..worker.task import CRASHED, EXCEPTION, HOST, TIMEOUT, GroupOutcome, Task, describe, failed_outcome
from .base import CRASH_MESSAGE, Group, Held, Options, option, resolve_ncores
from .pool import PoolBackend
from .resources import ResourcedPset

# How often the cluster's size is read again (an RPC of ~0.5 ms).
CAPACITY_SECONDS = 1.0
# Runs of a task whose worker died, after the first (ray's own default).
DEFAULT_MAX_RETRIES = 3
INSTALL = "pip install 'psmpi[ray]'"

# Keys of ray={...} that say how to reach ray; every other key is an option of each task.
CONNECT_KEYS = ("address", "init")
# Options whose values psmpi relies on: a task returns one outcome.
FIXED_TASK_OPTIONS = ("num_returns",)
# What a task asks for, and the cluster resource that has to hold it.
DEMANDS = (("num_cpus", "CPU"), ("num_gpus", "GPU"), ("memory", "memory"))

# Watching (see the module docstring). The watchdog thread of a ray worker looks this often.
WATCH_TICK = 0.25
# A group running this long (at most half the timeout) is reported, with its pset ...
REPORT_AFTER = 1.0
# ... and again this often while it runs, so the driver can tell a silent worker.
REPORT_EVERY = 1.0
# Groups expected to run this long announce their start: a round trip of ~1 ms is <= 0.2 %.
ANNOUNCE_MIN_SECONDS = 0.5
# How often the driver reads the reports, while some task may have something to say.
POLL_SECONDS = 0.5
# No report for this long from a reported group: its worker is stopped or holds the GIL.
SILENT_SECONDS = 5.0
MONITOR_NAMESPACE = "psmpi"
# Worker function digest -> (seconds, count) of its finished groups in this process.
GROUP_SECONDS: dict[str, tuple[float, int]] = {}
# Keys of tasks in the workers' reports: unique in this process, as its reports actor is.
TASK_KEYS = itertools.count(1)


class _Runtime:
    """This process's ray, as far as psmpi is concerned."""

    connected_with: dict | None = None  # the connect options psmpi started ray with
    local = False                       # psmpi started a local ray: its size is fixed
    remotes: dict = {}                  # max_calls -> run_group as a ray remote function
    monitor: tuple | None = None        # (ray job id, actor name, handle) of the reports actor


def available_ray() -> bool:
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


def import_ray():
    """The ray module, or a BackendError naming the install command."""
    try:
        import ray
    except ImportError as exc:
        raise BackendError(f"backend 'ray' needs ray ({exc}); install it with: {INSTALL}") from exc
    return ray


def run_group(task: Task, group: Group, watch: tuple | None = None) -> GroupOutcome:
    """What one ray task does: one group through the worker function.

    ``watch``: (reports actor name, task key, announce) for this process's watchdog.
    """
    if watch is None:
        return task(group)
    _WATCHDOG.begin(watch, task, group)
    try:
        return task(group)
    finally:
        _WATCHDOG.current = None


class Monitor:
    """The ray actor that holds the workers' reports until the driver takes them."""

    def __init__(self):
        self.reports: list[tuple] = []

    def report(self, *report) -> None:
        self.reports.append(report)

    def take(self) -> list[tuple]:
        reports, self.reports = self.reports, []
        return reports


def monitor_actor(ray) -> tuple[str, Any] | None:
    """(name, handle) of this driver's reports actor, started once per ray session; None
    (with a warning) if ray cannot start it: then nothing is watched."""
    job = ray.get_runtime_context().get_job_id()
    if _Runtime.monitor is None or _Runtime.monitor[0] != job:
        name = f"monitor-{uuid.uuid4().hex}"
        try:
            handle = ray.remote(num_cpus=0, max_restarts=-1)(Monitor).options(
                name=name, namespace=MONITOR_NAMESPACE).remote()
            # Its process starts now (~0.5 s, once per session, like ray's own start), not
            # while the first groups announce themselves to it or a timed map runs.
            ray.get(handle.take.remote(), timeout=60)
        except Exception as exc:
            warn(f"psmpi: backend 'ray' could not start its reports actor "
                 f"({describe(exc)}), so stalled ray workers are not reported and "
                 f"timeout= is not enforced")
            handle = None
        _Runtime.monitor = (job, name, handle)
    name, handle = _Runtime.monitor[1:]
    return (name, handle) if handle is not None else None


class Watchdog:
    """In a ray worker process: reports the group it runs once that takes a while.

    The task sets :attr:`current` (two stores a group); a thread started on the first
    group reads it and the pset being computed (psmpi.worker.context) every ``WATCH_TICK``.
    A report is (key, host, pid, pset index or None, seconds on that pset, seconds on the
    group), fire and forget.
    """

    def __init__(self):
        # (actor name, key, report after seconds, monotonic start, first pset index)
        self.current: tuple | None = None
        self.thread: threading.Thread | None = None
        self.actors: dict[str, Any] = {}

    def begin(self, watch: tuple, task: Task, group: Group) -> None:
        name, key, announce = watch
        after = REPORT_AFTER if not task.timeout else min(REPORT_AFTER, task.timeout / 2)
        start = time.monotonic()
        if announce:
            actor = self.actor(name)
            if actor is not None:
                with contextlib.suppress(Exception):  # the driver is gone: nobody to tell
                    import ray
                    ray.get(actor.report.remote(key, HOST, os.getpid(), None, 0.0, 0.0),
                            timeout=5)
        self.current = (name, key, after, start, group[0][0])
        if self.thread is None:
            self.thread = threading.Thread(target=self.loop, name="psmpi-watchdog",
                                           daemon=True)
            self.thread.start()

    def actor(self, name: str):
        """The reports actor, looked up by name once per process (None: not there)."""
        actor = self.actors.get(name)
        if actor is None:
            try:
                import ray
                actor = self.actors[name] = ray.get_actor(name, namespace=MONITOR_NAMESPACE)
            except Exception:  # not registered yet, or gone with its driver: try later
                return None
        return actor

    def loop(self) -> None:
        group = pset = None   # the group (current tuple) and pset (bookkeeping entry) seen
        pset_start = sent = 0.0
        said = None           # (group, pset index) last reported
        while True:
            time.sleep(WATCH_TICK)
            current = self.current
            if current is None:
                continue
            now = time.monotonic()
            name, key, after, start, first = current
            entry = context.pending()  # (task, index, ...) of the pset computed now
            if current is not group:
                group, pset = current, None
            if entry is not pset:
                pset = entry
                # A later pset was first seen now, so started at most a tick ago: timed
                # from now, it is never killed early.
                pset_start = start if entry is not None and entry[1] == first else now
            index = pset[1] if pset is not None else None  # None: psmpi's own work
            if now - start < after or (said == (key, index) and now - sent < REPORT_EVERY):
                continue
            actor = self.actor(name)
            if actor is None:
                continue
            with contextlib.suppress(Exception):
                actor.report.remote(key, HOST, os.getpid(), index,
                                    now - pset_start if index is not None else 0.0,
                                    now - start)
                said, sent = (key, index), now


_WATCHDOG = Watchdog()


def pset_task_options(resources: dict) -> dict:
    """A pset's ``"ray": {...}`` as ray task options (num_cores renamed num_cpus)."""
    options = dict(resources)
    if "num_cores" in options:
        options["num_cpus"] = options.pop("num_cores")
    return options


@dataclasses.dataclass(frozen=True)
class RayOptions(Options):
    """``ray={...}``: how to reach ray, and the options of every task. Keys not declared
    here are task options, passed on to ray's ``.options()``, which refuses unknown ones
    (:func:`checked_submitter` names them before ray starts)."""

    PASSED_ON = "tasks"

    address: str | None = option(
        None, "be a non-empty str such as 'auto', '10.0.0.1:6379' or 'ray://10.0.0.1:10001'",
        lambda value: value is None or bool(value))
    init: dict | None = option(  # noqa: RUF009 (a field with a default of None)
        None, "be a dict of further ray.init() keyword arguments, without 'address' (give "
              "that as ray={'address': ...})",
        lambda value: value is None or "address" not in value)
    # -1 (ray's "forever") would let a pset that kills its worker stall the map for good.
    max_retries: int = option(DEFAULT_MAX_RETRIES, "be an int >= 0: how often a task whose "
                                                   "worker died runs again",
                              lambda value: value >= 0)
    tasks: dict = dataclasses.field(default_factory=dict)


def split_options(options: RayOptions, max_tasks_per_child: int | None) -> tuple[dict, dict]:
    """``ray={...}`` as (how to reach ray, the options of every task); ConfigError if bad."""
    connect = {key: getattr(options, key) for key in CONNECT_KEYS
               if getattr(options, key) is not None}
    tasks = dict(options.tasks)
    fixed = sorted(set(tasks) & set(FIXED_TASK_OPTIONS))
    if fixed:
        raise ConfigError(f"ray={{...}}: psmpi sets {fixed} itself; leave it out")
    if "num_cores" in tasks:
        if "num_cpus" in tasks:
            raise ConfigError("ray={...}: num_cpus and num_cores are the same option; give one")
        tasks["num_cpus"] = tasks.pop("num_cores")
    tasks["max_retries"] = options.max_retries
    if max_tasks_per_child:
        tasks.setdefault("max_calls", max_tasks_per_child)  # ray restarts the worker after N
    return connect, tasks


def remote_function(ray, max_calls: int | None):
    """run_group as a ray remote function; max_calls can only be set here, not per call."""
    remote = _Runtime.remotes.get(max_calls)
    if remote is None:
        remote = ray.remote(run_group) if max_calls is None else \
            ray.remote(max_calls=max_calls)(run_group)
        _Runtime.remotes[max_calls] = remote
    return remote


def checked_submitter(ray, task_options: dict, what: str):
    """The remote function with ``task_options``; ray checks them, we name the culprit."""
    options = dict(task_options)
    try:
        return remote_function(ray, options.pop("max_calls", None)).options(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: ray refuses the task options {task_options!r}: "
                          f"{describe(exc)}") from None


def connect(ray, connect: dict, ncores: int | None) -> None:
    """Start or join ray, once per process."""
    if ray.is_initialized():
        if connect and connect != _Runtime.connected_with:
            running = ("initialised outside psmpi" if _Runtime.connected_with is None
                       else f"started by psmpi with {_Runtime.connected_with!r}")
            raise ConfigError(f"ray={connect!r} cannot take effect: ray is already running in "
                              f"this process ({running}) and connects once per process. Leave "
                              f"'address' and 'init' out to use it, or call ray.shutdown() first")
        return
    kwargs = dict(connect.get("init", {}))
    address = connect.get("address")
    local = address is None and not os.environ.get("RAY_ADDRESS")
    if address is not None:
        kwargs["address"] = address
    if local:
        kwargs.setdefault("num_cpus", resolve_ncores(ncores))
        kwargs.setdefault("include_dashboard", False)
    quiet_start = "logging_level" not in kwargs
    kwargs.setdefault("logging_level", logging.ERROR)  # ray's start-up banner and notices
    try:
        with driver_path_for_workers(local):
            ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError, TypeError) as exc:
        raise BackendError(f"backend 'ray' could not start or reach ray with ray.init"
                           f"({kwargs!r}): {describe(exc)}") from exc
    if quiet_start:
        logging.getLogger("ray").setLevel(logging.WARNING)  # from now on, warnings matter
    _Runtime.connected_with = connect
    _Runtime.local = local


@contextlib.contextmanager
def driver_path_for_workers(local: bool) -> Iterator[None]:
    """While a local ray starts, PYTHONPATH is the driver's sys.path.

    Its processes inherit the environment, so its workers import what the driver can, as
    with multiprocessing: modules on sys.path entries added at run time included (a worker
    function defined in a test module). Faster than a runtime_env, whose workers cannot be
    started ahead (their first tasks wait ~1 s).
    """
    if not local:
        yield
        return
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(sys.path)
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def task_slots(totals: dict, task_cpus: float) -> int:
    """How many tasks of ``task_cpus`` CPUs the cluster runs at once (at least 1)."""
    cpus = totals.get("CPU", 0.0)
    return max(1, int(cpus // task_cpus) if task_cpus > 0 else int(cpus))


def shortfall(options: dict, totals: dict) -> str | None:
    """What a task with ``options`` asks for beyond the whole cluster, or None."""
    demands = [(key, options.get(key) or 0, resource) for key, resource in DEMANDS]
    demands += [(f"resources[{name!r}]", want, name)
                for name, want in (options.get("resources") or {}).items()]
    for key, want, resource in demands:
        have = totals.get(resource, 0)
        if want > have:
            return f"{key}={want:g} but this local ray has {have:g} {resource} in all"
    return None


class Track:
    """What the driver knows of one task in flight: its group and the workers' reports."""

    __slots__ = ("ref", "group", "options", "runs", "key", "sent", "started", "host", "pid",
                 "index", "since", "heard", "verdict")

    def __init__(self, ref, group: Group, options: dict | None, runs: int, key: int):
        self.ref, self.group, self.options, self.runs, self.key = ref, group, options, runs, key
        self.sent = time.monotonic()
        self.started: float | None = None  # when the group started (driver's clock), once told
        self.host, self.pid = "", 0
        self.index: int | None = None      # the pset it is on; None: unknown or psmpi's work
        self.since = 0.0                   # when that pset started
        self.heard = 0.0                   # when its last report came
        self.verdict: tuple | None = None  # why the driver killed it (see RayBackend.overdue)

    def hear(self, received: float, host: str, pid: int, index: int | None,
             pset_seconds: float, group_seconds: float) -> None:
        """A report read at ``received``. Times are kept as the earliest each report allows:
        a report read late makes a pset look younger, never older, so none is killed early."""
        started = received - group_seconds
        if self.started is None or pid != self.pid:  # first report, or ray's rerun elsewhere
            self.started, self.index = started, None
        self.started = min(self.started, started)
        since = received - pset_seconds
        if index is None or index != self.index:
            self.since = since
        self.since = min(self.since, since)
        self.host, self.pid, self.index, self.heard = host, pid, index, received

    def holding(self, silent: bool) -> tuple[list[int], float]:
        """The psets it may be on and since when: one if it reports, else all it might be."""
        indexes = [index for index, _ in self.group]
        if self.index is None:
            return indexes, self.started
        if silent:  # it may have gone on since it last spoke
            return indexes[indexes.index(self.index):], self.since
        return [self.index], self.since


def gone(track: Track) -> bool:
    """Whether a task's reported worker is known to be dead (only on this host can we look:
    elsewhere its pset's time counts from the dead worker's report until the rerun's)."""
    if track.host != HOST:
        return False
    try:
        os.kill(track.pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        pass
    return False


class RayBackend(PoolBackend):
    """Groups as ray tasks; see the module docstring."""

    name = "ray"
    options_class = RayOptions
    survives_crashes = True  # ray retries a dead worker's task, then splits the group

    def check_gpus(self, gpus_per_worker: int) -> None:
        # A ray task runs in whichever worker process ray picks: no stable slot to give
        # devices to. Ray shares out GPUs itself and sets CUDA_VISIBLE_DEVICES per task.
        raise ConfigError(f"gpus_per_worker={gpus_per_worker} is not for the ray backend: ray "
                          f"gives each task its own GPUs and sets CUDA_VISIBLE_DEVICES itself; "
                          f"use ray={{'num_gpus': {gpus_per_worker}}} instead")

    def __init__(self, options, ncores=None, max_tasks_per_child=None):
        super().__init__(options, ncores, max_tasks_per_child)
        self.ray = import_ray()
        connect_options, self.task_options = split_options(self.options, max_tasks_per_child)
        # Checked before ray starts: a typo fails in a fraction of a second.
        self.submitter = checked_submitter(self.ray, self.task_options, "ray={...}")
        connect(self.ray, connect_options, ncores)
        self.totals = self.ray.cluster_resources()
        self.task_cpus = self.task_options.get("num_cpus", 1)
        if _Runtime.local:  # a local ray never grows: a task too big for it would wait forever
            short = shortfall({"num_cpus": 1, **self.task_options}, self.totals)
            if short:
                raise ConfigError(f"ray={{...}} asks every task for {short}; ask for less, or "
                                  f"start the local ray bigger (ncores=, "
                                  f"ray={{'init': {{'num_gpus': ...}}}})")
        self.slots = task_slots(self.totals, self.task_cpus)
        self.checked = time.monotonic()
        # self.pending: ref -> Track (the group, its task options, its runs before)
        self.tracks: dict[int, Track] = {}  # the same, by the key the workers report
        # Pset index -> how often it ran in a bigger group before it was split off.
        self.runs_before: dict[int, int] = {}
        self.monitor = monitor_actor(self.ray)  # (name, handle), or None: nothing watched
        self.poll = None  # the monitor's answer to the driver's last question, until read
        self.polled = self.next_watch = 0.0
        self.read = 0.0   # when the driver last read the reports
        self.timeout: float | None = None
        self.digest = ""  # of the map's worker function: keys GROUP_SECONDS

    @classmethod
    def available(cls) -> bool:
        return available_ray()

    @property
    def n_workers(self) -> int:
        return self.slots

    def start(self, task: Task):
        self.timeout, self.digest = task.timeout, task.digest
        return self.ray.put(task)  # shipped once per map; each task refers to it

    def capacity(self) -> int:
        self.refresh_capacity()
        return self.slots

    def submit(self, task_ref, group: Group, again: bool) -> bool:
        if again:  # rare (a crash or a kill), and then worth a watch from the start
            options = self.pset_options(group[0]) if type(group[0][1]) is ResourcedPset \
                else None
            self.submit_task(task_ref, group, options, self.runs_before.get(group[0][0], 0),
                             announce=True)
        else:
            self.submit_group(task_ref, group)
        return True

    def wait(self, seconds: float) -> list:
        refs = list(self.pending)
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=seconds)
        if ready and len(refs) > 1:
            ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        return ready

    def refresh_capacity(self) -> None:
        if time.monotonic() - self.checked >= CAPACITY_SECONDS:
            self.slots = task_slots(self.ray.cluster_resources(), self.task_cpus)
            self.checked = time.monotonic()

    def submit_group(self, task_ref, group: Group) -> None:
        """One task for the psets without options; one each for psets with their own."""
        plain = [item for item in group if type(item[1]) is not ResourcedPset]
        if plain:
            self.submit_task(task_ref, plain, None, 0)
        if len(plain) < len(group):
            for item in group:
                if type(item[1]) is ResourcedPset:
                    self.submit_task(task_ref, [item], self.pset_options(item), 0)

    def pset_options(self, item: tuple[int, ResourcedPset]) -> dict:
        index, pset = item
        options = {**self.task_options, **pset_task_options(pset.resources)}
        if _Runtime.local:
            short = shortfall({"num_cpus": 1, **options}, self.totals)
            if short:
                raise ConfigError(f"pset {index} asks for {short}, so it could never run; "
                                  f"change its 'ray' options or start the local ray bigger")
        return options

    def submit_task(self, task_ref, group: Group, options: dict | None, runs: int,
                    announce: bool = False) -> None:
        """Hand ``group`` to ray; ``runs``: how often it ran before as part of a bigger group.

        ``announce``: the group reports its start even if groups are short (see announce()).
        """
        submitter = self.submitter
        if options is not None:
            submitter = checked_submitter(self.ray, options, f"pset {group[0][0]}")
        key = next(TASK_KEYS)
        watch = None if self.monitor is None else (self.monitor[0], key,
                                                   announce or self.announce())
        ref = submitter.remote(task_ref, group, watch)
        self.pending[ref] = self.tracks[key] = Track(ref, group, options, runs, key)

    def announce(self) -> bool:
        """Whether a group should announce its start: when groups are long, or not known yet."""
        total, count = GROUP_SECONDS.get(self.digest, (0.0, 0))
        return count == 0 or total >= ANNOUNCE_MIN_SECONDS * count

    def collect(self, ref, track: Track) -> list[GroupOutcome]:
        """The outcome of a finished task; after a dead worker, its psets' next step."""
        del self.tracks[track.key]
        group, options, runs_before = track.group, track.options, track.runs
        exceptions = self.ray.exceptions
        try:
            outcome = self.ray.get(ref)
            self.learn(outcome)
            return [outcome]
        except exceptions.RayTaskError as exc:  # escaped Task: would fail again the same way
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            return [failed_outcome(group, EXCEPTION, f"on the ray worker: {describe(cause)}",
                           getattr(exc, "traceback_str", "") or str(exc))]
        except exceptions.RayError as exc:  # the worker or its node died, after ray's retries
            if track.verdict is not None:  # or the driver killed it
                return self.killed(track)
            runs = 1 + (options or self.task_options).get("max_retries", DEFAULT_MAX_RETRIES)
            if len(group) > 1:
                # Alone, each pset either succeeds or is found guilty; the others are spared.
                self.runs_before.update((index, runs) for index, _ in group)
            how = (f"{runs_before + runs} times ({runs_before} in its group, {runs} alone)"
                   if runs_before else "once" if runs == 1 else f"{runs} times")
            reason = describe(exc).splitlines()[0]
            return self.split(group, lambda alone: failed_outcome(
                alone, CRASHED, f"{CRASH_MESSAGE}: ray ran it {how} and a worker died every "
                                f"time ({reason})"))

    def learn(self, outcome: GroupOutcome) -> None:
        """Add a group's duration to its map's worker function's record (see announce)."""
        if outcome.group_seconds == outcome.group_seconds:  # not NaN
            total, count = GROUP_SECONDS.get(self.digest, (0.0, 0))
            if count == 0 and len(GROUP_SECONDS) > 256:  # a long loop of maps: keep it small
                GROUP_SECONDS.clear()
            GROUP_SECONDS[self.digest] = (total + outcome.group_seconds, count + 1)

    def killed(self, track: Track) -> list[GroupOutcome]:
        """After the driver killed a task: a timed-out pset fails, the others run again."""
        if track.verdict[0] != TIMEOUT:  # stuck on one of several psets: each alone
            self.run_alone(track.group)
            return []
        _, index, seconds = track.verdict
        return self.fail_timed_out(track.group, {index: seconds}, lambda seconds: (
            f"ran longer than timeout={self.timeout:g} s: ray worker {track.pid} on "
            f"{track.host} was killed after {seconds:.1f} s; raise timeout= if the pset "
            f"needs longer"))

    def watch(self) -> None:
        """Read the workers' reports, and kill the tasks that ran past the timeout."""
        now = time.monotonic()
        if now < self.next_watch or self.monitor is None:
            return
        self.next_watch = now + WATCH_TICK
        if self.poll is not None and self.ray.wait([self.poll], timeout=0)[0]:
            try:
                reports = self.ray.get(self.poll)
            except self.ray.exceptions.RayError:  # the actor died; ray restarts it
                reports = []
            self.poll, self.read = None, now
            for key, *report in reports:
                track = self.tracks.get(key)
                if track is not None:
                    track.hear(now, *report)
        if self.poll is None and now - self.polled >= POLL_SECONDS and self.pending and \
                now - next(iter(self.pending.values())).sent >= POLL_SECONDS:
            self.poll, self.polled = self.monitor[1].take.remote(), now
        for track in list(self.tracks.values()):
            if track.started is not None and gone(track):
                track.started = None  # ray runs it again elsewhere: its worker will report
            elif self.timeout:
                verdict = self.overdue(track, now)
                if verdict is not None:
                    track.verdict = verdict
                    with contextlib.suppress(Exception):  # finished meanwhile: collect sees it
                        self.ray.cancel(track.ref, force=True)

    def silent(self, track: Track) -> bool:
        """Whether ``track``'s worker missed reports (judged by the driver's reads: a driver
        busy elsewhere for a while does not make every worker look silent)."""
        return self.read - track.heard > SILENT_SECONDS

    def overdue(self, track: Track, now: float) -> tuple | None:
        """Why the driver must kill ``track``'s task now, or None.

        (TIMEOUT, index, seconds): pset ``index`` ran past the timeout. ("stuck", seconds):
        a silent worker may be on any of several psets and has said nothing for longer than
        the timeout, so its psets run again one per task, where the stuck one is caught.
        """
        if track.started is None or track.verdict is not None:
            return None
        indexes, since = track.holding(self.silent(track))
        if len(indexes) == 1 and now - since > self.timeout:
            return (TIMEOUT, indexes[0], now - since)
        if len(indexes) > 1 and self.read - track.heard > max(self.timeout, SILENT_SECONDS):
            return ("stuck", now - track.heard)
        return None

    def held(self) -> list[Held]:
        """The tasks whose workers reported them (see the module docstring): the pset each
        is on, or all those it may be on, and for how long (the driver's reads lag ~0.5 s)."""
        now = time.monotonic()
        held = []
        for track in list(self.tracks.values()):
            if track.started is not None:
                indexes, since = track.holding(self.silent(track))
                held.append(Held(f"ray worker {track.pid}", track.host, tuple(indexes),
                                 now - since))
        return held

    def cancel_pending(self) -> None:
        """Stop the tasks in flight (their workers are killed) and forget them."""
        for ref in self.pending:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # already finished, or ray is shutting down: nothing to stop
                pass
        self.forget()

    def drop(self) -> None:
        self.cancel_pending()

    def forget(self) -> None:
        super().forget()
        self.tracks.clear()
        self.runs_before.clear()

    def close(self) -> None:
        # Ray stays up for later maps and backends; ray shuts it down at interpreter exit.
        self.cancel_pending()

    def abandon(self) -> None:
        self.cancel_pending()

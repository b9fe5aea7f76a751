"""The ray backend: groups of psets as ray tasks, on a local ray or an existing cluster.

``init(backend="ray")`` starts a local ray with ``ncores`` CPUs, or with ``ray={"address":
...}`` connects to a running cluster. Ray is started or connected once per process and left
running until the interpreter exits: later maps and backends reuse it, and a ray that the
user initialised is never shut down by psmpi.

Each group from the driver becomes one ray task. A pset that carries per-pset options
(``{"a": 1, "ray": {"num_gpus": 1}}``, split off by :mod:`psmpi.source` into a
:class:`~psmpi.source.ResourcedPset`) becomes a task of its own with those options. The
driver keeps ``IN_FLIGHT_PER_SLOT`` tasks per task slot of the cluster in flight: one
running, one waiting in ray's queue for whichever worker frees up first. The cluster's
CPUs are read again every ``CAPACITY_SECONDS``, so a cluster that grows or shrinks stays full.

Failures. An exception in the worker function is data (:class:`~psmpi.task.Task`). When the
ray worker running a task dies (killed, segfault, ``os._exit``, out of memory, a lost node),
ray runs the task again, up to ``max_retries`` times. A group that still fails is split into
single psets, each with the same retries, and a pset whose worker still dies is recorded as
``crashed``. An exception that escapes Task on the worker (say, the worker function cannot
be unpickled on a node that lacks one of its modules) fails the group's psets with kind
``exception``, without retries: running them again would fail again.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import sys
import time
from typing import Any, Iterator

from ..errors import BackendError, ConfigError
from ..source import ResourcedPset
from ..task import CRASHED, EXCEPTION, GroupOutcome, Task, describe, failed_outcome
from .base import Backend, Group
from .multiprocessing import CRASH_MESSAGE, resolve_ncores

# While waiting, run() yields None this often so the driver reports progress and drains.
HEARTBEAT_SECONDS = 0.2
# Tasks in flight per slot: one running, one queued in ray, so no worker waits for the driver.
IN_FLIGHT_PER_SLOT = 2
# How often the cluster's size is read again (an RPC of ~0.5 ms).
CAPACITY_SECONDS = 1.0
# Runs of a task whose worker died, after the first (ray's own default).
DEFAULT_MAX_RETRIES = 3
INSTALL = "pip install 'psmpi[ray]'"

# Keys of ray={...} that say how to reach ray; every other key is an option of each task.
CONNECT_KEYS = ("address", "init")
# Per-pset options, as in paramsurvey; num_cores is its alias of num_cpus.
PSET_KEYS = ("name", "memory", "num_cpus", "num_cores", "num_gpus")
# Options whose values psmpi relies on: a task returns one outcome.
FIXED_TASK_OPTIONS = ("num_returns",)
# What a task asks for, and the cluster resource that has to hold it.
DEMANDS = (("num_cpus", "CPU"), ("num_gpus", "GPU"), ("memory", "memory"))


class _Runtime:
    """This process's ray, as far as psmpi is concerned."""

    connected_with: dict | None = None  # the connect options psmpi started ray with
    local = False                       # psmpi started a local ray: its size is fixed
    remotes: dict = {}                  # max_calls -> run_group as a ray remote function


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


def run_group(task: Task, group: Group) -> GroupOutcome:
    """What one ray task does: one group through the worker function."""
    return task(group)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def resource_problems(resources: dict) -> list[str]:
    """Why a pset's ``"ray": {...}`` options are invalid, each with its fix; [] if fine.

    Needs no ray: psets are checked before anything runs, on every backend.

    >>> resource_problems({"num_gpus": 1, "memory": 2e9, "name": "big"})
    []
    >>> resource_problems({"num_gpu": 1})
    ["per-pset ray option 'num_gpu' is unknown; use name, memory, num_cpus, num_cores, num_gpus"]
    """
    problems = []
    for key, value in resources.items():
        if key not in PSET_KEYS:
            problems.append(f"per-pset ray option {key!r} is unknown; use {', '.join(PSET_KEYS)}")
        elif key == "name":
            if not isinstance(value, str) or not value:
                problems.append("per-pset ray option 'name' must be a non-empty str "
                                f"(got {value!r})")
        elif key == "memory":
            if not _is_number(value) or value <= 0:
                problems.append(f"per-pset ray option 'memory' must be bytes > 0 (got {value!r})")
        elif not _is_number(value) or value < 0:
            problems.append(f"per-pset ray option {key!r} must be a number >= 0 (got {value!r})")
    if "num_cpus" in resources and "num_cores" in resources:
        problems.append("per-pset ray options num_cpus and num_cores are the same; give one")
    return problems


def pset_task_options(resources: dict) -> dict:
    """A pset's ``"ray": {...}`` as ray task options (num_cores renamed num_cpus)."""
    options = dict(resources)
    if "num_cores" in options:
        options["num_cpus"] = options.pop("num_cores")
    return options


def split_options(options: dict, max_tasks_per_child: int | None) -> tuple[dict, dict]:
    """``ray={...}`` as (how to reach ray, the options of every task); ConfigError if bad."""
    connect = {key: options[key] for key in CONNECT_KEYS if key in options}
    address = connect.get("address")
    if address is not None and (not isinstance(address, str) or not address):
        raise ConfigError(f"ray={{'address': ...}} must be a non-empty str such as 'auto', "
                          f"'10.0.0.1:6379' or 'ray://10.0.0.1:10001' (got {address!r})")
    init = connect.get("init", {})
    if not isinstance(init, dict) or "address" in init:
        raise ConfigError(f"ray={{'init': ...}} must be a dict of further ray.init() keyword "
                          f"arguments, without 'address' (give that as ray={{'address': ...}}) "
                          f"(got {init!r})")
    tasks = {key: value for key, value in options.items() if key not in CONNECT_KEYS}
    fixed = sorted(set(tasks) & set(FIXED_TASK_OPTIONS))
    if fixed:
        raise ConfigError(f"ray={{...}}: psmpi sets {fixed} itself; leave it out")
    if "num_cores" in tasks:
        if "num_cpus" in tasks:
            raise ConfigError("ray={...}: num_cpus and num_cores are the same option; give one")
        tasks["num_cpus"] = tasks.pop("num_cores")
    retries = tasks.setdefault("max_retries", DEFAULT_MAX_RETRIES)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        # -1 (ray's "forever") would let a pset that kills its worker stall the map for good.
        raise ConfigError(f"ray={{'max_retries': ...}} must be an int >= 0: how often a task "
                          f"whose worker died runs again (got {retries!r})")
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


class RayBackend(Backend):
    """Groups as ray tasks; see the module docstring."""

    name = "ray"
    survives_crashes = True  # ray retries a dead worker's task, then splits the group

    def __init__(self, options, ncores=None, max_tasks_per_child=None):
        super().__init__(options, ncores, max_tasks_per_child)
        self.ray = import_ray()
        connect_options, self.task_options = split_options(options, max_tasks_per_child)
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
        # ref -> (group, its task options or None for the defaults, runs before: see submit)
        self.pending: dict[Any, tuple[Group, dict | None, int]] = {}
        self.retry: list[tuple[Group, dict | None, int]] = []  # single psets of failed groups

    @classmethod
    def available(cls) -> bool:
        return available_ray()

    @property
    def n_workers(self) -> int:
        return self.slots

    def run(self, task: Task, groups: Iterator[Group]) -> Iterator[GroupOutcome | None]:
        ray = self.ray
        task_ref = ray.put(task)  # shipped once per map; each task refers to it
        groups = iter(groups)
        exhausted = False
        try:
            while True:
                exhausted = self.refill(task_ref, groups, exhausted)
                if not self.pending:
                    return  # refill submits whatever exists, so nothing is left
                refs = list(self.pending)
                ready, _ = ray.wait(refs, num_returns=1, timeout=HEARTBEAT_SECONDS)
                if not ready:
                    yield None  # heartbeat: the driver reports progress and keeps deadlines
                    continue
                if len(refs) > 1:
                    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                outcomes = [outcome for ref in ready for outcome in self.collect(ref)]
                # Workers get their next tasks before the driver stores these outcomes.
                exhausted = self.refill(task_ref, groups, exhausted)
                yield from outcomes
        finally:
            self.cancel_pending()

    def refill(self, task_ref, groups: Iterator[Group], exhausted: bool) -> bool:
        """Submit tasks until the cluster's queue is full; True once groups ran out."""
        self.refresh_capacity()
        while len(self.pending) < IN_FLIGHT_PER_SLOT * self.slots:
            if self.retry:
                self.submit(task_ref, *self.retry.pop())
                continue
            if exhausted:
                break
            group = next(groups, None)
            if group is None:
                return True
            self.submit_group(task_ref, group)
        return exhausted

    def refresh_capacity(self) -> None:
        if time.monotonic() - self.checked >= CAPACITY_SECONDS:
            self.slots = task_slots(self.ray.cluster_resources(), self.task_cpus)
            self.checked = time.monotonic()

    def submit_group(self, task_ref, group: Group) -> None:
        """One task for the psets without options; one each for psets with their own."""
        plain = [item for item in group if type(item[1]) is not ResourcedPset]
        if plain:
            self.submit(task_ref, plain, None, 0)
        if len(plain) < len(group):
            for item in group:
                if type(item[1]) is ResourcedPset:
                    self.submit(task_ref, [item], self.pset_options(item), 0)

    def pset_options(self, item: tuple[int, ResourcedPset]) -> dict:
        index, pset = item
        options = {**self.task_options, **pset_task_options(pset.resources)}
        if _Runtime.local:
            short = shortfall({"num_cpus": 1, **options}, self.totals)
            if short:
                raise ConfigError(f"pset {index} asks for {short}, so it could never run; "
                                  f"change its 'ray' options or start the local ray bigger")
        return options

    def submit(self, task_ref, group: Group, options: dict | None, runs: int) -> None:
        """Hand ``group`` to ray; ``runs``: how often it ran before as part of a bigger group."""
        submitter = self.submitter
        if options is not None:
            submitter = checked_submitter(self.ray, options, f"pset {group[0][0]}")
        self.pending[submitter.remote(task_ref, group)] = (group, options, runs)

    def collect(self, ref) -> list[GroupOutcome]:
        """The outcome of a finished task; after a dead worker, its psets' next step."""
        group, options, runs_before = self.pending.pop(ref)
        exceptions = self.ray.exceptions
        try:
            return [self.ray.get(ref)]
        except exceptions.RayTaskError as exc:  # escaped Task: would fail again the same way
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            return [failed_outcome(group, EXCEPTION, f"on the ray worker: {describe(cause)}",
                           getattr(exc, "traceback_str", "") or str(exc))]
        except exceptions.RayError as exc:  # the worker or its node died, after ray's retries
            runs = 1 + (options or self.task_options).get("max_retries", DEFAULT_MAX_RETRIES)
            if len(group) > 1:
                # Alone, each pset either succeeds or is found guilty; the others are spared.
                self.retry.extend(([item], options, runs) for item in reversed(group))
                return []
            how = (f"{runs_before + runs} times ({runs_before} in its group, {runs} alone)"
                   if runs_before else "once" if runs == 1 else f"{runs} times")
            reason = describe(exc).splitlines()[0]
            return [failed_outcome(group, CRASHED, f"{CRASH_MESSAGE}: ray ran it {how} and a worker "
                                           f"died every time ({reason})")]

    def cancel_pending(self) -> None:
        """Stop the tasks in flight (their workers are killed) and forget them."""
        for ref in self.pending:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # already finished, or ray is shutting down: nothing to stop
                pass
        self.pending.clear()
        self.retry.clear()

    def close(self) -> None:
        # Ray stays up for later maps and backends; ray shuts it down at interpreter exit.
        self.cancel_pending()

    def abandon(self) -> None:
        self.cancel_pending()

"""What runs on a worker: one group of psets through the user's worker function.

A :class:`Task` is shipped to every worker (any backend). Calling it on a group returns a
:class:`GroupOutcome` made only of plain data: ints, floats, strings, numpy arrays and
pickled bytes. Exceptions travel as text, never as objects.

A group is a list of ``(index, pset)`` pairs, or a :class:`~psmpi.worker.spans.Span` of the
map's grid (the task carries the grid; the worker rebuilds and hashes the span's psets).
Its outcome is one type whatever the path, with a part for the whole group and parts per
pset. The common case, a group whose psets all succeeded with the same keys and only plain
scalar values, comes back as *columns* (``{key: values}``, numpy arrays where the values are
Python floats, bools or int64 ints; pset keys too unless the group is a span, whose pset
columns the driver rebuilds from the grid) and its hashes packed in one bytes: the driver
stores it without an object per row. Any other group is pickled *per pset* on the worker and
unpickled per pset on the driver, so a result that cannot be pickled, or that pickles but
cannot be unpickled, fails that one pset and nothing else. Plain scalars always unpickle,
so columns need no such isolation.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import math
import os
import pickle
import reprlib
import socket
import time
import traceback
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import cloudpickle
import numpy as np

from .. import params, utils, values
from ..errors import ConfigError, InternalError
from ..store import bookkeeping
from ..values import same_value, value_family  # noqa: F401 - value_family: part of the API here
from . import context, timers
from . import setup as worker_setup
from .spans import Grid, Span, group_indexes

# Failure kinds, as stored in the ``_kind`` column of the failures table.
EXCEPTION = "exception"      # the worker raised
BAD_RESULT = "bad_result"    # returned no dict or None, or changed a pset value
UNPICKLABLE = "unpicklable"  # the result could not be pickled or unpickled
UNSTORABLE = "unstorable"    # a value the store cannot hold (unpicklable, a lone surrogate)
CRASHED = "crashed"          # the process running the pset died
TIMEOUT = "timeout"          # the pset ran longer than timeout= and its worker was stopped

HOST = socket.gethostname()

# Where this worker process publishes which pset it runs and since when: a row
# [pid, pset index, time.time() at its start, 0.0 while idle] of shared memory that the
# driver reads to report stalled workers and to enforce timeout= (multiprocessing sets it;
# None elsewhere).
BEACON: np.ndarray | None = None

# time.process_time() is a system call (~1 us): measured for the first pset of a group and
# after any pset that took at least this long, so trivial psets do not pay for it.
CPU_TIMING_MIN_SECONDS = 1e-3


class GroupOutcome(NamedTuple):
    """What became of each pset of one group, field by field, stamped with where it ran.

    Lists of plain values, not one object per pset: they pickle and unpickle several times
    faster, and the driver unpickles one of these for every group.
    """

    indexes: list[int] | range          # pset indexes, in the group's order (a span's: a range)
    # pset_hash of each, computed here to spare the driver; a group sent as columns packs
    # them into one ASCII bytes (32 per pset), which the driver stores without a str each
    digests: list[str] | bytes
    payloads: list[bytes | None]        # the pickled result; None where the pset failed
    errors: dict[int, tuple[str, str, str]]  # position -> (kind, "Type: message", traceback)
    t_starts: list[float]               # time.time() when each worker call began
    runtimes: list[float]               # seconds in each worker call (NaN: unknown)
    rank: int
    host: str
    pid: int
    # Statistics (psmpi.watch.perf). Defaults keep outcomes that backends build (crashed groups) valid.
    # position -> process_time seconds of the call, for the calls measured (sparse: trivial
    # psets are not, see CPU_TIMING_MIN_SECONDS, and their NaNs would cost bytes)
    cpu_times: dict[int, float] | None = None
    # position -> {psmpi.timer section: (wall, cpu) seconds}, for psets that timed sections
    timers: dict[int, dict[str, tuple[float, float]]] | None = None
    group_seconds: float = math.nan     # wall seconds of the whole group, psmpi's work included
    wait_seconds: float = math.nan      # since this process's previous group of the same map
    peak_rss: int = 0                   # this process's peak resident set size, bytes
    # The whole group as {key: values in group order}, pset keys then result keys; then
    # payloads are all None and errors is empty. None: the rows are in payloads.
    columns: dict[str, tuple] | None = None
    # ("Type: message", traceback) of the set-up (setup=) that failed in this process: then
    # no pset of the group ran (indexes lists them, the other lists are empty) and the
    # driver stops the map with a SetupError.
    setup_error: tuple[str, str] | None = None
    # (start, stop) when the group was a Span of the map's Grid: indexes is that range, and
    # columns (if not None) hold the result keys only, as the driver rebuilds the psets.
    span: tuple[int, int] | None = None

    def digest(self, position: int) -> str:
        """The pset_hash of the pset at ``position`` ("" where unknown)."""
        if type(self.digests) is bytes:
            return self.digests[32 * position:32 * position + 32].decode("ascii")
        return self.digests[position]

    def digest_column(self) -> Any:
        """All digests as one column: an ``S32`` array if packed, else the list."""
        if type(self.digests) is bytes:
            return np.frombuffer(self.digests, dtype="S32")
        return self.digests

    def measured(self) -> tuple[float, int]:
        """Total seconds and number of psets with a known runtime."""
        total = math.fsum(self.runtimes)
        if total == total:  # no NaN: the common case, without a Python loop
            return total, len(self.runtimes)
        known = [t for t in self.runtimes if t == t]
        return math.fsum(known), len(known)


def call_mode(worker: Callable) -> int:
    """How to call ``worker``: 1 for ``worker(pset)``, 3 for paramsurvey's three arguments."""
    if not callable(worker):
        raise ConfigError(f"worker must be a callable taking a pset dict (got {worker!r})")
    try:
        params = inspect.signature(worker).parameters.values()
    except (TypeError, ValueError):
        return 1  # builtins without a signature: assume worker(pset)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if any(p.kind == p.VAR_POSITIONAL for p in params) or len(positional) >= 3 and len(required) >= 2:
        return 3
    if len(positional) >= 1 and len(required) <= 1:
        return 1
    raise ConfigError(f"worker {getattr(worker, '__name__', worker)!r} must take (pset) or "
                      f"(pset, system_kwargs, user_kwargs); its signature is {inspect.signature(worker)}")


_FUNCTIONS: dict[str, Callable] = {}  # worker-side cache: blob digest -> function


def load_function(digest: str, blob: bytes, filename: str | None) -> Callable:
    """The function cloudpickled in ``blob``, unpickled once per process."""
    fn = _FUNCTIONS.get(digest)
    if fn is None:
        if len(_FUNCTIONS) > 64:  # a greedy loop of many maps must not grow this forever
            _FUNCTIONS.clear()
        fn = _FUNCTIONS[digest] = cloudpickle.loads(blob)
        if filename:
            restore_filename(fn, filename)
    return fn


class Task:
    """The user's worker function plus everything needed to call it, picklable by value."""

    def __init__(self, worker: Callable, map_name: str, backend: str,
                 user_kwargs: dict | None = None, run_id: str | None = None,
                 calc_dir: str = "calc", timeout: float | None = None,
                 setup: Callable | None = None, gpus_per_worker: int | None = None):
        self.mode = call_mode(worker)
        # cloudpickle ships functions by value, so lambdas, closures and functions defined
        # in __main__ after init() reach the workers.
        self.blob = cloudpickle.dumps(worker)
        function = python_function(worker)
        self.filename = function.__code__.co_filename if function is not None else None
        self.digest = hashlib.blake2b(self.blob, digest_size=16).hexdigest()
        self.map_name = map_name
        self.backend = backend
        self.user_kwargs = dict(user_kwargs or {})
        self.run_id = run_id or bookkeeping.new_run_id()
        # The key of this run's pset ids: driver and workers derive them from it alike.
        self.pset_key = bookkeeping.new_pset_key()
        self.calc_dir = calc_dir
        self.timeout = timeout  # seconds per pset (timeout=); enforced by the backend
        # Tells a worker process that two groups belong to the same map (wait_seconds).
        self.token = os.urandom(8)
        # setup(context) runs once per worker process and map before its first pset
        # (psmpi.worker.setup); shipped by value like the worker.
        self.setup_name = getattr(setup, "__name__", repr(setup)) if setup else None
        self.setup_blob = cloudpickle.dumps(setup) if setup is not None else None
        self.setup_digest = (hashlib.blake2b(self.setup_blob, digest_size=16).hexdigest()
                             if self.setup_blob is not None else None)
        setup_function = python_function(setup) if setup is not None else None
        self.setup_filename = setup_function.__code__.co_filename if setup_function else None
        self.gpus_per_worker = gpus_per_worker
        # The map's psets when they form a grid sent as index ranges (spans.py): set by the
        # driver when its backend takes Span groups; shipped once with the task.
        self.grid: Grid | None = None

    def function(self) -> Callable:
        return load_function(self.digest, self.blob, self.filename)

    def __call__(self, group: list[tuple[int, dict]] | Span, rank: int = 0) -> GroupOutcome:
        """Run ``group`` (``(index, pset)`` pairs, or a Span of :attr:`grid`): its outcome."""
        fn = self.function()
        if self.setup_blob is not None or self.gpus_per_worker:
            done = worker_setup.prepared(self.run_id) or self.prepare(rank)
            if done.error is not None:  # reported by every group this process is given
                return GroupOutcome(list(group_indexes(group)), [], [], {}, [], [], rank,
                                    HOST, os.getpid(), setup_error=done.error)
        started = time.perf_counter()
        span = None
        if type(group) is Span:
            if self.grid is None:
                raise InternalError(f"a Span group {tuple(group)} reached a task without a grid")
            span = (group.start, group.stop)
            indexes: Any = group.indexes()
            psets = self.grid.psets(*span)
            digests = self.grid.hashes(*span)
        else:
            indexes = [index for index, _ in group]
            psets = [pset for _, pset in group]
            digests = list(map(params.pset_hash, psets))
        outcome = GroupOutcome(indexes, digests, [], {}, [], [], rank, HOST, os.getpid(), {}, {},
                               span=span)
        results = self.run_group(fn, psets, rank, outcome)
        if BEACON is not None:
            BEACON[2] = 0.0  # idle
        # a span's psets are rebuilt by the driver: only the result keys travel
        columns = None if outcome.errors else as_columns(None if span else psets, results)
        if columns is None:
            self.pickle_results(results, outcome)
        else:
            outcome = outcome._replace(digests="".join(digests).encode("ascii"))
        ended = time.perf_counter()
        wait = _GROUP_CLOCK.since_previous(self.token, started, ended)
        return outcome._replace(group_seconds=ended - started, wait_seconds=wait,
                                peak_rss=utils.peak_rss(), columns=columns)

    def prepare(self, rank: int) -> worker_setup.Prepared:
        """This process's GPUs, then setup(context): once per process and map, cached."""
        slot, local_rank = worker_setup.SLOT, worker_setup.LOCAL_RANK
        gpus: tuple[str, ...] = ()
        try:
            gpus = worker_setup.worker_gpus(self.gpus_per_worker, slot)
            if self.gpus_per_worker:
                worker_setup.make_visible(gpus)  # before the set-up loads anything on a GPU
            value = None
            if self.setup_blob is not None:
                setup = load_function(self.setup_digest, self.setup_blob, self.setup_filename)
                value = setup(worker_setup.SetupContext(
                    rank, local_rank if local_rank is not None else slot or 0, HOST, gpus,
                    self.backend))
            done = worker_setup.Prepared(value, None, gpus)
        except (Exception, SystemExit) as exc:  # user code: the driver stops the map
            done = worker_setup.Prepared(None, (describe(exc), traceback.format_exc()), gpus)
        return worker_setup.remember(self.run_id, done)

    def run_group(self, fn: Callable, psets: list[dict], rank: int, outcome: GroupOutcome
                  ) -> list[dict | None]:
        """Call the worker on each pset, filling ``outcome`` (its indexes and digests
        given); the results, None where failed.

        The loop runs once per pset, so it does as little as it can and names are bound
        locally: for trivial psets it is most of the time a worker spends. The wall-clock
        start of each call is derived from its perf_counter() start afterwards.
        """
        indexes, t_starts, runtimes = outcome.indexes, outcome.t_starts, outcome.runtimes
        errors, cpu_times, sections = outcome.errors, outcome.cpu_times, outcome.timers
        clock, cpu_clock = time.perf_counter, time.process_time
        one_arg, beacon, timed_sections = self.mode == 1, BEACON, timers.SECTIONS
        # every pset of a span has the grid's keys in order (the common layout key below)
        layouts = _RESULT_LAYOUTS
        pset_keys = tuple(self.grid.keys) if outcome.span is not None else None
        results: list[dict | None] = []
        append = results.append
        runtime = math.inf  # the first pset's CPU time is measured
        cursor = context.enter_group(self, indexes, outcome.digests, rank, HOST)
        wall_offset = time.time() - clock()
        try:
            for position, pset in enumerate(psets):
                cursor.position = position
                if beacon is not None:  # start last: a reader never pairs a new pset with an old start
                    beacon[2] = 0.0
                    beacon[1] = indexes[position]
                    beacon[2] = time.time()
                if timed_sections:  # sections timed outside a worker call: not this pset's
                    timed_sections.clear()
                # process_time() is a system call: skipped after a trivial pset
                measure_cpu = runtime >= CPU_TIMING_MIN_SECONDS
                c0 = cpu_clock() if measure_cpu else 0.0
                t0 = clock()
                try:
                    if one_arg:
                        result = fn(dict(pset))
                    else:
                        result = fn(dict(pset), self.system_kwargs(indexes[position], rank),
                                    self.user_kwargs)
                except Exception as exc:  # user code: its failure is data, not a crash of psmpi
                    runtime = clock() - t0
                    error = (EXCEPTION, describe(exc), traceback.format_exc())
                else:
                    runtime = clock() - t0
                    error = None
                t_starts.append(t0)
                runtimes.append(runtime)
                if measure_cpu:
                    cpu_times[position] = cpu_clock() - c0
                if timed_sections:
                    sections[position] = timers.end_pset()
                if error is None:
                    # the common case: a dict of the same keys as the last, none a pset key
                    if type(result) is dict and layouts.get(
                            (tuple(result), pset_keys or tuple(pset))) == ():
                        append(result)
                        continue
                    result, problem = checked_result(result, pset)
                    if problem is None:
                        append(result)
                        continue
                    error = (*problem, "")
                errors[position] = error
                append(None)
        finally:
            context.leave_group()
        t_starts[:] = [wall_offset + t for t in t_starts]
        return results

    def pickle_results(self, results: list[dict | None], outcome: GroupOutcome) -> None:
        """Fill ``outcome.payloads``: each result pickled alone, so only it fails if it cannot."""
        for position, result in enumerate(results):
            payload = None
            if result is not None:
                payload, error = self.pickled(result)
                if error is not None:
                    outcome.errors[position] = error
            outcome.payloads.append(payload)

    def system_kwargs(self, index: int, rank: int) -> dict:
        """paramsurvey's second argument: where and as what this pset runs."""
        the_context = context.context()
        return {"pset_index": index, "map_name": self.map_name, "backend": self.backend,
                "rank": rank, "host": HOST, "run_id": self.run_id,
                "pset_id": the_context.pset_id, "calc_dir": the_context.calc_dir,
                "setup": the_context.setup}

    @staticmethod
    def pickled(result: dict) -> tuple[bytes | None, tuple | None]:
        """The checked result pickled, or why it cannot be."""
        try:
            return pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL), None
        except Exception as exc:
            return None, (UNPICKLABLE, "result cannot be pickled: " + describe(exc),
                          traceback.format_exc())


# Exact types a column may hold: they pickle, unpickle anywhere numpy is, and the store
# takes them as one scalar kind each.
COLUMN_TYPES = values.SCALAR_COLUMN_TYPES


def as_columns(psets: list[dict] | None, results: list[dict]
               ) -> dict[str, tuple | np.ndarray] | None:
    """The group's rows as ``{key: values}`` (result keys only if ``psets`` is None), or None
    if they do not share keys and plain types.

    A column of Python floats, of bools, or of ints within int64, is a numpy array: it
    pickles as one buffer, and the driver stores it without a Python object per value.
    """
    columns: dict[str, Any] = {}
    for rows in (results,) if psets is None else (psets, results):
        keys = tuple(rows[0])
        if not all(map(keys.__eq__, map(tuple, rows))):  # in C: no Python call per row
            return None
        if keys:
            columns.update(zip(keys, zip(*map(dict.values, rows))))
    for key, column in columns.items():
        kinds = set(map(type, column))
        if not COLUMN_TYPES.issuperset(kinds):
            return None
        dtype = _NUMPY_DTYPES.get(kinds.pop()) if len(kinds) == 1 else None
        if dtype is not None:
            try:
                columns[key] = np.array(column, dtype=dtype)
            except OverflowError:  # an int beyond int64: the store keeps it exact
                pass
    return columns


# Python types whose columns travel as numpy arrays, and their dtypes
_NUMPY_DTYPES = {float: np.float64, bool: np.bool_, int: np.int64}


# cloudpickle names the file of every function it ships by value "<dynamic-code>", so
# tracebacks of a worker defined in the study script would not say where it fails.
DYNAMIC_CODE = "<dynamic-code>"


def python_function(worker: Any) -> types.FunctionType | None:
    """The plain Python function that calling ``worker`` runs, or None (a builtin).

    Unwraps bound methods (classmethods too), staticmethod and classmethod objects,
    ``functools.partial`` and instances of a class with a ``__call__`` method.
    """
    for _ in range(100):  # a partial of a partial of ...: bounded, never a loop
        if isinstance(worker, types.FunctionType):
            return worker
        if isinstance(worker, (types.MethodType, staticmethod, classmethod)):
            worker = worker.__func__
        elif isinstance(worker, functools.partial):
            worker = worker.func
        elif not isinstance(worker, type) and isinstance(
                getattr(type(worker), "__call__", None),  # noqa: B004 - the class's own __call__
                types.FunctionType):
            worker = type(worker).__call__
        else:
            return None
    return None


def restore_filename(fn: Callable, filename: str) -> None:
    """Give ``fn`` and the functions it shipped with their file name back.

    ``fn`` is any callable a worker may be; only plain functions have a ``__code__`` to set:
    the one inside ``fn`` (see :func:`python_function`), the functions among its globals
    and, for a method or a callable object, the methods of its class. (cloudpickle
    reuses a class it loaded before in the same process and sets every method again.)
    """
    function = python_function(fn)
    if function is None:
        return
    functions = [function] + [v for v in function.__globals__.values()
                              if isinstance(v, types.FunctionType)]
    for cls in _classes_of(fn):
        functions.extend(python_function(v) or v for v in vars(cls).values())
    for function in functions:
        if isinstance(function, types.FunctionType) and \
                function.__code__.co_filename == DYNAMIC_CODE:
            function.__code__ = _code_with_filename(function.__code__, filename)


def _classes_of(worker: Any) -> list[type]:
    """The classes (without ``object``) whose methods a method or callable object may call."""
    while isinstance(worker, functools.partial):
        worker = worker.func
    if isinstance(worker, types.MethodType):
        owner = worker.__self__
        cls = owner if isinstance(owner, type) else type(owner)
    elif isinstance(worker, (types.FunctionType, types.BuiltinFunctionType, type)):
        return []
    else:
        cls = type(worker)
    return [c for c in cls.__mro__ if c.__module__ != "builtins"]


def _code_with_filename(code: types.CodeType, filename: str) -> types.CodeType:
    consts = tuple(_code_with_filename(c, filename) if isinstance(c, types.CodeType) else c
                   for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def failed_outcome(group: list[tuple[int, dict]], kind: str, message: str,
                   traceback_text: str = "") -> GroupOutcome:
    """The outcome of a group that no worker returned: every pset failed with ``kind``."""
    n = len(group)
    return GroupOutcome(list(group_indexes(group)), [""] * n, [None] * n,
                        {i: (kind, message, traceback_text) for i in range(n)},
                        [time.time()] * n, [math.nan] * n, -1, HOST, -1)


class _GroupClock:
    """When this process finished its last group, and of which map."""

    def __init__(self):
        self.token: bytes | None = None
        self.ended = 0.0

    def since_previous(self, token: bytes, started: float, ended: float) -> float:
        """Seconds between the previous group of the same map and this one (NaN: first)."""
        gap = started - self.ended if token == self.token else math.nan
        self.token, self.ended = token, ended
        return gap


_GROUP_CLOCK = _GroupClock()


def encodable(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (lone surrogates) escaped, so it can be stored."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def describe(exc: BaseException) -> str:
    """'Type: message' of an exception, robust to a broken __str__."""
    try:
        text = str(exc)
    except Exception:
        text = "<exception message could not be printed>"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# (result keys, pset keys) found fine before -> the result keys that repeat a pset key
_RESULT_LAYOUTS: dict[tuple, tuple] = {}


def result_problem(result: Any, pset: dict) -> tuple[str, str] | None:
    """Why ``result`` is not an acceptable return value for ``pset``, as (failure kind,
    message), or None."""
    return checked_result(result, pset)[1]


def checked_result(result: Any, pset: dict) -> tuple[dict | None, tuple[str, str] | None]:
    """The result to store for ``pset`` and None, or None and why it is not acceptable.

    A result may repeat pset keys (psweep's ``return {**pset, "y": ...}``) with values
    that are :func:`same_value` as the pset's: they are dropped, as the pset's columns hold
    them. A repeated key with another value is a ``bad_result``.
    """
    if result is None:
        return {}, None
    if not isinstance(result, dict):
        return None, (BAD_RESULT, f"worker returned {type(result).__name__}; it must return a "
                                  f"dict (or None)")
    keys = (tuple(result), tuple(pset))
    repeated = _RESULT_LAYOUTS.get(keys)
    if repeated is None:
        for key in keys[0]:  # the key rules of psets
            problems = params.key_problems(key, "result")
            if problems:
                if isinstance(key, str) and not params.utf8_encodable(key):
                    # like a value UTF-8 cannot encode, such a key is beyond the store
                    return None, (UNSTORABLE, "result " + problems[-1])
                return None, (BAD_RESULT, "result " + problems[0])
        repeated = tuple(key for key in keys[0] if key in pset)
        if len(_RESULT_LAYOUTS) < 1000:
            _RESULT_LAYOUTS[keys] = repeated
    if not repeated:
        return result, None
    for key in repeated:
        if not same_value(pset[key], result[key]):
            return None, (BAD_RESULT, changed_key_message(key, pset[key], result[key]))
    return {key: value for key, value in result.items() if key not in repeated}, None


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60


def changed_key_message(key: str, given: Any, returned: Any) -> str:
    """Why a result that changes the pset's value of ``key`` fails, with both values."""
    return (f"result key {key!r} clashes with the pset parameter of the same name: the result "
            f"has {_SHORT.repr(returned)} ({type(returned).__name__}), the pset "
            f"{_SHORT.repr(given)} ({type(given).__name__}); a result may repeat a pset key "
            f"(as in return {{**pset, 'y': ...}}) only with an equal value of the same type: "
            f"return the pset's value unchanged or rename the result key")

"""What runs on a worker: one group of psets through the user's worker function.

A :class:`Task` is shipped to every worker (any backend). Calling it on a group returns a
:class:`GroupOutcome` made only of plain data: ints, floats, strings and pickled bytes.
Results are pickled *per pset* on the worker and unpickled per pset on the driver, so a
result that cannot be pickled, or that pickles but cannot be unpickled, fails that one pset
and nothing else; exceptions travel as text, never as objects.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import pickle
import socket
import time
import traceback
from typing import Any, Callable, NamedTuple

import cloudpickle

from . import params
from .errors import ConfigError

# Failure kinds, as stored in the ``_kind`` column of the failures table.
EXCEPTION = "exception"      # the worker raised
BAD_RESULT = "bad_result"    # returned something other than a dict or None, or a clashing key
UNPICKLABLE = "unpicklable"  # the result could not be pickled or unpickled
UNSTORABLE = "unstorable"    # the result has a value the HDF5 store cannot hold
CRASHED = "crashed"          # the process running the pset died

HOST = socket.gethostname()


class GroupOutcome(NamedTuple):
    """What became of each pset of one group, field by field, stamped with where it ran.

    Lists of plain values, not one object per pset: they pickle and unpickle several times
    faster, and the driver unpickles one of these for every group.
    """

    indexes: list[int]                  # pset indexes, in the group's order
    digests: list[str]                  # pset_hash of each, computed here to spare the driver
    payloads: list[bytes | None]        # the pickled result; None where the pset failed
    errors: dict[int, tuple[str, str, str]]  # position -> (kind, "Type: message", traceback)
    t_starts: list[float]               # time.time() when each worker call began
    runtimes: list[float]               # seconds in each worker call (NaN: unknown)
    rank: int
    host: str
    pid: int

    def measured(self) -> tuple[float, int]:
        """Total seconds and number of psets with a known runtime."""
        known = [t for t in self.runtimes if t == t]
        return sum(known), len(known)


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


class Task:
    """The user's worker function plus everything needed to call it, picklable by value."""

    def __init__(self, worker: Callable, map_name: str, backend: str,
                 user_kwargs: dict | None = None):
        self.mode = call_mode(worker)
        # cloudpickle ships functions by value, so lambdas, closures and functions defined
        # in __main__ after init() reach the workers.
        self.blob = cloudpickle.dumps(worker)
        self.digest = hashlib.blake2b(self.blob, digest_size=16).hexdigest()
        self.map_name = map_name
        self.backend = backend
        self.user_kwargs = dict(user_kwargs or {})

    def function(self) -> Callable:
        fn = _FUNCTIONS.get(self.digest)
        if fn is None:
            if len(_FUNCTIONS) > 64:  # a greedy loop of many maps must not grow this forever
                _FUNCTIONS.clear()
            fn = _FUNCTIONS[self.digest] = cloudpickle.loads(self.blob)
        return fn

    def __call__(self, group: list[tuple[int, dict]], rank: int = 0) -> GroupOutcome:
        fn = self.function()
        outcome = GroupOutcome([], [], [], {}, [], [], rank, HOST, os.getpid())
        for index, pset in group:
            self.run_one(fn, index, pset, rank, outcome)
        return outcome

    def run_one(self, fn: Callable, index: int, pset: dict, rank: int,
                outcome: GroupOutcome) -> None:
        """Call the worker on one pset and append what became of it to ``outcome``."""
        outcome.indexes.append(index)
        outcome.digests.append(params.pset_hash(pset))
        outcome.t_starts.append(time.time())
        t0 = time.perf_counter()
        payload, error = None, None
        try:
            if self.mode == 1:
                result = fn(dict(pset))
            else:
                system_kwargs = {"pset_index": index, "map_name": self.map_name,
                                 "backend": self.backend, "rank": rank, "host": HOST}
                result = fn(dict(pset), system_kwargs, self.user_kwargs)
        except Exception as exc:  # user code: its failure is data, not a crash of psmpi
            error = (EXCEPTION, describe(exc), traceback.format_exc())
        outcome.runtimes.append(time.perf_counter() - t0)
        if error is None:
            payload, error = self.pickled(result, pset)
        outcome.payloads.append(payload)
        if error is not None:
            outcome.errors[len(outcome.indexes) - 1] = error

    @staticmethod
    def pickled(result: Any, pset: dict) -> tuple[bytes | None, tuple | None]:
        """The result, checked and pickled, or why it cannot be stored."""
        problem = result_problem(result, pset)
        if problem:
            return None, (BAD_RESULT, problem, "")
        try:
            return pickle.dumps(result or {}, protocol=pickle.HIGHEST_PROTOCOL), None
        except Exception as exc:
            return None, (UNPICKLABLE, "result cannot be pickled: " + describe(exc),
                          traceback.format_exc())


def describe(exc: BaseException) -> str:
    """'Type: message' of an exception, robust to a broken __str__."""
    try:
        text = str(exc)
    except Exception:
        text = "<exception message could not be printed>"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_GOOD_RESULT_KEYS: set[tuple] = set()  # key tuples of results already checked


def result_problem(result: Any, pset: dict) -> str | None:
    """Why ``result`` is not an acceptable return value for ``pset``, or None."""
    if result is None:
        return None
    if not isinstance(result, dict):
        return f"worker returned {type(result).__name__}; it must return a dict (or None)"
    keys = tuple(result)
    if keys not in _GOOD_RESULT_KEYS:
        for key in keys:  # the key rules of psets
            problems = params.key_problems(key, "result")
            if problems:
                return "result " + problems[0]
        if len(_GOOD_RESULT_KEYS) < 1000:
            _GOOD_RESULT_KEYS.add(keys)
    clash = result.keys() & pset.keys()
    if clash:
        return (f"result key {sorted(clash)[0]!r} clashes with the pset parameter of the same "
                f"name; rename the result")
    return None

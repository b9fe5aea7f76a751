"""What a worker function can ask about the pset it is computing: ``psmpi.context()``.

The task (:mod:`psmpi.worker.task`) calls :func:`enter` before each worker call and
:func:`leave` after it; the context itself is built only when the worker asks for it.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Any

from ..store.bookkeeping import pset_id
from . import setup as worker_setup


@dataclasses.dataclass(frozen=True)
class PsetContext:
    """The bookkeeping of the pset a worker is computing now (see :func:`context`)."""

    run_id: str
    pset_id: str
    pset_index: int
    pset_hash: str
    map_name: str
    calc_dir: str   # <calc_dir>/<pset_id>: for this pset's files; not created by psmpi
    backend: str
    rank: int
    host: str
    setup: Any = None  # what setup(context) returned in this worker process (setup=)
    # The hosts, cores and GPUs reserved for this pset (an ensemble's Placement), else None.
    reservation: Any = None


_pending: tuple | None = None  # what enter() set: the context is built only when asked for
# The same per thread: the ensemble backend runs psets in threads of one process at once.
_thread = threading.local()


def enter(task, index: int, digest: str, rank: int, host: str) -> None:
    """Called by the task before each worker call (cheap: the context is built lazily)."""
    global _pending
    _pending = (task, index, digest, rank, host)
    _thread.pending, _thread.current = _pending, None


def leave() -> None:
    global _pending
    _pending = None
    _thread.pending = _thread.current = None


def reserve(reservation: Any) -> None:
    """What this thread's next psets hold (the ensemble backend's placement; None: nothing)."""
    _thread.reservation = reservation


def context() -> PsetContext:
    """The bookkeeping of the pset being computed, from inside a worker function.

    Returns
    -------
    PsetContext
        ``run_id``, ``pset_id``, ``pset_index``, ``pset_hash``, ``map_name``, ``calc_dir``
        (``<calc_dir>/<pset_id>``, the directory for this pset's own files: create it if you
        use it), ``backend``, ``rank``, ``host``. The same values land in the pset's row as
        ``_run_id``, ``_pset_id``, ``_calc_dir``, ... ``setup`` is what the set-up function
        (``setup=``) returned in this worker process, None without one. ``reservation``:
        under ``resources=``, the hosts, cores and GPUs held for this pset (what
        :func:`psmpi.run_mpi` launches on), else None.

    Raises
    ------
    RuntimeError
        When called outside a worker function run by ``psmpi.map``.

    Examples
    --------
    >>> import os, psmpi
    >>> def worker(pset):
    ...     here = psmpi.context().calc_dir
    ...     return {"dir_is_per_pset": here.endswith(psmpi.context().pset_id)}
    >>> psmpi.map(worker, [{"a": 1}], backend="serial", out=None, verbose=0,
    ...           vstats=0, logfile=False).results["dir_is_per_pset"].tolist()
    [True]
    """
    here = getattr(_thread, "current", None)
    if here is None:
        entry = getattr(_thread, "pending", None)
        if entry is None:
            raise RuntimeError("psmpi.context() is only available inside a worker function "
                               "while psmpi.map() runs it")
        task, index, digest, rank, host = entry
        the_id = pset_id(task.pset_key, index)
        done = worker_setup.prepared(task.run_id)
        here = _thread.current = PsetContext(
            task.run_id, the_id, index, digest, task.map_name,
            os.path.join(task.calc_dir, the_id), task.backend, rank, host,
            done.value if done is not None else None, getattr(_thread, "reservation", None))
    return here


def pending() -> tuple | None:
    """``(task, pset index, pset hash, rank, host)`` of the pset being computed now in this
    process, or None between psets: cheap enough for a watchdog thread to poll."""
    return _pending

"""What a worker function can ask about the pset it is computing: ``psmpi.context()``.

The task (:mod:`psmpi.worker.task`) opens a :class:`Cursor` on each group
(:func:`enter_group`) and moves it to each pset before its worker call (one attribute store:
a trivial pset must not pay more); the context itself is built only when the worker asks.
:func:`enter` and :func:`leave` do the same for one pset at a time.
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


class Cursor:
    """Which pset of a group a worker computes now: ``position`` into its indexes and
    digests, -1 between psets. The task sets ``position``; :func:`context` reads it."""

    __slots__ = ("task", "indexes", "digests", "rank", "host", "position", "built", "built_at")

    def __init__(self, task: Any, indexes: Any, digests: Any, rank: int, host: str):
        self.task, self.indexes, self.digests = task, indexes, digests
        self.rank, self.host = rank, host
        self.position = -1
        self.built: PsetContext | None = None  # the context of position built_at
        self.built_at = -1

    def entry(self) -> tuple | None:
        """``(task, pset index, pset hash, rank, host)`` of the pset at the cursor, or None."""
        position = self.position
        if position < 0:
            return None
        return self.task, self.indexes[position], self.digests[position], self.rank, self.host


_cursor: Cursor | None = None  # this process's open cursor, for pending()
# The same per thread: the ensemble backend runs psets in threads of one process at once.
_thread = threading.local()


def enter_group(task: Any, indexes: Any, digests: Any, rank: int, host: str) -> Cursor:
    """Open a cursor on a group's psets, for this thread; the task moves it pset by pset."""
    global _cursor
    cursor = _cursor = _thread.cursor = Cursor(task, indexes, digests, rank, host)
    return cursor


def leave_group() -> None:
    global _cursor
    _cursor = _thread.cursor = None


def enter(task, index: int, digest: str, rank: int, host: str) -> None:
    """Before a worker call of one pset outside a group (cheap: the context is built lazily)."""
    enter_group(task, (index,), (digest,), rank, host).position = 0


def leave() -> None:
    leave_group()


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
    cursor = getattr(_thread, "cursor", None)
    entry = cursor.entry() if cursor is not None else None
    if entry is None:
        raise RuntimeError("psmpi.context() is only available inside a worker function "
                           "while psmpi.map() runs it")
    if cursor.built_at == cursor.position:
        return cursor.built
    task, index, digest, rank, host = entry
    the_id = pset_id(task.pset_key, index)
    done = worker_setup.prepared(task.run_id)
    here = cursor.built = PsetContext(
        task.run_id, the_id, index, digest, task.map_name,
        os.path.join(task.calc_dir, the_id), task.backend, rank, host,
        done.value if done is not None else None, getattr(_thread, "reservation", None))
    cursor.built_at = cursor.position
    return here


def pending() -> tuple | None:
    """``(task, pset index, pset hash, rank, host)`` of the pset being computed now in this
    process, or None between psets: cheap enough for a watchdog thread to poll."""
    cursor = _cursor
    return None if cursor is None else cursor.entry()

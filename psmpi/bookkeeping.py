"""Who computed what, when: the run and pset ids of every row, and what a worker can ask.

Every ``map()`` call is a *run*, with a random ``run_id`` and a ``run_seq`` counting the runs
of that map in the file. Every computed pset gets a ``pset_id`` and a ``pset_seq`` counting
the psets of that map over all runs, and its own directory ``<calc_dir>/<pset_id>`` for
outputs too big for a table. A resumed pset keeps the ids of the run that computed it;
``repeat=True`` computes psets again under new ids (same ``pset_hash``).

A pset id is the run id with the pset's index added to its lower 64 bits: unique, and known
on the driver and on the worker without sending it back and forth.
"""

from __future__ import annotations

import dataclasses
import os
import uuid

import numpy as np

from . import layout

# The columns this module adds to every stored row.
COLUMNS = (layout.RUN_ID, layout.RUN_SEQ, layout.PSET_ID, layout.PSET_SEQ, layout.CALC_DIR)


def new_run_id() -> str:
    return uuid.uuid4().hex


def pset_id(run_id: str, index: int) -> str:
    """The id of the pset at ``index`` computed in run ``run_id`` (32 hex digits)."""
    return f"{run_id[:16]}{(int(run_id[16:], 16) + index) % (1 << 64):016x}"


class RunStamp:
    """The bookkeeping columns of one run's rows, made per committed batch."""

    def __init__(self, run_id: str, run_seq: int, next_pset_seq: int, calc_dir: str):
        self.run_id = run_id
        self.run_seq = run_seq
        self.next_pset_seq = next_pset_seq
        self.high = run_id[:16].encode()
        self.low = np.uint64(int(run_id[16:], 16))
        self.calc_prefix = os.path.join(calc_dir, "").encode("utf-8")

    def columns(self, indexes: np.ndarray) -> dict[str, np.ndarray]:
        """The bookkeeping columns of rows with these pset indexes, as byte-string arrays.

        Vectorised (pset ids as hex through one bytes buffer): per-row Python formatting
        cost the driver about a microsecond per pset.
        """
        k = len(indexes)
        low = self.low + indexes.astype(np.uint64)  # wraps around modulo 2**64, as pset_id()
        low_hex = np.frombuffer(low.astype(">u8").tobytes().hex().encode(), dtype="S16")
        ids = np.char.add(self.high, low_hex)
        seqs = np.arange(self.next_pset_seq, self.next_pset_seq + k, dtype=np.int64)
        self.next_pset_seq += k
        return {layout.RUN_ID: np.full(k, self.run_id.encode(), dtype="S32"),
                layout.RUN_SEQ: np.full(k, self.run_seq, dtype=np.int64),
                layout.PSET_ID: ids, layout.PSET_SEQ: seqs,
                layout.CALC_DIR: np.char.add(self.calc_prefix, ids)}


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


_current: PsetContext | None = None
_pending: tuple | None = None  # what run_one set: the context is built only when asked for


def enter(task, index: int, digest: str, rank: int, host: str) -> None:
    """Called by the task before each worker call (cheap: the context is built lazily)."""
    global _pending, _current
    _pending, _current = (task, index, digest, rank, host), None


def leave() -> None:
    global _pending, _current
    _pending, _current = None, None


def context() -> PsetContext:
    """The bookkeeping of the pset being computed, from inside a worker function.

    Returns
    -------
    PsetContext
        ``run_id``, ``pset_id``, ``pset_index``, ``pset_hash``, ``map_name``, ``calc_dir``
        (``<calc_dir>/<pset_id>``, the directory for this pset's own files: create it if you
        use it), ``backend``, ``rank``, ``host``. The same values land in the pset's row as
        ``_run_id``, ``_pset_id``, ``_calc_dir``, ...

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
    global _current
    if _current is None:
        if _pending is None:
            raise RuntimeError("psmpi.context() is only available inside a worker function "
                               "while psmpi.map() runs it")
        task, index, digest, rank, host = _pending
        the_id = pset_id(task.run_id, index)
        _current = PsetContext(task.run_id, the_id, index, digest, task.map_name,
                               os.path.join(task.calc_dir, the_id), task.backend, rank, host)
    return _current

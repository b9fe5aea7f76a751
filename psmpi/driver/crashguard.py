"""The crash guard: the life cycle of poison psets in one map, seen from the driver.

A pset that kills the process running it takes a serial or MPI run down with it. The guard
keeps such a run from dying on it forever (the file format and the rules are in
:mod:`psmpi.store.attempts`)::

    map starts    load the attempt counts of earlier runs that died
    todo          hold back suspects: run alone later, or give up on them
    hand out      log each group before a worker gets it
    observe       log each group that came back
    backend done  give up on psets at max_attempts (failures ``crashed`` or ``timeout``);
                  then run the held-back suspects one at a time
    map ends      save the counts of psets not done (a killed run cannot: its log stays)

:class:`NoCrashGuard` is the same life cycle doing nothing, for runs that need none: a
backend whose runs survive a pset killing its process (the pset fails alone, as
``crashed``), or a map without a results file. :func:`crash_guard` picks the one a map needs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from .. import layout
from ..backends.base import Group
from ..store import Table
from ..store.attempts import AttemptLog, Suspects
from ..worker import task
from ..worker.spans import group_indexes


@dataclasses.dataclass(frozen=True)
class GivenUp:
    """A pset the guard stops trying: stored as a failure of ``kind`` with ``message``."""

    index: int
    pset: dict
    digest: str
    kind: str
    message: str


class CrashGuard:
    """The crash guard of a map whose run dies with a pset that kills its process.

    Parameters
    ----------
    results_path : str
        the results file; the attempt log is beside it.
    map_name : str
        the map's name.
    max_attempts : int
        deaths while a pset ran after which it is given up.
    timeout : float or None
        the map's ``timeout=``, for the message of a pset given up after timing out.
    """

    def __init__(self, results_path: str, map_name: str, max_attempts: int,
                 timeout: float | None):
        self.log = AttemptLog(results_path, map_name)
        self.suspects = Suspects(self.log.load(), max_attempts)
        self.timeout = timeout

    def committed(self, index: int) -> None:
        """The pset's row is in the file already (resume): whatever happened before, it is done."""
        self.suspects.committed(index)

    def holds_back(self) -> bool:
        """Whether some pset may be held back (a pset of an earlier run died with it)."""
        return bool(self.suspects.counts)

    def hold_back(self, todo: Iterable[tuple[int, dict]]) -> Iterable[tuple[int, dict]]:
        """``todo`` without the psets to run alone or to give up on."""
        return self.suspects.hold_back(todo)

    def sent(self, group: Group) -> None:
        """The group is about to be handed to a worker: on disk before the worker gets it."""
        self.log.sent(group_indexes(group))

    def returned(self, indexes: list[int]) -> None:
        """The psets ``indexes`` came back from their worker."""
        self.log.returned(indexes)

    def given_up(self, failures: Table) -> list[GivenUp]:
        """Psets that died with their process max_attempts times: stored as ``crashed``.

        A pset whose runs ended by running past ``timeout=`` (a ``timeout`` failure row of
        the same pset is in ``failures``) is stored as a ``timeout`` failure instead.
        """
        crashed = self.suspects.crashed
        timed_out = stored_timeouts(failures) if crashed else {}
        return [self.giving_up(index, pset, count, timed_out) for index, pset, count in crashed]

    def giving_up(self, index: int, pset: dict, count: int, timed_out: dict[int, str]
                  ) -> GivenUp:
        digest = self.suspects.counts[index].digest  # hashed when it was held back
        if timed_out.get(index) == digest:
            return GivenUp(index, pset, digest, task.TIMEOUT, (
                f"this pset ran past timeout={self.timeout} s and the run was aborted "
                f"{count} times, so it is skipped. Raise timeout=, or run again with "
                f"PSMPI_MAX_ATTEMPTS={count + 1} or delete {self.log.path}"))
        return GivenUp(index, pset, digest, task.CRASHED, (
            f"the process running this pset died {count} times (a crash, the out-of-memory "
            f"killer, or a job stopped while it ran), so it is skipped. Fix the cause, then "
            f"run again with PSMPI_MAX_ATTEMPTS={count + 1} or delete {self.log.path}"))

    def alone(self) -> list[tuple[int, dict]]:
        """The psets held back to run one at a time, in the order to run them.

        Alone, a pset that kills the run again is the only one blamed for it.
        """
        return self.suspects.alone_in_order()

    def save(self, stored: np.ndarray, timed_out: set[int], inflight: dict[int, dict]) -> None:
        """The map ended in Python: keep the attempt counts of psets not done yet.

        ``stored``: pset indexes of this map's rows known to this run (results and
        failures); ``timed_out``: those stored as ``timeout`` failures by this run, still to
        do; ``inflight``: psets handed out and not back, one attempt more each.
        """
        counts = self.suspects.counts
        if counts:
            # stored as failures and yet not done: given up, or a timeout (an attempt)
            not_done = {index for index, _, _ in self.suspects.crashed} | timed_out
            for index in stored.tolist():
                if index not in not_done:
                    counts.pop(index, None)
        for index, pset in inflight.items():
            self.suspects.abandoned(index, pset)
        self.log.save(counts)


class NoCrashGuard:
    """The crash guard of a run that needs none: :class:`CrashGuard`'s steps, doing nothing."""

    def committed(self, index: int) -> None:
        pass

    def holds_back(self) -> bool:
        return False

    def hold_back(self, todo: Iterable[tuple[int, dict]]) -> Iterable[tuple[int, dict]]:
        return todo

    def sent(self, group: Group) -> None:
        pass

    def returned(self, indexes: list[int]) -> None:
        pass

    def given_up(self, failures: Table) -> list[GivenUp]:
        return []

    def alone(self) -> list[tuple[int, dict]]:
        return []

    def save(self, stored: np.ndarray, timed_out: set[int], inflight: dict[int, dict]) -> None:
        pass


def crash_guard(results_path: str | None, map_name: str, survives_crashes: bool,
                max_attempts: int, timeout: float | None) -> CrashGuard | NoCrashGuard:
    """The guard a map needs: none without a results file or when crashes spare the run."""
    if results_path is None or survives_crashes:
        return NoCrashGuard()
    return CrashGuard(results_path, map_name, max_attempts, timeout)


def stored_timeouts(failures: Table) -> dict[int, str]:
    """pset index -> pset hash of the ``timeout`` failure rows stored by earlier runs."""
    if not failures.n_rows or layout.KIND not in failures.columns:
        return {}
    kinds = failures.read_column(layout.KIND)
    rows = np.flatnonzero(kinds == task.TIMEOUT)
    indexes = failures.read_column(layout.PSET_INDEX)[rows]
    digests = failures.read_column(layout.PSET_HASH)[rows]
    return {int(i): d.decode() if isinstance(d, bytes) else str(d)
            for i, d in zip(indexes, digests)}

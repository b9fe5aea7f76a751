"""The one interface every backend implements.

A backend runs a :class:`~psmpi.task.Task` on groups of psets and yields the
:class:`~psmpi.task.GroupOutcome` of each group in completion order. It pulls groups from an
iterator only when it has a worker to feed, so the driver (``psmpi.run``) can size groups from
what it has measured so far. Backends never touch HDF5, hashing or resume: ``psmpi.run`` owns
those, so every backend gets durability for free.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, Iterator

from ..task import GroupOutcome, Task

Group = list[tuple[int, dict]]  # (pset index, pset) pairs


@dataclasses.dataclass(frozen=True)
class Held:
    """Psets a worker is running now, and for how long (stalled-worker reports)."""

    worker: str                 # who holds them: "rank 3", "process 4711", "ray task 1a2b…"
    host: str
    indexes: tuple[int, ...]    # pset indexes in the map, in the group's order
    seconds: float              # since the worker started them (or, if unknown, was sent them)


class Backend(abc.ABC):
    """Run tasks on workers. Subclasses implement :meth:`run`."""

    name: ClassVar[str]
    # True if a pset that kills its worker process fails alone and the run goes on; else
    # (serial, MPI) the run dies with it and psmpi counts deaths across runs (attempts.py).
    survives_crashes: ClassVar[bool] = False

    def __init__(self, options: dict[str, Any], ncores: int | None = None,
                 max_tasks_per_child: int | None = None):
        self.options = options
        self.ncores = ncores
        self.max_tasks_per_child = max_tasks_per_child

    @classmethod
    def available(cls) -> bool:
        """Whether this backend can be used here (cheap, no side effects)."""
        return True

    @property
    def n_workers(self) -> int:
        """How many groups can run at once."""
        return 1

    @abc.abstractmethod
    def run(self, task: Task, groups: Iterator[Group]) -> Iterator[GroupOutcome]:
        """Run ``task`` on every group; yield each outcome as it completes.

        Worker failures come back as data inside the outcomes, never raised. A group whose
        worker process died yields outcomes of kind ``crashed`` for its psets. While waiting,
        a backend may yield None (at most every ~0.2 s) so the driver can report progress
        and keep deadlines. When ``groups`` runs out, the groups in flight are finished.
        """

    def held(self) -> list[Held]:
        """What each busy worker is running now and for how long.

        Cheap (no messages, no waiting): the driver calls it about once a second to report
        stalled workers. Backends that cannot tell return an empty list.
        """
        return []

    def close(self) -> None:
        """Release workers. The backend is not used after this."""

    def abandon(self) -> None:
        """Stop now, dropping the groups in flight (the drain period ran out)."""
        self.close()

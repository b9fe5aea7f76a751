"""The one interface every backend implements, and what the backends share.

A backend runs a :class:`~psmpi.worker.task.Task` on groups of psets and yields the
:class:`~psmpi.worker.task.GroupOutcome` of each group in completion order. It pulls groups from an
iterator only when it has a worker to feed, so the driver (``psmpi.driver.run``) can size groups from
what it has measured so far. Backends never touch HDF5, hashing or resume: ``psmpi.driver.run`` owns
those, so every backend gets durability for free.

Here too: :class:`Options`, the base of each backend's declared options (checked in one
place, :func:`checked_options`), and the helpers more than one backend needs. Backends that
hand groups to a pool of workers build on :class:`psmpi.backends.pool.PoolBackend`. No
backend imports a sibling.
"""

from __future__ import annotations

import abc
import dataclasses
import os
import time
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from ..errors import ConfigError
from ..worker.setup import check_enough_gpus, node_gpus
from ..worker.task import CRASHED, HOST, GroupOutcome, Task, failed_outcome

Group = list[tuple[int, dict]]  # (pset index, pset) pairs

CRASH_MESSAGE = ("the worker process died while running this pset "
                 "(killed by a signal, os._exit(), a segfault or out of memory)")


def available_cores() -> int:
    """Cores this process may run on (respects cpusets and Slurm's binding)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_ncores(ncores: int | None) -> int:
    """ncores=None: all cores; negative: leave that many free; at least 1."""
    total = available_cores()
    if ncores is None:
        return total
    return max(1, total + ncores) if ncores < 0 else ncores


def crashed(group: Group) -> GroupOutcome:
    """``group``'s psets failed because the process running them died."""
    return failed_outcome(group, CRASHED, CRASH_MESSAGE)


def option(default: Any, must: str, valid: Callable[[Any], bool] | None = None) -> Any:
    """A field of an :class:`Options` dataclass.

    ``must``: what a value must be, as the error says it ("be True or False"); ``valid``:
    a rule beyond the field's type, if any.
    """
    return dataclasses.field(default=default, metadata={"must": must, "valid": valid})


@dataclasses.dataclass(frozen=True)
class Options:
    """A backend's options (``<backend>={...}``); each backend declares its own subclass.

    Every field is made with :func:`option`. A backend that passes further keys on to a
    library that checks them itself (ray's task options) names the dict field receiving
    them in ``PASSED_ON``; for every other backend an unknown key is an error.
    """

    PASSED_ON: ClassVar[str | None] = None


def checked_options(declared: type[Options], backend: str, given: dict[str, Any]) -> Options:
    """``given`` (a user's ``<backend>={...}`` dict) as ``declared``; ConfigError if a key is
    unknown or a value is not what its field must be."""
    fields = {field.name: field for field in dataclasses.fields(declared)
              if field.name != declared.PASSED_ON}
    unknown = sorted(set(given) - set(fields), key=repr)
    if unknown and declared.PASSED_ON is None:
        known = (f"the {backend} backend knows {', '.join(sorted(fields))}" if fields
                 else f"the {backend} backend takes no options")
        raise ConfigError(f"{backend}={{...}} got unknown option(s) {unknown}; {known}")
    hints = typing.get_type_hints(declared)
    for key in sorted(set(given) & set(fields)):
        value, metadata = given[key], fields[key].metadata
        valid = metadata["valid"]
        if not is_instance(value, hints[key]) or (valid is not None and not valid(value)):
            raise ConfigError(f"{backend}={{{key!r}: ...}} must {metadata['must']} "
                              f"(got {value!r})")
    values = {key: given[key] for key in given if key in fields}
    if declared.PASSED_ON is not None:
        values[declared.PASSED_ON] = {key: given[key] for key in unknown}
    return declared(**values)


def is_instance(value: Any, hint: Any) -> bool:
    """Whether ``value`` has the type ``hint`` of an option (bool is no number; an int is a
    float)."""
    if isinstance(hint, types.UnionType):
        return any(is_instance(value, member) for member in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint in (int, float) and isinstance(value, bool):
        return False
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, typing.get_origin(hint) or hint)


def wait_for_groups(groups: Any, seconds: float) -> None:
    """Wait up to ``seconds`` for ``groups`` to have a group to hand out.

    A source that can be woken (an Executor's queue: ``wait_for_work``) returns as soon as
    something is submitted; any other iterator is slept on.
    """
    wait = getattr(groups, "wait_for_work", None)
    if wait is None:
        time.sleep(seconds)
    else:
        wait(seconds)


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
    # What ``<name>={...}`` may hold; the base class: nothing.
    options_class: ClassVar[type[Options]] = Options
    # True if a pset that kills its worker process fails alone and the run goes on; else
    # (serial, MPI) the run dies with it and psmpi counts deaths across runs (attempts.py).
    survives_crashes: ClassVar[bool] = False
    # True if run() takes psmpi.worker.spans.Span groups (index ranges of the task's grid)
    # beside lists of (index, pset) pairs: it hands groups to task() as they are.
    takes_spans: ClassVar[bool] = False

    def __init__(self, options: dict[str, Any], ncores: int | None = None,
                 max_tasks_per_child: int | None = None):
        self.options = checked_options(self.options_class, self.name, options)
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

        ``groups`` may yield an empty group: nothing to hand out now, but not the end (an
        :class:`psmpi.Executor` waiting for its user to submit more). The backend keeps
        collecting, asks again soon, and waits with :func:`wait_for_groups` when it has
        nothing else to wait for, never spinning a core.
        """

    def check_gpus(self, gpus_per_worker: int) -> None:
        """ConfigError, before any compute, if a node has too few GPUs for
        ``gpus_per_worker`` per worker process. Here: every worker runs on this host."""
        check_enough_gpus(gpus_per_worker, self.n_workers, node_gpus(), f"on host {HOST}")

    def held(self) -> list[Held]:
        """What each busy worker is running now and for how long.

        Cheap (no messages, no waiting): the driver calls it about once a second to report
        stalled workers. Backends that cannot tell return an empty list.
        """
        return []

    def tend(self) -> None:
        """Hand out groups to workers that freed up, from inside the driver's own work.

        The driver calls it between the column writes of a long commit, while :meth:`run`
        is suspended at a yield, so that workers are not left idle meanwhile. Backends
        whose workers take groups by themselves do nothing.
        """
        return None

    def queued(self) -> int:
        """How many psets of the groups handed to :meth:`run` wait to start (cheap).

        The ensemble backend reads every pset up front and holds them until their
        resources are free; the other backends take groups only when a worker is free.
        """
        return 0

    def close(self) -> None:  # noqa: B027 - a backend without workers to release keeps it
        """Release workers. The backend is not used after this."""

    def abandon(self) -> None:
        """Stop now, dropping the groups in flight (the drain period ran out)."""
        self.close()

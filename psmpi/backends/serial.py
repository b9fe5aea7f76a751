"""The serial backend: every pset in this process, one after the other.

It is the debugging backend (a breakpoint in the worker just works) and the reference
every other backend is tested against.

Stalled workers and ``timeout=``: nothing. The driver runs each pset itself, in its own
thread, so while a pset runs nobody is left to ask what is held (``held()`` stays the base
class's empty list: it could only ever be asked between psets, when nothing is held), and
nothing can stop a pset from outside without killing the driver. A pset that hangs hangs
the run, unreported; the multiprocessing backend reports and stops it.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..worker.task import GroupOutcome, Task
from .base import Backend, Group, Options, wait_for_groups

# With nothing submitted yet (an Executor), how long to wait before a heartbeat.
IDLE_SECONDS = 0.2


class SerialBackend(Backend):
    name = "serial"
    options_class = Options  # none: serial={...} with any key is a ConfigError
    takes_spans = True

    def run(self, task: Task, groups: Iterator[Group]) -> Iterator[GroupOutcome]:
        for group in groups:
            if not group:  # nothing to run yet, not the end
                yield None  # the Executor commits what ran (its futures resolve) first
                wait_for_groups(groups, IDLE_SECONDS)
                yield None
                continue
            yield task(group)

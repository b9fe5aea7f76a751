"""The serial backend: every pset in this process, one after the other.

It is the debugging backend (a breakpoint in the worker just works) and the reference
every other backend is tested against.
"""

from __future__ import annotations

from typing import Iterator

from ..task import GroupOutcome, Task
from .base import Backend, Group


class SerialBackend(Backend):
    name = "serial"

    def run(self, task: Task, groups: Iterator[Group]) -> Iterator[GroupOutcome]:
        for group in groups:
            yield task(group)

"""Timed sections of the worker function: ``with psmpi.timer("solve"): ...``.

Inside a worker call, each ``timer(name)`` block adds its wall-clock and CPU seconds to that
name's total for the pset being computed. psmpi collects the totals after each call
(:mod:`psmpi.worker.task`), sends them back with the group's outcome and merges them on the driver
into ``results.stats.timers``. Outside a worker call a timer measures nothing anybody reads.
"""

from __future__ import annotations

import time

# name -> [wall seconds, CPU seconds] of the pset being computed in this process.
_sections: dict[str, list[float]] = {}
SECTIONS = _sections  # the same dict, for the task's loop to test without a call


class Timer:
    """The context manager returned by :func:`timer`."""

    __slots__ = ("name", "wall0", "cpu0")

    def __init__(self, name: str):
        self.name = name
        self.wall0 = self.cpu0 = 0.0

    def __enter__(self) -> Timer:
        self.cpu0 = time.process_time()
        self.wall0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> bool:
        wall = time.perf_counter() - self.wall0
        cpu = time.process_time() - self.cpu0
        totals = _sections.get(self.name)
        if totals is None:
            _sections[self.name] = [wall, cpu]
        else:
            totals[0] += wall
            totals[1] += cpu
        return False  # an exception inside the block goes on (and fails the pset)


def timer(name: str) -> Timer:
    """Time a section of the worker function; the timings end up in ``results.stats``.

    Parameters
    ----------
    name : str
        the section's name in ``results.stats.timers`` and in the statistics output.
        Blocks of the same name in one pset add up.

    Returns
    -------
    Timer
        a context manager measuring wall-clock and CPU time (``time.process_time``) of
        its block; wall minus CPU is the time the section spent not on a CPU (I/O, sleep,
        waiting for a lock or another process).

    Examples
    --------
    >>> import time, psmpi
    >>> def worker(pset):
    ...     with psmpi.timer("sleep"):
    ...         time.sleep(0.001)
    ...     return {}
    >>> res = psmpi.map(worker, [{"a": 1}, {"a": 2}], backend="serial", out=None,
    ...                 verbose=0, logfile=False)
    >>> res.stats.timers["sleep"].count
    2
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"psmpi.timer(name): name must be a non-empty str (got {name!r})")
    return Timer(name)


def begin_pset() -> None:
    """Forget sections timed outside a worker call, before the next call starts."""
    if _sections:
        _sections.clear()


def end_pset() -> dict[str, tuple[float, float]] | None:
    """The sections timed during the call that just ended: name -> (wall, cpu); or None."""
    if not _sections:
        return None
    taken = {name: (wall, cpu) for name, (wall, cpu) in _sections.items()}
    _sections.clear()
    return taken

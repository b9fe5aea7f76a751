"""Performance statistics gathered on the driver from every group's outcome.

Workers measure (psmpi.worker.task: wall and CPU seconds per pset, psmpi.timer sections, the
group's duration, the wait since their previous group, peak RSS); this module merges those
measurements over all worker processes or ranks into a :class:`~psmpi.results.PerfStats`.
It does per-group work only: per-pset values are appended as whole lists.
"""

from __future__ import annotations

import array
import dataclasses
import math
import time
from typing import TYPE_CHECKING

import numpy as np

from .. import utils
from ..results import USAGE_COLUMNS, PerfStats, Timings, empty_usage
from ..worker.task import GroupOutcome

if TYPE_CHECKING:
    import pandas as pd

_NAN = array.array("d", [math.nan])


@dataclasses.dataclass
class WorkerTally:
    """What one worker process did during a map, in seconds."""

    rank: int
    host: str
    pid: int
    backend: str = ""
    groups: int = 0
    psets: int = 0
    busy: float = 0.0       # in the worker function
    psmpi: float = 0.0      # the rest of each group on the worker: hashing, pickling
    waiting: float = 0.0    # between two groups of this map
    peak_rss: int = 0

    def label(self) -> str:
        if self.rank <= 0:
            return f"pid {self.pid}"
        # A multiprocessing worker's number is taken over by the process replacing it.
        return f"rank {self.rank}" if self.backend == "mpi" else f"worker {self.rank}, pid {self.pid}"


class PerfCollector:
    """Accumulates the measurements of one map; :meth:`stats` turns them into PerfStats."""

    def __init__(self, backend: str = ""):
        self.backend = backend
        self.driver_cpu_start = time.process_time()
        self.runtimes = array.array("d")
        self.cpu_times = array.array("d")
        self.sections: dict[str, tuple[array.array, array.array]] = {}
        self.workers: dict[tuple[str, int], WorkerTally] = {}

    def add(self, outcome: GroupOutcome) -> None:
        n = len(outcome.runtimes)
        self.runtimes.extend(outcome.runtimes)
        cpu = _NAN * n  # array repetition: ten times faster than a list of NaNs
        for position, seconds in (outcome.cpu_times or {}).items():
            cpu[position] = seconds
        self.cpu_times.extend(cpu)
        if outcome.timers:
            self.add_sections(outcome.timers)
        if outcome.pid >= 0:  # a crashed group was run by nobody still alive
            self.tally(outcome, n)

    def add_sections(self, timers: dict[int, dict[str, tuple[float, float]]]) -> None:
        for sections in timers.values():
            for name, (wall, cpu) in sections.items():
                walls, cpus = self.sections.setdefault(name, (array.array("d"), array.array("d")))
                walls.append(wall)
                cpus.append(cpu)

    def tally(self, outcome: GroupOutcome, n: int) -> None:
        key = (outcome.host, outcome.pid)
        worker = self.workers.get(key)
        if worker is None:
            worker = self.workers[key] = WorkerTally(outcome.rank, outcome.host, outcome.pid,
                                                                 self.backend)
        busy = sum(outcome.runtimes)
        worker.groups += 1
        worker.psets += n
        worker.busy += busy
        if outcome.group_seconds == outcome.group_seconds:
            worker.psmpi += max(0.0, outcome.group_seconds - busy)
        if outcome.wait_seconds == outcome.wait_seconds:
            worker.waiting += outcome.wait_seconds
        worker.peak_rss = max(worker.peak_rss, outcome.peak_rss)

    def usage(self, wall: float) -> pd.DataFrame:
        import pandas as pd
        if not self.workers:
            return empty_usage()
        rows = []
        for w in sorted(self.workers.values(), key=lambda w: (w.rank, w.host, w.pid)):
            idle = max(0.0, wall - w.busy - w.psmpi - w.waiting)
            rows.append((w.label(), w.rank, w.host, w.pid, w.groups, w.psets, w.busy, w.psmpi,
                         w.waiting, idle, w.peak_rss))
        return pd.DataFrame(rows, columns=list(USAGE_COLUMNS))

    def stats(self, backend: str, workers: int, wall: float) -> PerfStats:
        timers = {name: Timings(np.array(walls), np.array(cpus))
                  for name, (walls, cpus) in self.sections.items()}
        # Views, not copies (16 bytes per pset: 160 MB at 10 million psets); the collector
        # takes no more outcomes once its map has ended.
        return PerfStats(backend, workers, wall, len(self.runtimes),
                         np.frombuffer(self.runtimes, dtype=np.float64),
                         np.frombuffer(self.cpu_times, dtype=np.float64),
                         timers, self.usage(wall),
                         time.process_time() - self.driver_cpu_start, utils.peak_rss())

"""Stalled workers: who holds which pset for how long, told to the terminal, the log and status.

A worker can stop without dying: SIGSTOP, a hung NFS read, a deadlocked library. Nothing then
comes back, and without this module nothing would say why the survey no longer moves. The
driver asks the backend about once a second what each busy worker holds
(:meth:`psmpi.backends.base.Backend.held`) and :class:`Watch` judges it:

* **stalled**: a worker has held its group for longer than
  ``max(floor, STALL_FACTOR * median pset runtime * psets in the group)``, the median taken
  over the last :data:`MEDIAN_SAMPLE` psets measured in this map. The floor is
  :data:`STALL_FLOOR_SECONDS` (60 s), or ``PSMPI_STALL_SECONDS`` from the environment (meant
  for tests). Before any pset has come back, the floor alone decides.
* **past timeout**: with ``timeout=`` set, a worker has held its group for longer than
  ``timeout * psets in the group``. For a group of one pset (what psmpi sends once psets
  take more than ~50 ms) that is exactly the pset's timeout; for a larger group it is
  certain that some pset of it ran past ``timeout``. Always reported, whatever the stall
  threshold.

Each becomes one warning line (terminal at ``verbose >= 1``, and the run log): when a holder
becomes stalled, when it passes ``timeout``, and when a worker that was reported gives its
group back. The periodic progress line counts the stalled workers.

``<results file>.running`` (JSON, replaced atomically at most every :data:`WRITE_SECONDS`
and at once when a worker becomes stalled, removed when the map ends) lists the longest-held
groups for ``psmpi status``; a map shorter than :data:`WRITE_SECONDS` never writes it.
Failing to write it only disables it, with a line in the log: it never stops a survey.
"""

from __future__ import annotations

import array
import datetime
import json
import math
import os
import socket
import time
from typing import Any

import numpy as np

from ..backends.base import Backend, Held
from ..layout import running_path

STALL_FLOOR_SECONDS = 60.0
STALL_ENV = "PSMPI_STALL_SECONDS"  # replaces the floor: lets tests stall within a second
STALL_FACTOR = 10.0
MEDIAN_SAMPLE = 1000  # the most recent pset runtimes the median is taken over
CHECK_SECONDS = 1.0   # how often the driver asks the backend what is held
WRITE_SECONDS = 5.0   # how often <results file>.running is rewritten at most
MAX_LISTED = 100      # holders written to the .running file, longest-held first
PSETS_LISTED = 3      # pset values shown per holder
PSET_CHARS = 80       # longest repr of one pset value in a report


def stall_floor(environ=os.environ) -> float:
    """The stall threshold's floor: PSMPI_STALL_SECONDS if set to a positive number, else 60 s."""
    try:
        value = float(environ.get(STALL_ENV, ""))
    except ValueError:
        return STALL_FLOOR_SECONDS
    return value if value > 0 else STALL_FLOOR_SECONDS


def brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= PSET_CHARS else text[:PSET_CHARS - 3] + "..."


def psets_text(indexes: tuple[int, ...]) -> str:
    """``pset 7`` or ``psets 7, 8, 9 (+12 more)``."""
    shown = ", ".join(map(str, indexes[:PSETS_LISTED]))
    more = f" (+{len(indexes) - PSETS_LISTED} more)" if len(indexes) > PSETS_LISTED else ""
    return f"pset{'s' * (len(indexes) != 1)} {shown}{more}"


def seconds_text(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.2g} ms"
    if seconds < 120:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


class Watch:
    """Judges what the backend's workers hold, once a second, and reports stalls.

    Parameters
    ----------
    backend : Backend
        asked :meth:`~Backend.held` at most every :data:`CHECK_SECONDS`.
    reporter : Reporter
        its ``warn(text)`` prints a warning line and writes it to the run log; its
        ``stalled`` is set to the number of stalled workers.
    runtimes : array.array
        every pset runtime measured so far in this map (the PerfCollector's); read only.
    inflight : dict
        pset index -> pset of the groups handed out, for the pset values in reports.
    timeout : float or None
        the map's ``timeout=`` in seconds per pset.
    path : str or None
        the results file; None (``out=None``) writes no ``.running`` file.
    name : str
        the map's name.
    """

    def __init__(self, backend: Backend, reporter, runtimes: array.array,
                 inflight: dict[int, dict], timeout: float | None, path: str | None, name: str):
        self.backend = backend
        self.reporter = reporter
        self.report = reporter.warn
        self.runtimes = runtimes
        self.inflight = inflight
        self.timeout = timeout
        self.name = name
        self.floor = stall_floor()
        self.running_path = None if path is None else running_path(path)
        if self.running_path is not None:
            # Only the lock holder (this process, now) writes it: one found is a killed run's.
            remove(self.running_path)
        self.started = time.monotonic()
        self.next_check = self.started + CHECK_SECONDS
        self.last_write = self.started  # so a map shorter than WRITE_SECONDS writes nothing
        self.written = False
        # (worker, indexes) -> (level reported: 1 stalled, 2 past timeout; last seen Held)
        self.reported: dict[tuple[str, tuple[int, ...]], tuple[int, Held]] = {}
        self.n_stalled = 0

    def poll(self, now: float) -> None:
        """Called for every outcome and heartbeat; does work only once per CHECK_SECONDS."""
        if now >= self.next_check:
            self.next_check = now + CHECK_SECONDS
            self.check(now)

    def check(self, now: float, final: bool = False) -> None:
        try:
            held = self.backend.held()
        except Exception as exc:  # a report must never stop the survey
            self.report(f"warning: cannot tell what the workers hold ({type(exc).__name__}: "
                        f"{exc}); stalled workers go unreported in this map")
            self.next_check = math.inf
            return
        typical = self.typical_seconds()
        judged = [(h, self.level(h, typical)) for h in held]
        newly = self.report_changes(judged, typical)
        self.n_stalled = self.reporter.stalled = sum(1 for _, level in judged if level)
        if final:
            return
        if self.running_path is not None and (newly or now - self.last_write >= WRITE_SECONDS):
            self.last_write = now
            self.write(judged, typical)

    def typical_seconds(self) -> float | None:
        """Median runtime of the most recent psets measured; None before any."""
        # A copy (array slicing copies): a numpy view would pin the growing array.
        recent = np.frombuffer(self.runtimes[-MEDIAN_SAMPLE:], dtype=np.float64)
        recent = recent[~np.isnan(recent)]  # crashed psets have no runtime
        return float(np.median(recent)) if recent.size else None

    def threshold(self, h: Held, typical: float | None) -> float:
        """Seconds after which ``h`` counts as stalled (past timeout counts in any case)."""
        limit = self.floor if typical is None else \
            max(self.floor, STALL_FACTOR * typical * len(h.indexes))
        if self.timeout is not None:
            limit = min(limit, self.timeout * len(h.indexes))
        return limit

    def level(self, h: Held, typical: float | None) -> int:
        """0 fine, 1 stalled, 2 past timeout."""
        if self.timeout is not None and h.seconds > self.timeout * len(h.indexes):
            return 2
        return int(h.seconds > self.threshold(h, typical))

    def report_changes(self, judged: list[tuple[Held, int]], typical: float | None) -> bool:
        """Report holders that got worse and reported ones that are gone; True if any got worse."""
        worse = False
        present = set()
        for h, level in judged:
            key = (h.worker, h.indexes)
            present.add(key)
            before = self.reported.get(key, (0, h))[0]
            if level > before:
                worse = True
                self.report(self.warning(h, level, typical))
            if level or before:
                self.reported[key] = (max(level, before), h)
        for key in [k for k in self.reported if k not in present]:
            _, h = self.reported.pop(key)
            self.report(f"{h.worker} on {h.host} gave back {psets_text(h.indexes)}, held "
                        f"for {seconds_text(h.seconds)} or more")
        return worse

    def warning(self, h: Held, level: int, typical: float | None) -> str:
        where = f"{h.worker} on {h.host} has held {psets_text(h.indexes)} for " \
                f"{seconds_text(h.seconds)}"
        values = self.values(h.indexes)
        shown = f" ({'; '.join(values)})" if values else ""
        if level == 2:
            return f"warning: {where}, past timeout={self.timeout:g} s per pset{shown}"
        usual = "" if typical is None else f"; psets take {seconds_text(typical)} typically"
        return (f"warning: {where}: stalled (threshold "
                f"{seconds_text(self.threshold(h, typical))}{usual}){shown}; a stopped or "
                f"hung process? `psmpi status` lists what every worker holds")

    def values(self, indexes: tuple[int, ...]) -> list[str]:
        get = self.inflight.get
        return [brief(pset) for pset in map(get, indexes[:PSETS_LISTED]) if pset is not None]

    # -- the .running file -------------------------------------------------------------------

    def write(self, judged: list[tuple[Held, int]], typical: float | None) -> None:
        wall = time.time()
        listed = sorted(judged, key=lambda item: -item[0].seconds)[:MAX_LISTED]
        document = {
            "map": self.name, "pid": os.getpid(), "host": socket.gethostname(),
            "updated": iso(wall), "updated_unix": wall, "timeout": self.timeout,
            "typical_seconds": typical, "busy": len(judged), "stalled": self.n_stalled,
            "holders": [{"worker": h.worker, "host": h.host, "indexes": list(h.indexes),
                         "psets": self.values(h.indexes), "seconds": round(h.seconds, 3),
                         "since": iso(wall - h.seconds),
                         "threshold": round(self.threshold(h, typical), 3),
                         "state": ("fine", "stalled", "past timeout")[level]}
                        for h, level in listed]}
        temporary = f"{self.running_path}.{os.getpid()}.tmp"
        try:
            with open(temporary, "w", encoding="utf-8") as fh:
                json.dump(document, fh, indent=1)
            os.replace(temporary, self.running_path)
            self.written = True
        except Exception as exc:  # never let a report stop the survey
            self.report(f"warning: cannot write {self.running_path} ({exc}); `psmpi status` "
                        f"will not show what the workers hold")
            self.running_path = None
            remove(temporary)

    def close(self) -> None:
        """The map ended: say who gave back what; the .running file goes."""
        if self.reported:
            self.check(time.monotonic(), final=True)
        if self.written and self.running_path is not None:
            remove(self.running_path)
            self.written = False


def remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def read_running(path: str, writer_pid: int, writer_host: str) -> dict | None:
    """The ``.running`` report beside results file ``path``, if the live writer wrote it.

    A file left by a killed run (another pid or host than the lock's) or one that cannot be
    read is ignored: None.
    """
    try:
        with open(running_path(path), encoding="utf-8") as fh:
            document = json.load(fh)
        if int(document["pid"]) != writer_pid or document["host"] != writer_host:
            return None
        document["holders"] = list(document["holders"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return document

"""Stopping a survey on a signal without losing anything that finished.

Slurm sends ``--signal=B:USR1@N`` before the time limit, then SIGTERM, then SIGKILL; a user
presses Ctrl-C. On the first SIGTERM, SIGUSR1 or SIGINT psmpi stops handing out psets,
waits up to ``drain_seconds`` for the groups in flight, commits and fsyncs what came back,
closes the file and exits with :data:`EXIT_INCOMPLETE`, so a job script can requeue itself
and the next run resumes. A second signal stops at once: KeyboardInterrupt is raised where
the driver is, the run loop closes the backend's generator, so the groups in flight are
dropped (multiprocessing SIGKILLs its workers) instead of being waited for, and every
committed row is kept.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

# sysexits.h EX_TEMPFAIL: "a temporary failure; the user is invited to retry".
EXIT_INCOMPLETE = 75

STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None),
                                 signal.SIGINT) if s is not None)

T = TypeVar("T")


class StopRequest:
    """While active (a context manager), the first stop signal sets :attr:`signum`."""

    def __init__(self):
        self.signum: int | None = None
        self.since: float | None = None
        self.previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def elapsed(self) -> float:
        """Seconds since the stop was requested (0 if it was not)."""
        return 0.0 if self.since is None else time.monotonic() - self.since

    def handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt(f"second stop signal ({signal.Signals(signum).name})")
        self.signum = signum
        self.since = time.monotonic()

    def __enter__(self) -> StopRequest:
        _active.append(self)
        # Python only lets the main thread install handlers; elsewhere signals keep their
        # default behaviour, and committed rows are still safe.
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self.previous[signum] = signal.signal(signum, self.handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self in _active:
            _active.remove(self)
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""


_active: list[StopRequest] = []  # the StopRequests entered and not left, innermost last


def stop_requested() -> bool:
    """Whether a stop signal came while a map or Executor runs: a backend that queued psets
    itself (the ensemble backend) starts no more of them."""
    return any(stop.requested for stop in _active)


def until_stopped(items: Iterable[T], stop: StopRequest) -> Iterator[T]:
    """``items`` until a stop is requested; nothing is taken from ``items`` after that."""
    items = iter(items)
    while not stop.requested:
        try:
            item = next(items)
        except StopIteration:
            return
        yield item


def ignore_stop_signals() -> None:
    """For worker processes: let the driver decide when to stop; finish the group at hand.

    SIGTERM too: Slurm sends it to every process of the job, and a Ctrl-C reaches the whole
    process group, yet the driver must be able to drain its workers. Whoever abandons
    workers (psmpi.backends.multiprocessing) must therefore SIGKILL them, never terminate
    and join them.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)

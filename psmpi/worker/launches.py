"""The MPI applications this process launched (``psmpi.run_mpi``) and that still run.

The ensemble backend stops them all when the map is left with psets in flight (the drain
ran out, an error on the driver), so no launched application outlives the survey. Each is
the leader of a process group of its own (mpiexec or srun, which take their ranks along).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

_lock = threading.Lock()
_running: set[subprocess.Popen] = set()
GRACE_SECONDS = 5.0  # between SIGTERM and SIGKILL


def register(proc: subprocess.Popen) -> None:
    with _lock:
        _running.add(proc)


def unregister(proc: subprocess.Popen) -> None:
    with _lock:
        _running.discard(proc)


def stop(procs: list[subprocess.Popen], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM the process groups of ``procs``, SIGKILL those still alive after ``grace``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        while any(proc.poll() is None for proc in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        if all(proc.poll() is not None for proc in procs):
            return


def stop_all() -> None:
    """Stop every application still running."""
    with _lock:
        procs = list(_running)
    stop(procs)

"""The guard that ends a killed driver's MPI applications, and the sweep it uses (Linux).

``psmpi.run_mpi`` starts each application with ``PSMPI_LAUNCH=<driver token>/<n>`` in its
environment; mpiexec and srun pass it on to every rank, and the ranks to their children.
MPICH's hydra puts its proxy and each rank in a session of its own, so a process group
does not hold an application's processes: the mark does, and :func:`sweep` finds them
by it in ``/proc/<pid>/environ``.

A driver killed with SIGKILL can clean up nothing itself. So:

- each launcher (mpiexec, srun, a template's program) gets ``PR_SET_PDEATHSIG`` =
  SIGTERM: when the driver dies it is told, and ends its ranks the way it knows (hydra
  its proxies, also on other hosts; srun its step);
- one guard process per driver (this file, run as a script: it imports only the standard
  library, so it starts fast) waits for the driver's end, seen as EOF on its stdin pipe
  or its parent pid changing, then sweeps every process carrying the driver's token:
  SIGTERM, and SIGKILL after the grace period. On this host nothing launched survives;
  ranks on other hosts are their launcher's (and Slurm's) to end.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

VARIABLE = "PSMPI_LAUNCH"
POLL_SECONDS = 0.5


def marked(prefix: str) -> list[int]:
    """Processes of this user whose ``PSMPI_LAUNCH`` is ``prefix`` or starts with
    ``prefix/`` (not this process)."""
    exact = f"{VARIABLE}={prefix}".encode()
    below = exact + b"/"
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as file:
                entries = file.read().split(b"\0")
        except OSError:  # gone, or another user's
            continue
        if any(entry == exact or entry.startswith(below) for entry in entries):
            found.append(int(name))
    return found


def sweep(prefix: str, grace: float) -> int:
    """SIGTERM every process marked ``prefix``, SIGKILL those left after ``grace`` s;
    how many were found."""
    pids = marked(prefix)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = pids
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [pid for pid in marked(prefix) if not _is_zombie(pid)]
    for _ in range(3):  # a process forked while we killed is marked too: go again
        left = [pid for pid in marked(prefix) if not _is_zombie(pid)]
        if not left:
            break
        for pid in left:
            _signal(pid, signal.SIGKILL)
        time.sleep(0.05)
    return len(pids)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def wait_for_driver(parent: int) -> None:
    """Return once the driver is gone: EOF on stdin, or this process re-parented."""
    stdin = sys.stdin.fileno()
    while os.getppid() == parent:
        ready, _, _ = select.select([stdin], [], [], POLL_SECONDS)
        if ready and not os.read(stdin, 4096):
            return


def main(argv: list[str]) -> None:
    """``launchguard.py TOKEN GRACE_SECONDS``, started by the driver with a pipe as stdin."""
    token, grace = argv[1], float(argv[2])
    parent = os.getppid()
    # A Ctrl-C or a drain's signal is the driver's business; SIGTERM (a job's end) means
    # the driver is going too: sweep now.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: _sweep_and_exit(token, grace))
    wait_for_driver(parent)
    sweep(token, grace)


def _sweep_and_exit(token: str, grace: float) -> None:
    sweep(token, grace)
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv)

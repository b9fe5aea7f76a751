"""One writer per results file: psmpi's own lock file beside it.

``study.h5.lock`` holds JSON ``{host, pid, slurm_job_id, started}`` and is created with
O_CREAT|O_EXCL, which works on file systems where HDF5's flock does not (Lustre, NFS). A
lock whose process is dead on this host is reclaimed with a warning; any other lock is a
StoreError naming the holder.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import warnings

from .errors import StoreError


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except (OSError, IndexError):
        return True


def take_lock(path: str) -> str:
    """Create ``path.lock`` exclusively, reclaiming it from a dead process on this host."""
    lock = path + ".lock"
    info = {"host": socket.gethostname(), "pid": os.getpid(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "started": utc_now()}
    for _ in range(5):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            reclaim_lock(path, lock, info["host"])
            continue
        except OSError as exc:
            raise StoreError(f"cannot create the lock file {lock}: {exc.strerror}; "
                             f"choose a writable directory") from None
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(info))
        except OSError as exc:  # a full disk: an empty lock would lock the file for good
            release_lock(lock)
            raise StoreError(f"cannot write the lock file {lock} ({exc.strerror or exc}); free "
                             f"disk space (or fix the file system) and run the same command "
                             f"again: the rows committed to {path} are kept") from exc
        return lock
    raise StoreError(f"cannot take the lock {lock}: other processes keep creating it")


def reclaim_lock(path: str, lock: str, host: str) -> None:
    """Remove ``lock`` if its writer is dead on this host; otherwise raise StoreError."""
    try:
        with open(lock) as fh:
            owner = json.loads(fh.read())
        pid, owner_host = int(owner["pid"]), str(owner["host"])
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError):
        raise StoreError(f"{path} is locked by {lock}, which cannot be read; if no psmpi process "
                         f"is writing {path}, delete {lock}") from None
    if owner_host == host and not pid_alive(pid):
        warnings.warn(f"{path}: reclaiming the lock of dead pid {pid} on {host} "
                      f"(started {owner.get('started')})", stacklevel=4)
        release_lock(lock)
        return
    job = owner.get("slurm_job_id")
    raise StoreError(f"{path} is being written by pid {pid} on host {owner_host}"
                     f"{f' (Slurm job {job})' if job else ''} since {owner.get('started')}; "
                     f"wait for it to finish or, if it is dead, delete {lock}")


def release_lock(lock: str | None) -> None:
    with contextlib.suppress(FileNotFoundError, TypeError):
        os.remove(lock)  # type: ignore[arg-type]

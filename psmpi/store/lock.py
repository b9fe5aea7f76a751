"""One writer per results file: psmpi's own lock file beside it.

``study.h5.lock`` holds JSON ``{host, pid, slurm_job_id, started}``. HDF5's flock is not
used: Lustre and NFS may lack it.

Taking the lock. The JSON is written to a unique temporary file beside the results
(``study.h5.lock-<pid>-<hex>.tmp``), the writer takes a POSIX record lock (``fcntl.lockf``)
on it, and hard-links it to ``study.h5.lock``. The link appears atomically and already
whole, so nobody ever reads a lock without its content, and it fails if a lock exists. The
descriptor stays open while the lock is held. A record lock belongs to the process: the
kernel (or the NFS lock manager) drops it when the process dies, and processes forked from
it (multiprocessing workers) do not inherit it, unlike ``flock``, which they would keep
alive after their master died.

Reclaiming a stale lock. A process that finds a lock opens it and asks for its record lock
without waiting. Refused: the holder is alive, on whatever host; a StoreError names it.
Granted: the process checks that the path still names the file it opened (else starts over)
and reads the JSON; if the pid named is dead on this host, it warns, unlinks the lock while
holding its record lock, and creates its own. A lock of another host, or of a live pid, is
a StoreError naming the holder and the fix. Only a process holding a lock file's record
lock unlinks it (its holder on release, or one reclaimer), so two processes that reclaim
the same stale lock can never delete each other's fresh one.

POSIX record locks are dropped when their process closes *any* descriptor of the file, so
a process never opens a lock file it holds: it keeps the locks it holds in a registry and
refuses a second writer of the same file from memory (:func:`read_owner` serves readers).

Without record locks. Where the file system refuses them (ENOLCK, EOPNOTSUPP, ENOSYS: some
Lustre and NFS mounts), the pid check alone decides, still with the same-file check; two
processes reclaiming one stale lock within the same instant may then both write. Where it
refuses hard links, the lock is created in place with O_EXCL and written right after; a
lock found empty for a moment is waited for, not called stale.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import fcntl
import json
import os
import random
import socket
import threading
import time
import uuid

from ..errors import StoreError, warn
from ..layout import LOCK_SUFFIX, lock_making_path, lock_path

# How long take_lock keeps retrying a lock that other processes are reclaiming or creating.
PATIENCE = 10.0
_REFUSED = {errno.EACCES, errno.EAGAIN}
_NO_RECORD_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}
GRANTED, REFUSED, UNSUPPORTED = "granted", "refused", "unsupported"
_datasync = getattr(os, "fdatasync", os.fsync)  # the content matters, not its times


@dataclasses.dataclass
class _Held:
    """A lock this process holds: its open descriptor keeps the record lock."""

    fd: int
    ident: tuple[int, int]  # (st_dev, st_ino): the file, whatever path names it
    real: str  # realpath of the lock path
    info: dict
    pid: int  # the taker; a forked child inherits this registry but not the record lock


_held: dict[str, _Held] = {}
_mutex = threading.Lock()  # one take/release at a time: threads share the record locks


def _new_mutex_in_child() -> None:
    global _mutex
    _mutex = threading.Lock()  # a thread of the parent may have held it at the fork


os.register_at_fork(after_in_child=_new_mutex_in_child)


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host is running (a zombie is dead)."""
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
    """Create ``path.lock`` atomically, reclaiming it from a dead process on this host.

    Parameters
    ----------
    path : str
        The results file.

    Returns
    -------
    str
        The lock's path, to pass to :func:`release_lock`.

    Raises
    ------
    StoreError
        Another live process (or this one) holds the lock, the lock cannot be read, or
        the directory is not writable.
    """
    lock = lock_path(path)
    info = {"host": socket.gethostname(), "pid": os.getpid(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "started": utc_now()}
    with _mutex:
        mine = _held_here(lock)
        if mine is not None:
            raise _busy(path, lock, mine.info)
        deadline, why = time.monotonic() + PATIENCE, "other processes keep creating it"
        while time.monotonic() < deadline:
            held = _create(lock, info)
            if held is not None:
                _held[lock] = held
                return lock
            why = _reclaim(path, lock, info["host"])
            if why:  # a lock in the making or being reclaimed: look again in a moment
                time.sleep(random.uniform(0.001, 0.01))
    raise StoreError(f"cannot take the lock {lock}: {why}; if no psmpi process is writing "
                     f"{path}, delete {lock}")


def release_lock(lock: str | None) -> None:
    """Give up a lock taken by :func:`take_lock`: unlink it if it is still ours, close it."""
    if lock is None:
        return
    with _mutex:
        held = _held.pop(lock, None)
        if held is None:
            return
        try:
            if held.pid == os.getpid() and _ident(lock) == held.ident:
                os.unlink(lock)  # safe: only the holder of the record lock unlinks
        except FileNotFoundError:
            pass
        finally:
            os.close(held.fd)


def read_owner(lock: str) -> dict:
    """The JSON of ``lock``; from memory if this process holds it (opening it would drop
    the record lock).

    Raises
    ------
    OSError, ValueError
        The lock is missing (FileNotFoundError) or unreadable.
    """
    with _mutex:
        mine = _held_here(lock)
    if mine is not None:
        return dict(mine.info)
    with open(lock) as fh:
        return json.loads(fh.read())


@dataclasses.dataclass(frozen=True)
class Owner:
    """What the lock of a results file says, as a reader sees it (:func:`owner_of`)."""

    lock: str
    state: str                # "live", "stale" (a dead pid on this host) or "unreadable"
    pid: int = 0
    host: str = ""
    info: dict = dataclasses.field(default_factory=dict)  # the lock's JSON


def owner_of(path: str) -> Owner | None:
    """Who holds the lock of the results file ``path``; None if it has no lock.

    A lock of a dead pid on this host is "stale"; on another host, liveness cannot be
    checked, so any readable lock counts as "live".
    """
    lock = lock_path(path)
    try:
        info = read_owner(lock)  # never reopens a lock this process holds
        pid, host = int(info["pid"]), str(info["host"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return Owner(lock, "unreadable")
    alive = host != socket.gethostname() or pid_alive(pid)
    return Owner(lock, "live" if alive else "stale", pid, host, info)


# ---------------------------------------------------------------------- internals
def _ident(lock: str) -> tuple[int, int] | None:
    try:
        st = os.stat(lock)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _fd_ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _held_here(lock: str) -> _Held | None:
    """The registry's entry for ``lock`` if this process holds it, under any spelling."""
    ident, real = _ident(lock), os.path.realpath(lock)
    for held in _held.values():
        if held.pid == os.getpid() and (held.ident == ident or held.real == real):
            return held
    return None


def _record_lock(fd: int, exclusive: bool = True) -> str:
    """Ask for the record lock of the whole file without waiting: GRANTED, REFUSED or
    UNSUPPORTED (the file system has no record locks)."""
    try:
        fcntl.lockf(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _REFUSED:
            return REFUSED
        if exc.errno in _NO_RECORD_LOCKS:
            return UNSUPPORTED
        raise
    return GRANTED


def _cannot_create(lock: str, exc: OSError) -> StoreError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = (f"free disk space (or fix the file system) and run the same command again: "
               f"the rows committed to {lock.removesuffix(LOCK_SUFFIX)} are kept")
    else:
        fix = "choose a writable directory"
    return StoreError(f"cannot create the lock file {lock}: {exc.strerror or exc}; {fix}")


def _create(lock: str, info: dict) -> _Held | None:
    """Make ``lock`` appear whole and record-locked; None if a lock exists already."""
    tmp = lock_making_path(lock, os.getpid(), uuid.uuid4().hex[:8])
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        raise _cannot_create(lock, exc) from None
    try:
        _write_all(fd, info)
        _record_lock(fd)  # a file nobody else knows: granted unless unsupported
        linked = _link(tmp, lock, fd)
    except OSError as exc:
        os.close(fd)
        raise _cannot_create(lock, exc) from None
    finally:
        _unlink_quietly(tmp)
    if linked:
        return _Held(fd, _fd_ident(fd), os.path.realpath(lock), info, os.getpid())
    os.close(fd)
    return None if linked is False else _create_in_place(lock, info)


def _link(tmp: str, lock: str, fd: int) -> bool | None:
    """Hard-link ``tmp`` to ``lock``: True if it is now the lock, False if one exists,
    None if the file system has no hard links."""
    try:
        os.link(tmp, lock)
    except FileExistsError:
        # Over NFS a retransmitted link can report EEXIST although it succeeded.
        return os.fstat(fd).st_nlink == 2 and _ident(lock) == _fd_ident(fd)
    except OSError as exc:
        if exc.errno in _NO_HARD_LINKS:
            return None
        raise
    return True


def _create_in_place(lock: str, info: dict) -> _Held | None:
    """The lock without a hard link: O_EXCL, then record lock and content."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return None
    except OSError as exc:
        raise _cannot_create(lock, exc) from None
    try:
        for _ in range(100):  # a reclaimer may be looking at the empty file for a moment
            if _record_lock(fd) != REFUSED:
                break
            time.sleep(0.01)
        _write_all(fd, info)
    except OSError as exc:
        os.close(fd)
        _unlink_quietly(lock)
        raise _cannot_create(lock, exc) from None
    return _Held(fd, _fd_ident(fd), os.path.realpath(lock), info, os.getpid())


def _write_all(fd: int, info: dict) -> None:
    data = json.dumps(info).encode()
    if os.write(fd, data) != len(data):
        raise OSError(errno.ENOSPC, "short write")
    _datasync(fd)  # other NFS clients read it without our closing it


def _unlink_quietly(name: str) -> None:
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass


def _reclaim(path: str, lock: str, host: str) -> str:
    """Remove ``lock`` if its writer is dead on this host.

    Returns
    -------
    str
        Empty to retry at once (the lock is gone), or why to retry in a moment.

    Raises
    ------
    StoreError
        A live process holds the lock, or the lock cannot be read.
    """
    try:
        fd, writable = os.open(lock, os.O_RDWR), True
    except PermissionError:  # another user's lock: a shared record lock still probes it
        fd, writable = os.open(lock, os.O_RDONLY), False
    except FileNotFoundError:
        return ""
    try:
        try:
            state = _record_lock(fd, exclusive=writable)
        except OSError as exc:
            raise StoreError(f"cannot lock {lock}: {exc.strerror}; if no psmpi process is "
                             f"writing {path}, delete {lock}") from None
        if _fd_ident(fd) != _ident(lock):
            return ""  # replaced or removed since we opened it: start over
        try:
            owner = _parse_owner(fd)
        except ValueError:
            raise _unreadable(path, lock) from None
        if owner is None:
            if state == REFUSED or _young(fd):
                return "its writer is still writing it"
            raise _unreadable(path, lock)
        dead_here = owner["host"] == host and not pid_alive(owner["pid"])
        if state == REFUSED:
            if dead_here:  # a live process holds the dead pid's lock: it is reclaiming it
                return (f"a live process holds it although pid {owner['pid']} it names is "
                        f"not running")
            raise _busy(path, lock, owner)
        if not dead_here:
            raise _busy(path, lock, owner)
        warn(f"{path}: reclaiming the lock of dead pid {owner['pid']} on {host} "
             f"(started {owner.get('started')})")
        if _fd_ident(fd) == _ident(lock):  # still the file judged stale
            _unlink_quietly(lock)
        return ""
    finally:
        os.close(fd)


def _parse_owner(fd: int) -> dict | None:
    """The lock's JSON, with int pid and str host; None if it is empty (being written).

    Raises
    ------
    ValueError
        The content is not a psmpi lock.
    """
    text = os.pread(fd, 1 << 16, 0).decode(errors="replace")
    if not text.strip():
        return None
    try:
        owner = json.loads(text)
        owner["pid"], owner["host"] = int(owner["pid"]), str(owner["host"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(text) from None
    return owner


def _young(fd: int) -> bool:
    """Whether the file changed in the last few seconds: an empty one may be being written."""
    return time.time() - os.fstat(fd).st_mtime < 2.0


def _unreadable(path: str, lock: str) -> StoreError:
    return StoreError(f"{path} is locked by {lock}, which cannot be read; if no psmpi process "
                      f"is writing {path}, delete {lock}")


def _busy(path: str, lock: str, owner: dict) -> StoreError:
    job = owner.get("slurm_job_id")
    return StoreError(f"{path} is being written by pid {owner['pid']} on host {owner['host']}"
                      f"{f' (Slurm job {job})' if job else ''} since {owner.get('started')}; "
                      f"wait for it to finish or, if it is dead, delete {lock}")

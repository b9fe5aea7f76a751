"""The exceptions psmpi raises.

Every exception psmpi raises on purpose derives from :class:`PsmpiError`::

    PsmpiError
     ├── ConfigError        a keyword argument, init() setting or PSMPI_* variable is wrong
     ├── PsetError          psets that cannot be run; the message lists every offender
     ├── StoreError         the results file (or a file psmpi writes) cannot be opened,
     │    │                 locked or written, e.g. on a full disk
     │    └── DamageError   part of the file fails its checksum or cannot be decoded
     ├── PsetFailed         a pset submitted to psmpi.Executor failed (its future raises it)
     ├── BackendError       a backend cannot start (not installed, wrong launch)
     │    └── PsetTimeout   a pset ran past timeout= and the backend ends the run (MPI)
     ├── SetupError         the set-up function (setup=) raised on a worker
     └── InternalError      an invariant of psmpi itself failed: a bug, report it

Failures of *user* code (a worker raising, returning a non-dict, returning a value that
cannot be stored) are never raised: they become rows of ``MapResults.missing``; with
``psmpi.Executor`` they are stored the same way and the pset's future raises PsetFailed.
"""

from __future__ import annotations

import os
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


class PsmpiError(Exception):
    """Base class of every error psmpi raises on purpose."""


class ConfigError(PsmpiError, ValueError):
    """A setting (keyword argument, init() value or PSMPI_* variable) is invalid."""


class PsetError(PsmpiError, ValueError):
    """One or more psets are invalid; raised before any compute."""


class StoreError(PsmpiError, OSError):
    """The HDF5 results file, or a file psmpi writes beside it or for prep_batch, cannot be
    opened, locked or written (a full disk, a lost mount)."""


class BackendError(PsmpiError, RuntimeError):
    """A backend is not available or cannot start."""


class InternalError(PsmpiError, RuntimeError):
    """An invariant of psmpi itself failed. This is a bug in psmpi."""


class PsetTimeout(BackendError):
    """A pset ran past ``timeout=`` where the backend cannot stop it alone.

    Raised by the MPI backend with ``mpi={"abort_on_timeout": True}``. The driver stores the
    psets as ``timeout`` failures, commits what came back and exits with status 75 (run
    again), and the job is aborted so that a requeue takes over. ``timed_out`` holds one
    ``(rank, pid, Held)`` per worker past its timeout (pid -1 if unknown).
    """

    def __init__(self, message: str, timed_out: list):
        super().__init__(message)
        self.timed_out = timed_out


class DamageError(StoreError):
    """Part of a results file fails its checksum or cannot be decoded: the file is damaged.

    The message names the file, the table and, for raw data, the column and the rows;
    :func:`psmpi.store.check` surveys the whole file.
    """


class SetupError(PsmpiError, RuntimeError):
    """The set-up function (``setup=``) raised in a worker process: the map stops.

    Raised by ``map()`` once, for the first worker that reported it; what was committed
    before stays. ``rank``, ``host`` and ``pid`` say where it ran, ``remote_traceback`` is
    the set-up's traceback there (also in the message).
    """

    def __init__(self, message: str, rank: int = -1, host: str = "", pid: int = -1,
                 remote_traceback: str = ""):
        super().__init__(message)
        self.rank, self.host, self.pid = rank, host, pid
        self.remote_traceback = remote_traceback

    def __reduce__(self):
        return type(self), (self.args[0], self.rank, self.host, self.pid, self.remote_traceback)


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn as from the first caller outside psmpi (the user's script, as numpy does), so
    the warning shows the user's line, never one of psmpi's own."""
    level, frame = 2, sys._getframe(1)  # stacklevel 2 is warn()'s caller
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, category, stacklevel=level)


class PsetFailed(PsmpiError):
    """A pset submitted to :class:`psmpi.Executor` failed; its future raises this.

    The failure is stored in the ``failures`` table like a failure of ``map()``.
    ``pset``: the pset as submitted; ``kind``: ``exception``, ``bad_result``, ``crashed``,
    ``timeout``, ...; ``message``: what went wrong; ``remote_traceback``: the worker's
    traceback ("" when there is none, e.g. for a crash).
    """

    def __init__(self, pset: dict, kind: str, message: str, remote_traceback: str = ""):
        super().__init__(f"pset {pset!r} failed ({kind}): {message}")
        self.pset = pset
        self.kind = kind
        self.message = message
        self.remote_traceback = remote_traceback

    def __reduce__(self):
        return type(self), (self.pset, self.kind, self.message, self.remote_traceback)

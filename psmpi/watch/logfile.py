"""The hidden per-run log ``.psmpi-DATE-TIME-PID.log`` in the working directory.

For debugging after the fact: whatever ``verbose`` was, the log has what happened. One file
per run (per Python process that calls ``map()``; under MPI that is rank 0 only), opened at
the first map that wants it, never before. The name holds the start time and the pid, and
the file is created with O_EXCL, so runs sharing a directory never write into each other's
log. It holds: start and end time, host, command line, working directory, Python and
package versions, the backend and its ranks or processes, relevant environment variables,
and for every map its settings, progress every 30 s, every failed pset with its traceback,
every stalled worker and pset past ``timeout=`` (:mod:`psmpi.watch.stalls`, through
``Reporter.warn``), and the final statistics.

Writing the log never stops a survey: if it cannot be written, one warning says why and the
run goes on without it.
"""

from __future__ import annotations

import atexit
import datetime
import os
import shlex
import sys
import threading

from ..errors import warn
from ..layout import LOG_PREFIX, LOG_SUFFIX
from ..utils import vmem
from ..worker.task import HOST

# Distributions whose versions go into the header (those installed).
PACKAGES = ("psmpi", "numpy", "pandas", "h5py", "cloudpickle", "tqdm", "mpi4py", "mpich", "ray")

# Environment variables worth knowing when reading a log: psmpi's settings, the batch
# system, the MPI launcher and thread counts. Nothing else (environments hold secrets).
ENV_PREFIXES = ("PSMPI_", "PARAMSURVEY_", "SLURM_", "PBS_", "LSB_", "PMI_SIZE", "PMI_RANK",
                "OMPI_COMM_WORLD_", "HYDRA_", "OMP_", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "NUMEXPR_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "HDF5_", "VIRTUAL_ENV",
                "CONDA_PREFIX", "PYTHONPATH")


def now_text() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


class RunLog:
    """One run's log file. Every line written is stamped with the time."""

    def __init__(self, path: str, file):
        self.path = path
        self.file = file
        self.started = datetime.datetime.now()
        self.maps = 0
        self.failures = 0
        self.lock = threading.Lock()  # the carbon thread may report a problem here too

    @classmethod
    def create(cls, directory: str = ".") -> RunLog:
        """A new, empty log in ``directory``: ``.psmpi-YYYYmmdd-HHMMSS-PID[-N].log``."""
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = os.path.join(os.path.abspath(directory), f"{LOG_PREFIX}{stamp}-{os.getpid()}")
        for attempt in range(100):
            path = base + (f"-{attempt}" if attempt else "") + LOG_SUFFIX
            try:
                # "x": O_EXCL, so a second run (same pid on another host sharing the
                # directory, same second) gets a name of its own.
                return cls(path, open(path, "x", encoding="utf-8", errors="backslashreplace"))
            except FileExistsError:
                continue
        raise FileExistsError(f"{base}*.log: 100 logs of that name exist already")

    def write(self, text: str) -> None:
        """Append ``text`` (may span lines) with a timestamp; give up quietly on errors."""
        if self.file is None:
            return
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        lines = text.rstrip("\n").split("\n")
        body = "".join(f"{stamp} {lines[0]}\n" if i == 0 else f"    {line}\n"
                       for i, line in enumerate(lines))
        with self.lock:
            try:
                self.file.write(body)
                self.file.flush()  # a killed run keeps every line written before
            except (OSError, ValueError) as exc:
                self.give_up(exc)

    def give_up(self, exc: Exception) -> None:
        file, self.file = self.file, None
        warn(f"psmpi: cannot write the run log {self.path} ({exc}); the run goes on "
             f"without it", RuntimeWarning)
        try:
            file.close()
        except (OSError, ValueError):
            pass

    def header(self, backend: str, workers: int, ranks: int) -> None:
        import platform  # here: a run without a log need not import it

        where = (f"{ranks} MPI ranks ({workers} workers)" if backend == "mpi" and ranks > 1
                 else f"{workers} worker{'s' if workers != 1 else ''}")
        lines = [
            "psmpi run log",
            f"started      {now_text()}",
            f"host         {HOST} (pid {os.getpid()})",
            f"command      {shlex.join([sys.executable] + sys.argv)}",
            f"directory    {os.getcwd()}",
            f"python       {platform.python_version()} ({platform.python_implementation()}, "
            f"{platform.platform()})",
            f"packages     {package_versions()}",
            f"backend      {backend}, {where}",
            f"memory       {vmem()}",
            "environment  " + (" ".join(shlex.quote(f"{k}={v}") for k, v in relevant_env())
                               or "(none of interest)"),
        ]
        self.write("\n".join(lines))

    def close(self) -> None:
        if self.file is None:
            return
        elapsed = datetime.datetime.now() - self.started
        failed = f"; {self.failures} psets failed (tracebacks above)" if self.failures else ""
        self.write(f"run ended {now_text()} after {elapsed.total_seconds():.1f} s: "
                   f"{self.maps} map{'s' if self.maps != 1 else ''}{failed}; memory {vmem()}")
        with self.lock:
            file, self.file = self.file, None
            try:
                file.close()
            except OSError:
                pass


def package_versions() -> str:
    import importlib.metadata  # here: 20 ms that a run without a log need not pay

    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    h5py = sys.modules.get("h5py")
    if h5py is not None:
        found.append(f"HDF5 {h5py.version.hdf5_version}")
    mpi = sys.modules.get("mpi4py.MPI")  # only if already imported: never initialise MPI here
    if mpi is not None:
        found.append(mpi.Get_library_version().strip().splitlines()[0])
    return ", ".join(found)


def relevant_env() -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIXES))


class _Current:
    """This process's log: opened at the first map that asks for one, closed at exit."""

    def __init__(self):
        self.log: RunLog | None = None
        self.failed = False  # creating it failed once: do not try (and warn) at every map
        self.at_exit = False


_current = _Current()


def run_log(enabled: bool, backend: str, workers: int, ranks: int) -> RunLog | None:
    """This run's log, created (with its header) at the first call that has it ``enabled``.

    None when disabled for this map or when the log cannot be created (warned once).
    """
    if not enabled or _current.failed:
        return None
    if _current.log is None:
        try:
            _current.log = RunLog.create()
        except OSError as exc:
            _current.failed = True
            warn(f"psmpi: cannot create the run log in the working directory ({exc}); "
                 f"the run goes on without it (logfile=False silences this)",
                 RuntimeWarning)
            return None
        _current.log.header(backend, workers, ranks)
        if not _current.at_exit:
            atexit.register(close_run_log)
            _current.at_exit = True
    return _current.log


def current() -> RunLog | None:
    """The log of this run if one is open."""
    return _current.log


def close_run_log() -> None:
    """Write the end of the run and close the log; the next map would start a new one."""
    log, _current.log = _current.log, None
    _current.failed = False
    if log is not None:
        log.close()

"""The MPI applications this process launched (``psmpi.run_mpi``) and that still run.

The ensemble backend stops them all when the map is left with psets in flight (the drain
ran out, an error on the driver), so no launched application outlives the survey. Each is
the leader of a process group of its own (mpiexec, srun or a template's program) and
carries a mark in its environment (``PSMPI_LAUNCH``) that its ranks inherit; stopping one
signals its group, then (Linux) every process left with its mark, since MPICH's hydra
puts each rank in a session of its own.

srun's ranks are no children of it: they run under Slurm's slurmstepd. So each srun launch
names its job step, and stopping one (1) sends SIGTERM to the step's ranks (``scancel
--signal=TERM``), as mpiexec passes SIGTERM on to its ranks, so that an application may
save or clean up (srun itself would SIGKILL them at once); (2) then SIGTERMs srun, which
cancels the step, and SIGKILLs it if it does not exit; (3) then cancels the steps of those
names that Slurm still has: an srun that had to be SIGKILLed (it hung, or was stopped)
leaves its step running in the job, its cores taken, until the job ends.

A driver killed outright (SIGKILL) cannot do that: :mod:`psmpi.worker.launchguard` does
(``PR_SET_PDEATHSIG`` on each launcher, see :func:`how_to_start`, and a guard process that
sweeps the marks).
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time

from . import launchguard

_lock = threading.Lock()
_running: dict[subprocess.Popen, str] = {}  # application -> its PSMPI_LAUNCH mark
_steps: dict[subprocess.Popen, str] = {}  # srun launches: the name of their job step
GRACE_SECONDS = 5.0  # between SIGTERM and SIGKILL
SLURM_SECONDS = 30.0  # for an answer of squeue or scancel
LINUX = sys.platform.startswith("linux")
PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl if LINUX else None
_guard: dict[int, tuple[subprocess.Popen, str, itertools.count]] = {}  # pid -> guard, token


def register(proc: subprocess.Popen, mark: str = "", step: str | None = None) -> None:
    """``proc`` runs, its ranks carrying ``mark``; ``step``: the ``--job-name`` of the
    Slurm job step it started."""
    with _lock:
        _running[proc] = mark
        if step:
            _steps[proc] = step


def unregister(proc: subprocess.Popen) -> None:
    with _lock:
        _running.pop(proc, None)
        _steps.pop(proc, None)


def new_mark() -> str:
    """A mark for the next application: ``<this driver's token>/<n>``. The first call
    starts the guard (Linux), which sweeps the token's marks once this process is gone."""
    with _lock:
        pid = os.getpid()
        if pid not in _guard:  # first launch of this process (a fork has its own guard)
            token = f"{pid}-{secrets.token_hex(4)}"
            _guard[pid] = (start_guard(token), token, itertools.count())
        guard, token, numbers = _guard[pid]
        return f"{token}/{next(numbers)}"


def start_guard(token: str) -> subprocess.Popen | None:
    """The guard process of ``token`` (None off Linux, where /proc is missing)."""
    if not LINUX:
        return None
    # Only the standard library, no site: it starts in a few tens of ms. Its own session:
    # a Ctrl-C at the terminal is the driver's to handle.
    return subprocess.Popen([sys.executable, "-I", "-S", launchguard.__file__, token,
                             str(GRACE_SECONDS)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def child_setup(parent: int, cpus: tuple[int, ...] = ()):
    """The function run in a launcher's child before exec: default signal actions, and
    SIGTERM when the thread that started it (the pset's) or the driver dies (Linux).

    ``parent``: the driver's pid; if it is gone before the death signal was armed,
    the child leaves at once. ``cpus``: core ids the launcher and everything it starts
    are pinned to (inherited by the ranks unless the MPI binds them itself)."""

    def setup() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_DFL)
        if cpus:
            os.sched_setaffinity(0, cpus)
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
            if os.getppid() != parent:
                os._exit(1)

    return setup


@functools.cache
def setpriv() -> str | None:
    """util-linux's ``setpriv``, if it can set the parent-death signal (Linux, >= 2.33)."""
    found = shutil.which("setpriv") if LINUX else None
    if found is None:
        return None
    try:
        works = subprocess.run([found, "--pdeathsig", "TERM", "--", "true"], timeout=30,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return found if works.returncode == 0 else None


def how_to_start(cpus: tuple[int, ...] = ()) -> tuple[list[str], dict]:
    """What goes before a launcher's command line, and the Popen arguments, so that it
    leads a session of its own, gets SIGTERM when the driver dies, has the default
    actions of SIGTERM, SIGINT and SIGUSR1, and runs on ``cpus`` if given.

    A ``preexec_fn`` makes Python fork the whole driver instead of vfork-ing it: ~5 ms a
    launch, a tenth of a bare mpiexec's time. So it is used only when needed (pinning, or
    a signal this process ignores, which exec would keep ignored); else ``setpriv
    --pdeathsig`` arms the death signal (~1 ms), and without setpriv the guard alone
    ends the applications of a killed driver.
    """
    kwargs: dict = {"start_new_session": True}
    ignored = any(signal.getsignal(sig) in (signal.SIG_IGN, None)
                  for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1))
    if cpus or ignored:
        kwargs["preexec_fn"] = child_setup(os.getpid(), cpus)
        return [], kwargs
    wrapper = setpriv()
    return ([wrapper, "--pdeathsig", "TERM", "--"] if wrapper else []), kwargs


def stop(procs: list[subprocess.Popen], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM the process groups of ``procs``, SIGKILL those still alive after ``grace``;
    then end whatever else carries their marks (ranks in sessions of their own). The srun
    launches among them: SIGTERM to their steps' ranks first, and their steps still in
    Slurm at the end cancelled (see the module's docstring)."""
    with _lock:
        marks = [_running.get(proc, "") for proc in procs]
        steps = [_steps[proc] for proc in procs if proc in _steps]
    if steps:
        _terminate_ranks(steps, [proc for proc in procs if proc in _steps], grace)
    _signal_groups(procs, grace)
    if LINUX:
        for mark in marks:
            if mark:
                launchguard.sweep(mark, grace)
    if steps:
        cancel_steps(steps, grace)


def _terminate_ranks(steps: list[str], sruns: list[subprocess.Popen], grace: float) -> None:
    """SIGTERM the ranks of the job steps named ``steps``; wait up to ``grace`` for their
    sruns to exit."""
    ids = job_steps(steps)
    if not ids:
        return
    _slurm("scancel", "--signal=TERM", *ids)
    deadline = time.monotonic() + grace
    while any(proc.poll() is None for proc in sruns) and time.monotonic() < deadline:
        time.sleep(0.05)


def _signal_groups(procs: list[subprocess.Popen], grace: float) -> None:
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
            break


def stop_all() -> None:
    """Stop every application still running."""
    with _lock:
        procs = list(_running)
    stop(procs)


def _slurm(*args: str) -> str | None:
    """The output of a Slurm command, or None if it failed (cleanup is best effort: the job's
    end stops every step anyway)."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=SLURM_SECONDS)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def job_steps(names: list[str]) -> list[str]:
    """The ids (``job.step``) of this job's steps named one of ``names``."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return []
    said = _slurm("squeue", "--steps", f"--jobs={job}", "--noheader", "--format=%i %j")
    wanted = set(names)
    return [line.split()[0] for line in (said or "").splitlines()
            if len(line.split()) == 2 and line.split()[1] in wanted]


def cancel_steps(names: list[str], grace: float = GRACE_SECONDS) -> list[str]:
    """SIGKILL the job steps named ``names`` that Slurm still has; the ids of those still
    there ``grace`` seconds later (none, normally)."""
    left = job_steps(names)
    if left:
        _slurm("scancel", "--signal=KILL", *left)
        deadline = time.monotonic() + grace
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = job_steps(names)
    return left

"""The MPI applications this process launched (``psmpi.run_mpi``) and that still run.

The ensemble backend stops them all when the map is left with psets in flight (the drain
ran out, an error on the driver), so no launched application outlives the survey. Each is
the leader of a process group of its own (mpiexec or srun, which take their ranks along).

srun's ranks are no children of it: they run under Slurm's slurmstepd. So each srun launch
names its job step, and stopping one (1) sends SIGTERM to the step's ranks (``scancel
--signal=TERM``), as mpiexec passes SIGTERM on to its ranks, so that an application may
save or clean up (srun itself would SIGKILL them at once); (2) then SIGTERMs srun, which
cancels the step, and SIGKILLs it if it does not exit; (3) then cancels the steps of those
names that Slurm still has: an srun that had to be SIGKILLed (it hung, or was stopped)
leaves its step running in the job, its cores taken, until the job ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

_lock = threading.Lock()
_running: set[subprocess.Popen] = set()
_steps: dict[subprocess.Popen, str] = {}  # srun launches: the name of their job step
GRACE_SECONDS = 5.0  # between SIGTERM and SIGKILL
SLURM_SECONDS = 30.0  # for an answer of squeue or scancel


def register(proc: subprocess.Popen, step: str | None = None) -> None:
    """``proc`` runs; ``step``: the ``--job-name`` of the Slurm job step it started."""
    with _lock:
        _running.add(proc)
        if step:
            _steps[proc] = step


def unregister(proc: subprocess.Popen) -> None:
    with _lock:
        _running.discard(proc)
        _steps.pop(proc, None)


def stop(procs: list[subprocess.Popen], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM the process groups of ``procs``, SIGKILL those still alive after ``grace``.
    The srun launches among them: SIGTERM to their steps' ranks first, and their steps
    still in Slurm at the end cancelled (see the module's docstring)."""
    with _lock:
        steps = [_steps[proc] for proc in procs if proc in _steps]
    if steps:
        _terminate_ranks(steps, [proc for proc in procs if proc in _steps], grace)
    _signal_groups(procs, grace)
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
            return


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

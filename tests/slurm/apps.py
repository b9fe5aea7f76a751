"""The ensemble study that tests/test_slurm.py submits through jobscripts/mpi-apps.sbatch.

    APPS_MIX=sizes APPS_PER_SIZE=4 APPS_SECONDS_FIRST_RUN=2 APPS_DRAIN_AT=6 python apps.py

Each pset launches tests/scripts/mpi_app.py with ``psmpi.run_mpi`` (srun in the job, with
--mpi=pmi2 through SLURM_MPI_TYPE), which writes its communicator size, wall-clock start
and end and the node of each rank; the row keeps them with what psmpi reserved (``reserved``:
``node:ranks,...``), the launch line and the run (``restart``: SLURM_RESTART_COUNT).

APPS_MIX=sizes: APPS_PER_SIZE psets of each of 1, 2 and 3 ranks.
APPS_MIX=nodes (a job of 2 nodes of 2 CPUs): psets of 3 ranks (over both nodes), of 2
ranks on 2 whole nodes, and of 1 and 2 ranks.

APPS_NOLOCAL=1: the applications run with MPIR_CVAR_NOLOCAL=1 (MPICH uses no shared memory
between ranks). The drain kills applications, and MPICH's shared memory segment of each
(/dev/shm/mpich_shm_<FNV-1a of "job.step">_<n>) stays behind; the requeued run numbers its
steps from 0 again, and the step that gets a killed step's number fails in MPI_Init with
"Out of memory" on this one machine (docs/guide/ensembles.md, Limits). Once complete, the
study removes the segments its job left, so that no later job with the same id meets them.

APPS_DRAIN_AT=k: in the job's first run, the worker of pset k asks Slurm for the job's
time-limit warning (``scancel --batch --signal=USR1``), as the --signal of a time limit
would send it, so the drain comes while applications run. When psmpi has stopped on that
signal the script prints the rows in the file and the job steps Slurm still has for the job
(``squeue --steps``; none may be left), before exiting with psmpi's status.
"""

import glob
import json
import os
import subprocess
import sys
import time

import psmpi

APP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts",
                   "mpi_app.py")
JOB = os.environ.get("SLURM_JOB_ID", "")
OUT = "apps.h5"


def launch(pset, system_kwargs, user_kwargs):
    if pset["k"] == user_kwargs["drain_at"]:
        subprocess.run(["scancel", "--batch", "--signal=USR1", JOB], check=True, timeout=30)
    here = psmpi.context()
    out = os.path.abspath(os.path.join(here.calc_dir, "app.json"))
    env = {"SLURM_MPI_TYPE": "pmi2"}
    if user_kwargs["nolocal"]:  # see the module's docstring
        env["MPIR_CVAR_NOLOCAL"] = "1"
    done = psmpi.run_mpi([sys.executable, APP, out, str(user_kwargs["seconds"])], pset,
                         env=env, timeout=120)
    with open(out) as file:
        app = json.load(file)
    reserved = ",".join(f"{name}:{ranks}" for name, ranks, _ in here.reservation.hosts)
    return {"size": app["size"], "start": app["start"], "end": app["end"],
            "rank_nodes": ",".join(app["nodes"]), "reserved": reserved,
            "whole_nodes": here.reservation.whole_nodes, "command": done["command"],
            "restart": user_kwargs["restart"]}


def psets_of(mix: str, per_size: int) -> list[dict]:
    if mix == "sizes":
        return [{"k": k, "ranks": 1 + k % 3} for k in range(3 * per_size)]
    kinds = [{"ranks": 3}, {"ranks": 2, "nodes": 2}, {"ranks": 1}, {"ranks": 2}]
    return [{"k": k, "nodes": 0, **kinds[k % len(kinds)]} for k in range(4 * per_size)]


def resources(pset: dict) -> dict:
    return {"ranks": pset["ranks"], "nodes": pset.get("nodes") or None}  # 0: not whole nodes


def job_steps() -> list[str]:
    """The job's steps Slurm knows now, except the batch script's own (and extern)."""
    said = subprocess.run(["squeue", "--steps", f"--jobs={JOB}", "--noheader", "--format=%i %j"],
                          capture_output=True, text=True, timeout=30, check=True).stdout
    return [line.strip() for line in said.splitlines()
            if line.split() and not line.split()[0].endswith((".batch", ".extern"))]


def fnv1a(text: str) -> int:
    value = 0x811C9DC5
    for byte in text.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def remove_mpich_leftovers(steps: int = 1000) -> list[str]:
    """Remove the shared memory segments MPICH left for this job's steps (none runs now)."""
    removed = []
    for step in range(steps):
        for path in glob.glob(f"/dev/shm/mpich_shm_{fnv1a(f'{JOB}.{step}'):x}_*"):
            os.unlink(path)
            removed.append(path)
    return removed


def main():
    restart = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    psets = psets_of(os.environ.get("APPS_MIX", "sizes"), int(os.environ.get("APPS_PER_SIZE", "4")))
    seconds = float(os.environ.get("APPS_SECONDS_FIRST_RUN", "1") if restart == 0 else 0)
    drain_at = int(os.environ.get("APPS_DRAIN_AT", "-1")) if restart == 0 else -1
    print(f"apps: run {restart + 1} of job {JOB}: {len(psets)} applications, {seconds} s each",
          flush=True)
    t0 = time.monotonic()
    try:
        results = psmpi.map(launch, psets, name="apps", out=OUT, resources=resources,
                            user_kwargs={"seconds": seconds, "restart": restart,
                                         "drain_at": drain_at,
                                         "nolocal": os.environ.get("APPS_NOLOCAL") == "1"})
    except SystemExit as stop:
        rows = len(psmpi.read(OUT, name="apps"))
        print(f"apps: stopped with status {stop.code} after {time.monotonic() - t0:.1f} s, "
              f"{rows} rows committed", flush=True)
        print(f"apps: job steps left after the drain: {job_steps()}", flush=True)
        raise
    print(f"apps: complete, {len(results)} rows, {results.progress.resumed} resumed, backend "
          f"{results.stats.backend} with {results.stats.workers} workers, "
          f"{time.monotonic() - t0:.1f} s", flush=True)
    print(f"apps: removed MPICH's leftovers of killed steps: {remove_mpich_leftovers()}",
          flush=True)


if __name__ == "__main__":
    main()

"""The study that tests/test_slurm.py submits through the scripts in jobscripts/.

    SURVEY_PSETS=200 SURVEY_NAP_FIRST_RUN=1 SURVEY_NAP=0 python survey.py

Every pset naps, then returns ``y = i * i`` and the run that computed it (``restart``:
Slurm's SLURM_RESTART_COUNT, 0 on the first run). The first run of a job naps
SURVEY_NAP_FIRST_RUN seconds per pset, so that it cannot finish before Slurm's time-limit
warning; a requeued run naps SURVEY_NAP seconds, so that it finishes long before its own
warning. Results go to survey.h5 in the working directory (the default ``out``). When
psmpi stops on a signal, the script prints how many rows the file holds before exiting.

As a task of a job array (jobscripts/array.sbatch) psmpi computes the task's shard only.
SURVEY_KILL_AT=i: the worker that gets pset i SIGKILLs the survey's main process (under the
multiprocessing backend, its parent), as a node failure or the OOM killer would; only in
the array's first submission (PSMPI_SHARD unset), not when the task is resubmitted.
"""

import os
import signal
import time

import psmpi


def nap(pset, system_kwargs, user_kwargs):
    if pset["i"] == user_kwargs.get("kill_at"):
        os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(user_kwargs["seconds"])
    return {"y": pset["i"] * pset["i"], "restart": user_kwargs["restart"]}


def main():
    restart = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    n = int(os.environ.get("SURVEY_PSETS", "60"))
    variable = "SURVEY_NAP_FIRST_RUN" if restart == 0 else "SURVEY_NAP"
    seconds = float(os.environ.get(variable, "0"))
    kill_at = int(os.environ.get("SURVEY_KILL_AT", -1)) if "PSMPI_SHARD" not in os.environ \
        else -1
    psmpi.init(commit_seconds=0.2)  # under MPI, only rank 0 goes on from here
    print(f"survey: run {restart + 1} of job {os.environ.get('SLURM_JOB_ID')}: {n} psets, "
          f"{seconds} s each", flush=True)
    try:
        results = psmpi.map(nap, psmpi.params.product({"i": list(range(n))}), name="nap",
                            user_kwargs={"seconds": seconds, "restart": restart,
                                         "kill_at": kill_at})
    except SystemExit as stop:  # psmpi drained on a signal: what is in the file now?
        rows = len(psmpi.read("survey.h5", name="nap"))
        print(f"survey: stopped with status {stop.code}, {rows} rows committed", flush=True)
        raise
    print(f"survey: complete, {len(results)} rows, {results.progress.resumed} resumed, "
          f"backend {results.stats.backend} with {results.stats.workers} workers", flush=True)


if __name__ == "__main__":
    main()

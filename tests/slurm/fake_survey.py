"""A stand-in for a psmpi survey, for running jobscripts/requeue.sbatch without Slurm
(tests/test_jobscripts.py). It behaves like psmpi at the process level only:

    FAKE_EXIT=N   exit with status N at once
    (unset)       write FAKE_READY, then wait for SIGUSR1; on it, "drain" for FAKE_DRAIN
                  seconds and exit with status 75, as psmpi does (a time limit of 30 s
                  otherwise: exit 99)

Its arguments, SLURM_RESTART_COUNT, PSMPI_NCORES and PSMPI_BACKEND (and PSMPI_JOB_SCRIPT if
set) go to FAKE_LOG, one line per run.
"""

import os
import signal
import sys
import time


def main():
    with open(os.environ["FAKE_LOG"], "a") as log:
        log.write(f"args={sys.argv[1:]} restart={os.environ.get('SLURM_RESTART_COUNT')} "
                  f"ncores={os.environ.get('PSMPI_NCORES')} "
                  f"backend={os.environ.get('PSMPI_BACKEND')}"
                  + (f" job_script={os.environ['PSMPI_JOB_SCRIPT']}"
                     if os.environ.get("PSMPI_JOB_SCRIPT") else "") + "\n")
    if "FAKE_EXIT" in os.environ:
        sys.exit(int(os.environ["FAKE_EXIT"]))
    got = []
    signal.signal(signal.SIGUSR1, lambda signum, frame: got.append(signum))
    with open(os.environ["FAKE_READY"], "w") as ready:
        ready.write(str(os.getpid()))
    deadline = time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    if not got:
        sys.exit(99)
    print("fake survey: stopped by SIGUSR1, draining", flush=True)
    time.sleep(float(os.environ.get("FAKE_DRAIN", "0")))
    sys.exit(75)


if __name__ == "__main__":
    main()

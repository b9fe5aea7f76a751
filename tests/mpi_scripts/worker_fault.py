"""A failure on a worker rank outside the user's exceptions must abort the job, not hang it.

    PSMPI_TEST_FAULT=worker-internal:2 mpiexec -n 4 python worker_fault.py OUT.h5
    mpiexec -n 4 python worker_fault.py OUT.h5 sys-exit

With the fault hook, rank 2 raises inside psmpi's service loop when its first group
arrives; with "sys-exit", the worker function calls sys.exit(3) on pset 50 (SystemExit is
no Exception, so it escapes the Task). The job must end with a non-zero status and a message
naming the rank.
"""

import sys
import time

import psmpi


def nap(pset):
    time.sleep(0.05)
    return {"i2": pset["i"] * 2}


def nap_or_exit(pset):
    if pset["i"] == 50:
        sys.exit(3)
    return nap(pset)


def main(out, mode=""):
    psmpi.init(backend="mpi", verbose=0, group_size=1)
    worker = nap_or_exit if mode == "sys-exit" else nap
    psmpi.map(worker, [{"i": i} for i in range(200)], out=out, name="doomed")
    print("map finished although a worker rank failed", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])

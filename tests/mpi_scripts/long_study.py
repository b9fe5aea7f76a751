"""A survey of naps: the target of the signal tests.

    mpiexec -n 3 python long_study.py OUT.h5 NAP_SECONDS DRAIN_SECONDS

Prints "running" once the first pset is out; the test then signals mpiexec, which forwards
the signal to every rank. Rank 0 drains: it stops handing out psets and waits up to
DRAIN_SECONDS for the naps in flight, commits, and exits with status 75. With naps longer
than the drain, the workers are abandoned. A rank 0 blocked in an MPI receive would act on
the signal only when a nap ends; a polling one acts at once.
"""

import sys
import time

import psmpi


def nap(pset, system_kwargs, user_kwargs):
    time.sleep(user_kwargs["seconds"])
    return {"done": pset["i"]}


def psets():
    for i in range(40):
        if i == 1:
            print("running", flush=True)
        yield {"i": i}


def main(out, seconds, drain_seconds):
    psmpi.init(backend="mpi", verbose=0, group_size=1, commit_seconds=0.1,
               drain_seconds=float(drain_seconds))
    psmpi.map(nap, psets(), out=out, name="long", user_kwargs={"seconds": float(seconds)})
    print("finished", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])

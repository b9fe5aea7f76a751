"""Many small maps, each with one long pset first: take-backs all along, for the kill test.

    KILL_TOKEN=... mpiexec -n 4 python takeback_kill.py OUT.h5 CALLS RUN

Map m (name "m<m>") has 8 psets; pset 0 naps 0.3 s and pset 3, queued behind it, 0.1 s;
the rest 0.02 s, one pset per group. So in every map rank 0 asks a queued group back while
the long pset runs. Every computed pset appends "<run> <m> <i>" to CALLS, so the test can
tell that no pset was computed twice in one run nor again after it was committed.
"""

import sys
import time

import psmpi

MAPS, PSETS = 40, 8


def nap(pset, system_kwargs, user_kwargs):
    time.sleep(0.3 if pset["i"] == 0 else 0.1 if pset["i"] == 3 else 0.02)
    with open(user_kwargs["calls"], "a") as f:
        f.write(f"{user_kwargs['run']} {pset['m']} {pset['i']}\n")
    return {"done": 1}


def main(out, calls, run):
    psmpi.init(backend="mpi", verbose=0, group_size=1)
    for m in range(MAPS):
        psets = [{"m": m, "i": i} for i in range(PSETS)]
        psmpi.map(nap, psets, out=out, name=f"m{m}", commit_seconds=0.02,
                  user_kwargs={"calls": calls, "run": int(run)})


if __name__ == "__main__":
    main(*sys.argv[1:])

"""A study with a poison pset: pset 7 kills the process running it (SIGSEGV).

With POISON_HOW=sys-exit the worker function calls sys.exit(3) instead, which psmpi treats
as the death of the process running it, on every backend.

    python poison_study.py OUT BACKEND           # serial / multiprocessing
    mpiexec -n K python poison_study.py OUT mpi

tests/test_poison.py runs it again and again, as a requeue loop would, until it exits 0.
Every worker call appends "<pset index>" to $POISON_CALLS.
"""

import os
import signal
import sys
import time

import psmpi

N_PSETS = 40
POISON = 7


def worker(pset, system_kwargs, user_kwargs):
    with open(os.environ["POISON_CALLS"], "a") as f:
        f.write(f"{system_kwargs['pset_index']}\n")
    if pset["a"] == POISON:
        if os.environ.get("POISON_HOW") == "sys-exit":
            sys.exit(3)
        os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(0.01)
    return {"y": pset["a"] * 2}


psmpi.init(backend=sys.argv[2], ncores=2, verbose=0)  # under mpiexec: rank 0 goes on
res = psmpi.map(worker, [{"a": a} for a in range(N_PSETS)], out=sys.argv[1], name="poison")
print("missing", sorted(res.missing.df["a"]), sorted(res.missing.df["_kind"]), flush=True)

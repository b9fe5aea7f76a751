"""A study killed at random instants by tests/test_resume_kill.py.

Every worker call appends "<run> <pset index>" to $KILL_CALLS, so the test can prove that
a pset committed before a kill is never computed again.
"""

import os
import sys
import time

import psmpi

N_PSETS = 10000


def worker(pset, system_kwargs, user_kwargs):
    time.sleep(pset["sleep"])
    with open(os.environ["KILL_CALLS"], "a") as f:
        f.write(f"{os.environ['KILL_RUN']} {system_kwargs['pset_index']}\n")
    return {"y": pset["a"] * 3 + 1, "label": f"a={pset['a']}"}


psmpi.init(backend=sys.argv[2], ncores=2, verbose=0)  # under mpiexec: rank 0 goes on
psets = psmpi.params.product({"a": range(N_PSETS)}, {"sleep": 0.003})
res = psmpi.map(worker, psets, out=sys.argv[1], name="kill", commit_seconds=0.05)
assert len(res) == N_PSETS, len(res)

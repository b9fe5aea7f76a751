"""A study of slow psets, stopped by a signal in tests/test_drain.py.

Each worker call appends its pset index to $DRAIN_CALLS just before returning, so the test
knows which psets finished and must therefore be committed; with $DRAIN_STARTS set, also
its process id to that file when it starts, so the test knows which processes compute.
"""

import os
import sys
import time

import psmpi


def worker(pset, system_kwargs, user_kwargs):
    if os.environ.get("DRAIN_STARTS"):
        with open(os.environ["DRAIN_STARTS"], "a") as f:
            f.write(f"{os.getpid()}\n")
    time.sleep(user_kwargs["sleep"])
    with open(os.environ["DRAIN_CALLS"], "a") as f:
        f.write(f"{system_kwargs['pset_index']}\n")
    return {"y": pset["a"] + 0.5}


path, backend, sleep = sys.argv[1], sys.argv[2], float(sys.argv[3])
psmpi.init(backend=backend, ncores=2, verbose=1)
psets = [{"a": a} for a in range(40)]
res = psmpi.map(worker, psets, out=path, name="drain", group_size=1, user_kwargs={"sleep": sleep})
print("complete", len(res))

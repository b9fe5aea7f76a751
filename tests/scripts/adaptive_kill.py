"""An adaptive study killed at random instants by tests/test_executor.py.

The next psets depend on the results so far (proposals around the best x). Every worker call
appends "<run> <x>" to $KILL_CALLS (a pset committed before a run must not be computed by
it); every result the study acts on is appended to $KILL_SEEN first (each must be in the
file after a kill: a future resolves only once its row is committed). Each call sleeps
$KILL_SLEEP seconds (from the environment, not the pset: a pset's hash must not change).
Prints "answer <best x> <best f>" at the end.
"""

import collections
import math
import os
import sys
import time

import numpy as np

import psmpi

N_EVALUATIONS = int(os.environ.get("KILL_EVALUATIONS", "300"))
IN_FLIGHT = 6


def bump(pset):
    time.sleep(float(os.environ["KILL_SLEEP"]))
    with open(os.environ["KILL_CALLS"], "a") as f:
        f.write(f"{os.environ['KILL_RUN']} {pset['x']!r}\n")
    x = pset["x"]
    if pset["x"] > 0.97:
        raise ValueError("x past 0.97 fails")  # failures are data: recomputed on a rerun
    noise = np.random.default_rng(int(x * 1e12) % 2**32).normal(0.0, 0.01)
    return {"f": math.exp(-((x - 0.3) ** 2) / 0.01) + noise}


def main(path, backend):
    psmpi.init(backend=backend, ncores=2, verbose=0)  # under mpiexec: rank 0 goes on
    rng = np.random.default_rng(5)
    best = (-math.inf, 0.5)
    queue = collections.deque()
    seen = open(os.environ["KILL_SEEN"], "a")
    with psmpi.Executor(out=path, name="adaptive", commit_seconds=0.05) as ex:
        for x in np.linspace(0.0, 1.0, IN_FLIGHT):
            queue.append(ex.submit(bump, {"x": round(float(x), 12)}))
        done = 0
        while queue:
            future = queue.popleft()
            try:
                row = future.result()
                best = max(best, (row["f"], row["x"]))
                seen.write(f"{row['x']!r}\n")
                seen.flush()
            except psmpi.PsetFailed as exc:
                assert exc.kind == "exception" and "0.97" in exc.message, exc
            done += 1
            if done + len(queue) < N_EVALUATIONS:
                x = best[1] + rng.normal(0.0, 0.3 * 0.99 ** done)
                queue.append(ex.submit(bump, {"x": round(float(np.clip(x, 0, 1)), 12)}))
    print(f"answer {best[1]!r} {best[0]!r}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

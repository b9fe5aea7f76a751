"""Adaptive refinement: find the peak of a noisy function, proposing around the best so far.

    python examples/adaptive_peak.py                                  # multiprocessing
    .venv/bin/mpiexec -n 4 .venv/bin/python examples/adaptive_peak.py  # MPI, same script

A coarse grid first, then each new x is drawn around the best x seen so far, ever closer.
IN_FLIGHT psets are always queued, so no worker waits for the loop. Results are consumed
in submission order (the oldest future first): the proposals then depend only on the
results, never on which worker finished first, so the run is deterministic.

Kill it (Ctrl-C, SIGTERM, or SIGKILL) and run it again: every result already in
adaptive_peak.h5 comes back at once from the file, the same proposals follow, and it goes on
where it stopped with the same final answer.
"""

import collections
import math
import time

import numpy as np

import psmpi

N_EVALUATIONS = 150
IN_FLIGHT = 8       # psets queued at any time: keeps every worker busy
GRID = 16           # the coarse start
SECONDS = 0.005     # an "expensive" evaluation


def noisy_bump(pset):
    """A peak at x = 0.6180 under noise that depends only on x (a pset gives one answer)."""
    x = pset["x"]
    time.sleep(SECONDS)
    noise = np.random.default_rng(int(x * 1e12) % 2**32).normal(0.0, 0.02)
    return {"f": math.exp(-((x - 0.6180) ** 2) / 0.005) + noise}


def proposals(best_x, rng, n_done):
    """The next x: around the best so far, the spread shrinking as results accumulate."""
    width = 0.15 * 0.97 ** n_done
    return float(np.clip(best_x + rng.normal(0.0, width), 0.0, 1.0))


def main():
    rng = np.random.default_rng(2024)  # a fixed seed: the same proposals on every run
    best = (-math.inf, None)
    queue = collections.deque()
    with psmpi.Executor(name="peak", verbose=1) as ex:
        for x in np.linspace(0.0, 1.0, GRID):
            queue.append(ex.submit(noisy_bump, {"x": float(x)}))
        n_done = 0
        while queue:
            row = queue.popleft().result()  # the oldest first: deterministic decisions
            n_done += 1
            best = max(best, (row["f"], row["x"]))
            submitted = n_done + len(queue)
            if submitted < N_EVALUATIONS and (n_done >= GRID or not queue):
                for _ in range(min(IN_FLIGHT - len(queue), N_EVALUATIONS - submitted)):
                    queue.append(ex.submit(noisy_bump, {"x": proposals(best[1], rng, n_done)}))
    print(f"peak at x = {best[1]:.4f}, f = {best[0]:.4f} after {n_done} evaluations")


if __name__ == "__main__":
    psmpi.init()  # MPI under mpiexec, else multiprocessing; worker ranks never return from here
    main()

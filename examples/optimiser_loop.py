"""An optimiser loop on psmpi.Executor: minimise Booth's function (minimum 0 at (1, 3)),
several trials in flight, each result durable before the optimiser acts on it.

    python examples/optimiser_loop.py                                  # multiprocessing
    .venv/bin/mpiexec -n 4 .venv/bin/python examples/optimiser_loop.py  # MPI, same script

The optimiser is an evolution strategy in ask/tell form: ``ask()`` proposes a trial around
the best point, ``tell()`` learns its value and adapts the step (1/5th success rule). A
trial whose simulation fails (here: it "diverges" far from the origin) raises
psmpi.PsetFailed from its future; the optimiser treats it as a bad point and goes on.

Trials are told in submission order, so a run killed at any moment and started again
replays its history from optimiser_loop.h5 and reaches the same optimum.
"""

import collections
import time

import numpy as np

import psmpi

N_TRIALS = 200
IN_FLIGHT = 6


def booth(pset):
    time.sleep(0.005)  # an "expensive" simulation
    x, y = pset["x"], pset["y"]
    if abs(x) > 4 or abs(y) > 4:
        raise FloatingPointError(f"the simulation diverged at ({x:.3g}, {y:.3g})")
    return {"value": (x + 2 * y - 7) ** 2 + (2 * x + y - 5) ** 2}


class EvolutionStrategy:
    """A (1+1)-ES with several trials in flight: ask() proposes, tell() learns."""

    def __init__(self, start, step, seed):
        self.best = np.asarray(start, dtype=float)
        self.best_value = np.inf
        self.step = step
        self.rng = np.random.default_rng(seed)

    def ask(self) -> dict:
        x, y = self.best + self.step * self.rng.normal(size=2)
        return {"x": round(float(x), 12), "y": round(float(y), 12)}

    def tell(self, trial: dict, value: float) -> None:
        if value < self.best_value:
            self.best, self.best_value = np.array([trial["x"], trial["y"]]), value
            self.step *= 1.2
        else:
            self.step *= 1.2 ** -0.25


def main():
    es = EvolutionStrategy(start=(-2.0, -2.0), step=1.0, seed=7)
    trials = collections.deque()
    failed = 0
    with psmpi.Executor(name="es", verbose=1) as ex:
        for _ in range(IN_FLIGHT):
            pset = es.ask()
            trials.append((pset, ex.submit(booth, pset)))
        for n in range(N_TRIALS):
            pset, future = trials.popleft()  # the oldest first: the same decisions every run
            try:
                value = future.result()["value"]
            except psmpi.PsetFailed:
                value, failed = np.inf, failed + 1
            es.tell(pset, value)
            if n + len(trials) + 1 < N_TRIALS:
                pset = es.ask()
                trials.append((pset, ex.submit(booth, pset)))
    x, y = es.best
    print(f"minimum {es.best_value:.3e} at ({x:.4f}, {y:.4f}) after {N_TRIALS} trials "
          f"({failed} diverged)")


if __name__ == "__main__":
    psmpi.init()  # MPI under mpiexec, else multiprocessing; worker ranks never return from here
    main()

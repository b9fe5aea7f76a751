"""A survey with uneven psets: the study behind docs/report.png, the picture in the README.

    python docs/report_demo.py && psmpi report report_demo.h5 -o docs/report.png --no-html

Each pset sleeps for a time that grows with its size, with random spread, so some psets
take ten times longer than others; two psets fail.
"""

import time

import numpy as np

import psmpi


def simulate(pset):
    rng = np.random.default_rng(pset["seed"])
    seconds = 0.02 * pset["size"] * rng.lognormal(0.0, 0.6)
    time.sleep(seconds)
    if pset["size"] == 8 and pset["seed"] in (3, 17):
        raise ValueError(f"no convergence for size {pset['size']}, seed {pset['seed']}")
    return {"energy": float(rng.normal()), "seconds": seconds}


if __name__ == "__main__":
    psets = psmpi.params.product({"size": [1, 2, 4, 8, 16]}, {"seed": list(range(24))})
    results = psmpi.map(simulate, psets, ncores=4)
    print(results.stats)

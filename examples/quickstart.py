"""The README example: five psets that sleep, results in quickstart.h5.

    python examples/quickstart.py                                  # multiprocessing
    .venv/bin/mpiexec -n 4 .venv/bin/python examples/quickstart.py  # MPI, same script

Run it twice: the second run finds every pset in quickstart.h5 and computes nothing.
"""

import time

import psmpi


def sleep_worker(pset):
    time.sleep(pset["duration"])
    return {"slept": pset["duration"]}


psmpi.init()  # MPI under mpiexec, else multiprocessing; worker ranks never return from here

psets = [{"duration": 0.3}] * 5  # five identical psets are five psets, five rows

results = psmpi.map(sleep_worker, psets, verbose=2)

for r in results.itertuples():
    print(r.duration, r.slept)
print(results.progress)
print("stored:", len(psmpi.read(results.path)), "rows in", results.path)

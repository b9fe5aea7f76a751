"""An ensemble of slow applications, stopped by a signal in tests/test_ensemble.py.

Each application (a python process run by run_mpi) appends its process id to $APP_PIDS
when it starts, then sleeps argv[2] seconds (pset 0: at most 1.5 s, so it ends within the
drain period of 3 s). Run on PSMPI_HOSTS=localhost:2.
"""

import sys

import psmpi

APP = ("import os, sys, time; open(os.environ['APP_PIDS'], 'a').write(f'{{os.getpid()}}\\n'); "
       "time.sleep(float(sys.argv[1]))")


def worker(pset):
    seconds = min(1.5, float(sys.argv[2])) if pset["a"] == 0 else float(sys.argv[2])
    done = psmpi.run_mpi([sys.executable, "-c", APP, str(seconds)], pset, launcher="{cmd}")
    return {"runtime": done["runtime"]}


results = psmpi.map(worker, [{"a": a} for a in range(6)], resources={"ranks": 1},
                    out=sys.argv[1], drain_seconds=3, verbose=0, vstats=0, logfile=False)
print("complete", len(results.results))

"""An ensemble of MPI applications whose driver tests/test_ensemble.py kills with SIGKILL.

``ensemble_kill.py OUT SECONDS MARKER``: six psets of 1 or 2 ranks on PSMPI_HOSTS; psets 0
and 1 take 0.2 s, the others SECONDS. Each application is tests/scripts/marked_app.py
under the mpich wheel's mpiexec, logging to $APP_LOG.
"""

import os
import sys
from pathlib import Path

import psmpi

APP = str(Path(__file__).with_name("marked_app.py"))


def worker(pset):
    seconds = 0.2 if pset["a"] < 2 else float(sys.argv[2])
    psmpi.run_mpi([sys.executable, APP, os.environ["APP_LOG"], "{a}", str(seconds), sys.argv[3]],
                  pset, launcher="mpich", timeout=120)
    return {"ok": 1}


results = psmpi.map(worker, [{"a": a, "ranks": 1 + a % 2} for a in range(6)],
                    resources=lambda pset: {"ranks": pset["ranks"]}, out=sys.argv[1],
                    commit_seconds=0.1, verbose=0, vstats=0, logfile=False)
print("complete", len(results.results), sorted(results.results["a"]))

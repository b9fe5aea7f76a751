"""Which heavy modules psmpi's worker processes hold: python worker_imports.py BACKEND OUT [START]

Runs one map writing OUT (so the driver does import h5py and pandas) whose worker function
reports the heavy modules of the process it runs in (and
psmpi's driver-only modules among them). Prints one JSON line: the modules after
``import psmpi``, the driver's after the map, and per worker (rank under MPI, else pid) the
modules it held while computing. START: the multiprocessing start method. Under
``mpiexec -n K`` with BACKEND=mpi every rank runs this file; only rank 0 prints.
"""

import json
import os
import sys
import time

# Imported by psmpi's driver (rank 0) or its reports only: a worker never needs them.
HEAVY = {"pandas", "h5py", "matplotlib", "pyarrow", "scipy"}
# psmpi's own modules of the driver, the results file's tables and the tools: loaded on
# first use, so a worker process (every MPI rank but 0) never looks them up.
DRIVER_ONLY = ("psmpi.driver", "psmpi.store.table", "psmpi.store.file", "psmpi.store.checking",
               "psmpi.watch", "psmpi.tools", "psmpi.history", "psmpi.study", "psmpi.executor",
               "psmpi.cli", "psmpi.results")


def heavy_modules() -> list[str]:
    heavy = {name.split(".")[0] for name in sys.modules} & HEAVY
    ours = {p for p in DRIVER_ONLY for m in sys.modules if m == p or m.startswith(p + ".")}
    return sorted(heavy | ours)


BEFORE_IMPORT = heavy_modules()
import psmpi  # noqa: E402  (the modules before and after it are the point)

AFTER_IMPORT = heavy_modules()


def report(pset):
    time.sleep(0.02)  # long enough that every worker gets psets
    ctx = psmpi.context()
    return {"heavy": ",".join(heavy_modules()), "who": ctx.rank if ctx.backend == "mpi"
            else os.getpid()}


def main() -> None:
    backend, out = sys.argv[1], sys.argv[2]
    kwargs = {} if backend == "mpi" else {"ncores": 2}
    if len(sys.argv) > 3:
        kwargs[backend] = {"start_method": sys.argv[3]}
    res = psmpi.map(report, [{"i": i} for i in range(60)], backend=backend, out=out,
                    group_size=1, verbose=0, **kwargs)
    workers: dict[str, set] = {}
    for who, heavy in zip(res.results["who"].tolist(), res.results["heavy"].tolist()):
        workers.setdefault(str(who), set()).update(filter(None, heavy.split(",")))
    print(json.dumps({"before_import": BEFORE_IMPORT, "after_import": AFTER_IMPORT,
                      "driver": heavy_modules(), "rows": len(res.results),
                      "workers": {who: sorted(mods) for who, mods in workers.items()}}))


if __name__ == "__main__":
    main()

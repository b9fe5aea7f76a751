"""One long pset first, then short ones: the target of tests/test_takeback.py.

    mpiexec -n 4 python takeback_study.py OUT.h5 LONG_SECONDS

Pset 0 naps LONG_SECONDS, pset 3 (queued behind it on rank 1, in list order with two groups
in flight) naps LONG_SECONDS / 2, the others 0.05 s, one pset per group. With take-back the
master asks pset 3 back for a worker that runs dry, so the map takes about LONG_SECONDS;
without, 1.5 × LONG_SECONDS. Prints the map's wall time, then checks that rank 0's ledger is
empty (nothing held, nothing queued, nothing asked back).
"""

import sys
import time

import psmpi


def nap(pset, system_kwargs, user_kwargs):
    time.sleep(pset["seconds"])
    return {"slept": pset["seconds"]}


def main(out, long_seconds):
    long_seconds = float(long_seconds)
    psmpi.init(backend="mpi", verbose=0, group_size=1)
    seconds = [long_seconds, 0.05, 0.05, long_seconds / 2] + [0.05] * 26
    psets = [{"i": i, "seconds": s} for i, s in enumerate(seconds)]
    started = time.monotonic()
    psmpi.map(nap, psets, out=out, name="takeback")
    print(f"makespan {time.monotonic() - started:.3f}", flush=True)
    from psmpi.backends.mpi import Master
    master = Master.instance(None)
    assert not any(master.inflight) and not any(master.holding) and not master.queued, (
        master.inflight, master.holding, master.queued)


if __name__ == "__main__":
    main(*sys.argv[1:])

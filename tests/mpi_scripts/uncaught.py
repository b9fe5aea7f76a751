"""An uncaught exception on rank 0 after init() must end the whole job within seconds.

    mpiexec -n 4 python uncaught.py OUT.h5

Map "first" is committed, then a second map's pset generator raises while two workers run
psets that sleep 60 s. Without psmpi's excepthook (MPI Abort), rank 0 would exit and wait
for those workers (or hang in MPI_Finalize): the job would last a minute or forever.
"""

import sys
import time

import psmpi


def nap(pset):
    time.sleep(pset["seconds"])
    return {"slept": pset["seconds"]}


def psets_then_crash():
    yield {"seconds": 60.0}
    yield {"seconds": 60.0}
    time.sleep(0.5)  # the two psets above are running on workers by now
    raise RuntimeError("boom in the user's pset generator")


def main(out):
    psmpi.init(backend="mpi", verbose=0, group_size=1)
    first = psmpi.map(nap, [{"seconds": 0.0}] * 20, out=out, name="first")
    assert len(first) == 20
    print("first map committed", flush=True)
    psmpi.map(nap, psets_then_crash(), out=out, name="second")


if __name__ == "__main__":
    main(sys.argv[1])

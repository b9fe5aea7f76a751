"""A study that runs long enough for another process to fill its disk meanwhile.

    mpiexec -n 2 python full_disk_mpi_study.py OUT.h5 N

Used by tests/test_disk_full.py on a small tmpfs: each pset takes about 2 ms, so rank 0
hands out a group (and appends it to OUT.h5.attempts) many times a second.
"""

import sys
import time

import psmpi


def worker(pset):
    time.sleep(0.002)
    return {"y": pset["a"] * 2}


psmpi.init(verbose=0)
res = psmpi.map(worker, [{"a": a} for a in range(int(sys.argv[2]))], out=sys.argv[1],
                name="full")
print("complete", len(res))

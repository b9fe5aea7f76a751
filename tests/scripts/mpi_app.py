"""A tiny MPI application for the ensemble tests: rank 0 writes the communicator's size,
the start and end times (wall clock, so applications can be compared) and the CPU affinity
of every rank to the file named by its first argument, after sleeping its second argument."""

import json
import os
import sys
import time

from mpi4py import MPI

start = time.time()
comm = MPI.COMM_WORLD
time.sleep(float(sys.argv[2]))
comm.Barrier()
end = time.time()
starts, ends = comm.gather(start), comm.gather(end)
affinities = comm.gather(sorted(os.sched_getaffinity(0)))
if comm.rank == 0:
    with open(sys.argv[1], "w") as file:
        json.dump({"size": comm.size, "start": min(starts), "end": max(ends),
                   "affinity": sorted(set().union(*affinities)), "ranks": affinities}, file)

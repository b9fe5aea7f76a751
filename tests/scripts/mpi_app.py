"""A tiny MPI application for the ensemble tests: rank 0 writes the communicator's size,
the start and end times (wall clock, so applications can be compared), the CPU affinity
and the node (Slurm's SLURMD_NODENAME, else the host name) of every rank to the file named
by its first argument, after sleeping its second argument."""

import json
import os
import signal
import socket
import sys
import time

from mpi4py import MPI

# Stopped (psmpi sends SIGTERM to the ranks first), leave through MPI_Finalize, which
# removes MPICH's shared memory; a rank killed leaves /dev/shm/mpich_shm_* behind.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
start = time.time()
comm = MPI.COMM_WORLD
time.sleep(float(sys.argv[2]))
comm.Barrier()
end = time.time()
starts, ends = comm.gather(start), comm.gather(end)
nodes = comm.gather(os.environ.get("SLURMD_NODENAME") or socket.gethostname())
affinities = comm.gather(sorted(os.sched_getaffinity(0)))
if comm.rank == 0:
    with open(sys.argv[1], "w") as file:
        json.dump({"size": comm.size, "start": min(starts), "end": max(ends),
                   "affinity": sorted(set().union(*affinities)), "ranks": affinities,
                   "nodes": nodes}, file)

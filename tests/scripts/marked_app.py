"""An MPI application for the killed-driver test: every rank logs ``start A PID`` to the file
argv[1]; rank 0 of a long run (argv[3] > 5 s) also starts a child in a session of its own
(out of reach of hydra and of any process group); after argv[3] seconds rank 0 logs
``done A``. argv[4] is a marker that names these processes in ``ps``."""

import os
import subprocess
import sys
import time

from mpi4py import MPI

log, a, seconds, marker = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
comm = MPI.COMM_WORLD
with open(log, "a") as file:
    file.write(f"start {a} {os.getpid()}\n")
if comm.rank == 0 and seconds > 5:
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", marker],
                     start_new_session=True)
time.sleep(seconds)
comm.Barrier()
if comm.rank == 0:
    with open(log, "a") as file:
        file.write(f"done {a}\n")

"""A survey where one pset stops or outlasts its timeout: the target of tests/test_stall.py.

    mpiexec -n K python stall_study.py OUT.h5 MODE [ABORT]

12 psets of 0.05 s, one per group. Pset 3 depends on MODE:

* ``stop``: its worker writes "RANK PID HOST" to OUT.h5.stopped and SIGSTOPs itself (first
  time only); the test reads the reports, then sends SIGCONT.
* ``slow``: it sleeps 4 s (past the timeout the test sets with PSMPI_TIMEOUT).
* ``hang``: it sleeps 600 s.
* ``fast``: like the others.

ABORT=1 sets mpi={"abort_on_timeout": True}. Prints "map finished" at the end.
"""

import os
import signal
import sys
import time

import psmpi

NAPS = {"slow": 4.0, "hang": 600.0}


def nap(pset, system_kwargs, user_kwargs):
    if pset["i"] == 3:
        mode, marker = user_kwargs["mode"], user_kwargs["marker"]
        if mode == "stop" and not os.path.exists(marker):
            with open(marker + ".tmp", "w") as fh:
                fh.write(f"{system_kwargs['rank']} {os.getpid()} {system_kwargs['host']}")
            os.replace(marker + ".tmp", marker)
            os.kill(os.getpid(), signal.SIGSTOP)
        time.sleep(NAPS.get(mode, 0.05))
    else:
        time.sleep(0.05)
    return {"done": pset["i"]}


def main(out, mode, abort="0"):
    psmpi.init(backend="mpi", verbose=1, group_size=1, commit_seconds=0.1,
               mpi={"abort_on_timeout": abort == "1"})
    psmpi.map(nap, [{"i": i} for i in range(12)], out=out, name="naps",
              user_kwargs={"mode": mode, "marker": out + ".stopped"})
    print("map finished", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])

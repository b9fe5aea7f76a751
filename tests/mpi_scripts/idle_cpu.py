"""Measure the CPU that idle psmpi ranks burn (not a test; Linux, one node).

    mpiexec -n 4 python tests/mpi_scripts/idle_cpu.py [SECONDS]

Prints CPU seconds per wall second of every rank in two phases:
  between maps: rank 0 runs user code (sleeps), the workers wait for work;
  long psets:   every worker naps in a pset, rank 0 waits for their results.
MPICH's blocking calls would show ~1.0 (100 % of a core) for every waiting rank.
"""

import os
import sys
import time

import psmpi


def cpu_seconds(pid: int) -> float:
    """CPU time of a process; /proc/PID/schedstat is in ns, stat only in 10 ms ticks."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except OSError:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ranks_pids() -> list[int]:
    """This rank and its siblings: the launcher's proxy started every rank of this node."""
    parent = os.getppid()
    with open(f"/proc/{parent}/task/{parent}/children") as f:
        return [int(pid) for pid in f.read().split()]


def measure(pids, phase, action) -> None:
    before = {pid: cpu_seconds(pid) for pid in pids}
    t0 = time.monotonic()
    action()
    wall = time.monotonic() - t0
    for pid in pids:
        who = "rank 0 (master)" if pid == os.getpid() else f"pid {pid} (worker)"
        share = (cpu_seconds(pid) - before[pid]) / wall
        print(f"{phase:13s} {who:20s} {share * 1000:7.2f} ms CPU per wall second "
              f"({share * 100:.2f} % of a core)", flush=True)


def nap(pset):
    time.sleep(pset["seconds"])
    return {"slept": pset["seconds"]}


def main(seconds):
    psmpi.init(backend="mpi", verbose=0)
    pids = ranks_pids()
    workers = len(pids) - 1
    psmpi.map(nap, [{"seconds": 0.0}] * workers, out=None)  # every worker is serving
    measure(pids, "between maps", lambda: time.sleep(seconds))
    measure(pids, "long psets", lambda: psmpi.map(nap, [{"seconds": seconds}] * workers,
                                                  out=None, group_size=1))


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)

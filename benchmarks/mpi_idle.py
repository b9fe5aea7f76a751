"""Idle CPU: CPU seconds per wall second of waiting ranks, `mpiexec -n 4` (1 master, 3 workers).

Two phases of SECONDS each, measured from /proc/<pid>/task/*/schedstat of every rank (all its
threads: mpi4py.futures' master works in a thread of its own; rank 0 finds
its siblings as the children of the launcher's proxy, and their ranks from PMI_RANK in
/proc/<pid>/environ; Linux, one node):

- between maps: rank 0 sleeps in the script after a map; every worker waits for work.
- long psets: rank 0 maps 2 psets that sleep SECONDS each, one per worker: 2 workers are
  busy (asleep inside the pset), 1 worker has nothing to do, rank 0 waits for the results.

MPICH's blocking calls (MPI_Recv, MPI_Probe, MPI_Ssend...) spin, so a rank waiting in one
shows ~1000 ms per s (a whole core) or, with more spinning ranks than cores, its share of them.

    python benchmarks/mpi_idle.py           # 5-s phases, 3 rounds
    python benchmarks/mpi_idle.py --quick   # 2-s phases, 1 round
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

NPROCS = 4
WORKERS = NPROCS - 1
BUSY = 2  # psets in the "long psets" phase

SYSTEMS = {
    "psmpi": "psmpi backend='mpi', verbose=0; the long psets mapped with group_size=1, out=None",
    "futures": "mpi4py.futures.MPIPoolExecutor (under `python -m mpi4py.futures`), "
               "executor.map(nap, psets, chunksize=1); its own default backoff "
               "(MPI4PY_FUTURES_BACKOFF unset: polls sleeping up to 1 ms)",
    "schwimmbad": "schwimmbad.MPIPool: workers wait in a blocking comm.recv, the master in "
                  "map() loops on Iprobe and, once every task is out, a blocking Probe",
}
PEER_MODULES = {"futures": "mpi4py", "schwimmbad": "schwimmbad"}


def nap(pset):
    time.sleep(pset["seconds"])
    return {"rank": int(os.environ.get("PMI_RANK", -1))}


def siblings() -> dict[int, int]:
    """{rank: pid} of every rank on this node: the children of this rank's parent (the proxy)."""
    parent = os.getppid()
    with open(f"/proc/{parent}/task/{parent}/children") as f:
        pids = [int(pid) for pid in f.read().split()]
    ranks = {}
    for pid in pids:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        if b"PMI_RANK" in env:
            ranks[int(env[b"PMI_RANK"])] = pid
    return ranks


def cpu_shares(pids: dict[int, int], action) -> tuple[dict[int, float], object]:
    """Run ``action``; CPU seconds per wall second of every rank meanwhile, and its value."""
    before = {rank: common.cpu_seconds(pid) for rank, pid in pids.items()}
    t0 = time.monotonic()
    value = action()
    wall = time.monotonic() - t0
    return {rank: (common.cpu_seconds(pid) - before[rank]) / wall
            for rank, pid in pids.items()}, value


def phases(mapper, seconds: float) -> dict:
    """The two phases, given ``mapper(psets) -> list of result dicts``."""
    pids = siblings()
    assert len(pids) == NPROCS, pids
    mapper([{"i": i, "seconds": 0.0} for i in range(WORKERS)])  # every worker is serving
    between, _ = cpu_shares(pids, lambda: time.sleep(seconds))
    long, out = cpu_shares(pids, lambda: mapper([{"i": i, "seconds": seconds}
                                                 for i in range(BUSY)]))
    busy = sorted({r["rank"] for r in out})
    return {"between": between, "long": long, "busy": busy}


def run_psmpi(seconds: float) -> dict:
    import psmpi
    psmpi.init(backend="mpi", verbose=0)

    def mapper(psets):
        res = psmpi.map(nap, psets, out=None, group_size=1)
        return list(res.iterdicts())

    return phases(mapper, seconds)


def run_futures(seconds: float) -> dict:
    from mpi4py.futures import MPIPoolExecutor
    with MPIPoolExecutor() as executor:
        return phases(lambda psets: list(executor.map(nap, psets, chunksize=1)), seconds)


def run_schwimmbad(seconds: float) -> dict:
    from schwimmbad import MPIPool
    pool = MPIPool()
    return phases(lambda psets: pool.map(nap, psets), seconds)  # pool.close() runs at exit


def run_one(system: str, seconds: float) -> dict:
    return globals()["run_" + system](seconds)


def measure(system: str, seconds: float) -> dict:
    command = common.mpi_command(NPROCS, __file__, ["--one", system, str(seconds)],
                                 futures=system == "futures")
    return common.run_result(command, timeout=600)


def report(systems: list[str], seconds: float, results: dict, failed: dict) -> None:
    from common import table
    common.report_failures(failed, results)
    print()

    def ms(values):
        return f"{1000 * statistics.median(values):.1f}" if values else "n/a"

    def rng(values):
        return f"{1000 * min(values):.1f} – {1000 * max(values):.1f}" if values else ""

    rows = []
    for system in systems:
        runs = results[system]
        if not runs:
            continue
        for phase in ("between", "long"):
            master = [r[phase]["0"] for r in runs]
            idle, busy = [], []
            for r in runs:
                busy_ranks = set(r["busy"]) if phase == "long" else set()
                for rank, share in r[phase].items():
                    if rank != "0":
                        (busy if int(rank) in busy_ranks else idle).append(share)
            label = "between maps" if phase == "between" else "long psets"
            rows.append([system, label, ms(master), rng(master), ms(idle), rng(idle),
                         ms(busy) if busy else "–", len(runs)])
    print(table(["system", "phase", "rank 0 (master), ms CPU per s", "min – max",
                 "idle workers, ms CPU per s", "min – max",
                 "busy workers (asleep in a pset)", "rounds"], rows))
    print()
    print(f"1000 ms per s is a whole core. Medians over rounds (and over the idle workers of "
          f"each round: {WORKERS} between maps, {WORKERS - BUSY} during the long psets).")
    print()
    print(f"Systems (`mpiexec -n {NPROCS}`, phases of {seconds:g} s):")
    common.list_systems(systems, SYSTEMS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.round_options(parser, SYSTEMS, "2-s phases, 1 round", reps=3, quick_reps=1)
    parser.add_argument("--seconds", type=float, help="phase length (default 5, 2 with --quick)")
    parser.add_argument("--one", nargs=2, metavar=("SYSTEM", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        out = run_one(args.one[0], float(args.one[1]))
        if out is not None:
            common.emit(out)
        return

    if sys.platform != "linux":
        sys.exit("mpi_idle.py reads /proc: Linux only")
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    reps = args.reps or (1 if args.quick else 3)
    common.header(f"mpi_idle: CPU burnt by waiting ranks, `mpiexec -n {NPROCS}`")
    print(f"- {reps} rounds; in each round every system runs once, in turn, each as a fresh "
          f"`mpiexec -n {NPROCS}`; CPU time of all threads of each rank from "
          f"/proc/<pid>/task/*/schedstat")
    systems = common.installed_systems([s for s in args.systems.split(",") if s], PEER_MODULES)
    results, failed = common.interleaved(systems, reps, lambda s: measure(s, seconds))
    report(systems, seconds, results, failed)


if __name__ == "__main__":
    main()

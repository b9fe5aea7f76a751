"""Per-pset overhead at group_size=1 under `mpiexec -n 2` (one master, one worker).

psmpi maps psets that do no work, one pset per message, and the time per pset is compared
with a raw mpi4py round trip of a small dict between the same two ranks (ping-pong). Every
measurement is a fresh `mpiexec -n 2` in a fresh temporary directory; systems take turns.

    python benchmarks/mpi_overhead.py           # 2000 psets / round trips, 5 rounds
    python benchmarks/mpi_overhead.py --quick   # 500, 3 rounds
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

WARMUP = 100
TARGET = 2.0

SYSTEMS = {
    "psmpi": "psmpi.map(noop, psets, group_size=1, out='overhead.h5'), backend='mpi', "
             "verbose=0; noop returns None; psets {'i': i, 'x': 0.5}",
    "psmpi-mem": "the same with out=None (no HDF5 file)",
    "futures": "mpi4py.futures.MPIPoolExecutor().map(noop, psets, chunksize=1) under "
               "`python -m mpi4py.futures`, for context (polls sleeping up to 1 ms)",
    "schwimmbad": "schwimmbad.MPIPool().map(noop, psets), for context (one pset per message, "
                  "blocking calls)",
    "pingpong": "raw mpi4py round trip: rank 0 comm.send(dict) to rank 1, which comm.recv()s "
                "it and comm.send()s it back (blocking calls, pickle); per round trip",
    "pingpong-pkl5": "the same round trip through mpi4py.util.pkl5 with isend + improbe/irecv "
                     "polled without sleeping (psmpi's transport, none of its bookkeeping)",
}
BASELINE = "pingpong"


def noop(pset):
    return None


def make_psets(n: int) -> list[dict]:
    return [{"i": i, "x": 0.5} for i in range(n)]


def run_psmpi(n: int, out: str | None) -> dict:
    import psmpi
    psmpi.init(backend="mpi", verbose=0, group_size=1)
    psmpi.map(noop, make_psets(WARMUP), out=None, name="warmup")
    psets = make_psets(n)
    t0, c0 = time.perf_counter(), time.process_time()
    res = psmpi.map(noop, psets, out=out, name="bench")
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert len(res) == n and not len(res.missing.df)
    return {"us": seconds / n * 1e6, "rank0_cpu_us": cpu / n * 1e6}


def run_futures(n: int) -> dict:
    from mpi4py.futures import MPIPoolExecutor
    with MPIPoolExecutor() as executor:
        list(executor.map(noop, make_psets(WARMUP), chunksize=1))
        psets = make_psets(n)
        t0, c0 = time.perf_counter(), time.process_time()
        out = list(executor.map(noop, psets, chunksize=1))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert len(out) == n
    return {"us": seconds / n * 1e6, "rank0_cpu_us": cpu / n * 1e6}


def run_schwimmbad(n: int) -> dict:
    from schwimmbad import MPIPool
    pool = MPIPool()
    pool.map(noop, make_psets(WARMUP))
    psets = make_psets(n)
    t0, c0 = time.perf_counter(), time.process_time()
    out = pool.map(noop, psets)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert len(out) == n
    return {"us": seconds / n * 1e6, "rank0_cpu_us": cpu / n * 1e6}  # pool.close() at exit


def run_pingpong(n: int, pkl5: bool) -> dict | None:
    from mpi4py import MPI
    world = MPI.COMM_WORLD
    rank = world.Get_rank()
    if pkl5:
        from mpi4py.util import pkl5 as _pkl5
        comm = _pkl5.Intracomm(world)

        def send(obj, dest):
            request = comm.isend(obj, dest, 27)
            while not request.test()[0]:
                pass

        def recv(source):
            while True:
                message = comm.improbe(source, 27)
                if message is not None:
                    request = message.irecv()
                    while True:
                        done, obj = request.test()
                        if done:
                            return obj
    else:
        comm = world

        def send(obj, dest):
            comm.send(obj, dest, 27)

        def recv(source):
            return comm.recv(source=source, tag=27)

    psets = make_psets(n + WARMUP)
    if rank == 1:
        for _ in range(n + WARMUP):
            send(recv(0), 0)
        return None
    for pset in psets[:WARMUP]:
        send(pset, 1)
        recv(1)
    t0, c0 = time.perf_counter(), time.process_time()
    for pset in psets[WARMUP:]:
        send(pset, 1)
        back = recv(1)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert back == psets[-1]
    return {"us": seconds / n * 1e6, "rank0_cpu_us": cpu / n * 1e6}


def run_one(system: str, n: int) -> dict | None:
    if system == "psmpi":
        return run_psmpi(n, "overhead.h5")
    if system == "psmpi-mem":
        return run_psmpi(n, None)
    if system == "futures":
        return run_futures(n)
    if system == "schwimmbad":
        return run_schwimmbad(n)
    if system == "pingpong":
        return run_pingpong(n, pkl5=False)
    if system == "pingpong-pkl5":
        return run_pingpong(n, pkl5=True)
    raise SystemExit(f"unknown system {system!r}")


def measure(system: str, n: int) -> dict:
    command = common.mpi_command(2, __file__, ["--one", system, str(n)],
                                 futures=system == "futures")
    return common.run_result(command, timeout=600)


def report(systems: list[str], n: int, results: dict, failed: dict) -> None:
    from common import ratio_cell, spread, table
    common.report_failures(failed, results)
    print()
    rows = []
    for system in systems:
        runs = results[system]
        if not runs:
            continue
        med, lo, hi = spread([r["us"] for r in runs])
        cpu = spread([r["rank0_cpu_us"] for r in runs])[0]
        pairs = list(zip([r["us"] for r in runs], [r["us"] for r in results.get(BASELINE, [])]))
        rows.append([system, f"{med:.1f}", f"{lo:.1f} – {hi:.1f}", f"{cpu:.1f}", len(runs),
                     ratio_cell([mine / base for mine, base in pairs])])
    print(table(["system", "µs per pset (round trip), median", "min – max",
                 "rank 0 CPU µs per pset", "rounds", f"÷ {BASELINE}, per round"], rows))
    print()
    for system in ("psmpi", "psmpi-mem"):
        pairs = list(zip([r["us"] for r in results.get(system, [])],
                         [r["us"] for r in results.get(BASELINE, [])]))
        if pairs:
            med = spread([mine / base for mine, base in pairs])[0]
            print(f"- target {system} ≤ {TARGET:g}× the raw round trip ({BASELINE}): "
                  f"{'met' if med <= TARGET else 'MISSED'} ({med:.2f}×)")
    print()
    print(f"Systems (`mpiexec -n 2`; {n:,} psets or round trips timed after {WARMUP} "
          f"untimed ones):")
    common.list_systems(systems, SYSTEMS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.round_options(parser, SYSTEMS, "500 psets, 3 rounds")
    parser.add_argument("--n", type=int, help="psets (default 2000, 500 with --quick)")
    parser.add_argument("--one", nargs=2, metavar=("SYSTEM", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        out = run_one(args.one[0], int(args.one[1]))
        if out is not None:
            common.emit(out)
        return

    n = args.n or (500 if args.quick else 2000)
    reps = args.reps or (3 if args.quick else 5)
    common.header("mpi_overhead: per-pset cost at group_size=1 vs a raw mpi4py round trip, "
                  "`mpiexec -n 2`")
    print(f"- {n:,} psets / round trips, {reps} rounds; in each round every system runs once, "
          f"in turn, each as a fresh `mpiexec -n 2` in a fresh temporary directory")
    systems = []
    for system in [s for s in args.systems.split(",") if s]:
        if system == "schwimmbad" and not common.have("schwimmbad"):
            print(f"- skipped schwimmbad: not installed in {sys.executable}")
        else:
            systems.append(system)
    results, failed = common.interleaved(systems, reps, lambda s: measure(s, n))
    report(systems, n, results, failed)


if __name__ == "__main__":
    main()

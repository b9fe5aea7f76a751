"""End-to-end psets/s of trivial psets under `mpiexec -n 3` (1 master, 2 workers).

psmpi's MPI backend writing its HDF5 file (out= a new file, keep_results default) against
mpi4py.futures.MPIPoolExecutor at its best chunksize, schwimmbad.MPIPool and a hand-written
mpi4py master/worker (groups of 100 psets, and one pset per message), none of them storing
anything. Every measurement is a fresh `mpiexec` in a fresh temporary directory; the systems
take turns within each round. Each run starts its pool, maps 100 psets to warm up, then times
one map of all the psets.

    python benchmarks/mpi_throughput.py           # 200k psets, 5 rounds
    python benchmarks/mpi_throughput.py --quick   # 20k psets, 3 rounds (smoke run)
    python benchmarks/mpi_throughput.py --baseline DIR  # each psmpi system also on DIR's psmpi
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

NPROCS = 3
WARMUP = 100
FUTURES_CHUNKSIZES = (100, 1000, 2500, 10000)
HAND_GROUP = 100

SYSTEMS = {
    "psmpi": "psmpi.map(worker, space, out='psmpi.h5') with backend='mpi', verbose=0, default "
             "group size (adaptive) and keep_results=True: results written to a new HDF5 file "
             "and read back into MapResults; psets given as the psmpi.params.product space",
    "psmpi-list": "the same psmpi map with the psets given as a list of dicts (the general "
                  "path: every pset pickled to its worker, hashed there, its row rebuilt on "
                  "rank 0)",
    "psmpi-mem": "the same psmpi map with out=None (results kept in memory, no HDF5 file); "
                 "for reference: what the store costs",
    "futures": "mpi4py.futures.MPIPoolExecutor().map(worker, psets, chunksize=c) under "
               "`mpiexec -n 3 python -m mpi4py.futures`, results in memory; every chunksize of "
               + "/".join(map(str, FUTURES_CHUNKSIZES)) + " is timed in each run and the best "
               "counts",
    "schwimmbad": "schwimmbad.MPIPool().map(worker, psets): one pset per message, blocking "
                  "send/ssend/recv, results in memory",
    "hand100": f"hand-written mpi4py master/worker: comm.send/comm.recv (blocking, pickle), "
               f"groups of {HAND_GROUP} psets, one group in flight per worker, the next group "
               f"sent to whichever worker answered (recv from ANY_SOURCE); results in memory",
    "hand1": "the same hand-written master/worker with one pset per message",
}
PEER_MODULES = {"futures": "mpi4py", "schwimmbad": "schwimmbad", "hand100": "mpi4py",
                "hand1": "mpi4py"}
RATIO_PEERS = ("futures", "schwimmbad", "hand100", "hand1", "psmpi-mem")
# (system, peer, target ratio of psets/s) checked at the end of the report
TARGETS = (("psmpi", "futures", 1.0), ("psmpi-list", "futures", 0.5))


# ---------------------------------------------------------------------- the work (MPI ranks)
def worker(pset):
    return {"y": pset["a"] + 1}


def make_space(n: int):
    import psmpi
    return psmpi.params.product({"a": list(range(n // 10))}, {"b": list(range(10))})


def make_psets(n: int) -> list[dict]:
    return [{"a": a, "b": b} for a in range(n // 10) for b in range(10)]


def run_psmpi(n: int, out: str | None, as_list: bool = False) -> dict:
    import psmpi
    psmpi.init(backend="mpi", verbose=0)
    space = make_psets(n) if as_list else make_space(n)
    psmpi.map(worker, list(itertools.islice(space, WARMUP)), out=None, name="warmup")
    from psmpi.backends.mpi import Master
    pids = Master._instance.pids[1:]  # from the workers' HELLO (one host here)
    w0 = sum(common.cpu_seconds(pid) for pid in pids)
    t0, c0 = time.perf_counter(), time.process_time()
    res = psmpi.map(worker, space, out=out, name="bench")
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    workers_cpu = sum(common.cpu_seconds(pid) for pid in pids) - w0
    assert len(res) == n and not len(res.missing.df), (len(res), res.missing)
    return {"seconds": seconds, "rank0_cpu": cpu, "workers_cpu": workers_cpu, "note": ""}


def run_futures(n: int) -> dict:
    from mpi4py.futures import MPIPoolExecutor
    psets = make_psets(n)
    by_chunksize = {}
    with MPIPoolExecutor() as executor:
        list(executor.map(worker, psets[:WARMUP]))
        for chunksize in FUTURES_CHUNKSIZES:
            t0 = time.perf_counter()
            out = list(executor.map(worker, psets, chunksize=chunksize))
            by_chunksize[str(chunksize)] = time.perf_counter() - t0
            assert len(out) == n and out[-1] == {"y": psets[-1]["a"] + 1}
    best = min(by_chunksize, key=by_chunksize.get)
    return {"seconds": by_chunksize[best], "note": f"chunksize {best}",
            "by_chunksize": by_chunksize}


def run_schwimmbad(n: int) -> dict:
    from schwimmbad import MPIPool
    psets = make_psets(n)
    pool = MPIPool()  # worker ranks serve inside the constructor and exit there
    pool.map(worker, psets[:WARMUP])
    t0 = time.perf_counter()
    out = pool.map(worker, psets)
    seconds = time.perf_counter() - t0
    assert len(out) == n and out[-1] == {"y": psets[-1]["a"] + 1}
    # pool.close() runs at exit (schwimmbad registers it with atexit; twice kills a rank)
    return {"seconds": seconds, "note": ""}


def hand_serve(comm) -> None:
    """Worker rank of the hand-written pool: (start, psets) in, (start, results) out."""
    while True:
        message = comm.recv(source=0, tag=1)
        if message is None:
            return
        start, chunk = message
        comm.send((start, [worker(p) for p in chunk]), dest=0, tag=2)


def hand_map(comm, psets: list[dict], group: int) -> list:
    """Master of the hand-written pool: one group in flight per worker, refill on answer."""
    from mpi4py import MPI
    results: list = [None] * len(psets)
    starts = iter(range(0, len(psets), group))
    outstanding = 0
    for rank in range(1, comm.Get_size()):
        start = next(starts, None)
        if start is None:
            break
        comm.send((start, psets[start:start + group]), dest=rank, tag=1)
        outstanding += 1
    status = MPI.Status()
    while outstanding:
        start, chunk = comm.recv(source=MPI.ANY_SOURCE, tag=2, status=status)
        results[start:start + len(chunk)] = chunk
        outstanding -= 1
        nxt = next(starts, None)
        if nxt is not None:
            comm.send((nxt, psets[nxt:nxt + group]), dest=status.Get_source(), tag=1)
            outstanding += 1
    return results


def run_hand(n: int, group: int) -> dict | None:
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    if comm.Get_rank() > 0:
        hand_serve(comm)
        return None
    psets = make_psets(n)
    hand_map(comm, psets[:WARMUP], group)
    t0 = time.perf_counter()
    out = hand_map(comm, psets, group)
    seconds = time.perf_counter() - t0
    assert len(out) == n and out[-1] == {"y": psets[-1]["a"] + 1}
    for rank in range(1, comm.Get_size()):
        comm.send(None, dest=rank, tag=1)
    return {"seconds": seconds, "note": f"group {group}"}


def run_one(system: str, n: int) -> dict | None:
    if system == "psmpi":
        return run_psmpi(n, "psmpi.h5")
    if system == "psmpi-list":
        return run_psmpi(n, "psmpi.h5", as_list=True)
    if system == "psmpi-mem":
        return run_psmpi(n, None)
    if system == "futures":
        return run_futures(n)
    if system == "schwimmbad":
        return run_schwimmbad(n)
    if system.startswith("hand"):
        return run_hand(n, int(system[4:]))
    raise SystemExit(f"unknown system {system!r}")


# ---------------------------------------------------------------------- the driver
def measure(system: str, n: int, baseline: str | None = None) -> dict:
    name, env = common.baseline_split(system, baseline)
    command = common.mpi_command(NPROCS, __file__, ["--one", name, str(n)],
                                 futures=name == "futures")
    return common.run_result(command, timeout=1200, env=env)


def report(systems: list[str], n: int, results: dict, failed: dict) -> None:
    from common import fmt, ratio_cell, spread, table
    common.report_failures(failed, results)
    print()
    rows = []
    for system in systems:
        runs = results[system]
        if not runs:
            continue
        times = [r["seconds"] for r in runs]
        med, lo, hi = spread([n / t for t in times])
        notes = sorted({r["note"] for r in runs} - {""})
        if system.startswith("psmpi"):
            cpu_us = spread([r["rank0_cpu"] / n * 1e6 for r in runs])[0]
            notes.append(f"rank 0 CPU {cpu_us:.1f} µs/pset")
            if "workers_cpu" in runs[0]:
                cpu_us = spread([r["workers_cpu"] / n * 1e6 for r in runs])[0]
                notes.append(f"workers' CPU {cpu_us:.1f} µs/pset")
        rows.append([system, fmt(med), f"{fmt(lo)} – {fmt(hi)}", f"{spread(times)[0]:.3f}",
                     len(runs), ", ".join(notes)])
    print(table(["system", "psets/s median", "psets/s min – max", "seconds median", "rounds",
                 "note"], rows))
    print()
    if results.get("futures"):
        rows = []
        for chunksize in FUTURES_CHUNKSIZES:
            times = [r["by_chunksize"][str(chunksize)] for r in results["futures"]]
            med, lo, hi = spread([n / t for t in times])
            rows.append([chunksize, fmt(med), f"{fmt(lo)} – {fmt(hi)}"])
        print("mpi4py.futures by chunksize (the best one of each run counts above):\n")
        print(table(["chunksize", "psets/s median", "psets/s min – max"], rows))
        print()
    rows = []
    for system in systems:
        if system.endswith(common.BASELINE) and results.get(system):
            pairs = list(zip([r["seconds"] for r in results[system]],
                             [r["seconds"] for r in results.get(
                                 system.removesuffix(common.BASELINE), [])]))
            rows.append([f"{system.removesuffix(common.BASELINE)} / {system}",
                         ratio_cell([tb / tm for tb, tm in pairs])])
    for peer in RATIO_PEERS:
        pairs = list(zip([r["seconds"] for r in results.get("psmpi", [])],
                         [r["seconds"] for r in results.get(peer, [])]))
        rows.append([f"psmpi / {peer}", ratio_cell([tp / tm for tm, tp in pairs])])
    base = common.BASELINE
    for system, peer in [("psmpi-list", "futures"), ("psmpi" + base, "futures"),
                         ("psmpi-list" + base, "futures")]:
        pairs = list(zip([r["seconds"] for r in results.get(system, [])],
                         [r["seconds"] for r in results.get(peer, [])]))
        if pairs:
            rows.append([f"{system} / {peer}", ratio_cell([tp / tm for tm, tp in pairs])])
    print(table([f"ratio of psets/s, per round, median (min – max), {n:,} psets", "ratio"], rows))
    print()
    for system, peer, target in TARGETS:
        pairs = list(zip([r["seconds"] for r in results.get(system, [])],
                         [r["seconds"] for r in results.get(peer, [])]))
        if pairs:
            med = spread([tp / tm for tm, tp in pairs])[0]
            print(f"- target {system} ≥ {target}× {peer} (best chunksize): "
                  f"{'met' if med >= target else 'MISSED'} ({med:.2f}×)")
    print()
    print(f"Systems (`mpiexec -n {NPROCS}`: rank 0 coordinates, 2 workers; worker "
          f"`{{'y': pset['a'] + 1}}`):")
    common.list_systems(systems, common.baseline_descriptions(SYSTEMS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.round_options(parser, SYSTEMS, "20k psets, 3 rounds")
    parser.add_argument("--n", type=int, help="psets (default 200000, 20000 with --quick)")
    parser.add_argument("--one", nargs=2, metavar=("SYSTEM", "N"), help=argparse.SUPPRESS)
    common.add_baseline_option(parser)
    args = parser.parse_args()
    if args.one:
        out = run_one(args.one[0], int(args.one[1]))
        if out is not None:
            common.emit(out)
        return

    n = args.n or (20000 if args.quick else 200000)
    reps = args.reps or (3 if args.quick else 5)
    common.header(f"mpi_throughput: end-to-end psets/s of trivial psets, `mpiexec -n {NPROCS}`")
    print(f"- {n:,} psets, {reps} rounds; in each round every system runs once, in turn, each "
          f"as a fresh `{os.path.basename(common.mpiexec())} -n {NPROCS}` in a fresh temporary "
          f"directory; the timing covers one map call after a warm-up map of {WARMUP} psets")
    systems = common.installed_systems([s for s in args.systems.split(",") if s], PEER_MODULES)
    systems = common.with_baseline(systems, args.baseline)
    results, failed = common.interleaved(systems, reps, lambda s: measure(s, n, args.baseline))
    report(systems, n, results, failed)


if __name__ == "__main__":
    main()

"""Scale: 64 oversubscribed ranks (`mpiexec -n 64`, 63 workers on this machine's cores).

Every pset sleeps 0.2 s; 20 psets per worker make the ideal makespan 4 s. Efficiency =
(psets x 0.2 s / workers) / makespan, makespan = wall time of the map call. For psmpi, rank 0
also measures its own CPU time during the map, split by wrapping a few Master and driver
methods in this process (instrumentation only, see common.instrument_master), which gives the
master's cost per group (one GROUP message out, one DONE message back, the row stored) and
what that implies for 10,000 ranks at 1-s groups. Starting 64 Python ranks takes ~25 s here;
that is not timed.

    python benchmarks/mpi_scale.py           # 64 ranks, 3 rounds
    python benchmarks/mpi_scale.py --quick   # 16 ranks, 1 round (smoke run)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

SECONDS = 0.2
PER_WORKER = 20
TARGET = 0.95
EXTRAPOLATE_RANKS, EXTRAPOLATE_GROUP_SECONDS = 10000, 1.0

SYSTEMS = {
    "psmpi": "psmpi.map(nap, psets, out='scale.h5'), backend='mpi', verbose=0, defaults "
             "(adaptive groups: 0.2-s psets go one per group)",
    "futures": "mpi4py.futures.MPIPoolExecutor().map(nap, psets, chunksize=1) under "
               "`python -m mpi4py.futures`",
    "schwimmbad": "schwimmbad.MPIPool().map(nap, psets)",
}
PEER_MODULES = {"futures": "mpi4py", "schwimmbad": "schwimmbad"}


def nap(pset):
    time.sleep(pset["seconds"])
    return {"slept": pset["seconds"]}


def make_psets(n: int) -> list[dict]:
    return [{"i": i, "seconds": SECONDS} for i in range(n)]


def run_psmpi(n_workers: int) -> dict:
    import psmpi
    psmpi.init(backend="mpi", verbose=0)
    psmpi.map(nap, [{"i": i, "seconds": 0.0} for i in range(n_workers)], out=None,
              name="warmup")
    counts = common.instrument_master()
    psets = make_psets(PER_WORKER * n_workers)
    wall0, t0, c0 = time.time(), time.perf_counter(), time.process_time()
    res = psmpi.map(nap, psets, out="scale.h5", name="bench")
    makespan, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert len(res) == len(psets) and not len(res.missing.df)
    rows = psmpi.read("scale.h5", "bench")
    out = {"makespan": makespan, "rank0_cpu": cpu, **counts,
           **common.idle_breakdown(rows, rows["seconds"], n_workers, wall0, wall0 + makespan)}
    return out


def run_futures(n_workers: int) -> dict:
    from mpi4py.futures import MPIPoolExecutor
    psets = make_psets(PER_WORKER * n_workers)
    with MPIPoolExecutor() as executor:
        list(executor.map(nap, [{"i": i, "seconds": 0.0} for i in range(n_workers)]))
        t0, c0 = time.perf_counter(), time.process_time()
        out = list(executor.map(nap, psets, chunksize=1))
        makespan, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert len(out) == len(psets)
    return {"makespan": makespan, "rank0_cpu": cpu}


def run_schwimmbad(n_workers: int) -> dict:
    from schwimmbad import MPIPool
    pool = MPIPool()
    psets = make_psets(PER_WORKER * n_workers)
    pool.map(nap, [{"i": i, "seconds": 0.0} for i in range(n_workers)])
    t0, c0 = time.perf_counter(), time.process_time()
    out = pool.map(nap, psets)
    makespan, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert len(out) == len(psets)
    return {"makespan": makespan, "rank0_cpu": cpu}  # pool.close() runs at exit


def run_one(system: str, n_workers: int) -> dict:
    return globals()["run_" + system](n_workers)


def measure(system: str, nprocs: int) -> dict:
    command = common.mpi_command(nprocs, __file__, ["--one", system, str(nprocs - 1)],
                                 futures=system == "futures")
    out = common.run_result(command, timeout=900)
    if "makespan" in out:
        out["efficiency"] = PER_WORKER * SECONDS / out["makespan"]
    return out


def report(systems: list[str], nprocs: int, results: dict, failed: dict) -> None:
    from common import spread, table
    workers = nprocs - 1
    common.report_failures(failed, results)
    print()
    rows = []
    for system in systems:
        runs = results[system]
        if not runs:
            continue
        makespan = spread([r["makespan"] for r in runs])
        eff = spread([r["efficiency"] for r in runs])
        cpu = spread([r["rank0_cpu"] / r["makespan"] for r in runs])[0]
        verdict = f"≥ {TARGET}: {'met' if eff[0] >= TARGET else 'MISSED'}" \
            if system == "psmpi" else ""
        rows.append([system, f"{makespan[0]:.3f}", f"{makespan[1]:.3f} – {makespan[2]:.3f}",
                     f"{eff[0]:.3f}", f"{eff[1]:.3f} – {eff[2]:.3f}", f"{100 * cpu:.1f} %",
                     len(runs), verdict])
    print(table(["system", "makespan s, median", "min – max", "efficiency median",
                 "efficiency min – max", "rank 0 CPU / wall", "rounds", "target"], rows))
    print()
    runs = [r for r in results.get("psmpi", []) if r.get("instrumented") and r["groups"]]
    if runs:
        def per_group(key_or_fn):
            fn = key_or_fn if callable(key_or_fn) else (lambda r: r[key_or_fn])
            return spread([fn(r) / r["groups"] * 1e6 for r in runs])

        busy = per_group(lambda r: r["cpu_drain"] + r["cpu_refill"] + r["cpu_record"]
                         + r["cpu_commit"])
        total = per_group("rank0_cpu")
        groups = spread([r["groups"] for r in runs])[0]
        psets = PER_WORKER * workers
        print(f"psmpi's master: {groups:.0f} groups for {psets:,} psets (one GROUP message out "
              f"and one DONE message back each). Rank 0 CPU time per group, medians over "
              f"rounds:\n")
        print(table(["part of rank 0's work", "CPU µs per group"], [
            ["Master.drain() calls that received (improbe, irecv, unpickle)",
             f"{per_group('cpu_drain')[0]:.0f}"],
            ["Master.refill() calls that sent (next psets: check, group; pickle, isend)",
             f"{per_group('cpu_refill')[0]:.0f}"],
            ["Recorder.record() (outcome to rows)", f"{per_group('cpu_record')[0]:.0f}"],
            ["RowWriter.commit() (HDF5)", f"{per_group('cpu_commit')[0]:.0f}"],
            ["**cost per group** (the four above)",
             f"**{busy[0]:.0f}** ({busy[1]:.0f} – {busy[2]:.0f})"],
            ["all of rank 0's CPU during the map, idle polling included",
             f"{total[0]:.0f} ({total[1]:.0f} – {total[2]:.0f})"],
        ]))
        print()
        rate = EXTRAPOLATE_RANKS / EXTRAPOLATE_GROUP_SECONDS
        cost = busy[0] / 1e6
        print(table(["extrapolation from the cost per group", "value"], [
            ["groups/s at 10,000 ranks with 1-s groups", f"{rate:,.0f}"],
            ["master utilisation = groups/s × cost per group", f"{rate * cost:.2f}"],
            ["ranks one master keeps busy at 1-s groups (utilisation 1)",
             f"{EXTRAPOLATE_GROUP_SECONDS / cost:,.0f}"],
            ["group duration for 10,000 ranks at utilisation 0.5",
             f"{EXTRAPOLATE_RANKS * cost / 0.5:.1f} s"],
        ]))
        print()
        print("The cost is measured on 2 oversubscribed cores, with the instrumentation's own "
              "process_time() calls (~1 µs each) included; a master core of its own would be "
              "somewhat faster.")
        print()
        cell = lambda key: f"{100 * spread([r[key] for r in runs])[0]:.1f} %"  # noqa: E731
        print("Where psmpi's workers lost time (shares of workers × makespan, medians; see "
              "mpi_balance): head " + cell("head") + ", gaps " + cell("gaps") +
              f" (median gap {spread([r['gap_ms_median'] for r in runs])[0]:.2f} ms), tail " +
              cell("tail") + ", sleep overrun " + cell("overrun") + ".")
        print()
    print(f"Systems (`mpiexec -n {nprocs}`: rank 0 coordinates, {workers} workers, "
          f"{PER_WORKER * workers:,} psets of {SECONDS} s, ideal makespan "
          f"{PER_WORKER * SECONDS:.1f} s; each run maps {workers} zero-duration psets first):")
    common.list_systems(systems, SYSTEMS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.round_options(parser, SYSTEMS, "16 ranks, 1 round", reps=3, quick_reps=1)
    parser.add_argument("--nprocs", type=int, help="ranks (default 64, 16 with --quick)")
    parser.add_argument("--one", nargs=2, metavar=("SYSTEM", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        out = run_one(args.one[0], int(args.one[1]))
        if out is not None:
            common.emit(out)
        return

    nprocs = args.nprocs or (16 if args.quick else 64)
    reps = args.reps or (1 if args.quick else 3)
    common.header(f"mpi_scale: {nprocs} oversubscribed ranks, sleep psets, "
                  f"`mpiexec -n {nprocs}`")
    print(f"- {reps} rounds; in each round every system runs once, in turn, each as a fresh "
          f"`mpiexec -n {nprocs}` in a fresh temporary directory")
    systems = common.installed_systems([s for s in args.systems.split(",") if s], PEER_MODULES)
    results, failed = common.interleaved(systems, reps, lambda s: measure(s, nprocs))
    report(systems, nprocs, results, failed)


if __name__ == "__main__":
    main()

"""Scale: 64 or more oversubscribed ranks (`mpiexec -n 64`), and a simulated frontier.

Every pset sleeps 0.2 s; 20 psets per worker make the ideal makespan 4 s. Efficiency =
(psets x 0.2 s / workers) / makespan, makespan = wall time of the map call. For psmpi, rank 0
also measures its own CPU time during the map, split by wrapping a few Master and driver
methods in this process (instrumentation only, see common.instrument_master), which gives the
master's cost per group (one GROUP message out, one DONE message back, the row stored) and
what that implies for 10,000 ranks at 1-s groups. Starting 64 Python ranks takes ~25 s here;
that is not timed. A rank count whose ranks would not fit in the available memory (~70 MiB
each) is reported as not started rather than risking the OOM killer.

--simulate runs rank 0's real master loop and driver with simulated workers in this process
(benchmarks/mpi_sim.py) and prints the steady-state efficiency of one rank 0 for 1k, 10k and
100k workers on 0.01, 0.1 and 1-s psets, with adaptive groups and with group_size=1, and the
frontier: the most workers one rank 0 keeps at efficiency >= 0.95.

    python benchmarks/mpi_scale.py                       # 64 ranks, 3 rounds
    python benchmarks/mpi_scale.py --ranks 64,128,256    # each rank count in turn
    python benchmarks/mpi_scale.py --quick               # 16 ranks, 1 round (smoke run)
    python benchmarks/mpi_scale.py --simulate            # the simulated frontier table
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
# Memory of one rank with psmpi, numpy, pandas, h5py and mpi4py imported: PSS 69-75 MiB
# (/proc/PID/smaps_rollup, 16 ranks of `mpiexec -n 16`, 2026-12-05), so 256 ranks need ~18
# GiB; and the share of the available memory a run may take.
RANK_MIB = 70
MEMORY_SHARE = 0.7

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


# MPI's own CPU per message on rank 0, which the simulation's fake communicator does not
# spend: Master.drain() took 45-46 µs per message received and Master.refill() 27 µs per
# group sent on 64 and 128 real oversubscribed ranks (2026-12-05, this machine); the same
# calls in the simulation (pickling and unpickling included) took ~15 and ~16 µs.
RECV_US, SEND_US = 30.0, 11.0
FRONTIER = 0.95
# Saturated simulations that fit rank 0's cost per group against its psets.
CALIBRATION_WORKERS, CALIBRATION_SECONDS, CALIBRATION_SIZES = 1000, 0.001, (1, 10, 100)


def mpi_sim_defaults() -> tuple[float, float]:
    return RECV_US, SEND_US


def simulated_frontier(workers: list[int], seconds: list[float], rounds: int,
                       recv: float, send: float, budget: int) -> None:
    """The table of steady-state efficiencies of one rank 0, simulated where the psets fit
    in ``budget``, else from a model of rank 0's cost fitted to the simulated cells."""
    import mpi_sim
    common.header("mpi_scale --simulate: rank 0's real master loop and driver, simulated "
                  "workers")
    print(f"- {rounds} groups per worker at the full group size; MPI's own cost charged per "
          f"message: {recv * 1e6:.0f} µs received, {send * 1e6:.0f} µs sent (calibrated "
          f"against 64 real ranks; `--mpi-us 0,0` leaves it out); cells needing more than "
          f"{budget:,} psets are not simulated but modelled (below)")
    print()
    cells = {}
    for n in workers:
        for s in seconds:
            for size in (None, 1):
                if mpi_sim.planned_psets(n, s, rounds, size) > budget:
                    continue
                r = mpi_sim.simulate(n, s, rounds, size, (recv, send))
                common.say(f"simulated {n} workers, {s} s, group_size={size}: {r}")
                cells[n, s, size] = r
    calibration = [mpi_sim.simulate(CALIBRATION_WORKERS, CALIBRATION_SECONDS, rounds, size,
                                    (recv, send)) for size in CALIBRATION_SIZES]
    a, b = fit_cost(calibration)
    rows = []
    for n in workers:
        for s in seconds:
            row = [f"{n:,}", f"{s:g}"]
            for size in (None, 1):
                r = cells.get((n, s, size))
                if r is not None:
                    row += [f"{r.efficiency:.3f}", f"{r.group_psets:.1f}",
                            f"{r.cost_per_group * 1e6:.0f}", f"{r.utilisation:.2f}"]
                else:
                    g = size or mpi_sim.full_group_size(n, s)
                    row += [f"*{modelled_efficiency(n, s, g, a, b):.3f}*", f"*{g}*",
                            f"*{(a + b * g) * 1e6:.0f}*", "model"]
            rows.append(row)
    print(common.table(["workers", "pset s", "efficiency (adaptive)", "psets/group",
                        "rank 0 µs/group", "rank 0 busy", "efficiency (group_size=1)",
                        "psets/group", "rank 0 µs/group", "rank 0 busy"], rows))
    print()
    print(f"Efficiency: the share of worker time spent computing in the steady state (from "
          f"the moment the last worker started its first group of the full size to the "
          f"moment the first worker ran out of work). Rank 0 µs/group: its CPU per group sent "
          f"in that window, MPI's charge included; rank 0 busy: its share of that window not "
          f"asleep. *Italic* cells are modelled: rank 0 costs a + b × psets µs per group, "
          f"a = {a * 1e6:.1f} µs, b = {b * 1e6:.2f} µs, fitted to saturated simulations "
          f"({CALIBRATION_WORKERS:,} workers, {CALIBRATION_SECONDS} s psets, fixed group "
          f"sizes, below); its busy share u = workers × cost / (psets × pset s), efficiency "
          f"min(1, 1 / u).")
    print()
    print(common.table(["calibration: group_size", "rank 0 µs/group", "rank 0 busy",
                        "efficiency"],
                       [[str(r.group_size), f"{r.cost_per_group * 1e6:.0f}",
                         f"{r.utilisation:.2f}", f"{r.efficiency:.3f}"] for r in calibration]))
    print()
    frontier = []
    for s in seconds:
        frontier.append([f"{s:g}", f"{max_workers(s, None, a, b):,}",
                         f"{max_workers(s, 1, a, b):,}"])
    print(f"The frontier: the most workers one rank 0 keeps at efficiency ≥ {FRONTIER} "
          f"(rank 0 busy ≤ {FRONTIER:.0%} of the time in the model above):")
    print()
    print(common.table(["pset s", "adaptive groups", "group_size=1"], frontier))
    print()
    check = []
    for s in seconds:
        for size in (None, 1):
            n = max_workers(s, size, a, b)
            if mpi_sim.planned_psets(n, s, rounds, size) <= budget:
                r = mpi_sim.simulate(n, s, rounds, size, (recv, send))
                common.say(f"frontier check: {r}")
                check.append([f"{s:g}", "adaptive" if size is None else f"group_size={size}",
                              f"{n:,}", f"{r.efficiency:.3f}", f"{r.utilisation:.2f}"])
    if check:
        print("The frontier simulated (the cells within the budget):")
        print()
        print(common.table(["pset s", "groups", "workers", "efficiency", "rank 0 busy"], check))


def fit_cost(runs: list) -> tuple[float, float]:
    """Least squares cost per group = a + b × psets per group over ``runs``."""
    import numpy as np
    g = np.array([r.group_psets for r in runs])
    c = np.array([r.cost_per_group for r in runs])
    if len(runs) < 2 or np.ptp(g) == 0:
        return float(c.mean()), 0.0
    b, a = np.polyfit(g, c, 1)
    return float(a), float(max(b, 0.0))


def modelled_efficiency(workers: int, seconds: float, size: int, a: float, b: float) -> float:
    busy = workers * (a + b * size) / (size * seconds)
    return min(1.0, 1.0 / busy)


def max_workers(seconds: float, size: int | None, a: float, b: float) -> int:
    """The largest worker count whose modelled busy share stays ≤ FRONTIER (bisection)."""
    import mpi_sim

    def busy(n: int) -> float:
        g = size or mpi_sim.full_group_size(n, seconds)
        return n * (a + b * g) / (g * seconds)

    lo, hi = 1, 10_000_000
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if busy(mid) <= FRONTIER else (lo, mid - 1)
    return lo


def run_one(system: str, n_workers: int) -> dict:
    return globals()["run_" + system](n_workers)


def memory_shortfall(nprocs: int) -> str | None:
    """Why ``nprocs`` Python ranks cannot start here without risking the OOM killer (which
    would hit whatever else runs on the machine), or None if they fit."""
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) for line in f}
    except OSError:
        return None
    available = info["MemAvailable"] / 1024
    needed = nprocs * RANK_MIB
    if needed <= MEMORY_SHARE * available:
        return None
    return (f"not started: {nprocs} ranks need ~{needed / 1024:.1f} GiB ({RANK_MIB} MiB of "
            f"memory each, measured) and only {available / 1024:.1f} GiB are available")


def measure(system: str, nprocs: int) -> dict:
    shortfall = memory_shortfall(nprocs)
    if shortfall:
        return {"error": shortfall}
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
    parser.add_argument("--ranks", "--nprocs", dest="ranks", default=None,
                        help="comma-separated rank counts, each measured in turn "
                             "(default 64, 16 with --quick), e.g. 64,128,256")
    parser.add_argument("--simulate", action="store_true",
                        help="the simulated frontier: rank 0's real master loop and driver with "
                             "simulated workers in this process (benchmarks/mpi_sim.py)")
    parser.add_argument("--workers",
                        help="--simulate: comma-separated worker counts (default "
                             "1000,10000,100000; 100,1000 with --quick)")
    parser.add_argument("--seconds", default="0.01,0.1,1",
                        help="--simulate: comma-separated pset durations")
    parser.add_argument("--rounds", type=int, default=4,
                        help="--simulate: full-size groups per worker (default 4)")
    parser.add_argument("--mpi-us", default=f"{mpi_sim_defaults()[0]},{mpi_sim_defaults()[1]}",
                        help="--simulate: MPI's own CPU µs per message received,sent on rank 0 "
                             "(default: calibrated against 64 real ranks, see RECV_US)")
    parser.add_argument("--budget", type=int,
                        help="--simulate: most psets a simulated cell may take (default 3M, "
                             "20k with --quick); larger cells are modelled")
    parser.add_argument("--one", nargs=2, metavar=("SYSTEM", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        out = run_one(args.one[0], int(args.one[1]))
        if out is not None:
            common.emit(out)
        return
    if args.simulate:
        recv_us, send_us = (float(x) for x in args.mpi_us.split(","))
        workers = args.workers or ("100,1000" if args.quick else "1000,10000,100000")
        simulated_frontier([int(n) for n in workers.split(",")],
                           [float(x) for x in args.seconds.split(",")], args.rounds,
                           recv_us * 1e-6, send_us * 1e-6,
                           args.budget or (20_000 if args.quick else 3_000_000))
        return

    ranks = [int(n) for n in args.ranks.split(",")] if args.ranks else [16 if args.quick else 64]
    reps = args.reps or (1 if args.quick else 3)
    systems = common.installed_systems([s for s in args.systems.split(",") if s], PEER_MODULES)
    for nprocs in ranks:
        common.header(f"mpi_scale: {nprocs} oversubscribed ranks, sleep psets, "
                      f"`mpiexec -n {nprocs}`")
        print(f"- {reps} rounds; in each round every system runs once, in turn, each as a "
              f"fresh `mpiexec -n {nprocs}` in a fresh temporary directory")
        results, failed = common.interleaved(systems, reps, lambda s, n=nprocs: measure(s, n))
        report(systems, nprocs, results, failed)
        print()


if __name__ == "__main__":
    main()

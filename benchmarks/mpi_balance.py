"""Load balancing: 200 psets sleeping lognormal durations, 8 workers (`mpiexec -n 9`).

Durations: ``numpy.random.default_rng(0).lognormal(mean=log(0.05) - 1.5**2 / 2, sigma=1.5,
size=200)`` seconds (the lognormal's mean is then 0.05 s; this sample's mean is 0.041 s, its
longest 0.327 s). Efficiency = max(sum / 8, max) / makespan, where makespan is the wall time
of the map call and sum, max are of the durations above. The greedy bounds (list scheduling
on 8 workers with zero overhead: in list order, in reverse order, longest first) are
computed, not measured.

    python benchmarks/mpi_balance.py           # 5 rounds
    python benchmarks/mpi_balance.py --quick   # 3 rounds
"""

from __future__ import annotations

import argparse
import heapq
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

WORKERS = 8
N_PSETS = 200
MEAN, SIGMA, SEED = 0.05, 1.5, 0

SYSTEMS = {
    "psmpi": "psmpi.map(nap, psets, out='balance.h5'), backend='mpi', defaults (adaptive "
             "groups, no cost hint)",
    "psmpi-cost": "the same with cost=lambda p: p['duration'] (longest expected first)",
    "psmpi-auto": "the same with cost=\"auto\" (a runtime model learned from the runtimes of "
                  "finished psets, here of p['duration'], no hint)",
    "psmpi-hidden": "psets {'i': i} whose worker looks its duration up, no cost hint (list "
                    "order, as psmpi)",
    "psmpi-auto-hidden": "the same with cost=\"auto\": runtimes unrelated to the values, so "
                         "the model is never trusted and the order stays list order",
    "psmpi-g1": "the same as psmpi with group_size=1",
    "psmpi-if2": "the same as psmpi with mpi={'in_flight': 2} (a second group queued on every "
                 "busy worker)",
    "psmpi-cost-if2": "cost= as psmpi-cost and mpi={'in_flight': 2} (diagnostic: does hiding "
                      "the master's turnaround reach 0.97?)",
    "psmpi-cost-poll": "cost= as psmpi-cost and mpi={'poll_max': 0.0002} (diagnostic: master "
                       "and workers poll at most 0.2 ms apart instead of >= 1 ms and 20 ms)",
    "futures": "mpi4py.futures.MPIPoolExecutor().map(nap, psets, chunksize=1) under "
               "`python -m mpi4py.futures`",
    "schwimmbad": "schwimmbad.MPIPool().map(nap, psets) (hands out psets from the end of the "
                  "list: reverse order)",
}
PEER_MODULES = {"futures": "mpi4py", "schwimmbad": "schwimmbad"}
TARGETS = {"psmpi": 0.88, "psmpi-cost": 0.97, "psmpi-auto": 0.95}


def durations(seed: int = SEED) -> list[float]:
    import numpy as np
    rng = np.random.default_rng(seed)
    return rng.lognormal(mean=math.log(MEAN) - SIGMA ** 2 / 2, sigma=SIGMA,
                         size=N_PSETS).tolist()


def make_psets(seed: int = SEED) -> list[dict]:
    return [{"i": i, "duration": d} for i, d in enumerate(durations(seed))]


def lower_bound(seed: int = SEED) -> float:
    d = durations(seed)
    return max(sum(d) / WORKERS, max(d))


def list_schedule(d: list[float], workers: int = WORKERS) -> float:
    """Makespan of greedy list scheduling: each pset to the worker that frees up first."""
    free = [0.0] * workers
    for x in d:
        heapq.heappush(free, heapq.heappop(free) + x)
    return max(free)


def bounds() -> dict[str, float]:
    d = durations()
    return {"greedy in list order": list_schedule(d),
            "greedy in reverse order": list_schedule(d[::-1]),
            "greedy longest first (LPT)": list_schedule(sorted(d, reverse=True))}


# ---------------------------------------------------------------------- the work (MPI ranks)
def nap(pset):
    time.sleep(pset["duration"])
    return {"slept": pset["duration"]}


def nap_hidden(pset):
    duration = DURATIONS[pset["i"]]
    time.sleep(duration)
    return {"duration": duration}


DURATIONS = durations()


def run_psmpi(options: dict, hidden: bool = False) -> dict:
    import psmpi
    psmpi.init(backend="mpi", verbose=0, **options)
    psmpi.map(nap, [{"i": i, "duration": 0.0} for i in range(WORKERS)], out=None,
              name="warmup")
    psets = [{"i": i} for i in range(N_PSETS)] if hidden else make_psets()
    counts = common.instrument_master()  # counts the groups sent
    wall0, t0 = time.time(), time.perf_counter()
    res = psmpi.map(nap_hidden if hidden else nap, psets, out="balance.h5", name="bench")
    makespan = time.perf_counter() - t0
    assert len(res) == N_PSETS and not len(res.missing.df)
    rows = psmpi.read("balance.h5", "bench")
    return {"makespan": makespan, "groups": counts["groups"] if counts["instrumented"] else -1,
            **common.idle_breakdown(rows, rows["duration"], WORKERS, wall0, wall0 + makespan)}


def run_futures() -> dict:
    from mpi4py.futures import MPIPoolExecutor
    psets = make_psets()
    with MPIPoolExecutor() as executor:
        assert executor.num_workers == WORKERS, executor.num_workers
        list(executor.map(nap, [{"i": i, "duration": 0.0} for i in range(WORKERS)]))
        t0 = time.perf_counter()
        out = list(executor.map(nap, psets, chunksize=1))
        makespan = time.perf_counter() - t0
    assert len(out) == N_PSETS
    return {"makespan": makespan}


def run_schwimmbad() -> dict:
    from schwimmbad import MPIPool
    pool = MPIPool()
    psets = make_psets()
    pool.map(nap, [{"i": i, "duration": 0.0} for i in range(WORKERS)])
    t0 = time.perf_counter()
    out = pool.map(nap, psets)
    makespan = time.perf_counter() - t0
    assert len(out) == N_PSETS
    # pool.close() runs at exit (schwimmbad registers it with atexit)
    return {"makespan": makespan}


def run_one(system: str) -> dict:
    if system == "psmpi":
        return run_psmpi({})
    if system == "psmpi-cost":
        return run_psmpi({"cost": lambda p: p["duration"]})
    if system == "psmpi-auto":
        return run_psmpi({"cost": "auto"})
    if system == "psmpi-hidden":
        return run_psmpi({}, hidden=True)
    if system == "psmpi-auto-hidden":
        return run_psmpi({"cost": "auto"}, hidden=True)
    if system == "psmpi-g1":
        return run_psmpi({"group_size": 1})
    if system == "psmpi-if2":
        return run_psmpi({"mpi": {"in_flight": 2}})
    if system == "psmpi-cost-if2":
        return run_psmpi({"cost": lambda p: p["duration"], "mpi": {"in_flight": 2}})
    if system == "psmpi-cost-poll":
        return run_psmpi({"cost": lambda p: p["duration"], "mpi": {"poll_max": 0.0002}})
    if system == "futures":
        return run_futures()
    if system == "schwimmbad":
        return run_schwimmbad()
    raise SystemExit(f"unknown system {system!r}")


# ---------------------------------------------------------------------- the driver
def measure(system: str, baseline: str | None = None) -> dict:
    name, env = common.baseline_split(system, baseline)
    command = common.mpi_command(WORKERS + 1, __file__, ["--one", name],
                                 futures=name == "futures")
    out = common.run_result(command, timeout=600, env=env)
    if "makespan" in out:
        out["efficiency"] = lower_bound() / out["makespan"]
    return out


def print_efficiency(systems: list[str], results: dict, failed: dict,
                     targets: dict[str, float]) -> None:
    """The workload, then makespan and efficiency of the computed bounds and of each system."""
    from common import spread, table
    d = durations()
    lb = lower_bound()
    print(f"- durations: numpy.random.default_rng({SEED}).lognormal(mean=log({MEAN}) - "
          f"{SIGMA}**2/2, sigma={SIGMA}, size={N_PSETS}): sum {sum(d):.3f} s, mean "
          f"{sum(d) / len(d):.4f} s, max {max(d):.3f} s; ideal makespan max(sum/{WORKERS}, max) "
          f"= {lb:.3f} s")
    common.report_failures(failed, results)
    print()
    rows = []
    for name, makespan in bounds().items():
        rows.append([name + " (computed)", f"{makespan:.3f}", "", f"{lb / makespan:.3f}", "", ""])
    for system in systems:
        runs = results[system]
        if not runs:
            continue
        makespan = spread([r["makespan"] for r in runs])
        eff = spread([r["efficiency"] for r in runs])
        target = targets.get(system)
        verdict = "" if target is None else \
            f"≥ {target}: {'met' if eff[0] >= target else 'MISSED'}"
        rows.append([system, f"{makespan[0]:.3f}", f"{makespan[1]:.3f} – {makespan[2]:.3f}",
                     f"{eff[0]:.3f}", f"{eff[1]:.3f} – {eff[2]:.3f}", verdict])
    print(table(["system", "makespan s, median", "makespan min – max", "efficiency median",
                 "efficiency min – max", "target"], rows))
    print()


def report(systems: list[str], results: dict, failed: dict) -> None:
    from common import spread, table
    print_efficiency(systems, results, failed, TARGETS)
    rows = []
    for system in systems:
        runs = results[system]
        if runs and "gaps" in runs[0]:
            cell = lambda key, runs=runs: f"{100 * spread([r[key] for r in runs])[0]:.1f} %"  # noqa: E731
            groups = spread([r["groups"] for r in runs])
            rows.append([system, f"{groups[0]:.0f} ({groups[1]:.0f} – {groups[2]:.0f})",
                         cell("head"), cell("gaps"),
                         f"{spread([r['gap_ms_median'] for r in runs])[0]:.2f}", cell("tail"),
                         cell("overrun")])
    if rows:
        print("Where psmpi's workers lost time (from each row's _rank, _time_utc, _pset_runtime in the "
              "file; shares of 8 workers × makespan, medians over rounds): the groups the master "
              "sent for the 200 psets (counted by wrapping Master.send_next on rank 0), time "
              "before the workers' first "
              "pset, between two psets (the master's turnaround; median gap in ms), after "
              "their last pset, and sleep() running past the nominal duration.\n")
        print(table(["system", "groups sent (min – max)", "head", "gaps", "gap ms, median",
                     "tail", "overrun"], rows))
        print()
    print(f"Systems (`mpiexec -n {WORKERS + 1}`: rank 0 coordinates, {WORKERS} workers; each "
          f"run maps {WORKERS} zero-duration psets first to warm up):")
    common.list_systems(systems, common.baseline_descriptions(SYSTEMS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.round_options(parser, SYSTEMS, "3 rounds")
    parser.add_argument("--one", metavar="SYSTEM", help=argparse.SUPPRESS)
    common.add_baseline_option(parser)
    args = parser.parse_args()
    if args.one:
        out = run_one(args.one)
        if out is not None:
            common.emit(out)
        return

    reps = args.reps or (3 if args.quick else 5)
    common.header(f"mpi_balance: {N_PSETS} lognormal sleep psets on {WORKERS} workers, "
                  f"`mpiexec -n {WORKERS + 1}`")
    print(f"- {reps} rounds; in each round every system runs once, in turn, each as a fresh "
          f"`mpiexec -n {WORKERS + 1}`; makespan = wall time of the one timed map call")
    systems = common.installed_systems([s for s in args.systems.split(",") if s], PEER_MODULES)
    systems = common.with_baseline(systems, args.baseline)
    results, failed = common.interleaved(systems, reps,
                                         lambda s: measure(s, args.baseline))
    report(systems, results, failed)


if __name__ == "__main__":
    main()

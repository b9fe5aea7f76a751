"""Load balancing: 200 psets sleeping lognormal durations, 8 workers (`mpiexec -n 9`).

Durations: ``numpy.random.default_rng(0).lognormal(mean=log(0.05) - 1.5**2 / 2, sigma=1.5,
size=200)`` seconds (the lognormal's mean is then 0.05 s; this sample's mean is 0.041 s, its
longest 0.327 s). Efficiency = max(sum / 8, max) / makespan, where makespan is the wall time
of the map call and sum, max are of the durations above. The greedy bounds (list scheduling
on 8 workers with zero overhead: in list order, in reverse order, longest first) are
computed, not measured.

    python benchmarks/mpi_balance.py           # 5 rounds
    python benchmarks/mpi_balance.py --quick   # 3 rounds
    python benchmarks/mpi_balance.py --baseline DIR   # also each psmpi system on DIR's psmpi
    python benchmarks/mpi_balance.py --simulate       # virtual clock (benchmarks/mpi_sim.py)
    python benchmarks/mpi_balance.py --simulate --seed 3   # another draw of the durations

``--simulate`` runs rank 0's real master and driver (its CPU sets the pace) against
simulated workers whose psets take exactly their duration: no sleep overrun and no rank
sharing a core, so what is left of the gap to 1 is psmpi's (start-up, turnaround, order).
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
MEAN, SIGMA = 0.05, 1.5
# The durations' seed (--seed sets it for the runs, which it starts, through the environment)
SEED = int(os.environ.get("MPI_BALANCE_SEED", "0"))

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
    "psmpi-cost-if1": "cost= as psmpi-cost and mpi={'in_flight': 1} (diagnostic: no group "
                      "queued behind a long one)",
    "psmpi-auto-if1": "cost=\"auto\" as psmpi-auto and mpi={'in_flight': 1} (diagnostic: no "
                      "group queued behind a long one)",
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


def true_cost(pset: dict) -> float:
    return pset["duration"]


# psmpi's systems: (init options, hidden: psets {'i': i} whose worker looks the duration up)
PSMPI_SYSTEMS = {
    "psmpi": ({}, False),
    "psmpi-cost": ({"cost": true_cost}, False),
    "psmpi-auto": ({"cost": "auto"}, False),
    "psmpi-hidden": ({}, True),
    "psmpi-auto-hidden": ({"cost": "auto"}, True),
    "psmpi-g1": ({"group_size": 1}, False),
    "psmpi-if2": ({"mpi": {"in_flight": 2}}, False),
    "psmpi-cost-if2": ({"cost": true_cost, "mpi": {"in_flight": 2}}, False),
    "psmpi-cost-if1": ({"cost": true_cost, "mpi": {"in_flight": 1}}, False),
    "psmpi-auto-if1": ({"cost": "auto", "mpi": {"in_flight": 1}}, False),
    "psmpi-cost-poll": ({"cost": true_cost, "mpi": {"poll_max": 0.0002}}, False),
}


def run_one(system: str) -> dict:
    if system in PSMPI_SYSTEMS:
        return run_psmpi(*PSMPI_SYSTEMS[system])
    if system == "futures":
        return run_futures()
    if system == "schwimmbad":
        return run_schwimmbad()
    raise SystemExit(f"unknown system {system!r}")


def nap_simulated(pset):
    return {"slept": pset["duration"]}


def nap_hidden_simulated(pset):
    return {"duration": DURATIONS[pset["i"]]}


def simulated_seconds(pset: dict) -> float:
    return pset["duration"] if "duration" in pset else DURATIONS[pset["i"]]


def simulate_one(system: str, mpi_us: tuple[float, float]) -> dict:
    """One map of the workload through rank 0's real master and driver with simulated
    workers on a virtual clock (benchmarks/mpi_sim.py): no sleep overrun, no core sharing."""
    import mpi_sim
    options, hidden = PSMPI_SYSTEMS[system]
    # as run_psmpi: a warm-up map first, in the same process
    mpi_sim.simulate_map(nap_simulated, [{"i": i, "duration": 0.0} for i in range(WORKERS)],
                         simulated_seconds, WORKERS, {**options, "out": None})
    psets = [{"i": i} for i in range(N_PSETS)] if hidden else make_psets()
    out = mpi_sim.simulate_map(nap_hidden_simulated if hidden else nap_simulated, psets,
                               simulated_seconds, WORKERS, options,
                               (mpi_us[0] * 1e-6, mpi_us[1] * 1e-6))
    return {"makespan": out.makespan, "groups": out.groups, "head": out.head, "gaps": out.gaps,
            "tail": out.tail, "overrun": 0.0, "gap_ms_median": math.nan,
            "master_cpu": out.master_cpu}


# ---------------------------------------------------------------------- the driver
BASE = common.BASELINE  # suffix of a system run with the baseline psmpi (--baseline DIR)


def measurer(baseline: str | None, simulate: bool, mpi_us: tuple[float, float]):
    """measure(system) for common.interleaved: a fresh `mpiexec` per run (or, simulated, a
    fresh python); a system ending in @base runs with PYTHONPATH=baseline."""
    def measure(system: str) -> dict:
        name, env = common.baseline_split(system, baseline)
        if simulate:
            command = [sys.executable, os.path.abspath(__file__), "--simulate-one", name,
                       "--mpi-us", f"{mpi_us[0]},{mpi_us[1]}"]
        else:
            command = common.mpi_command(WORKERS + 1, __file__, ["--one", name],
                                         futures=name == "futures")
        out = common.run_result(command, timeout=600, env=env)
        if "makespan" in out:
            out["efficiency"] = lower_bound() / out["makespan"]
        return out
    return measure


def describe(system: str, baseline: str | None) -> str:
    if system.endswith(BASE):
        return f"{SYSTEMS[system.removesuffix(BASE)]}; psmpi from {baseline} (the baseline)"
    return SYSTEMS[system]


def gap_ms(runs: list[dict]) -> str:
    """The median of the rounds' median gaps in ms ("–" when simulated: not measured)."""
    values = [r["gap_ms_median"] for r in runs if not math.isnan(r["gap_ms_median"])]
    return f"{common.spread(values)[0]:.2f}" if values else "–"


def print_ratios(systems: list[str], results: dict) -> None:
    """Round by round, psmpi-auto over psmpi-cost (cost= the true function) and over psmpi
    (list order): the efficiency relative to what a perfect hint reaches in the same round."""
    rows = []
    for suffix in ("", BASE):
        auto, cost, plain = (results.get(s + suffix, []) for s in
                             ("psmpi-auto", "psmpi-cost", "psmpi"))
        for other, label in ((cost, "cost= the true function"), (plain, "list order")):
            n = min(len(auto), len(other))
            if n:
                ratios = [auto[i]["efficiency"] / other[i]["efficiency"] for i in range(n)]
                low, high = min(ratios), max(ratios)
                rows.append([f"psmpi-auto{suffix} / {label}", f"{sorted(ratios)[n // 2]:.3f}",
                             f"{low:.3f} – {high:.3f}",
                             ", ".join(f"{r:.3f}" for r in ratios)])
    if rows:
        print("Efficiency of cost=\"auto\" relative to the same round's run of cost= the true "
              "function and of list order (ratios of efficiencies, round by round):\n")
        print(common.table(["ratio", "median", "min – max", "rounds"], rows))
        print()


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
        target = targets.get(system.removesuffix(BASE))
        verdict = "" if target is None else \
            f"≥ {target}: {'met' if eff[0] >= target else 'MISSED'}"
        rows.append([system, f"{makespan[0]:.3f}", f"{makespan[1]:.3f} – {makespan[2]:.3f}",
                     f"{eff[0]:.3f}", f"{eff[1]:.3f} – {eff[2]:.3f}", verdict])
    print(table(["system", "makespan s, median", "makespan min – max", "efficiency median",
                 "efficiency min – max", "target"], rows))
    print()


def report(systems: list[str], results: dict, failed: dict, baseline: str | None = None
           ) -> None:
    from common import spread, table
    print_efficiency(systems, results, failed, TARGETS)
    print_ratios(systems, results)
    rows = []
    for system in systems:
        runs = results[system]
        if runs and "gaps" in runs[0]:
            cell = lambda key, runs=runs: f"{100 * spread([r[key] for r in runs])[0]:.1f} %"  # noqa: E731
            groups = spread([r["groups"] for r in runs])
            rows.append([system, f"{groups[0]:.0f} ({groups[1]:.0f} – {groups[2]:.0f})",
                         cell("head"), cell("gaps"),
                         gap_ms(runs), cell("tail"),
                         cell("overrun"), f"{1 - spread([r['efficiency'] for r in runs])[0]:.3f}"]
                        + ([f"{1000 * spread([r['master_cpu'] for r in runs])[0]:.0f}"]
                           if "master_cpu" in runs[0] else []))
    if rows:
        print("Where psmpi's workers lost time (from each row's _rank, _time_utc, _pset_runtime in the "
              "file; shares of 8 workers × makespan, medians over rounds): the groups the master "
              "sent for the 200 psets (counted by wrapping Master.send_next on rank 0), time "
              "before the workers' first "
              "pset, between two psets (the master's turnaround; median gap in ms), after "
              "their last pset, and sleep() running past the nominal duration; they add up to "
              "1 - efficiency (while the ideal makespan is sum/8). Simulated: rank 0's CPU ms "
              "over the map.\n")
        print(table(["system", "groups sent (min – max)", "head", "gaps", "gap ms, median",
                     "tail", "overrun", "1 - efficiency"]
                    + (["rank 0 CPU ms"] if len(rows[0]) > 8 else []), rows))
        print()
    print(f"Systems (`mpiexec -n {WORKERS + 1}`: rank 0 coordinates, {WORKERS} workers; each "
          f"run maps {WORKERS} zero-duration psets first to warm up):")
    common.list_systems(systems, {s: describe(s, baseline) for s in systems})


def main() -> None:
    from mpi_scale import RECV_US, SEND_US
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.round_options(parser, SYSTEMS, "3 rounds")
    common.add_baseline_option(parser)
    parser.add_argument("--simulate", action="store_true",
                        help="psmpi's systems through rank 0's real master and driver with "
                             "simulated workers on a virtual clock (benchmarks/mpi_sim.py)")
    parser.add_argument("--mpi-us", default=f"{RECV_US},{SEND_US}",
                        help="with --simulate: MPI's own µs per message received, sent")
    parser.add_argument("--seed", type=int, default=SEED,
                        help="seed of the durations (default 0: the workload above)")
    parser.add_argument("--one", metavar="SYSTEM", help=argparse.SUPPRESS)
    parser.add_argument("--simulate-one", metavar="SYSTEM", help=argparse.SUPPRESS)
    args = parser.parse_args()
    mpi_us = tuple(float(x) for x in args.mpi_us.split(","))
    if args.one or args.simulate_one:
        out = run_one(args.one) if args.one else simulate_one(args.simulate_one, mpi_us)
        if out is not None:
            common.emit(out)
        return

    if args.seed != SEED:
        os.environ["MPI_BALANCE_SEED"] = str(args.seed)
        os.execv(sys.executable, [sys.executable] + sys.argv)  # durations from the new seed
    reps = args.reps or (3 if args.quick else 5)
    systems = common.installed_systems([s for s in args.systems.split(",") if s], PEER_MODULES)
    if args.simulate:
        systems = [s for s in systems if s in PSMPI_SYSTEMS]
        common.header(f"mpi_balance --simulate: {N_PSETS} lognormal psets on {WORKERS} "
                      f"simulated workers, rank 0's real master and driver on a virtual clock")
        print(f"- {reps} rounds, each system a fresh python per run; MPI's own cost charged "
              f"per message: {mpi_us[0]:.0f} µs received, {mpi_us[1]:.0f} µs sent; a pset "
              f"takes exactly its duration (no sleep overrun); makespan = virtual seconds "
              f"from the map call to the last pset's end")
    else:
        common.header(f"mpi_balance: {N_PSETS} lognormal sleep psets on {WORKERS} workers, "
                      f"`mpiexec -n {WORKERS + 1}`")
        print(f"- {reps} rounds; in each round every system runs once, in turn, each as a "
              f"fresh `mpiexec -n {WORKERS + 1}`; makespan = wall time of the one timed map "
              f"call")
    systems = common.with_baseline(systems, args.baseline)
    results, failed = common.interleaved(systems, reps,
                                         measurer(args.baseline, args.simulate, mpi_us))
    report(systems, results, failed, args.baseline)


if __name__ == "__main__":
    main()

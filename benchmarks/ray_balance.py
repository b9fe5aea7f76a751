"""Load balancing on ray: the lognormal workload of mpi_balance.py on a local ray of 8 CPUs.

200 psets sleeping ``numpy.random.default_rng(0).lognormal(mean=log(0.05) - 1.5**2 / 2,
sigma=1.5, size=200)`` seconds on 8 workers (sleeps: 8 ray CPUs fit on 2 cores).
Efficiency = max(sum / 8, max) / makespan, makespan = the wall time of the map call, measured
once ray is started and 8 workers have each run a warm-up pset. The workload, the bounds and
the greedy schedules are mpi_balance.py's.

    python benchmarks/ray_balance.py           # 5 rounds
    python benchmarks/ray_balance.py --quick   # 3 rounds
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from mpi_balance import N_PSETS, WORKERS, lower_bound, make_psets, nap, print_efficiency  # noqa: E402

WARMUP_SECONDS = 0.3  # one warm-up pset per worker, long enough that all 8 run at once
TARGET = 0.9

SYSTEMS = {
    "psmpi": "psmpi.map(nap, psets, out='balance.h5'), backend='ray', defaults (adaptive groups, "
             "no cost hint)",
    "psmpi-cost": "the same with cost=lambda p: p['duration'] (longest expected first)",
    "psmpi-g1": "the same as psmpi with group_size=1",
    "paramsurvey": "paramsurvey.map(nap3, psets, verbose=0) on its ray backend (one task per "
                   "pset, 2.4 tasks per CPU in flight)",
    "ray-tasks": "ray.get([timed_nap.remote(p) for p in psets]): plain ray, every pset a "
                 "task, all submitted at once (ray runs them in list order as CPUs free up); "
                 "timed_nap is nap returning its pid, start time and runtime",
}
PEER_MODULES = {"paramsurvey": "paramsurvey", "ray-tasks": "ray"}


# ---------------------------------------------------------------------- the work (children)
def nap3(pset, system_kwargs, user_kwargs):
    return nap(pset)


def warmup_psets() -> list[dict]:
    return [{"i": -1 - i, "duration": WARMUP_SECONDS} for i in range(WORKERS)]


def start_ray():
    import ray
    ray.init(num_cpus=WORKERS, include_dashboard=False, logging_level=logging.ERROR)
    return ray


def run_psmpi(options: dict) -> dict:
    import psmpi
    psmpi.init(backend="ray", ncores=WORKERS, verbose=0)
    psmpi.map(nap, warmup_psets(), out=None, name="warmup", group_size=1)
    psets = make_psets()
    wall0, t0 = time.time(), time.perf_counter()
    res = psmpi.map(nap, psets, out="balance.h5", name="bench", **options)
    makespan = time.perf_counter() - t0
    assert len(res) == N_PSETS and not len(res.missing.df)
    rows = psmpi.read("balance.h5", "bench")
    # every ray worker process is one "worker" of the breakdown (ray has no ranks)
    rows = rows.assign(_rank=rows["_pid"])
    return {"makespan": makespan, "processes": int(rows["_pid"].nunique()),
            **common.idle_breakdown(rows, rows["duration"], WORKERS, wall0, wall0 + makespan)}


def run_paramsurvey() -> dict:
    import paramsurvey
    start_ray()
    paramsurvey.init(backend="ray", verbose=0)
    paramsurvey.map(nap3, warmup_psets(), verbose=0)
    psets = make_psets()
    t0 = time.perf_counter()
    res = paramsurvey.map(nap3, psets, verbose=0)
    makespan = time.perf_counter() - t0
    assert len(res.to_df()) == N_PSETS
    return {"makespan": makespan}


def timed_nap(pset) -> tuple[int, float, float]:
    """nap, saying where and when it ran: the rows psmpi would store."""
    t0 = time.time()
    nap(pset)
    return os.getpid(), t0, time.time() - t0


def run_ray_tasks() -> dict:
    import pandas as pd
    ray = start_ray()
    remote = ray.remote(timed_nap)
    ray.get([remote.remote(p) for p in warmup_psets()])
    psets = make_psets()
    wall0, t0 = time.time(), time.perf_counter()
    out = ray.get([remote.remote(p) for p in psets])
    makespan = time.perf_counter() - t0
    assert len(out) == N_PSETS
    rows = pd.DataFrame(out, columns=["_rank", "_time_utc", "_pset_runtime"])
    rows["duration"] = [p["duration"] for p in psets]
    return {"makespan": makespan, "processes": int(rows["_rank"].nunique()),
            **common.idle_breakdown(rows, rows["duration"], WORKERS, wall0, wall0 + makespan)}


def run_one(system: str) -> dict:
    if system == "psmpi":
        return run_psmpi({})
    if system == "psmpi-cost":
        return run_psmpi({"cost": lambda p: p["duration"]})
    if system == "psmpi-g1":
        return run_psmpi({"group_size": 1})
    if system == "paramsurvey":
        return run_paramsurvey()
    if system == "ray-tasks":
        return run_ray_tasks()
    raise SystemExit(f"unknown system {system!r}")


# ---------------------------------------------------------------------- the driver
def measure(system: str) -> dict:
    out = common.run_result([sys.executable, os.path.abspath(__file__), "--one", system],
                            timeout=600)
    if "makespan" in out:
        out["efficiency"] = lower_bound() / out["makespan"]
    return out


def report(systems: list[str], results: dict, failed: dict) -> None:
    from common import spread, table
    print_efficiency(systems, results, failed, {"psmpi": TARGET})
    rows = []
    for system in systems:
        runs = results[system]
        if runs and "gaps" in runs[0]:
            cell = lambda key, runs=runs: f"{100 * spread([r[key] for r in runs])[0]:.1f} %"  # noqa: E731
            rows.append([system, f"{spread([r['processes'] for r in runs])[0]:.0f}",
                         cell("head"), cell("gaps"),
                         f"{spread([r['gap_ms_median'] for r in runs])[0]:.2f}", cell("tail"),
                         cell("overrun")])
    if rows:
        print(f"Where the workers lost time (psmpi: from each row's _pid, _time_utc and _pset_runtime "
              f"in the file; ray-tasks: the same, returned by each task; shares of {WORKERS} "
              f"workers × makespan, medians over rounds): ray worker processes that ran psets, "
              f"time before a process's first pset, between two psets on one process (the "
              f"turnaround; median gap in ms), after its last pset, and sleep() running past "
              f"the nominal duration.\n")
        print(table(["system", "processes", "head", "gaps", "gap ms, median", "tail",
                     "overrun"], rows))
        print()
    print(f"Systems (local ray with num_cpus={WORKERS}, started before the timing; each run "
          f"first maps {WORKERS} psets of {WARMUP_SECONDS} s, one per task, so that "
          f"{WORKERS} workers are up):")
    common.list_systems(systems, SYSTEMS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.round_options(parser, SYSTEMS, "3 rounds")
    parser.add_argument("--one", metavar="SYSTEM", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        common.emit(run_one(args.one))
        return

    reps = args.reps or (3 if args.quick else 5)
    common.header(f"ray_balance: {N_PSETS} lognormal sleep psets on a local ray of "
                  f"{WORKERS} CPUs")
    print(f"- ray {common.version('ray')}; {reps} rounds; in each round every system runs once, "
          f"in turn, in a fresh process; makespan = wall time of the one timed map call")
    systems = common.installed_systems([s for s in args.systems.split(",") if s], PEER_MODULES)
    results, failed = common.interleaved(systems, reps, measure)
    report(systems, results, failed)


if __name__ == "__main__":
    main()

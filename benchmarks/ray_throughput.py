"""End-to-end psets/s of trivial psets on a local ray: psmpi's ray backend and its peers.

Every measurement runs in a fresh Python process in its own temporary directory, which starts
a local ray with ``--workers`` CPUs, maps 100 psets to warm up, then times one map of all
the psets (ray's start-up is not timed: "once ray is started"). The systems take turns
within each round, so that a noisy machine slows them alike.

    python benchmarks/ray_throughput.py           # 10k psets, 5 rounds
    python benchmarks/ray_throughput.py --quick   # 2k psets, 3 rounds (smoke run)
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

WARMUP = 100
CHUNKSIZES = (100, 1000, 10000)
TARGET = 5.0  # psmpi / paramsurvey-ray

SYSTEMS = {
    "psmpi": "psmpi.init(backend='ray', ncores=workers); psmpi.map(worker, space, "
             "out='psmpi.h5'): adaptive groups as ray tasks, results written to a new HDF5 file",
    "paramsurvey": "ray.init(num_cpus=workers), paramsurvey.init(backend='ray'), "
                   "paramsurvey.map(worker3, psets, verbose=0): its defaults (group_size 1, "
                   "one ray task per pset), results in memory only",
    "paramsurvey-g1000": "the same with group_size=1000 (paramsurvey's advice for short psets; "
                         "for context)",
    "ray-tasks": "ray.get([worker.remote(p) for p in psets]): plain ray, one task per pset, "
                 "no storage",
    "ray-batched": "plain ray, one task per chunk of psets, no storage; best of chunks of "
                   + "/".join(str(c) for c in CHUNKSIZES) + " in each run",
}
PEER_MODULES = {"paramsurvey": "paramsurvey", "paramsurvey-g1000": "paramsurvey",
                "ray-tasks": "ray", "ray-batched": "ray"}
RATIO_PEERS = ("paramsurvey", "paramsurvey-g1000", "ray-tasks", "ray-batched")


# ---------------------------------------------------------------------- the work (children)
def worker(pset):
    return {"y": pset["a"] + 1}


def worker3(pset, system_kwargs, user_kwargs):
    return {"y": pset["a"] + 1}


def chunk_worker(psets):
    return [worker(p) for p in psets]


def make_space(n: int):
    import psmpi
    return psmpi.params.product({"a": list(range(n // 10))}, {"b": list(range(10))})


def start_ray(workers: int):
    import ray
    ray.init(num_cpus=workers, include_dashboard=False, logging_level=logging.ERROR)
    return ray


def run_psmpi(n: int, workers: int) -> dict:
    import psmpi
    space = make_space(n)
    psmpi.init(backend="ray", ncores=workers, verbose=0)
    psmpi.map(worker, list(itertools.islice(space, WARMUP)), out=None, name="warmup")
    t0 = time.perf_counter()
    res = psmpi.map(worker, space, out="psmpi.h5", name="bench")
    seconds = time.perf_counter() - t0
    assert len(res) == n and not len(res.missing.df), (len(res), res.missing)
    return {"seconds": seconds, "note": ""}


def run_paramsurvey(n: int, workers: int, group_size: int | None) -> dict:
    import paramsurvey
    start_ray(workers)  # paramsurvey joins a running ray (else it wants ~/.ray-head-details)
    psets = list(make_space(n))
    paramsurvey.init(backend="ray", verbose=0)
    paramsurvey.map(worker3, psets[:WARMUP], verbose=0, group_size=group_size)
    t0 = time.perf_counter()
    res = paramsurvey.map(worker3, psets, verbose=0, group_size=group_size)
    seconds = time.perf_counter() - t0
    assert len(res.to_df()) == n
    return {"seconds": seconds, "note": ""}


def run_ray_tasks(n: int, workers: int) -> dict:
    ray = start_ray(workers)
    remote = ray.remote(worker)
    psets = list(make_space(n))
    ray.get([remote.remote(p) for p in psets[:WARMUP]])
    t0 = time.perf_counter()
    out = ray.get([remote.remote(p) for p in psets])
    seconds = time.perf_counter() - t0
    assert len(out) == n
    return {"seconds": seconds, "note": ""}


def run_ray_batched(n: int, workers: int) -> dict:
    ray = start_ray(workers)
    remote = ray.remote(chunk_worker)
    psets = list(make_space(n))
    ray.get(remote.remote(psets[:WARMUP]))
    best = (float("inf"), None)
    for size in CHUNKSIZES:
        t0 = time.perf_counter()
        out = ray.get([remote.remote(psets[i:i + size]) for i in range(0, n, size)])
        best = min(best, (time.perf_counter() - t0, size), key=lambda b: b[0])
        assert sum(map(len, out)) == n
    return {"seconds": best[0], "note": f"chunks of {best[1]}"}


def run_one(system: str, n: int, workers: int) -> dict:
    if system == "psmpi":
        return run_psmpi(n, workers)
    if system == "paramsurvey":
        return run_paramsurvey(n, workers, None)
    if system == "paramsurvey-g1000":
        return run_paramsurvey(n, workers, 1000)
    if system == "ray-tasks":
        return run_ray_tasks(n, workers)
    if system == "ray-batched":
        return run_ray_batched(n, workers)
    raise SystemExit(f"unknown system {system!r}")


# ---------------------------------------------------------------------- the driver (parent)
def measure(system: str, n: int, workers: int) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--one", system, str(n),
               "--workers", str(workers)]
    return common.run_result(command, timeout=900)


def report(systems: list[str], n: int, results: dict, failed: dict, workers: int) -> None:
    from common import fmt, spread, table
    common.report_failures(failed, results)
    print()
    rows = []
    for system in systems:
        runs = results[system]
        if not runs:
            continue
        rates = [n / r["seconds"] for r in runs]
        med, lo, hi = spread(rates)
        note = ", ".join(sorted({r["note"] for r in runs} - {""}))
        rows.append([system, fmt(med), f"{fmt(lo)} – {fmt(hi)}",
                     f"{spread([r['seconds'] for r in runs])[0]:.3f}", len(runs), note])
    print(table(["system", "psets/s median", "psets/s min – max", "seconds median", "rounds",
                 "note"], rows))
    print()
    rows = []
    for peer in RATIO_PEERS:
        pairs = list(zip(results.get("psmpi", []), results.get(peer, [])))  # same rounds
        ratios = [p["seconds"] / m["seconds"] for m, p in pairs]
        rows.append([f"psmpi / {peer}", common.ratio_cell(ratios)])
    print(table([f"ratio of psets/s at {n:,} psets, median of rounds (min – max)", ""], rows))
    print()
    pairs = list(zip(results.get("psmpi", []), results.get("paramsurvey", [])))
    if pairs:
        med = spread([p["seconds"] / m["seconds"] for m, p in pairs])[0]
        print(f"- target psmpi ≥ {TARGET:g}× paramsurvey-ray: "
              f"{'met' if med >= TARGET else 'MISSED'} ({med:.1f}×)")
    print()
    print(f"Systems (local ray with {workers} CPUs, started before the timing):")
    common.list_systems(systems, SYSTEMS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.round_options(parser, SYSTEMS, "2k psets, 3 rounds (smoke run)")
    parser.add_argument("--psets", type=int,
                        help="psets per map (default 10000, 2000 with --quick)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                        help="CPUs of the local ray (default: nproc)")
    parser.add_argument("--one", nargs=2, metavar=("SYSTEM", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        common.emit(run_one(args.one[0], int(args.one[1]), args.workers))
        return

    n = args.psets or (2000 if args.quick else 10000)
    reps = args.reps or (3 if args.quick else 5)
    common.header(f"ray_throughput: end-to-end psets/s, trivial worker, local ray of "
                  f"{args.workers} CPUs")
    print(f"- ray {common.version('ray')}; {reps} rounds of {n:,} psets; in each round every "
          f"system runs once, in turn, in a fresh process; the timing covers one map after ray "
          f"started and a warm-up map of {WARMUP} psets")
    systems = common.installed_systems([s for s in args.systems.split(",") if s], PEER_MODULES)
    if "psmpi" not in systems:
        sys.exit("psmpi must be among the systems: the ratios are relative to it")
    results, failed = common.interleaved(systems, reps, lambda s: measure(s, n, args.workers))
    report(systems, n, results, failed, args.workers)


if __name__ == "__main__":
    main()

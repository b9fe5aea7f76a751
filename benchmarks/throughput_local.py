"""End-to-end psets/s of trivial psets on one machine: psmpi (with its HDF5 store) and peers.

Every measurement runs in a fresh Python process started in its own temporary directory
(paramsurvey writes log files into the working directory), and the systems take turns
within each round, so that a noisy machine slows them alike. Each child process imports,
starts its pool, maps 100 psets to warm up, then times one map of all the psets.

    python benchmarks/throughput_local.py           # 20k and 200k psets, 5 rounds
    python benchmarks/throughput_local.py --quick   # 2k psets, 3 rounds (smoke run)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

WARMUP = 100
POOL_CHUNKSIZES = (None, 100, 1000, 10000)  # None: Pool.map's own choice, len / (4 * workers)

# What each system is, as printed in the report; the keys are the names used with --one.
SYSTEMS = {
    "psmpi": "psmpi multiprocessing backend, results written to a new HDF5 file (out=), "
             "psets given as the psmpi.params.product space",
    "psmpi-serial": "psmpi serial backend (one process), HDF5 file as above; for reference",
    "pool": "multiprocessing.Pool(workers).map over the same dicts, no storage; best of "
            "chunksize " + "/".join(str(c) for c in POOL_CHUNKSIZES) + " in each round",
    "schwimmbad": "schwimmbad.MultiPool(workers).map over the same dicts, no storage "
                  "(a pool of the multiprocess package, which pickles with dill)",
    "paramsurvey": "paramsurvey.init(backend='multiprocessing', ncores=workers); "
                   "paramsurvey.map(worker3, psets, verbose=0); results in memory only",
    "psweep": "psweep.run(worker, psets, poolsize=workers, calc_dir=...): multiprocessing.Pool, "
              "default save=True (pickled DataFrame calc/database.pk); its pool is started "
              "inside run(), so inside the timing",
}
PEER_MODULES = {"schwimmbad": "schwimmbad", "paramsurvey": "paramsurvey", "psweep": "psweep"}
RATIO_PEERS = ("paramsurvey", "pool", "psweep", "schwimmbad", "psmpi-serial")


# ---------------------------------------------------------------------- the work (children)
def worker(pset):
    return {"y": pset["a"] + 1}


def worker3(pset, system_kwargs, user_kwargs):
    return {"y": pset["a"] + 1}


def make_space(n: int):
    import psmpi
    return psmpi.params.product({"a": list(range(n // 10))}, {"b": list(range(10))})


def make_psets(n: int) -> list[dict]:
    return list(make_space(n))


def run_psmpi(n: int, workers: int, backend: str) -> tuple[float, str]:
    import psmpi
    space = make_space(n)
    psmpi.init(backend=backend, ncores=workers, verbose=0)
    psmpi.map(worker, list(itertools.islice(space, WARMUP)), out=None, name="warmup")
    t0 = time.perf_counter()
    res = psmpi.map(worker, space, out="psmpi.h5", name="bench")
    seconds = time.perf_counter() - t0
    assert len(res) == n and not len(res.missing.df), (len(res), res.missing)
    return seconds, ""


def run_pool(n: int, workers: int) -> tuple[float, str]:
    import multiprocessing
    psets = make_psets(n)
    best = (float("inf"), None)
    with multiprocessing.Pool(workers) as pool:
        pool.map(worker, psets[:WARMUP])
        for chunksize in POOL_CHUNKSIZES:
            t0 = time.perf_counter()
            out = pool.map(worker, psets, chunksize=chunksize)
            best = min(best, (time.perf_counter() - t0, chunksize), key=lambda b: b[0])
            assert len(out) == n
    return best[0], f"chunksize {best[1]}"


def run_schwimmbad(n: int, workers: int) -> tuple[float, str]:
    from schwimmbad import MultiPool
    psets = make_psets(n)
    with MultiPool(processes=workers) as pool:
        pool.map(worker, psets[:WARMUP])
        t0 = time.perf_counter()
        out = list(pool.map(worker, psets))
        seconds = time.perf_counter() - t0
    assert len(out) == n
    return seconds, ""


def run_paramsurvey(n: int, workers: int) -> tuple[float, str]:
    import paramsurvey
    psets = make_psets(n)
    paramsurvey.init(backend="multiprocessing", ncores=workers)
    paramsurvey.map(worker3, psets[:WARMUP], verbose=0)
    t0 = time.perf_counter()
    res = paramsurvey.map(worker3, psets, verbose=0)
    seconds = time.perf_counter() - t0
    assert len(res.to_df()) == n
    paramsurvey.finalize()
    return seconds, ""


def run_psweep(n: int, workers: int) -> tuple[float, str]:
    import psweep
    run = getattr(psweep, "run", None) or psweep.run_local  # renamed in some versions
    psets = make_psets(n)
    run(worker, psets[:WARMUP], poolsize=workers, calc_dir="warmup")
    t0 = time.perf_counter()
    df = run(worker, psets, poolsize=workers, calc_dir="calc")
    seconds = time.perf_counter() - t0
    assert len(df) == n and os.path.exists(os.path.join("calc", "database.pk"))
    return seconds, f"psweep.{run.__name__}"


def run_one(system: str, n: int, workers: int) -> tuple[float, str]:
    if system == "psmpi":
        return run_psmpi(n, workers, "multiprocessing")
    if system == "psmpi-serial":
        return run_psmpi(n, workers, "serial")
    return globals()["run_" + system](n, workers)


# ---------------------------------------------------------------------- the driver (parent)
def measure(system: str, n: int, workers: int) -> dict:
    """Run one measurement in a fresh process in a fresh temporary directory."""
    command = [sys.executable, os.path.abspath(__file__), "--one", system, str(n),
               "--workers", str(workers)]
    with tempfile.TemporaryDirectory(prefix="psmpi-bench-") as tmp:
        proc = subprocess.run(command, cwd=tmp, capture_output=True, text=True, timeout=1800)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"error": f"exit code {proc.returncode}: " + " / ".join(tail)}
    return json.loads(lines[-1][len("RESULT "):])


def available(systems: list[str]) -> list[str]:
    """The systems whose packages import here; a skipped one is reported with its reason."""
    return common.installed_systems(systems, PEER_MODULES)


def rounds(systems: list[str], sizes: list[int], reps: int, workers: int) -> dict:
    """{(system, n): [seconds, ...]}, measured round by round, the systems taking turns."""
    from common import say
    seconds: dict = {(s, n): [] for s in systems for n in sizes}
    notes: dict = {}
    failed: dict = {}
    for rep in range(reps):
        for n in sizes:
            for system in systems:
                if system in failed:
                    continue
                out = measure(system, n, workers)
                if "error" in out:
                    failed[system] = out["error"]
                    say(f"{system} failed: {out['error']}")
                    continue
                seconds[system, n].append(out["seconds"])
                notes.setdefault((system, n), []).append(out["note"])
                say(f"round {rep + 1}/{reps} n={n} {system}: {out['seconds']:.3f} s "
                    f"{out['note']}")
    return {"seconds": seconds, "notes": notes, "failed": failed}


def report(systems: list[str], sizes: list[int], data: dict, workers: int) -> None:
    from common import fmt, spread, table
    seconds, notes = data["seconds"], data["notes"]
    for system, reason in data["failed"].items():
        print(f"- {system} failed and is left out: {reason}")
    print()
    rows = []
    for n in sizes:
        for system in systems:
            times = seconds[system, n]
            if not times:
                continue
            med, lo, hi = spread([n / t for t in times])
            note = ", ".join(sorted(set(notes.get((system, n), [])) - {""}))
            rows.append([f"{n:,}", system, fmt(med), f"{fmt(lo)} – {fmt(hi)}",
                         f"{spread(times)[0]:.3f}", len(times), note])
    print(table(["psets", "system", "psets/s median", "psets/s min – max", "seconds median",
                 "rounds", "note"], rows))
    print()
    rows = []
    for peer in RATIO_PEERS:
        cells = []
        for n in sizes:
            pairs = list(zip(seconds["psmpi", n], seconds.get((peer, n), [])))
            if not pairs:
                cells.append("n/a")
                continue
            med, lo, hi = spread([tp / tm for tm, tp in pairs])  # rate ratio, per round
            cells.append(f"{med:.2f}× ({lo:.2f} – {hi:.2f})")
        rows.append([f"psmpi / {peer}"] + cells)
    print(table(["ratio of psets/s, median of rounds (min – max)"] + [f"{n:,} psets" for n in sizes],
                rows))
    print()
    for n in sizes:
        pairs = list(zip(seconds["psmpi", n], seconds.get(("paramsurvey", n), [])))
        if pairs:
            med = spread([tp / tm for tm, tp in pairs])[0]
            verdict = "met" if med >= 3 else "MISSED"
            print(f"- target psmpi ≥ 3× paramsurvey at {n:,} psets: {verdict} ({med:.2f}×)")
    print()
    print(f"Systems (workers = {workers}):")
    common.list_systems(systems, SYSTEMS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.round_options(parser, SYSTEMS, "2k psets, 3 rounds (smoke run)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                        help="worker processes of every parallel system (default: nproc)")
    parser.add_argument("--one", nargs=2, metavar=("SYSTEM", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        seconds, note = run_one(args.one[0], int(args.one[1]), args.workers)
        print("RESULT " + json.dumps({"seconds": seconds, "note": note}), flush=True)
        return

    from common import header
    sizes = [2000] if args.quick else [20000, 200000]
    reps = args.reps or (3 if args.quick else 5)
    header(f"throughput_local: end-to-end psets/s, trivial worker, {args.workers} workers")
    print(f"- {reps} rounds; in each round every system runs once per size, in turn, each in a "
          f"fresh process; the timing covers one map() call after a warm-up map of {WARMUP} psets")
    systems = available([s for s in args.systems.split(",") if s])
    if "psmpi" not in systems:
        sys.exit("psmpi must be among the systems: the ratios are relative to it")
    data = rounds(systems, sizes, reps, args.workers)
    report(systems, sizes, data, args.workers)


if __name__ == "__main__":
    main()

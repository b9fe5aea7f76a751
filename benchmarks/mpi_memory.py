"""Memory: millions of lazily generated psets through `mpiexec -n 3` (1 master, 2 workers).

psmpi.map(worker, psmpi.params.product({"a": range(n // 1000)}, {"b": range(1000)}),
keep_results=False, out=<a new file>): the space is never built as a list. At the end rank 0
reports its own peak RSS (resource.getrusage(RUSAGE_SELF).ru_maxrss) and each worker's
(VmHWM of /proc/<pid>/status, read by rank 0 while the workers still serve: psmpi's worker
ranks never return into the script, so they cannot report themselves). Every rank writes
rank-<r>.pid before psmpi.init() so rank 0 knows its siblings. Rank 0's RSS is also sampled
every few seconds during the map, to show how it grows with the psets done.

    python benchmarks/mpi_memory.py                # 10,000,000 psets (several minutes)
    python benchmarks/mpi_memory.py --n 2000000    # a smaller run to extrapolate from
    python benchmarks/mpi_memory.py --quick        # 200,000 psets
    python benchmarks/mpi_memory.py --resume       # also: each size run again on its file,
                                                   # every pset resumed (a killed survey's rerun)
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

NPROCS = 3
MASTER_LIMIT_MIB, WORKER_LIMIT_MIB = 1024, 200
SAMPLE_SECONDS = 5.0


def worker(pset):
    return {"y": pset["a"] + pset["b"]}


def rss_mib(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_psmpi(n: int) -> dict:
    common.note_rank_pid()  # every rank, before psmpi.init() keeps the workers
    import psmpi
    psmpi.init(backend="mpi", verbose=0)
    space = psmpi.params.product({"a": list(range(n // 1000))}, {"b": list(range(1000))})
    psmpi.map(worker, [{"a": 0, "b": i} for i in range(100)], out=None, name="warmup")
    assert len(space) == n
    pids = common.rank_pids()
    rss_before = rss_mib()
    samples, done = [], threading.Event()
    t0 = time.perf_counter()

    def sample():
        while not done.wait(SAMPLE_SECONDS):
            samples.append((time.perf_counter() - t0, rss_mib()))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    res = psmpi.map(worker, space, out="memory.h5", name="bench", keep_results=False)
    seconds = time.perf_counter() - t0
    done.set()
    thread.join()
    assert res.progress.finished == n and not len(res.missing.df), res.progress
    workers = {str(rank): common.peak_rss_mib(pid) for rank, pid in sorted(pids.items())
               if rank > 0}
    return {"n": n, "resumed": res.progress.resumed, "seconds": seconds,
            "rank0_peak_mib": resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rank0_before_mib": rss_before, "rank0_after_mib": rss_mib(),
            "workers_peak_mib": workers, "file_mib": os.path.getsize("memory.h5") / 2 ** 20,
            "samples": samples}


def measure(n: int) -> dict:
    return common.run_result(common.mpi_command(NPROCS, __file__, ["--one", str(n)]),
                             timeout=7200)


def measure_resume(n: int) -> dict:
    """The same map run twice in one directory; the second run's figures (all resumed)."""
    command = common.mpi_command(NPROCS, __file__, ["--one", str(n)])
    with tempfile.TemporaryDirectory(prefix="psmpi-bench-") as tmp:
        first = common.run_result(command, timeout=7200, cwd=tmp)
        return first if "error" in first else common.run_result(command, timeout=7200, cwd=tmp)


def report(results: list[dict]) -> None:
    from common import table
    rows = []
    for r in results:
        worst_worker = max(r["workers_peak_mib"].values())
        label = f"{r['n']:,}" + (" (all resumed)" if r.get("resumed") else "")
        rows.append([label, f"{r['seconds']:.0f}", f"{r['n'] / r['seconds']:,.0f}",
                     f"{r['rank0_before_mib']:.0f}", f"{r['rank0_peak_mib']:.0f}",
                     ", ".join(f"{v:.0f}" for v in r["workers_peak_mib"].values()),
                     f"{r['file_mib']:.0f}",
                     f"{'met' if r['rank0_peak_mib'] < MASTER_LIMIT_MIB else 'MISSED'} / "
                     f"{'met' if worst_worker < WORKER_LIMIT_MIB else 'MISSED'}"])
    print(table(["psets", "seconds", "psets/s", "rank 0 RSS before the map, MiB",
                 "rank 0 peak RSS, MiB", "workers' peak RSS, MiB", "file MiB",
                 f"target rank 0 < {MASTER_LIMIT_MIB} / workers < {WORKER_LIMIT_MIB} MiB"],
                rows))
    print()
    fresh = [r for r in results if not r.get("resumed")]
    if len(fresh) >= 2:
        a, b = fresh[0], fresh[-1]
        slope = (b["rank0_peak_mib"] - a["rank0_peak_mib"]) / (b["n"] - a["n"])
        at = lambda n: a["rank0_peak_mib"] + slope * (n - a["n"])  # noqa: E731
        print(f"- rank 0's peak grows by {slope * 2 ** 20:.0f} bytes per pset between "
              f"{a['n']:,} and {b['n']:,} psets: a straight line through them gives "
              f"{at(10_000_000):,.0f} MiB at 10 million psets and {at(100_000_000):,.0f} MiB at "
              f"100 million")
        print()
    for r in results:
        if r["samples"]:
            trace = ", ".join(f"{t:.0f} s: {m:.0f}" for t, m in r["samples"][::max(
                1, len(r["samples"]) // 12)])
            what = "resuming" if r.get("resumed") else "during"
            print(f"- rank 0 RSS (MiB) {what} the map of {r['n']:,} psets: {trace}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200,000 psets")
    parser.add_argument("--n", type=int, action="append",
                        help="psets (repeatable; default 1,000,000 then 10,000,000)")
    parser.add_argument("--resume", action="store_true",
                        help="also run each size again on its own file: every pset resumed")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        out = run_psmpi(args.one)
        common.emit(out)
        return

    sizes = args.n or ([200_000] if args.quick else [1_000_000, 10_000_000])
    common.header(f"mpi_memory: peak RSS with millions of lazily generated psets, "
                  f"`mpiexec -n {NPROCS}`")
    print(f"- one run per size (memory is not noisy the way time is), each a fresh "
          f"`mpiexec -n {NPROCS}` in a fresh temporary directory; keep_results=False, "
          f"out= a new HDF5 file, psets = psmpi.params.product({{'a': range(n // 1000)}}, "
          f"{{'b': range(1000)}}), worker returns {{'y': a + b}}")
    results = []
    runs = [("", measure)] + ([(", written and then resumed", measure_resume)] if args.resume else [])
    for n in sizes:
        for what, run in runs:
            common.say(f"mpi_memory: {n:,} psets{what} ...")
            out = run(n)
            if "error" in out:
                print(f"- {n:,} psets{what} failed: {out['error']}")
                continue
            common.say(f"mpi_memory: {n:,} psets{what}: {out['seconds']:.0f} s, rank 0 peak "
                       f"{out['rank0_peak_mib']:.0f} MiB, workers {out['workers_peak_mib']}")
            results.append(out)
    print()
    if results:
        report(results)


if __name__ == "__main__":
    main()

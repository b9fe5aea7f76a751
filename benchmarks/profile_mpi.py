"""cProfile of rank 0 during one psmpi.map() under MPI (not a benchmark; run it under mpiexec).

The worker ranks never return from psmpi.init(), so everything after it runs on rank 0
only, and only rank 0 is profiled: its master loop (Master.run/drain/refill), the driver
(grouping, recording, HDF5) and the polling sleeps. cProfile's per-call overhead inflates
the times of small Python functions; read the shares, not the seconds.

    mpiexec -n 3 benchmarks/.venv/bin/python benchmarks/profile_mpi.py                 # 200k trivial psets
    mpiexec -n 3 benchmarks/.venv/bin/python benchmarks/profile_mpi.py --case list     # as a list of dicts
    mpiexec -n 2 benchmarks/.venv/bin/python benchmarks/profile_mpi.py --case overhead # group_size=1
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import os
import pstats
import tempfile
import time


def worker(pset):
    return {"y": pset["a"] + 1}


def noop(pset):
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="throughput",
                        choices=("throughput", "list", "overhead"),
                        help="throughput: trivial psets of a params.product grid, default "
                             "groups, HDF5 file (as mpi_throughput.py); list: the same psets "
                             "as a list of dicts (its psmpi-list); overhead: 2000 no-op "
                             "psets, group_size=1 (as mpi_overhead.py)")
    parser.add_argument("--n", type=int, help="psets (default 200000, or 2000 for overhead)")
    parser.add_argument("--top", type=int, default=25, help="entries per listing")
    args = parser.parse_args()
    import psmpi
    psmpi.init(backend="mpi", verbose=0)  # worker ranks serve in here and never return
    if args.case in ("throughput", "list"):
        n = args.n or 200000
        psets = psmpi.params.product({"a": list(range(n // 10))}, {"b": list(range(10))})
        if args.case == "list":
            psets = psets.to_list()
        fn, kwargs = worker, {}
    else:
        n = args.n or 2000
        psets = [{"i": i, "x": 0.5} for i in range(n)]
        fn, kwargs = noop, {"group_size": 1}
    psmpi.map(fn, list(itertools.islice(psets, 100)), out=None, name="warmup", **kwargs)
    with tempfile.TemporaryDirectory(prefix="psmpi-bench-") as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        psmpi.map(fn, psets, out=os.path.join(tmp, "a.h5"), name="bench", **kwargs)
        plain, plain_cpu = time.perf_counter() - t0, time.process_time() - c0
        profile = cProfile.Profile()
        t0 = time.perf_counter()
        profile.runcall(psmpi.map, fn, psets, out=os.path.join(tmp, "b.h5"), name="bench",
                        **kwargs)
        profiled = time.perf_counter() - t0
    print(f"{n} psets, case {args.case}: {plain:.3f} s without the profiler ({n / plain:,.0f} "
          f"psets/s, {plain / n * 1e6:.1f} µs/pset wall, rank 0 CPU {plain_cpu / n * 1e6:.1f} "
          f"µs/pset), {profiled:.3f} s under cProfile")
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumtime").print_stats(args.top)


if __name__ == "__main__":
    main()

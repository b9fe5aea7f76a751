"""cProfile of the driver during one psmpi.map() of trivial psets (the throughput benchmark's).

Only the driver process is profiled: with the multiprocessing backend the workers'
time does not appear, so this shows what limits the driver. cProfile's per-call overhead
inflates the times of small Python functions; read the shares, not the seconds.

    python benchmarks/profile_map.py --backend multiprocessing --n 200000
    python benchmarks/profile_map.py --backend serial --n 200000 --top 30
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="multiprocessing", choices=("multiprocessing", "serial"))
    parser.add_argument("--n", type=int, default=200000, help="psets (default 200000)")
    parser.add_argument("--top", type=int, default=25, help="entries per listing (default 25)")
    parser.add_argument("--quick", action="store_true", help="20000 psets")
    args = parser.parse_args()
    import psmpi
    n = 20000 if args.quick else args.n
    space = psmpi.params.product({"a": list(range(n // 10))}, {"b": list(range(10))})
    psmpi.init(backend=args.backend, verbose=0)
    psmpi.map(worker, list(itertools.islice(space, 100)), out=None, name="warmup")
    with tempfile.TemporaryDirectory(prefix="psmpi-bench-") as tmp:
        t0 = time.perf_counter()
        psmpi.map(worker, space, out=os.path.join(tmp, "a.h5"), name="bench")
        plain = time.perf_counter() - t0
        profile = cProfile.Profile()
        t0 = time.perf_counter()
        profile.runcall(psmpi.map, worker, space, out=os.path.join(tmp, "b.h5"), name="bench")
        profiled = time.perf_counter() - t0
    print(f"{n} psets, backend {args.backend}: {plain:.3f} s without the profiler "
          f"({n / plain:,.0f} psets/s), {profiled:.3f} s under cProfile")
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumtime").print_stats(args.top)


if __name__ == "__main__":
    main()

"""Start-up: `import psmpi` beside numpy and mpi4py, and `mpiexec` to the first pset computed.

Two parts, each with the systems taking turns in every round (the machine is shared: read
the ratios):

- imports: each module imported in a fresh `python -c` (the page cache is warm: "cold-ish"),
  its wall and CPU time measured inside the process around the import statement alone; the
  heavy modules it brought along (pandas, h5py) are listed. numpy and mpi4py give the scale:
  psmpi needs numpy, and every MPI rank imports mpi4py. Target: `import psmpi` <= 0.15 s.
  psmpi is timed from its source (compiled at each import when there are no .pyc files, as
  with PYTHONDONTWRITEBYTECODE=1) and from a copy with .pyc files (as pip installs it); also
  what a worker rank imports, and rank 0's import plus its first map (where the lazily
  imported driver, h5py and pandas are paid).
- ranks: `mpiexec -n N` (4, 16, 64: oversubscribed on this machine's cores) of a study that
  maps 3 psets per worker, each sleeping 0.2 s (one per group), writing its results file.
  Each pset notes when it was computed; the driver notes when it started `mpiexec`. Reported:
  seconds from `mpiexec` to the first pset computed, to the median worker's first pset, and to
  the last worker's first pset (every worker busy), and how many workers computed one.
  psmpi's ranks run the study script (every rank imports psmpi, rank 0 writes the file);
  mpi4py.futures' run under `python -m mpi4py.futures`, its workers import only mpi4py.

    python benchmarks/mpi_startup.py                          # 15 import rounds; 3 at 4/16/64 ranks
    python benchmarks/mpi_startup.py --quick                  # 5 import rounds; 1 at 4/16 ranks
    python benchmarks/mpi_startup.py --baseline /work/main    # also psmpi of another checkout
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_IMPORT = 0.15  # seconds for `import psmpi`
HEAVY = ("pandas", "h5py")
SECONDS = 0.2
PER_WORKER = 3
SYSTEMS = {
    "psmpi": "every rank runs the script: `import psmpi`, then psmpi.map(stamp, psets, "
             "out='startup.h5', group_size=1, verbose=0) (backend chosen: mpi); this checkout",
    "futures": "mpi4py.futures.MPIPoolExecutor().map(stamp, psets, chunksize=1) under "
               "`python -m mpi4py.futures`, no storage",
    "baseline": "the psmpi study, with psmpi of the --baseline checkout",
}
PEER_MODULES = {"futures": "mpi4py"}


# ---------------------------------------------------------------------- imports

# Each row of the import table: the code timed in a fresh interpreter (after ``os``,
# ``tempfile`` and a worker function exist), and whether psmpi runs from .pyc files.
# Without them (this machine's sessions run with PYTHONDONTWRITEBYTECODE=1, and an editable
# install in a read-only tree has none) every psmpi module is compiled at each import; pip
# compiles them when it installs psmpi.
FIRST_MAP = ("import psmpi\npsmpi.map(one, [{'x': 1}], out=os.path.join(tmp, 'first.h5'), "
             "backend='serial', verbose=0, vstats=0)")
PROBES = {
    "numpy": ("`import numpy`", "import numpy", False),
    "mpi4py": ("`import mpi4py`", "import mpi4py", False),
    "h5py": ("`import h5py`", "import h5py", False),
    "pandas": ("`import pandas`", "import pandas", False),
    "psmpi": ("`import psmpi`", "import psmpi", False),
    "psmpi .pyc": ("`import psmpi`, from .pyc", "import psmpi", True),
    "worker": ("worker rank: `import psmpi, psmpi.backends.mpi`",
               "import psmpi, psmpi.backends.mpi", False),
    "worker .pyc": ("worker rank, from .pyc", "import psmpi, psmpi.backends.mpi", True),
    "first map": ("rank 0: `import psmpi` + first `psmpi.map` (serial, 1 pset, a file)",
                  FIRST_MAP, False),
}
OURS = ["psmpi", "psmpi .pyc", "worker", "worker .pyc", "first map"]

PROBE = """\
import os, sys, time, json, tempfile, shutil
def one(pset):
    return {{"y": pset["x"]}}
tmp = tempfile.mkdtemp()
t0, c0 = time.perf_counter(), time.process_time()
{code}
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
shutil.rmtree(tmp)
heavy = sorted({{m.split('.')[0] for m in sys.modules}} & {heavy!r})
ours = sum(m == "psmpi" or m.startswith("psmpi.") for m in sys.modules)
print("RESULT " + json.dumps({{"wall": wall, "cpu": cpu, "heavy": heavy, "modules": ours}}))
"""


def import_time(code: str, pythonpath: str) -> dict:
    """One fresh interpreter running ``code``: wall and CPU seconds of it."""
    probe = PROBE.format(code=code, heavy=set(HEAVY))
    env = {**os.environ, "PYTHONPATH": pythonpath, "PSMPI_LOGFILE": "0"}
    # not in the caller's directory: `python -c` puts it first on sys.path, so a psmpi
    # checkout there would shadow the one on PYTHONPATH
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=env, timeout=120, cwd=tempfile.gettempdir())
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(lines[-1][len("RESULT "):])


def compiled_copy(checkout: str, into: str) -> str:
    """A copy of ``checkout``'s psmpi package with its .pyc files, as pip installs it."""
    target = os.path.join(into, os.path.basename(os.path.abspath(checkout)) or "checkout")
    shutil.copytree(os.path.join(checkout, "psmpi"), os.path.join(target, "psmpi"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(target, "psmpi")],
                   check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})
    return target


def measure_imports(reps: int, baseline: str | None) -> tuple[dict, dict]:
    names = list(PROBES) + ([f"{name} (baseline)" for name in OURS] if baseline else [])
    with tempfile.TemporaryDirectory() as scratch:
        paths = {CHECKOUT: compiled_copy(CHECKOUT, os.path.join(scratch, "this"))}
        if baseline:
            paths[baseline] = compiled_copy(baseline, os.path.join(scratch, "baseline"))

        def measure(name: str) -> dict:
            _, code, pyc = PROBES[name.removesuffix(" (baseline)")]
            checkout = baseline if name.endswith("(baseline)") else CHECKOUT
            return import_time(code, paths[checkout] if pyc else checkout)

        return common.interleaved(names, reps, measure)


def report_imports(results: dict, failed: dict, reps: int, baseline: str | None) -> dict:
    common.report_failures(failed, results)
    print()
    numpy_wall = statistics.median(r["wall"] for r in results["numpy"]) if results["numpy"] \
        else float("nan")
    rows, medians, cpus = [], {}, {}
    for name, runs in results.items():
        if not runs:
            continue
        wall = common.spread([r["wall"] for r in runs])
        cpu = statistics.median(r["cpu"] for r in runs)
        medians[name], cpus[name] = wall[0], cpu
        heavy = sorted({m for r in runs for m in r["heavy"]})
        label = PROBES[name.removesuffix(" (baseline)")][0]
        rows.append([label + (" (baseline)" if name.endswith("(baseline)") else ""),
                     f"{wall[0]:.3f}", f"{wall[1]:.3f} – {wall[2]:.3f}", f"{cpu:.3f}",
                     f"{wall[0] / numpy_wall:.2f}", ", ".join(heavy) or "–",
                     max(r["modules"] for r in runs), len(runs)])
    print(common.table(["import", "wall s, median", "min – max", "CPU s, median",
                        "÷ numpy", "pandas/h5py loaded", "psmpi modules", "runs"], rows))
    print()
    print(f"- PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}: "
          f"rows without \"from .pyc\" compile psmpi's modules at each import unless the "
          f"checkout has __pycache__ files")
    for name, what in (("psmpi", ""), ("psmpi .pyc", " (from .pyc)")):
        if name not in medians:
            continue
        # On a shared machine the wall time waits for other processes' turns; the CPU time
        # is what the import itself costs (numpy's threads make it exceed the wall time).
        for kind, value in (("wall", medians[name]), ("CPU", cpus[name])):
            met = value <= TARGET_IMPORT
            print(f"- target `import psmpi`{what} <= {TARGET_IMPORT} s, by the median {kind} "
                  f"time: {'met' if met else '**missed**'} ({value:.3f} s, "
                  f"{len(results[name])} runs)")
    if baseline:
        print(f"- baseline {baseline} (`git rev-parse HEAD`: {git_head(baseline)}), this "
              f"checkout's wall (CPU) time ÷ the baseline's, by the medians:")
        for name in OURS:
            base = f"{name} (baseline)"
            if name in medians and base in medians:
                print(f"  - {PROBES[name][0]}: {medians[name] / medians[base]:.2f}× "
                      f"({cpus[name] / cpus[base]:.2f}×)")
    return medians


def git_head(path: str) -> str:
    done = subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)
    return done.stdout.strip() or "?"


# ---------------------------------------------------------------------- ranks

def stamp(pset):
    time.sleep(pset["seconds"])
    rank = os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "-1"))
    return {"t": time.time(), "rank": int(rank)}


def make_psets(n_workers: int) -> list[dict]:
    return [{"i": i, "seconds": SECONDS} for i in range(PER_WORKER * n_workers)]


def firsts(t0: float, rows: list[dict], n_workers: int) -> dict:
    """Seconds from ``t0`` (when mpiexec was started) to each worker's first pset."""
    first: dict[int, float] = {}
    for row in rows:
        first[row["rank"]] = min(first.get(row["rank"], row["t"]), row["t"])
    times = sorted(t - t0 for t in first.values())
    return {"first": times[0], "median_worker": statistics.median(times), "last_worker":
            times[-1], "workers_used": len(times), "workers": n_workers}


def run_psmpi(t0: float, n_workers: int) -> dict:
    import psmpi  # every rank: the import this benchmark is about
    res = psmpi.map(stamp, make_psets(n_workers), out="startup.h5", group_size=1, verbose=0)
    # rank 0 only from here: the other ranks served the map and stay in psmpi
    assert len(res) == PER_WORKER * n_workers, res
    return firsts(t0, list(res.iterdicts()), n_workers)


def run_futures(t0: float, n_workers: int) -> dict:
    from mpi4py.futures import MPIPoolExecutor
    with MPIPoolExecutor() as executor:
        rows = list(executor.map(stamp, make_psets(n_workers), chunksize=1))
    return firsts(t0, rows, n_workers)


def measure_ranks(system: str, ranks: int, baseline: str | None) -> dict:
    pythonpath = baseline if system == "baseline" else CHECKOUT
    one = "psmpi" if system == "baseline" else system
    t0 = time.time()
    command = common.mpi_command(ranks, __file__, ["--one", one, repr(t0), str(ranks - 1)],
                                 futures=system == "futures")
    return common.run_result(command, timeout=900, env={"PYTHONPATH": pythonpath,
                                                        "PSMPI_LOGFILE": "0"})


def report_ranks(systems: list[str], by_ranks: dict) -> None:
    rows = []
    for ranks, (results, failed) in by_ranks.items():
        common.report_failures(failed, results)
        futures = [r["first"] for r in results.get("futures", [])]
        for system in systems:
            runs = results.get(system, [])
            if not runs:
                continue
            first = common.spread([r["first"] for r in runs])
            ratio = common.ratio_cell([r["first"] / f for r, f in zip(runs, futures)]) \
                if futures and system != "futures" else "–"
            rows.append([ranks, system, f"{first[0]:.2f}", f"{first[1]:.2f} – {first[2]:.2f}",
                         ratio,
                         f"{statistics.median(r['median_worker'] for r in runs):.2f}",
                         f"{statistics.median(r['last_worker'] for r in runs):.2f}",
                         f"{min(r['workers_used'] for r in runs)}/{runs[0]['workers']}",
                         len(runs)])
    print(common.table(["ranks", "system", "s to first pset, median", "min – max",
                        "÷ futures (round by round)", "s to median worker's first",
                        "s to last worker's first", "workers that computed (min)", "rounds"],
                       rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.round_options(parser, SYSTEMS, "5 import rounds; 1 round at 4 and 16 ranks",
                         reps=3, quick_reps=1)
    parser.add_argument("--ranks", help="comma-separated rank counts (default 4,16,64; "
                                        "4,16 with --quick)")
    parser.add_argument("--import-reps", type=int, help="import rounds (default 15, 5 quick)")
    parser.add_argument("--baseline", help="a psmpi checkout to compare with")
    parser.add_argument("--one", nargs=3, metavar=("SYSTEM", "T0", "WORKERS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        system, t0, workers = args.one
        out = globals()["run_" + system](float(t0), int(workers))
        if out is not None:
            common.emit(out)
        return

    reps = args.reps or (1 if args.quick else 3)
    import_reps = args.import_reps or (5 if args.quick else 15)
    ranks = [int(r) for r in (args.ranks or ("4,16" if args.quick else "4,16,64")).split(",")]
    common.header("mpi_startup: `import psmpi`, and `mpiexec` to the first pset computed")
    print(f"- imports: {import_reps} rounds, each module in a fresh interpreter in turn; "
          f"ranks: {reps} round(s) at each of {ranks} ranks, each a fresh `mpiexec`")
    print()
    print("### Imports\n")
    imports, failed = measure_imports(import_reps, args.baseline)
    report_imports(imports, failed, import_reps, args.baseline)
    print()
    print(f"### From `mpiexec` to the first pset ({PER_WORKER} psets of {SECONDS} s per worker)\n")
    wanted = [s for s in args.systems.split(",") if s and (s != "baseline" or args.baseline)]
    systems = common.installed_systems(wanted, PEER_MODULES)
    by_ranks = {n: common.interleaved(systems, reps, lambda s, n=n: measure_ranks(
        s, n, args.baseline)) for n in ranks}
    report_ranks(systems, by_ranks)
    print()
    print("Systems:")
    common.list_systems(systems, {**SYSTEMS, "baseline": SYSTEMS["baseline"] +
                                  f" ({args.baseline})"} if args.baseline else SYSTEMS)


if __name__ == "__main__":
    main()

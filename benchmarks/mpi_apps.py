"""Ensembles of MPI applications (issue 16): packing efficiency and launch overhead.

An ensemble of applications of 1 to 4 ranks with lognormal runtimes runs on an allocation
of 8 cores (faked on a small machine: the application is a tiny C MPI program that calls
MPI_Init, sleeps, MPI_Barrier, MPI_Finalize, so its ranks use no CPU while they "run").
Systems, one after the other in one run:

- psmpi: ``psmpi.map(worker, psets, resources={"ranks": r}, cost=runtime)``, the worker
  calling ``psmpi.run_mpi([app, "{seconds}"], pset)`` (MPICH's mpiexec, PSMPI_HOSTS);
- psmpi-fifo: the same without ``cost=`` (the psets in the list's random order);
- libEnsemble: its MPIExecutor, one worker per core, 8 resource sets, the ensemble as H0
  with ``resource_sets`` = ranks, given longest first (give_pregenerated_sim_work);
- bash: a loop starting ``mpiexec`` in the background, longest first, while a semaphore of
  8 cores has room (``wait -n`` frees the cores of the application that ended).

Packing efficiency = core-seconds of the applications' own runtimes / (8 x the system's
wall time from its start to its last application's end). Launch overhead: N applications
that return at once (1 rank, or 4), one at a time (an allocation of 1 or 4 cores), per
application against the same ``mpiexec`` line in a bash loop (bare mpiexec).

    python benchmarks/mpi_apps.py             # 200 applications, ~60 s a system
    python benchmarks/mpi_apps.py --quick     # 60 applications, ~15 s a system
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

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

HERE = os.path.abspath(__file__)
BIN = os.path.dirname(sys.executable)
MPIEXEC = os.path.join(BIN, "mpiexec")
APP_SOURCE = r"""
#include <mpi.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    double s = argc > 1 ? atof(argv[1]) : 0.0;
    struct timespec t = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    nanosleep(&t, NULL);
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Finalize();
    return 0;
}
"""
PACKING = ("psmpi", "psmpi-fifo", "libensemble", "bash")
OVERHEAD = ("bare", "psmpi", "libensemble")
SIGMA = 0.8  # of the log of the runtimes: a few applications take 4-5x the median


def build_app(where: str) -> str:
    """The tiny MPI application, compiled with the MPI's mpicc."""
    source, app = os.path.join(where, "sleeper.c"), os.path.join(where, "sleeper")
    with open(source, "w") as file:
        file.write(APP_SOURCE)
    subprocess.run([os.path.join(BIN, "mpicc"), "-O2", "-o", app, source], check=True)
    return app


def make_ensemble(n: int, cores: int, makespan: float, seed: int = 16) -> list[dict]:
    """``n`` applications of 1-4 ranks, lognormal runtimes scaled so that perfect packing
    on ``cores`` takes ``makespan`` seconds."""
    rng = np.random.default_rng(seed)
    ranks = rng.integers(1, 5, n)
    seconds = rng.lognormal(0.0, SIGMA, n)
    seconds *= makespan * cores / float((ranks * seconds).sum())
    return [{"i": i, "ranks": int(r), "seconds": round(float(s), 3)}
            for i, (r, s) in enumerate(zip(ranks, seconds))]


def longest_first(ensemble: list[dict]) -> list[dict]:
    return sorted(ensemble, key=lambda app: -app["seconds"])


# -- the systems, each run in a child process: python mpi_apps.py --child NAME ... --------


def psmpi_worker(pset):
    import psmpi
    done = psmpi.run_mpi([os.environ["BENCH_APP"], "{seconds}"], pset, launcher="mpich",
                         timeout=600)
    return {"runtime": done["runtime"]}


def run_psmpi(ensemble: list[dict], cores: int, ordered: bool) -> float:
    os.environ["PSMPI_HOSTS"] = f"localhost:{cores}"
    import psmpi
    t0 = time.perf_counter()
    results = psmpi.map(psmpi_worker, ensemble, resources=lambda pset: {"ranks": pset["ranks"]},
                        cost=(lambda pset: pset["seconds"]) if ordered else None,
                        out="apps.h5", verbose=0, vstats=0, logfile=False)
    wall = time.perf_counter() - t0
    assert len(results.results) == len(ensemble) and not len(results.missing), results.missing
    return wall


def libe_sim(H, persis_info, sim_specs, libE_info):
    task = libE_info["executor"].submit(app_name="app", num_procs=int(H["ranks"][0]),
                                        app_args=str(H["seconds"][0]))
    task.wait()
    out = np.zeros(1, dtype=sim_specs["out"])
    out["ok"] = task.state == "FINISHED"
    return out, persis_info


def run_libensemble(ensemble: list[dict], cores: int) -> float:
    from libensemble import Ensemble
    from libensemble.alloc_funcs.give_pregenerated_work import give_pregenerated_sim_work
    from libensemble.executors import MPIExecutor
    from libensemble.specs import AllocSpecs, ExitCriteria, LibeSpecs, SimSpecs

    apps = longest_first(ensemble)
    H0 = np.zeros(len(apps), dtype=[("ranks", int), ("seconds", float), ("resource_sets", int),
                                    ("sim_id", int), ("sim_started", bool),
                                    ("sim_ended", bool)])
    H0["ranks"] = H0["resource_sets"] = [app["ranks"] for app in apps]
    H0["seconds"] = [app["seconds"] for app in apps]
    H0["sim_id"] = range(len(apps))
    executor = MPIExecutor(custom_info={"mpi_runner": "mpich", "runner_name": MPIEXEC})
    executor.register_app(full_path=os.environ["BENCH_APP"], app_name="app")
    run = Ensemble(executor=executor, libE_specs=LibeSpecs(
        nworkers=cores, comms="local", gen_on_manager=True, num_resource_sets=cores,
        resource_info={"cores_on_node": (cores, cores)}, save_every_k_sims=0))
    run.H0 = H0
    run.sim_specs = SimSpecs(sim_f=libe_sim, inputs=["ranks", "seconds"], out=[("ok", bool)])
    run.alloc_specs = AllocSpecs(alloc_f=give_pregenerated_sim_work)
    run.exit_criteria = ExitCriteria(sim_max=len(apps))
    t0 = time.perf_counter()
    run.run()
    wall = time.perf_counter() - t0
    assert run.H["ok"].all() and len(run.H) == len(apps), run.H
    return wall


BASH_LOOP = r"""
free={cores}
declare -A need
while read -r ranks seconds; do
    while (( free < ranks )); do
        wait -n -p ended || {{ echo "an application failed" >&2; exit 1; }}
        free=$(( free + need[$ended] ))
        unset "need[$ended]"
    done
    "{mpiexec}" -n "$ranks" -hosts "localhost:$ranks" "{app}" "$seconds" </dev/null >/dev/null 2>&1 &
    need[$!]=$ranks
    free=$(( free - ranks ))
done < "$1"
for pid in "${{!need[@]}}"; do
    wait "$pid" || {{ echo "an application failed" >&2; exit 1; }}
done
"""


def run_bash(ensemble: list[dict], cores: int) -> float:
    with open("apps.txt", "w") as file:
        file.writelines(f"{app['ranks']} {app['seconds']}\n" for app in longest_first(ensemble))
    with open("loop.sh", "w") as file:
        file.write(BASH_LOOP.format(cores=cores, mpiexec=MPIEXEC, app=os.environ["BENCH_APP"]))
    t0 = time.perf_counter()
    subprocess.run(["bash", "loop.sh", "apps.txt"], check=True)
    return time.perf_counter() - t0


def child(name: str, ensemble_path: str, cores: int) -> None:
    with open(ensemble_path) as file:
        ensemble = json.load(file)
    if name in ("psmpi", "psmpi-fifo"):
        wall = run_psmpi(ensemble, cores, ordered=name == "psmpi")
    elif name == "libensemble":
        wall = run_libensemble(ensemble, cores)
    elif name in ("bash", "bare"):
        wall = run_bash(ensemble, cores)
    else:
        raise SystemExit(f"unknown system {name}")
    print(json.dumps({"wall": wall}))


def run_child(name: str, ensemble: list[dict], cores: int, app: str) -> float:
    """Run system ``name`` on ``ensemble`` in a fresh directory and process; its wall time."""
    where = tempfile.mkdtemp(prefix=f"apps-{name}-")
    try:
        path = os.path.join(where, "ensemble.json")
        with open(path, "w") as file:
            json.dump(ensemble, file)
        env = dict(os.environ, BENCH_APP=app)
        env.pop("PSMPI_HOSTS", None)
        done = subprocess.run([sys.executable, HERE, "--child", name, path, str(cores)],
                              cwd=where, env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])["wall"]
    finally:
        shutil.rmtree(where, ignore_errors=True)


# -- the report ------------------------------------------------------------------------


def packing(args, app: str) -> None:
    ensemble = make_ensemble(args.apps, args.cores, args.makespan)
    work = sum(a["ranks"] * a["seconds"] for a in ensemble)
    longest = max(a["seconds"] for a in ensemble)
    walls: dict[str, list[float]] = {name: [] for name in PACKING}
    for round_ in range(args.rounds):
        for name in PACKING:
            common.say(f"packing round {round_ + 1}: {name}")
            walls[name].append(run_child(name, ensemble, args.cores, app))
    sizes = {r: sum(a["ranks"] == r for a in ensemble) for r in range(1, 5)}
    median = statistics.median(a["seconds"] for a in ensemble)
    print(f"\n### Packing: {len(ensemble)} applications on {args.cores} cores\n")
    print(f"Ranks 1/2/3/4: {sizes[1]}/{sizes[2]}/{sizes[3]}/{sizes[4]} applications; "
          f"runtimes lognormal (sigma {SIGMA}), median {median:.2f} s, "
          f"longest {longest:.2f} s; {work:.0f} core-seconds of work, so a perfect packing "
          f"takes {work / args.cores:.1f} s. Packing = work / ({args.cores} x wall time). "
          f"{args.rounds} round(s), systems taking turns; median of the rounds.\n")
    rows = []
    best = statistics.median(walls["psmpi"])
    for name in PACKING:
        wall = statistics.median(walls[name])
        rows.append([name, f"{wall:.1f} s", f"{work / (args.cores * wall):.3f}",
                     f"{wall / best:.2f}", " ".join(f"{w:.1f}" for w in walls[name])])
    print(common.table(["system", "wall (median)", "packing", "wall / psmpi's",
                        "walls of the rounds (s)"], rows))


def overhead(args, app: str) -> None:
    """Per application: the slope of wall time over the number of applications (runs of
    N/2 and N), so each system's start-up (imports, files, worker processes) drops out; the
    start-up is reported beside it."""
    half = args.launches // 2
    print(f"\n### Launch overhead: {half} and {args.launches} applications that return at "
          f"once, one at a time\n")
    print(f"Per application: (wall({args.launches}) - wall({half})) / {args.launches - half}, "
          f"so each system's start-up drops out (given beside it: wall({half}) - {half} x per "
          f"application). bare: the same `mpiexec -n R -hosts localhost:R app 0` line in a bash "
          f"loop. Systems take turns, {args.rounds_overhead} rounds; median.\n")
    rows = []
    for ranks in args.overhead_ranks:
        times: dict[str, list[float]] = {name: [] for name in OVERHEAD}
        startups: dict[str, list[float]] = {name: [] for name in OVERHEAD}
        for round_ in range(args.rounds_overhead):
            for name in OVERHEAD:
                common.say(f"overhead {ranks} rank(s), round {round_ + 1}: {name}")
                walls = [run_child(name, [{"i": i, "ranks": ranks, "seconds": 0.0}
                                          for i in range(n)], ranks, app)
                         for n in (half, args.launches)]
                each = (walls[1] - walls[0]) / (args.launches - half)
                times[name].append(each)
                startups[name].append(walls[0] - half * each)
        bare = statistics.median(times["bare"])
        for name in OVERHEAD:
            each = statistics.median(times[name])
            rows.append([str(ranks), name, f"{each * 1e3:.1f} ms", f"{each / bare:.3f}",
                         f"{(each - bare) * 1e3:+.1f} ms",
                         f"{statistics.median(startups[name]):.2f} s",
                         " ".join(f"{t * 1e3:.0f}" for t in times[name])])
    print(common.table(["ranks", "system", "per application", "/ bare", "added", "start-up",
                        "rounds (ms)"], rows))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--apps", type=int, default=200)
    parser.add_argument("--cores", type=int, default=8)
    parser.add_argument("--makespan", type=float, default=60.0,
                        help="seconds a perfect packing takes")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--launches", type=int, default=40)
    parser.add_argument("--rounds-overhead", type=int, default=3)
    parser.add_argument("--overhead-ranks", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 4])
    parser.add_argument("--quick", action="store_true", help="60 applications, 15 s")
    parser.add_argument("--only", choices=("packing", "overhead"))
    args = parser.parse_args()
    if args.quick:
        args.apps, args.makespan, args.launches = 60, 15.0, 20
    common.header("Ensembles of MPI applications (benchmarks/mpi_apps.py)")
    with tempfile.TemporaryDirectory(prefix="apps-") as where:
        app = build_app(where)
        print(f"- application: {APP_SOURCE.count(chr(10))}-line C program (MPI_Init, sleep, "
              f"MPI_Barrier, MPI_Finalize) built with {os.path.join(BIN, 'mpicc')}; "
              f"mpiexec {MPIEXEC}; libensemble {common.version('libensemble')}")
        if args.only != "overhead":
            packing(args, app)
        if args.only != "packing":
            overhead(args, app)


if __name__ == "__main__":
    main()

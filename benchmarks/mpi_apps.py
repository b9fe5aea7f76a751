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
wall time, start-up included). Launch overhead: N applications that return at once (1
rank, or 4), one at a time (an allocation of 1 or 4 cores): the median interval between
consecutive ends, against the same ``mpiexec`` line in a bash loop (bare mpiexec).

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
    t0 = time.time()
    psmpi.run_mpi([os.environ["BENCH_APP"], "{seconds}"], pset, launcher="mpich", timeout=600)
    return {"t0": t0, "t1": time.time()}


def paired_worker(pset):
    """run_mpi and the bare mpiexec line in bash, one after the other in the same worker
    (which goes first alternates from pset to pset)."""
    import psmpi
    app, ranks = os.environ["BENCH_APP"], pset["ranks"]
    bare = (f"{MPIEXEC} -n {ranks} -hosts localhost:{ranks} {app} 0 "
            f"</dev/null >/dev/null 2>&1")
    took = {}
    for which in (("mine", "bare") if pset["i"] % 2 == 0 else ("bare", "mine")):
        t0 = time.perf_counter()
        if which == "mine":
            psmpi.run_mpi([app, "0"], pset, launcher="mpich")
        else:
            subprocess.run(["bash", "-c", bare], check=True)
        took[which] = time.perf_counter() - t0
    return took


def run_paired(ensemble: list[dict], cores: int) -> list[float]:
    """Ratios run_mpi / bare mpiexec of the psets, measured side by side in one worker."""
    os.environ["PSMPI_HOSTS"] = f"localhost:{cores}"
    import psmpi
    rows = psmpi.map(paired_worker, ensemble, resources=lambda pset: {"ranks": pset["ranks"]},
                     out=None, verbose=0, vstats=0, logfile=False).results
    return (rows["mine"] / rows["bare"]).tolist()


def run_psmpi(ensemble: list[dict], cores: int, ordered: bool) -> tuple[float, list[float]]:
    os.environ["PSMPI_HOSTS"] = f"localhost:{cores}"
    import psmpi
    t0 = time.perf_counter()
    results = psmpi.map(psmpi_worker, ensemble, resources=lambda pset: {"ranks": pset["ranks"]},
                        cost=(lambda pset: pset["seconds"]) if ordered else None,
                        out="apps.h5", verbose=0, vstats=0, logfile=False)
    wall = time.perf_counter() - t0
    assert len(results.results) == len(ensemble) and not len(results.missing), results.missing
    rows = results.results
    return wall, list(zip(rows["ranks"].tolist(), rows["t0"].tolist(), rows["t1"].tolist()))


def libe_sim(H, persis_info, sim_specs, libE_info):
    t0 = time.time()
    task = libE_info["executor"].submit(app_name="app", num_procs=int(H["ranks"][0]),
                                        app_args=str(H["seconds"][0]))
    task.wait()
    out = np.zeros(1, dtype=sim_specs["out"])
    out["ok"] = task.state == "FINISHED"
    out["t0"], out["t1"] = t0, time.time()
    return out, persis_info


def run_libensemble(ensemble: list[dict], cores: int) -> tuple[float, list[float]]:
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
    run.sim_specs = SimSpecs(sim_f=libe_sim, inputs=["ranks", "seconds"],
                             out=[("ok", bool), ("t0", float), ("t1", float)])
    run.alloc_specs = AllocSpecs(alloc_f=give_pregenerated_sim_work)
    run.exit_criteria = ExitCriteria(sim_max=len(apps))
    t0 = time.perf_counter()
    run.run()
    wall = time.perf_counter() - t0
    assert run.H["ok"].all() and len(run.H) == len(apps), run.H
    H = run.H
    return wall, list(zip(H["ranks"].tolist(), H["t0"].tolist(), H["t1"].tolist()))


BASH_LOOP = r"""
free={cores}
declare -A need began
while read -r ranks seconds; do
    while (( free < ranks )); do
        wait -n -p ended || {{ echo "an application failed" >&2; exit 1; }}
        echo "${{need[$ended]}} ${{began[$ended]}} $EPOCHREALTIME" >> spans.txt
        free=$(( free + need[$ended] ))
        unset "need[$ended]"
    done
    t0=$EPOCHREALTIME
    "{mpiexec}" -n "$ranks" -hosts "localhost:$ranks" "{app}" "$seconds" </dev/null >/dev/null 2>&1 &
    need[$!]=$ranks
    began[$!]=$t0
    free=$(( free - ranks ))
done < "$1"
for pid in "${{!need[@]}}"; do
    wait "$pid" || {{ echo "an application failed" >&2; exit 1; }}
    echo "${{need[$pid]}} ${{began[$pid]}} $EPOCHREALTIME" >> spans.txt
done
"""


def run_bash(ensemble: list[dict], cores: int) -> tuple[float, list[float]]:
    with open("apps.txt", "w") as file:
        file.writelines(f"{app['ranks']} {app['seconds']}\n" for app in longest_first(ensemble))
    with open("loop.sh", "w") as file:
        file.write(BASH_LOOP.format(cores=cores, mpiexec=MPIEXEC, app=os.environ["BENCH_APP"]))
    t0 = time.perf_counter()
    subprocess.run(["bash", "loop.sh", "apps.txt"], check=True)
    wall = time.perf_counter() - t0
    with open("spans.txt") as file:
        spans = [line.split() for line in file]
    return wall, [(int(r), float(t0), float(t1)) for r, t0, t1 in spans]


def child(name: str, ensemble_path: str, cores: int) -> None:
    with open(ensemble_path) as file:
        ensemble = json.load(file)
    if name == "paired":
        print(json.dumps({"ratios": run_paired(ensemble, cores)}))
        return
    if name in ("psmpi", "psmpi-fifo"):
        wall, spans = run_psmpi(ensemble, cores, ordered=name == "psmpi")
    elif name == "libensemble":
        wall, spans = run_libensemble(ensemble, cores)
    elif name in ("bash", "bare"):
        wall, spans = run_bash(ensemble, cores)
    else:
        raise SystemExit(f"unknown system {name}")
    assert len(spans) == len(ensemble), (len(spans), len(ensemble))
    print(json.dumps({"wall": wall, "spans": spans}))


def run_child(name: str, ensemble: list[dict], cores: int, app: str) -> dict:
    """Run system ``name`` on ``ensemble`` in a fresh directory and process: its wall time
    and (ranks, launched, ended) of each application as the system saw it."""
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
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(where, ignore_errors=True)


# -- the report ------------------------------------------------------------------------


def packing(args, app: str) -> None:
    ensemble = make_ensemble(args.apps, args.cores, args.makespan)
    work = sum(a["ranks"] * a["seconds"] for a in ensemble)
    longest = max(a["seconds"] for a in ensemble)
    runs: dict[str, list[dict]] = {name: [] for name in PACKING}
    for round_ in range(args.rounds):
        for name in PACKING:
            common.say(f"packing round {round_ + 1}: {name}")
            done = run_child(name, ensemble, args.cores, app)
            held = sum(r * (t1 - t0) for r, t0, t1 in done["spans"])
            starts = [t0 for _, t0, _ in done["spans"]]
            ends = [t1 for _, _, t1 in done["spans"]]
            runs[name].append({"wall": done["wall"], "held": held,
                               "busy": max(ends) - min(starts)})
    sizes = {r: sum(a["ranks"] == r for a in ensemble) for r in range(1, 5)}
    median = statistics.median(a["seconds"] for a in ensemble)
    print(f"\n### Packing: {len(ensemble)} applications on {args.cores} cores\n")
    print(f"Ranks 1/2/3/4: {sizes[1]}/{sizes[2]}/{sizes[3]}/{sizes[4]} applications; "
          f"runtimes lognormal (sigma {SIGMA}), median {median:.2f} s, longest "
          f"{longest:.2f} s; {work:.0f} core-seconds of work (ranks x sleep), so a perfect "
          f"packing takes {work / args.cores:.1f} s. Columns: **packing** = core-seconds the "
          f"applications held their cores (ranks x launch to exit, as the system saw it) / "
          f"({args.cores} x the span from the first launch to the last end); **with "
          f"start-up** the same over the system's whole wall time; **useful** = the work / "
          f"({args.cores} x wall time), which also charges each launch's own cost (mpiexec, "
          f"MPI_Init) as waste. {args.rounds} round(s), systems taking turns; medians.\n")
    rows = []
    for name in PACKING:
        mine = runs[name]
        packed = statistics.median(run["held"] / (args.cores * run["busy"]) for run in mine)
        whole = statistics.median(run["held"] / (args.cores * run["wall"]) for run in mine)
        useful = statistics.median(work / (args.cores * run["wall"]) for run in mine)
        wall = statistics.median(run["wall"] for run in mine)
        idle = statistics.median(run["wall"] - run["busy"] for run in mine)
        held = statistics.median(run["held"] for run in mine)
        rows.append([name, f"{packed:.3f}", f"{whole:.3f}", f"{useful:.3f}", f"{wall:.1f} s",
                     f"{idle:.1f} s", f"{held / work:.2f}"])
    print(common.table(["system", "packing", "with start-up", "useful", "wall",
                        "start-up and wind-down", "held / work"], rows))


def overhead(args, app: str) -> None:
    """Per application: the median time between the ends of consecutive applications run
    one at a time, so each system's start-up drops out and load spikes of the shared
    machine touch a few intervals, not the median."""
    print(f"\n### Launch overhead: {args.launches} applications that return at once, one "
          f"at a time\n")
    print("Per application: the median interval between the ends of consecutive "
          "applications (as the system saw them: bash after `wait -n`, psmpi when the worker "
          "returns, libEnsemble when its sim function's `task.wait()` returns), so start-up "
          "drops out. bare: the same "
          "`mpiexec -n R -hosts localhost:R app 0` line in the bash loop. Systems take turns "
          f"(ABC, CBA, ...), {args.rounds_overhead} rounds; the ratio to bare is taken within "
          "each round (so the shared machine's load, which changes from minute to minute, "
          "mostly cancels) and its median over the rounds is reported. **psmpi, paired**: "
          "the worker of one psmpi map runs `run_mpi` and the bare line (`bash -c`) one after "
          "the other (which goes first alternates), so both see the same load: the median "
          "ratio of each pair.\n")
    rows = []
    for ranks in args.overhead_ranks:
        times: dict[str, list[float]] = {name: [] for name in OVERHEAD}
        for round_ in range(0 if args.only == "paired" else args.rounds_overhead):
            for name in OVERHEAD[::1 if round_ % 2 == 0 else -1]:  # ABC, CBA, ...
                common.say(f"overhead {ranks} rank(s), round {round_ + 1}: {name}")
                spans = run_child(name, [{"i": i, "ranks": ranks, "seconds": 0.0}
                                         for i in range(args.launches)], ranks, app)["spans"]
                ends = sorted(t1 for _, _, t1 in spans)
                times[name].append(statistics.median(np.diff(ends)))
        paired = run_child("paired", [{"i": i, "ranks": ranks, "seconds": 0.0}
                                      for i in range(args.launches * 2)], ranks, app)["ratios"]
        rows.append([str(ranks), "psmpi, paired", "", f"{statistics.median(paired):.3f}", "",
                     f"{len(paired)} launches: run_mpi and bare alternately in one worker"])
        for name in OVERHEAD if times["bare"] else ():
            ratios = [t / b for t, b in zip(times[name], times["bare"])]
            each, bare = statistics.median(times[name]), statistics.median(times["bare"])
            rows.append([str(ranks), name, f"{each * 1e3:.1f} ms",
                         f"{statistics.median(ratios):.3f}", f"{(each - bare) * 1e3:+.1f} ms",
                         " ".join(f"{r:.2f}" for r in ratios)])
    print(common.table(["ranks", "system", "per application (median)",
                        "/ bare (median of the rounds' ratios)", "added",
                        "ratio to bare in each round"], rows))


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
    parser.add_argument("--launches", type=int, default=15)
    parser.add_argument("--rounds-overhead", type=int, default=8)
    parser.add_argument("--overhead-ranks", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 4])
    parser.add_argument("--quick", action="store_true", help="60 applications, 15 s")
    parser.add_argument("--only", choices=("packing", "overhead", "paired"),
                        help="paired: only the run_mpi / bare pairs inside one worker")
    args = parser.parse_args()
    if args.quick:
        args.apps, args.makespan, args.rounds_overhead = 60, 15.0, 3
    common.header("Ensembles of MPI applications (benchmarks/mpi_apps.py)")
    with tempfile.TemporaryDirectory(prefix="apps-") as where:
        app = build_app(where)
        print(f"- application: {APP_SOURCE.count(chr(10))}-line C program (MPI_Init, sleep, "
              f"MPI_Barrier, MPI_Finalize) built with {os.path.join(BIN, 'mpicc')}; "
              f"mpiexec {MPIEXEC}; libensemble {common.version('libensemble')}")
        if args.only in (None, "packing"):
            packing(args, app)
        if args.only != "packing":
            overhead(args, app)


if __name__ == "__main__":
    main()

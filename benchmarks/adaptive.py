"""An adaptive study side by side: psmpi.Executor, psmpi.map rounds, mpi4py.futures, libEnsemble.

The study: E evaluations of a function whose cost is lognormal (a sleep: the ranks may
outnumber the cores), the next x proposed around the best so far, IN_FLIGHT proposals per
worker. Executor and mpi4py.futures refill as each result arrives (no barrier); the map loop
proposes a round of IN_FLIGHT x workers psets and waits for all of it. psmpi stores every
result in HDF5 (the Executor resolves a future only once its row is committed); mpi4py.futures
stores nothing. libEnsemble runs the same proposer as a persistent generator on the manager
(gen_on_manager: rank 0, as psmpi's driver), its results returned to it as each arrives
(only_persistent_gens with async_return), IN_FLIGHT x workers proposals outstanding; its
history stays in memory (nothing durable), log files off. Utilisation: the evaluations'
summed cost over (workers x wall).

The overhead mode measures the cost per pset of the Executor against map() on the same
no-op psets under `mpiexec -n 2` (every pset submitted at once, and with a window of
IN_FLIGHT psets in flight).

    python benchmarks/adaptive.py                  # 2000 evaluations, mpiexec -n 9, 3 rounds
    python benchmarks/adaptive.py --quick          # 400 evaluations, 1 round
    python benchmarks/adaptive.py --overhead       # per-pset cost, Executor vs map
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

IN_FLIGHT = 8          # proposals in flight per worker
MEAN_COST = 0.02       # seconds per evaluation, on average
SIGMA = 0.5            # of the lognormal cost

SYSTEMS = {
    "executor": "psmpi.Executor(backend mpi, out=adaptive.h5): submit as each result "
                "arrives (cf.wait FIRST_COMPLETED), IN_FLIGHT per worker",
    "map-rounds": "a loop of psmpi.map(out=adaptive.h5) rounds of IN_FLIGHT x workers psets",
    "futures": "mpi4py.futures.MPIPoolExecutor under `python -m mpi4py.futures`, cf.wait "
               "FIRST_COMPLETED, IN_FLIGHT per worker; stores nothing",
    "libensemble": "libEnsemble libE(), MPI comms, a persistent generator on the manager "
                   "told each result as it returns (async_return), IN_FLIGHT per worker "
                   "outstanding; history in memory only",
}


def cost_of(x: float) -> float:
    """The lognormal cost of evaluating x (a function of x: the same on every system)."""
    import numpy as np
    rng = np.random.default_rng(int(x * 1e12) % 2**32)
    return float(MEAN_COST * rng.lognormal(-SIGMA ** 2 / 2, SIGMA))


def evaluate(pset: dict) -> dict:
    cost = cost_of(pset["x"])
    time.sleep(cost)
    return {**pset, "f": -(pset["x"] - 0.3) ** 2, "cost": cost}


class Proposer:
    """Proposes x around the best result so far."""

    def __init__(self, seed: int = 1):
        import numpy as np
        self.rng = np.random.default_rng(seed)
        self.best = (-float("inf"), 0.5)
        self.told = 0

    def ask(self) -> dict:
        width = 0.3 * 0.999 ** self.told
        x = min(1.0, max(0.0, self.best[1] + float(self.rng.normal(0, width))))
        return {"x": round(x, 12)}

    def tell(self, row: dict) -> None:
        self.told += 1
        self.best = max(self.best, (row["f"], row["x"]))


def as_results(submit, n: int, in_flight: int) -> float:
    """Keep ``in_flight`` proposals running until ``n`` were evaluated; the summed cost."""
    proposer, pending, submitted, total_cost = Proposer(), set(), 0, 0.0
    while submitted < min(in_flight, n):
        pending.add(submit(proposer.ask()))
        submitted += 1
    while pending:
        done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
        for future in done:
            row = future.result()
            proposer.tell(row)
            total_cost += row["cost"]
            if submitted < n:
                pending.add(submit(proposer.ask()))
                submitted += 1
    return total_cost


def run_executor(n: int) -> dict:
    """The study on psmpi's Executor, and where the workers' time went (from the rows)."""
    import psmpi
    psmpi.init(backend="mpi", verbose=0)
    workers = psmpi.api._session.backend.n_workers
    counts = common.instrument_master()  # rank 0's CPU per step, and the groups sent
    t0, start = time.perf_counter(), time.time()
    with psmpi.Executor(out="adaptive.h5", name="adaptive") as ex:
        cost = as_results(lambda pset: ex.submit(evaluate, pset), n, IN_FLIGHT * workers)
    wall, end = time.perf_counter() - t0, time.time()
    rows = psmpi.read("adaptive.h5", "adaptive")
    return {**result(n, cost, workers, wall), "groups": counts["groups"],
            **{key: round(counts[key] / wall, 4) for key in
               ("cpu_drain", "cpu_refill", "cpu_record", "cpu_commit")},
            **common.idle_breakdown(rows, rows["cost"], workers, start, end)}


def run_map_rounds(n: int) -> dict:
    import psmpi
    psmpi.init(backend="mpi", verbose=0)
    workers = psmpi.api._session.backend.n_workers
    proposer, done, cost = Proposer(), 0, 0.0
    t0 = time.perf_counter()
    while done < n:
        psets = [proposer.ask() for _ in range(min(IN_FLIGHT * workers, n - done))]
        res = psmpi.map(evaluate, psets, out="adaptive.h5", name=f"round-{done}")
        for row in res.results.to_dict("records"):
            proposer.tell(row)
            cost += row["cost"]
        done += len(psets)
    return result(n, cost, workers, time.perf_counter() - t0)


def run_futures(n: int) -> dict:
    from mpi4py.futures import MPIPoolExecutor
    with MPIPoolExecutor() as ex:
        workers = ex.num_workers
        t0 = time.perf_counter()
        cost = as_results(lambda pset: ex.submit(evaluate, pset), n, IN_FLIGHT * workers)
        wall = time.perf_counter() - t0
    return result(n, cost, workers, wall)


def libensemble_sim(H, persis_info, sim_specs, libE_info):
    """libEnsemble's sim_f: ``evaluate`` on the one x it is given."""
    import numpy as np
    out = np.zeros(len(H), dtype=sim_specs["out"])
    for i, x in enumerate(H["x"]):
        row = evaluate({"x": float(x)})
        out["f"][i], out["cost"][i] = row["f"], row["cost"]
    return out, persis_info


def libensemble_gen(H, persis_info, gen_specs, libE_info):
    """libEnsemble's persistent gen_f: the Proposer, told each result as it returns; one
    new proposal per result until ``n`` were proposed (as ``as_results`` does)."""
    import numpy as np
    from libensemble.message_numbers import FINISHED_PERSISTENT_GEN_TAG, PERSIS_STOP, STOP_TAG
    from libensemble.tools.persistent_support import EVAL_GEN_TAG, PersistentSupport
    support = PersistentSupport(libE_info, EVAL_GEN_TAG)
    proposer, n = Proposer(), gen_specs["user"]["n"]

    def proposals(k: int):
        out = np.zeros(k, dtype=gen_specs["out"])
        out["x"] = [proposer.ask()["x"] for _ in range(k)]
        return out

    proposed = min(gen_specs["user"]["in_flight"], n)
    tag, _, returned = support.send_recv(proposals(proposed))
    while tag not in (STOP_TAG, PERSIS_STOP):
        for x, f in zip(returned["x"], returned["f"]):
            proposer.tell({"x": float(x), "f": float(f)})
        more = min(len(returned), n - proposed)
        proposed += more
        if more:
            tag, _, returned = support.send_recv(proposals(more))
        else:
            tag, _, returned = support.recv()
    return None, persis_info, FINISHED_PERSISTENT_GEN_TAG


def run_libensemble(n: int) -> dict | None:
    import numpy as np
    from libensemble.alloc_funcs.start_only_persistent import only_persistent_gens
    from libensemble.libE import libE
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    workers = comm.Get_size() - 1  # rank 0 is the manager, and runs the generator
    sim_specs = {"sim_f": libensemble_sim, "in": ["x"],
                 "out": [("f", float), ("cost", float)]}
    gen_specs = {"gen_f": libensemble_gen, "persis_in": ["x", "f", "sim_id"],
                 "out": [("x", float)], "user": {"n": n, "in_flight": IN_FLIGHT * workers}}
    alloc_specs = {"alloc_f": only_persistent_gens, "user": {"async_return": True}}
    libE_specs = {"comms": "mpi", "gen_on_manager": True, "disable_log_files": True}
    comm.Barrier()
    t0 = time.perf_counter()
    H, _, flag = libE(sim_specs, gen_specs, {"sim_max": n}, {}, alloc_specs, libE_specs)
    wall = time.perf_counter() - t0
    if comm.Get_rank() != 0:
        return None
    ended = H["sim_ended"]
    assert flag == 0 and int(ended.sum()) == n, (flag, int(ended.sum()))
    return result(n, float(np.sum(H["cost"][ended])), workers, wall)


def result(n: int, cost: float, workers: int, wall: float) -> dict:
    return {"evals_per_s": n / wall, "utilisation": cost / (workers * wall), "wall": wall,
            "workers": workers}


def noop(pset):
    return None


def run_overhead(n: int, system: str) -> dict:
    """Seconds per pset of map() or the Executor on no-op psets (warm backend)."""
    import psmpi
    psmpi.init(backend="mpi", verbose=0)
    psmpi.map(noop, [{"i": -i - 1} for i in range(100)], out=None, name="warmup")
    psets = [{"i": i} for i in range(n)]
    t0 = time.perf_counter()
    if system == "map":
        psmpi.map(noop, psets, out="overhead.h5", name="bench")
    else:
        with psmpi.Executor(out="overhead.h5", name="bench") as ex:
            if system == "executor-all":
                futures = [ex.submit(noop, pset) for pset in psets]
                cf.wait(futures)
            else:  # a window of IN_FLIGHT psets in flight, refilled as each resolves
                window = collections.deque()
                for pset in psets:
                    if len(window) >= IN_FLIGHT:
                        window.popleft().result()
                    window.append(ex.submit(noop, pset))
                cf.wait(window)
    return {"us": (time.perf_counter() - t0) / n * 1e6}


def measure_adaptive(args) -> None:
    systems = common.installed_systems(list(SYSTEMS), {"futures": "mpi4py",
                                                       "libensemble": "libensemble"})
    common.header(f"adaptive study: {args.n} evaluations, lognormal cost mean "
                  f"{MEAN_COST * 1e3:.0f} ms, {IN_FLIGHT} in flight per worker, "
                  f"mpiexec -n {args.ranks}")
    for name in systems:
        common.say(f"  {name}: {SYSTEMS[name]}")

    def measure(system: str):
        command = common.mpi_command(args.ranks, __file__, ["--run", system, "-n", str(args.n)],
                                     futures=system == "futures")
        return common.run_result(command, timeout=600)

    results, failed = common.interleaved(systems, args.rounds, measure)
    rows = []
    for system in systems:
        runs = results.get(system, [])
        if not runs:
            continue
        rate = common.spread([r["evals_per_s"] for r in runs])[0]
        use = common.spread([r["utilisation"] for r in runs])
        rows.append([system, f"{rate:.0f}", f"{use[0]:.3f} ({use[1]:.3f} – {use[2]:.3f})",
                     psmpi_over(results, system, "futures"),
                     psmpi_over(results, system, "libensemble")])
    common.say(common.table(["system", "evaluations/s", "utilisation (min – max)",
                             "vs mpi4py.futures", "vs libEnsemble"], rows))
    common.report_failures(failed, results)


def psmpi_over(results: dict, system: str, peer: str) -> str:
    """The median ratio of ``system``'s evaluations/s to ``peer``'s, round by round (the
    runs of one round ran back to back, so their ratio cancels most of the machine's load)."""
    pairs = [a["evals_per_s"] / b["evals_per_s"]
             for a, b in zip(results.get(system, []), results.get(peer, []))]
    return common.ratio_cell(pairs)


def measure_overhead(args) -> None:
    systems = ["map", "executor-all", "executor-window"]
    common.header(f"per-pset cost of no-op psets, {args.n} psets, mpiexec -n 2, stored")

    def measure(system: str):
        command = common.mpi_command(2, __file__, ["--run", "overhead-" + system,
                                                   "-n", str(args.n)])
        return common.run_result(command, timeout=600)

    results, failed = common.interleaved(systems, args.rounds, measure)
    base = common.spread([r["us"] for r in results.get("map", [])])[0] if results.get("map") else None
    rows = []
    for system in systems:
        runs = results.get(system, [])
        if runs:
            us = common.spread([r["us"] for r in runs])[0]
            rows.append([system, f"{us:.0f}", f"{us / base:.2f}×" if base else "n/a"])
    common.say(common.table(["system", "µs per pset", "vs map()"], rows))
    common.report_failures(failed, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--overhead", action="store_true")
    parser.add_argument("--ranks", type=int, default=9)
    parser.add_argument("-n", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run is not None:  # inside mpiexec: one measurement
        runner = {"executor": run_executor, "map-rounds": run_map_rounds,
                  "futures": run_futures, "libensemble": run_libensemble}.get(args.run)
        if runner is not None:
            measured = runner(args.n)
            if measured is not None:  # libEnsemble's worker ranks return here: no result
                common.emit(measured)
        else:
            common.emit(run_overhead(args.n, args.run[len("overhead-"):]))
        return
    if args.n is None:
        args.n = (400 if args.quick else 2000) if not args.overhead else 2000
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    (measure_overhead if args.overhead else measure_adaptive)(args)


if __name__ == "__main__":
    main()

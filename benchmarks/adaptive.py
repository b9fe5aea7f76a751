"""An adaptive study side by side: psmpi.Executor, psmpi.map rounds, mpi4py.futures, libEnsemble.

The study: E evaluations of a function whose cost is lognormal (a sleep: the ranks may
outnumber the cores), the next x proposed around the best so far, IN_FLIGHT proposals per
worker. Executor and mpi4py.futures refill as each result arrives (no barrier); the map loop
proposes a round of IN_FLIGHT x workers psets and waits for all of it. psmpi stores every
result in HDF5 (the Executor resolves a future only once its row is committed); mpi4py.futures
stores nothing. libEnsemble runs the same proposer as a persistent generator on the manager
(gen_on_manager: rank 0, as psmpi's driver), its results returned to it as each arrives
(only_persistent_gens with async_return), IN_FLIGHT x workers proposals outstanding; its
history stays in memory (nothing durable), log files off. Every system has the same
workers (mpiexec -n 9: rank 0 drives, 8 evaluate).

Utilisation: the evaluations' summed cost over (workers x wall), the wall from the first
proposal to the last result acted on. Each evaluation's row says when and on which process
it ran, so the rest of the workers' time is split alike for every system: head (before a
worker's first evaluation), gaps (between two on one worker), tail (after its last one) and
overrun (an evaluation's time beyond its cost: sleep's lateness on a loaded machine).
--baseline DIR runs another psmpi checkout's Executor beside this one (before/after).

The overhead mode measures the cost per pset of the Executor against map() on the same
no-op psets under `mpiexec -n 2` (every pset submitted at once, and with a window of
IN_FLIGHT psets in flight).

    python benchmarks/adaptive.py                  # 2000 evaluations, mpiexec -n 9, 3 rounds
    python benchmarks/adaptive.py --quick          # 400 evaluations, 1 round
    python benchmarks/adaptive.py --overhead       # per-pset cost, Executor vs map
    python benchmarks/adaptive.py --systems executor futures --baseline /tmp/old-psmpi
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

IN_FLIGHT = 8          # proposals in flight per worker
MEAN_COST = 0.02       # seconds per evaluation, on average
SIGMA = 0.5            # of the lognormal cost
# init(mpi=...) of the Executor runs, from --mpi (passed on to the ranks in the environment)
MPI_OPTIONS = json.loads(os.environ.get("ADAPTIVE_MPI_OPTIONS", "{}"))

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
    """The evaluation; its row says when it ran and where (for ``where_time_went``)."""
    cost = cost_of(pset["x"])
    began = time.time()
    time.sleep(cost)
    return {**pset, "f": -(pset["x"] - 0.3) ** 2, "cost": cost, "began": began,
            "ended": time.time(), "pid": os.getpid()}


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


def as_results(submit, n: int, in_flight: int) -> list[dict]:
    """Keep ``in_flight`` proposals running until ``n`` were evaluated; their rows."""
    proposer, pending, submitted, rows = Proposer(), set(), 0, []
    while submitted < min(in_flight, n):
        pending.add(submit(proposer.ask()))
        submitted += 1
    while pending:
        done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
        for future in done:
            row = future.result()
            proposer.tell(row)
            rows.append(row)
            if submitted < n:
                pending.add(submit(proposer.ask()))
                submitted += 1
    return rows


def run_executor(n: int) -> dict:
    """The study on psmpi's Executor, and where the workers' time went (from the rows)."""
    import psmpi
    psmpi.init(backend="mpi", verbose=0, mpi=MPI_OPTIONS)
    workers = psmpi.api._session.backend.n_workers
    counts = common.instrument_master()  # rank 0's CPU per step, and the groups sent
    start = time.time()
    rank0_cpu(start=True)
    with psmpi.Executor(out="adaptive.h5", name="adaptive") as ex:
        rows = as_results(lambda pset: ex.submit(evaluate, pset), n, IN_FLIGHT * workers)
        end = time.time()  # every row is committed: each future resolved after its commit
    return {**result(rows, workers, start, end), "shutdown_s": round(time.time() - end, 3),
            "groups": counts["groups"],
            "psmpi": os.path.dirname(os.path.dirname(psmpi.__file__)),
            **{key: round(counts[key], 3) for key in
               ("cpu_drain", "cpu_refill", "cpu_record", "cpu_commit")}}


def run_map_rounds(n: int) -> dict:
    import psmpi
    psmpi.init(backend="mpi", verbose=0)
    workers = psmpi.api._session.backend.n_workers
    proposer, rows = Proposer(), []
    start = time.time()
    rank0_cpu(start=True)
    while len(rows) < n:
        psets = [proposer.ask() for _ in range(min(IN_FLIGHT * workers, n - len(rows)))]
        res = psmpi.map(evaluate, psets, out="adaptive.h5", name=f"round-{len(rows)}")
        for row in res.results.to_dict("records"):
            proposer.tell(row)
            rows.append(row)
    return result(rows, workers, start, time.time())


def run_futures(n: int) -> dict:
    from mpi4py.futures import MPIPoolExecutor
    with MPIPoolExecutor() as ex:
        workers = ex.num_workers
        ex.submit(noop, {}).result()  # the workers are up
        start = time.time()
        rank0_cpu(start=True)
        rows = as_results(lambda pset: ex.submit(evaluate, pset), n, IN_FLIGHT * workers)
        end = time.time()
    return result(rows, workers, start, end)


def libensemble_sim(H, persis_info, sim_specs, libE_info):
    """libEnsemble's sim_f: ``evaluate`` on the one x it is given."""
    import numpy as np
    out = np.zeros(len(H), dtype=sim_specs["out"])
    for i, x in enumerate(H["x"]):
        row = evaluate({"x": float(x)})
        for field, _ in sim_specs["out"]:
            out[field][i] = row[field]
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
    from libensemble.alloc_funcs.start_only_persistent import only_persistent_gens
    from libensemble.libE import libE
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    workers = comm.Get_size() - 1  # rank 0 is the manager, and runs the generator
    sim_specs = {"sim_f": libensemble_sim, "in": ["x"],
                 "out": [("f", float), ("cost", float), ("began", float), ("ended", float),
                         ("pid", int)]}
    gen_specs = {"gen_f": libensemble_gen, "persis_in": ["x", "f", "sim_id"],
                 "out": [("x", float)], "user": {"n": n, "in_flight": IN_FLIGHT * workers}}
    alloc_specs = {"alloc_f": only_persistent_gens, "user": {"async_return": True}}
    libE_specs = {"comms": "mpi", "gen_on_manager": True, "disable_log_files": True}
    comm.Barrier()
    start = time.time()
    rank0_cpu(start=True)
    H, _, flag = libE(sim_specs, gen_specs, {"sim_max": n}, {}, alloc_specs, libE_specs)
    end = time.time()
    if comm.Get_rank() != 0:
        return None
    ended = H[H["sim_ended"]]
    assert flag == 0 and len(ended) == n, (flag, len(ended))
    fields = [field for field, _ in sim_specs["out"]]
    rows = [dict(zip(fields, values)) for values in zip(*(ended[f].tolist() for f in fields))]
    return result(rows, workers, start, end)


def result(rows: list[dict], workers: int, start: float, end: float) -> dict:
    """Evaluations/s and utilisation (summed cost over workers x wall), and where the rest
    of the workers' time went. ``start``: the study's first proposal; ``end``: its last
    result acted on (time.time()). Also rank 0's CPU time over that wall."""
    wall = end - start
    cost = sum(row["cost"] for row in rows)
    return {"evals_per_s": len(rows) / wall, "utilisation": cost / (workers * wall),
            "wall": wall, "workers": workers, "rank0_cpu": round(rank0_cpu() / wall, 3),
            **where_time_went(rows, workers, start, end)}


_cpu_start = [0.0]


def rank0_cpu(start: bool = False) -> float:
    """CPU seconds of this process (all threads) since ``rank0_cpu(start=True)``."""
    if start:
        _cpu_start[0] = time.process_time()
    return time.process_time() - _cpu_start[0]


def where_time_went(rows: list[dict], workers: int, start: float, end: float) -> dict:
    """Shares of workers x wall: before each worker's first evaluation ("head"), between
    two on one worker ("gaps": the system's turnaround), after its last one ("tail"), and
    the evaluations' time beyond their cost ("overrun": sleep's lateness on a loaded
    machine, and the call's own overhead). Utilisation + these four = 1."""
    by_worker = collections.defaultdict(list)
    for row in rows:
        by_worker[row["pid"]].append((row["began"], row["ended"], row["cost"]))
    head = tail = overrun = 0.0
    gaps = []
    for runs in by_worker.values():
        runs.sort()
        head += runs[0][0] - start
        gaps += [later[0] - earlier[1] for earlier, later in zip(runs, runs[1:])]
        tail += end - runs[-1][1]
        overrun += sum(ended - began - cost for began, ended, cost in runs)
    total = workers * (end - start)
    head += (workers - len(by_worker)) * (end - start)  # a worker that never ran anything
    gaps.sort()
    quantile = (lambda q: round(1e3 * gaps[int(q * (len(gaps) - 1))], 3)) if gaps else (lambda q: 0.0)
    return {"head": round(head / total, 4), "gaps": round(sum(gaps) / total, 4),
            "tail": round(tail / total, 4), "overrun": round(overrun / total, 4),
            "gap_ms_median": quantile(0.5), "gap_ms_p90": quantile(0.9),
            "gap_ms_p99": quantile(0.99)}


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
    systems = common.installed_systems(args.systems or list(SYSTEMS),
                                       {"futures": "mpi4py", "libensemble": "libensemble"})
    if args.baseline:  # the Executor of another psmpi checkout, for before/after
        systems.insert(systems.index("executor") + 1 if "executor" in systems else 0,
                       "executor@baseline")
    common.header(f"adaptive study: {args.n} evaluations, lognormal cost mean "
                  f"{MEAN_COST * 1e3:.0f} ms, {IN_FLIGHT} in flight per worker, "
                  f"mpiexec -n {args.ranks}")
    for name in systems:
        common.say(f"  {name}: " + (SYSTEMS.get(name) or f"the executor of the psmpi in "
                                                          f"{args.baseline}"))

    def measure(system: str):
        run, _, baseline = system.partition("@")
        command = common.mpi_command(args.ranks, __file__, ["--run", run, "-n", str(args.n)],
                                     futures=system == "futures")
        env = {"ADAPTIVE_MPI_OPTIONS": args.mpi}
        if baseline:
            env["PYTHONPATH"] = os.path.abspath(args.baseline)
        return common.run_result(command, timeout=600, env=env)

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
    common.say("Where the rest of the workers' time went (medians, shares of workers x wall):")
    parts = ["head", "gaps", "tail", "overrun"]
    common.say(common.table(["system"] + parts, [
        [system] + [f"{common.spread([r[part] for r in results[system]])[0]:.3f}"
                    for part in parts] for system in systems if results.get(system)]))
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
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=None,
                        help="only these (default: all)")
    parser.add_argument("--baseline", default=None, metavar="DIR",
                        help="also run the Executor of the psmpi in DIR (a checkout: its "
                             "folder holding psmpi/), side by side with this one")
    parser.add_argument("--mpi", default="{}", metavar="JSON",
                        help="init(mpi=...) of the Executor runs, e.g. '{\"poll_max\": 0.002}'")
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

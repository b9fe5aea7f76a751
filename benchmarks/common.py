"""Small helpers shared by the benchmark scripts: statistics, markdown, machine facts."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
import statistics
import sys
import time

PACKAGES = ("psmpi", "h5py", "numpy", "pandas", "paramsurvey", "psweep", "schwimmbad", "tables",
            "mpi4py", "mpich", "cloudpickle")


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_line() -> str:
    """One line: cores, Python, platform and the versions of the packages involved."""
    versions = ", ".join(f"{p} {version(p)}" for p in PACKAGES)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"nproc {cores}, Python {platform.python_version()}, {platform.system()} "
            f"{platform.machine()}; {versions}")


def header(title: str) -> None:
    """The markdown heading of a report: what, when, where, and the exact command."""
    print(f"## {title}\n")
    print(f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"- machine: {machine_line()}")
    print(f"- command: `{shlex.join([sys.executable] + sys.argv)}` (cwd {os.getcwd()})")


def spread(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def fmt(x: float) -> str:
    """A number with 3 significant digits, thousands separated."""
    if x >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def say(*args) -> None:
    """Progress for the person watching, on stderr, so stdout stays the markdown report."""
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- MPI benchmarks
# The MPI benchmarks are drivers: each measurement is one `mpiexec -n N python script.py --one
# ...` started in a fresh temporary directory; rank 0 prints one line "RESULT <json>".

def mpiexec() -> str:
    """The mpiexec of this venv (the mpich wheel beside mpi4py), or $PSMPI_BENCH_MPIEXEC."""
    given = os.environ.get("PSMPI_BENCH_MPIEXEC")
    if given:
        return given
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.exists(beside) else "mpiexec"


def mpi_command(nprocs: int, script: str, args: list[str], futures: bool = False) -> list[str]:
    """`mpiexec -n N python [-m mpi4py.futures] script args...`."""
    python = [sys.executable] + (["-m", "mpi4py.futures"] if futures else [])
    return [mpiexec(), "-n", str(nprocs)] + python + [os.path.abspath(script)] + list(args)


def run_result(command: list[str], timeout: float, env: dict | None = None,
               cwd: str | None = None) -> dict:
    """Run ``command`` in ``cwd`` (default: a fresh temporary directory); its last RESULT
    line, parsed.

    On failure or timeout: {"error": "..."}. The command runs in its own session, and on a
    timeout that whole process group (mpiexec and its ranks) is killed.
    """
    import contextlib
    import json
    import signal
    import subprocess
    import tempfile
    place = contextlib.nullcontext(cwd) if cwd else tempfile.TemporaryDirectory(prefix="psmpi-bench-")
    with place as tmp:
        proc = subprocess.Popen(command, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True,
                                env=None if env is None else {**os.environ, **env})
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        tail = (stderr or stdout).strip().splitlines()[-5:]
        return {"error": f"exit code {proc.returncode}: " + " / ".join(tail)}
    result = json.loads(lines[-1][len("RESULT "):])
    if proc.returncode != 0:  # measured, then failed at teardown: keep it, say so
        say(f"note: exit code {proc.returncode} after the RESULT line of {shlex.join(command)}")
        result["exit_code"] = proc.returncode
    return result


def emit(result: dict) -> None:
    """Rank 0 of a measurement: print the RESULT line the driver reads."""
    import json
    print("RESULT " + json.dumps(result), flush=True)


def ratio_cell(values: list[float]) -> str:
    """A median ratio with its range: "1.23× (1.01 – 1.50)"."""
    if not values:
        return "n/a"
    med, lo, hi = spread(values)
    return f"{med:.2f}× ({lo:.2f} – {hi:.2f})"


def cpu_seconds(pid: int) -> float:
    """CPU time of a process, all its live threads; schedstat is in ns, stat in clock ticks.

    /proc/PID/schedstat covers the main thread only, so the threads are summed (a thread
    that ended meanwhile drops out: measure across phases where the threads live on).
    """
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):  # the thread ended just now
                pass
        return total / 1e9
    except OSError:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """Peak resident set size (VmHWM) of a live process, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def note_rank_pid(directory: str = ".") -> None:
    """Each rank, before any MPI or psmpi call: write <dir>/rank-<PMI_RANK>.pid.

    MPICH's launcher sets PMI_RANK; rank 0 later reads these files to find its siblings.
    """
    rank = os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK")
    if rank is not None:
        with open(os.path.join(directory, f"rank-{rank}.pid"), "w") as f:
            f.write(str(os.getpid()))


def rank_pids(directory: str = ".") -> dict[int, int]:
    """{rank: pid} from the files note_rank_pid wrote."""
    out = {}
    for name in os.listdir(directory):
        if name.startswith("rank-") and name.endswith(".pid"):
            with open(os.path.join(directory, name)) as f:
                out[int(name[5:-4])] = int(f.read())
    return out


def interleaved(systems: list[str], reps: int, measure, give_up: int = 2) -> tuple[dict, dict]:
    """Round by round, every system once per round in turn: ({system: [result]}, {failures}).

    ``measure(system)`` returns a result dict, or {"error": ...}. A failed run is reported
    and the system tried again in the next round; after ``give_up`` failures it is left out
    of the later rounds (a failure that repeats is not noise).
    """
    results: dict = {s: [] for s in systems}
    failed: dict = {}
    for rep in range(reps):
        for system in systems:
            if len(failed.get(system, [])) >= give_up:
                continue
            out = measure(system)
            if "error" in out:
                failed.setdefault(system, []).append(out["error"])
                say(f"round {rep + 1}/{reps} {system} FAILED: {out['error']}")
                continue
            results[system].append(out)
            brief = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()
                     if not isinstance(v, (dict, list))}
            say(f"round {rep + 1}/{reps} {system}: {brief}")
    return results, failed


def report_failures(failed: dict, results: dict | None = None) -> None:
    """A line per system with failed runs, and per system whose runs failed after measuring."""
    for system, reasons in failed.items():
        kept = len((results or {}).get(system, []))
        print(f"- {system}: {len(reasons)} run(s) failed ({kept} measured"
              f"{', then left out' if kept == 0 or len(reasons) >= 2 else ''}): "
              + " | ".join(sorted(set(reasons))))
    for system, runs in (results or {}).items():
        codes = [r["exit_code"] for r in runs if r.get("exit_code")]
        if codes:
            print(f"- {system}: {len(codes)} of {len(runs)} runs printed their result and then "
                  f"exited with status {sorted(set(codes))} (kept)")


def installed_systems(names: list[str], peer_modules: dict[str, str]) -> list[str]:
    """``names`` whose peer package imports here; each skipped one is printed with why."""
    keep = []
    for system in names:
        module = peer_modules.get(system)
        if module and not have(module):
            print(f"- skipped {system}: {module!r} is not installed in {sys.executable}; "
                  f"run benchmarks/setup.sh")
        else:
            keep.append(system)
    return keep


def have(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def idle_breakdown(rows, nominal, workers: int, start: float, end: float) -> dict:
    """Where the workers' time went, from the rows' _rank, _time_utc and _pset_runtime.

    Shares of workers x makespan: before a worker's first pset ("head"), between two psets
    on one worker ("gaps": the master's turnaround), after its last one ("tail"), and the
    pset calls beyond their ``nominal`` duration (a Series aligned with ``rows``: "overrun",
    sleep's own lateness). ``start``, ``end``: UNIX times of the map call.
    """
    head = gaps = tail = overrun = 0.0
    gap_list = []
    from psmpi.store.bookkeeping import posix_seconds

    for _, one in rows.sort_values("_time_utc").groupby("_rank"):
        t, run = posix_seconds(one["_time_utc"]).to_numpy(), one["_pset_runtime"].to_numpy()
        head += t[0] - start
        between = t[1:] - (t[:-1] + run[:-1])
        gaps += between.sum()
        gap_list.extend(between.tolist())
        tail += end - (t[-1] + run[-1])
        overrun += (run - nominal.loc[one.index].to_numpy()).sum()
    total = workers * (end - start)
    gap_list.sort()
    return {"head": head / total, "gaps": gaps / total, "tail": tail / total,
            "overrun": overrun / total,
            "gap_ms_median": 1000 * gap_list[len(gap_list) // 2] if gap_list else 0.0}


def instrument_master() -> dict:
    """Wrap rank 0's Master and driver methods (in this process only) to account for its CPU.

    Counts the groups sent (Master.send_next) and the DONE messages received
    (Master.free_slot), and adds up the CPU time (time.process_time) of: Master.drain() calls
    that received something, Master.refill() calls that sent something (these pull the next
    psets through checking and grouping), Recorder.record() (turning outcomes into rows) and
    RowWriter.commit() (HDF5). Empty polls are left out: that is idle time, which a master
    kept busy by 10,000 ranks would not have.
    """
    counts = {"groups": 0, "received": 0, "cpu_drain": 0.0, "cpu_refill": 0.0,
              "cpu_record": 0.0, "cpu_commit": 0.0, "instrumented": False}
    try:
        from psmpi.backends.mpi import Master
        from psmpi.driver.recorder import Recorder, RowWriter
        originals = (Master.send_next, Master.free_slot, Master.drain, Master.refill,
                     Recorder.record, RowWriter.commit)
    except (ImportError, AttributeError):
        return counts
    send_next, free_slot, drain, refill, record, commit = originals

    def counted_send_next(self, rank, job):
        sent = send_next(self, rank, job)
        counts["groups"] += bool(sent)
        return sent

    def counted_free_slot(self, rank):
        counts["received"] += 1
        return free_slot(self, rank)

    def cpu_of(method, key, only_if=None):
        def wrapper(self, *args):
            before = counts[only_if] if only_if else None
            c0 = time.process_time()
            try:
                return method(self, *args)
            finally:
                if only_if is None or counts[only_if] != before:
                    counts[key] += time.process_time() - c0
        return wrapper

    Master.send_next, Master.free_slot = counted_send_next, counted_free_slot
    Master.drain = cpu_of(drain, "cpu_drain", "received")
    Master.refill = cpu_of(refill, "cpu_refill", "groups")
    Recorder.record = cpu_of(record, "cpu_record")
    RowWriter.commit = cpu_of(commit, "cpu_commit")
    counts["instrumented"] = True
    return counts


def round_options(parser, systems: dict, quick_help: str, reps: int = 5, quick_reps: int = 3) -> None:
    """The options every side-by-side benchmark takes: --quick, --reps and --systems."""
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--reps", type=int,
                        help=f"rounds (default {reps}, {quick_reps} with --quick)")
    parser.add_argument("--systems", default=",".join(systems),
                        help="comma-separated subset of " + ",".join(systems))


def list_systems(systems: list[str], descriptions: dict) -> None:
    """The report's closing list: each system measured and what exactly it ran."""
    for system in systems:
        print(f"- {system}: {descriptions[system]}")


# ---------------------------------------------------------------------- --baseline
BASELINE = "@base"  # a psmpi system's name with this suffix runs psmpi from --baseline DIR


def add_baseline_option(parser) -> None:
    parser.add_argument("--baseline", metavar="DIR",
                        help="also run each psmpi system with PYTHONPATH=DIR (another psmpi "
                             f"checkout), named SYSTEM{BASELINE}, in the same rounds")


def with_baseline(systems: list[str], baseline: str | None) -> list[str]:
    """``systems`` with SYSTEM@base before each psmpi SYSTEM when a baseline is given."""
    if not baseline:
        return systems
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    print(f"- SYSTEM{BASELINE}: psmpi from {baseline}; the others from {here}")
    return [x for s in systems for x in ([s + BASELINE, s] if s.startswith("psmpi") else [s])]


def baseline_split(system: str, baseline: str | None) -> tuple[str, dict | None]:
    """The system's own name, and the environment its run needs (None: inherit)."""
    if system.endswith(BASELINE):
        return system.removesuffix(BASELINE), {"PYTHONPATH": baseline}
    return system, None


def baseline_descriptions(descriptions: dict) -> dict:
    return {**descriptions, **{s + BASELINE: f"{d} (psmpi from --baseline)"
                               for s, d in descriptions.items()}}

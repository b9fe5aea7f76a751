"""Rows/s committed for rows of rich values (issue 13): psmpi's store against h5py, pandas, pickle.

Five kinds of rows, each ``{"i": row number, ...}``:

    a  12 scalars (4 int, 4 float, 2 str, 2 bool; the rows of store_append.py)
    b  a 1 KiB array (128 float64)
    c  a 1 MiB array (131,072 float64)
    d  a ragged array of 10 to 10,000 float64, lengths log-uniform (mean about 1,450)
    e  a nested dict of 20 entries (floats, ints, str, None, lists, a datetime, two sub-dicts)

psmpi commits them as a map's driver does (psmpi/driver/run.py, RowWriter): per batch, the
twelve bookkeeping columns (_pset_index, _pset_hash, ..., _calc_dir) as arrays, and the
rows either through ``Table.admit`` per row then ``Table.append`` (the rows path: results
that came pickled, as arrays and dicts do) or, for (a), also through ``admit_columns`` and
``append_values`` (the columns path: groups of plain scalars). Its Store fsyncs at close
(and every 10 s, ``fsync_interval``). Each peer writes the same rows per batch and is
flushed per batch and fsynced once at the end, like psmpi. Every timing runs from opening
a new file in ``--dir`` to having it closed and fsynced; the writers take turns in every
round, and every round also times a plain sequential write of the disk (8 MiB blocks,
fsync at the end) in the same directory.

    python benchmarks/store_values.py                  # 5 rounds, a few minutes
    python benchmarks/store_values.py --quick          # small sizes, 1 round (seconds)
    python benchmarks/store_values.py --baseline /path/to/old/psmpi/checkout

``--baseline`` also runs scenario (a) in child processes, psmpi of this checkout and psmpi
of the given one (``PYTHONPATH``), taking turns, each child the best of 3 writes: the
target "(a) not slower by more than 5 % than before issue 13" compares with commit d173f56
(``git worktree add --detach /tmp/psmpi-base d173f56``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pickle
import statistics
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common
from common import fmt, say, spread, table
from store_append import make_rows

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)  # the psmpi this script belongs to
MIB = 2**20
DISK_BLOCK = 8 * MIB
TARGET_SLOWDOWN = 0.95  # (a): at least 95 % of the rows/s of the baseline
TARGET_DISK_SHARE = 0.70  # (c): at least 70 % of the disk's sequential write rate
TARGET_RATE = 50_000  # (d), (e): rows/s at batches of 1,000
CHILD_REPEATS = 3  # --baseline: writes per child process, the fastest counts


@dataclasses.dataclass(frozen=True)
class Scenario:
    title: str
    rows: int  # rows per measurement
    batch: int  # rows per commit
    quick_rows: int
    quick_batch: int


# (c) commits 64 rows (64 MiB) at a time: a map's driver commits once the results it
# buffered reach 64 MiB (run.COMMIT_BYTES), whatever commit_rows says.
SCENARIOS = {
    "a": Scenario("12 scalars", 100_000, 1000, 2000, 1000),
    "b": Scenario("a 1 KiB array", 20_000, 1000, 1000, 500),
    "c": Scenario("a 1 MiB array", 512, 64, 8, 4),  # 512 MiB, as the disk test
    "d": Scenario("a ragged array of 10-10,000 floats", 10_000, 1000, 500, 250),
    "e": Scenario("a nested dict of 20 entries", 20_000, 1000, 1000, 500),
}
WRITERS = {
    "psmpi": "psmpi.store.Store.open(path) / .table(name): per batch Table.admit(row) per row, "
             "then Table.append(batch, columns=the 12 bookkeeping columns); close() fsyncs",
    "psmpi-columns": "(a) only: the columns path of a map's driver, per batch "
                     "Table.admit_columns({key: values}) then Table.append_values(values, k, "
                     "columns=bookkeeping)",
    "h5py": "plain h5py, one chunked resizable dataset per key: scalars as their dtype (str "
            "variable-length), fixed arrays as an (N, n) float64 dataset, ragged arrays as "
            "variable-length float64 (h5py.vlen_dtype), dicts as JSON text (variable-length "
            "str); per batch resize, write, File.flush(); fsync at the end; no commit "
            "counter, no bookkeeping columns",
    "pandas": "pandas.HDFStore (PyTables), kept open: (a) append(format='table'), (b) the same "
              "with the array as 128 float columns; (c), (d), (e) put(format='fixed') of "
              "each batch under its own key: (c) a 64 x 131,072 float frame, (d) and (e) an "
              "object column, which PyTables pickles (a table cannot hold them); flush() per "
              "batch, flush(fsync=True) at the end",
    "pickle": "pickle.dump(batch, f) per batch (a list of row dicts, highest protocol) into "
              "one open file, f.flush() per batch, os.fsync at the end",
}


# ---------------------------------------------------------------------- the rows
def make_data(scenario: str, n: int, seed: int = 0) -> list[dict]:
    """The ``n`` rows of a scenario, every value different."""
    import numpy as np
    rng = np.random.default_rng(seed)
    if scenario == "a":
        return make_rows(n)
    if scenario in "bc":
        size = 128 if scenario == "b" else MIB // 8
        return [{"i": i, "x": rng.random(size)} for i in range(n)]
    if scenario == "d":
        lengths = np.exp(rng.uniform(np.log(10), np.log(10_001), n)).astype(int)
        return [{"i": i, "x": rng.random(length)} for i, length in enumerate(lengths)]
    return [{"i": i, "d": nested(i)} for i in range(n)]


def nested(i: int) -> dict:
    """A dict of 20 entries, as a simulation's diagnostics might be."""
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=i)
    return {"energy": i * 0.5, "residual": 1e-9 * i, "dt": 0.01, "t_end": 10.0 + i,
            "mass": i / 7, "charge": -i / 3, "tolerance": 1e-6, "cfl": 0.45,
            "steps": i, "restarts": i % 5, "seed": 1000 + i, "grid": 64,
            "solver": "gmres", "preconditioner": "ilu", "tag": f"run-{i}", "note": None,
            "history": [i * 0.1, i * 0.2, i * 0.3, i * 0.4], "shape": [64, 64, 32],
            "started": when,
            "options": {"max_iter": 100, "restart": 30, "verbose": False},
            "stats": {"mean": i * 0.25, "std": 1.5, "extra": {"n": i, "ok": i % 2 == 0}}}


def payload_bytes(rows: list[dict]) -> int:
    """Bytes of the arrays of the rows (``x``); for other rows 0."""
    return sum(r["x"].nbytes for r in rows if "x" in r)


def batched(rows: list, size: int) -> list[list]:
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def as_columns(batch: list[dict]) -> dict[str, tuple]:
    """A batch as the columns a worker sends for groups of plain scalars (task.as_columns)."""
    return dict(zip(batch[0], zip(*[r.values() for r in batch])))


def bookkeeping(n0: int, k: int) -> dict:
    """The 12 columns a map's driver adds to each committed batch, with their types
    (run.RowWriter.append: BOOK_COLUMNS as arrays, then RunStamp.columns)."""
    import numpy as np
    index = np.arange(n0, n0 + k, dtype=np.int64)
    ids = np.char.add(b"3f2a9c1e7b6d4058", np.char.zfill(index.astype("S16"), 16))
    return {"_pset_index": index,
            "_pset_hash": np.array([f"{j:032x}" for j in range(n0, n0 + k)]),
            "_rank": np.array([1] * k), "_host": np.array(["node-001"] * k),
            "_pid": np.array([4242] * k), "_t_start": np.array([1.7e9 + j for j in range(k)]),
            "_runtime": np.array([0.001] * k),
            "_run_id": np.full(k, b"3f2a9c1e7b6d40580000000000000000", dtype="S32"),
            "_run_seq": np.full(k, 1, dtype=np.int64), "_pset_id": ids,
            "_pset_seq": index + 1, "_calc_dir": np.char.add(b"/scratch/calc/", ids)}


# ---------------------------------------------------------------------- the writers
# Each takes (path, batches) and returns the seconds from opening to closed and fsynced.
def write_psmpi(path: str, batches: list[list[dict]]) -> float:
    from psmpi.store import Store
    t0 = time.perf_counter()
    with Store.open(path) as store:
        t = store.table("bench", "results")
        n = 0
        for batch in batches:
            for row in batch:
                problem = t.admit(row)
                assert problem is None, problem
            t.append(batch, columns=bookkeeping(n, len(batch)))
            n += len(batch)
    return time.perf_counter() - t0


def write_psmpi_columns(path: str, batches: list[dict]) -> float:
    from psmpi.store import Store
    t0 = time.perf_counter()
    with Store.open(path) as store:
        t = store.table("bench", "results")
        n = 0
        for values in batches:
            k = len(values["i0"])
            problem = t.admit_columns(values)
            assert problem is None, problem
            t.append_values(values, k, bookkeeping(n, k))
            n += k
    return time.perf_counter() - t0


def h5py_layout(value):
    """(dtype, row shape, how to turn a batch's values into an array) of one key."""
    import h5py
    import numpy as np
    if isinstance(value, dict):
        return h5py.string_dtype(), (), lambda vs: np.array([json.dumps(v, default=str) for v in vs],
                                                            dtype=object)
    if isinstance(value, str):
        return h5py.string_dtype(), (), lambda vs: np.array(vs, dtype=object)
    if isinstance(value, np.ndarray):
        return value.dtype, value.shape, np.stack
    return np.asarray(value).dtype, (), np.array


def h5py_ragged(values):
    import numpy as np
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def write_h5py(path: str, batches: list[list[dict]], ragged: bool = False) -> float:
    import h5py
    import numpy as np
    t0 = time.perf_counter()
    with h5py.File(path, "w") as f:
        sets = {}
        for key, value in batches[0][0].items():
            dtype, shape, convert = h5py_layout(value)
            if ragged and shape:
                dtype, shape, convert = h5py.vlen_dtype(value.dtype), (), h5py_ragged
            row_bytes = max(1, int(np.prod(shape)) * (16 if dtype.kind == "O" else dtype.itemsize))
            chunk = max(1, min(4096, MIB // row_bytes))
            sets[key] = (f.create_dataset(key, shape=(0,) + shape, maxshape=(None,) + shape,
                                          chunks=(chunk,) + shape, dtype=dtype), convert)
        n = 0
        for batch in batches:
            k = len(batch)
            for key, (ds, convert) in sets.items():
                ds.resize(n + k, axis=0)
                ds[n:n + k] = convert([row[key] for row in batch])
            n += k
            f.flush()
        os.fsync(f.id.get_vfd_handle())
    return time.perf_counter() - t0


def write_pandas(path: str, batches: list[list[dict]], scenario: str) -> float:
    import numpy as np
    import pandas as pd
    t0 = time.perf_counter()
    with warnings.catch_warnings(), pd.HDFStore(path, mode="w") as store:
        warnings.simplefilter("ignore")  # PerformanceWarning: PyTables pickles object columns
        for j, batch in enumerate(batches):
            if scenario == "a":
                store.append("bench", pd.DataFrame(batch), format="table", index=False,
                             min_itemsize={"s0": 32, "s1": 32})
            elif scenario in "bc":
                frame = pd.DataFrame(np.stack([r["x"] for r in batch]),
                                     index=[r["i"] for r in batch])
                if scenario == "b":
                    frame.columns = [f"x{c}" for c in frame.columns]
                    store.append("bench", frame, format="table", index=False)
                else:
                    store.put(f"batch{j}", frame, format="fixed")
            else:
                store.put(f"batch{j}", pd.DataFrame(batch), format="fixed")
            store.flush()
        store.flush(fsync=True)
    return time.perf_counter() - t0


def write_pickle(path: str, batches: list[list[dict]]) -> float:
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for batch in batches:
            pickle.dump(batch, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - t0


def write(writer: str, scenario: str, path: str, batches: list) -> float:
    if writer == "psmpi":
        return write_psmpi(path, batches)
    if writer == "psmpi-columns":
        return write_psmpi_columns(path, batches)
    if writer == "h5py":
        return write_h5py(path, batches, ragged=scenario == "d")
    if writer == "pandas":
        return write_pandas(path, batches, scenario)
    return write_pickle(path, batches)


def disk_rate(directory: str, total: int) -> float:
    """Bytes/s of writing ``total`` bytes in 8 MiB blocks to a new file, fsync included."""
    block = os.urandom(DISK_BLOCK)
    path = os.path.join(directory, "disk-rate.bin")
    t0 = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        f.writelines(block for _ in range(total // DISK_BLOCK))
        os.fsync(f.fileno())
    seconds = time.perf_counter() - t0
    os.remove(path)
    return total / seconds


# ---------------------------------------------------------------------- child processes
def one(writer: str, rows: int, batch: int) -> None:
    """Child: time ``writer`` on scenario (a) in the working directory, after a warm-up, the
    best of CHILD_REPEATS writes (each to a new file; a loaded machine only ever slows a
    write down); print a RESULT line."""
    import psmpi
    batches = batched(make_data("a", rows), batch)
    if writer == "psmpi-columns":
        batches = [as_columns(b) for b in batches]
    write(writer, "a", os.path.join(os.getcwd(), "warm.h5"), batches[:2])
    wall, cpu = [], []
    for i in range(CHILD_REPEATS):
        c0 = time.process_time()
        wall.append(write(writer, "a", os.path.join(os.getcwd(), f"t{i}.h5"), batches))
        cpu.append(time.process_time() - c0)
    common.emit({"seconds": min(wall), "cpu": min(cpu), "psmpi": psmpi.__file__})


def in_child(writer: str, checkout: str, rows: int, batch: int, directory: str) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--one", writer, "--rows", str(rows),
               "--batch", str(batch)]
    with tempfile.TemporaryDirectory(prefix="psmpi-bench-", dir=directory) as tmp:
        out = common.run_result(command, timeout=600, env={"PYTHONPATH": checkout}, cwd=tmp)
    if "error" not in out and not out["psmpi"].startswith(os.path.join(checkout, "")):
        out = {"error": f"imported {out['psmpi']} instead of the psmpi in {checkout}"}
    return out


# ---------------------------------------------------------------------- rounds and report
def available() -> list[str]:
    writers = ["psmpi", "psmpi-columns", "h5py", "pandas", "pickle"]
    if not common.have("tables"):
        print(f"- skipped pandas: pandas.HDFStore needs PyTables ('tables'), which is not "
              f"installed in {sys.executable}; `pip install tables` (or psmpi's `bench` extra)")
        writers.remove("pandas")
    return writers


def writers_of(scenario: str, writers: list[str]) -> list[str]:
    return [w for w in writers if w != "psmpi-columns" or scenario == "a"]


def rounds(args, writers: list[str], sizes: dict, directory: str) -> dict:
    """{("disk",): [bytes/s], (scenario, writer): [seconds], ("base", writer, checkout):
    [result]}, every writer once per scenario per round, in turn."""
    data = {s: make_data(s, sizes[s][0]) for s in args.scenarios}
    out: dict = {("bytes", s): payload_bytes(data[s]) for s in data}
    warm_up(writers, args.scenarios, directory)
    for rep in range(args.reps):
        rate = disk_rate(directory, args.disk_mib * MIB)
        out.setdefault(("disk",), []).append(rate)
        say(f"round {rep + 1}/{args.reps} disk: {rate / MIB:,.0f} MiB/s")
        for s in args.scenarios:
            batches = batched(data[s], sizes[s][1])
            for writer in writers_of(s, writers):
                given = [as_columns(b) for b in batches] if writer == "psmpi-columns" else batches
                with tempfile.TemporaryDirectory(prefix="psmpi-bench-", dir=directory) as tmp:
                    c0 = time.process_time()
                    seconds = write(writer, s, os.path.join(tmp, "t.h5"), given)
                    cpu = time.process_time() - c0
                out.setdefault((s, writer), []).append(seconds)
                out.setdefault(("cpu", s, writer), []).append(cpu)
                say(f"round {rep + 1}/{args.reps} ({s}) {writer}: "
                    f"{len(data[s]) / seconds:,.0f} rows/s")
        if args.baseline:
            baseline_round(args, sizes["a"], directory, rep, out)
    return out


def warm_up(writers: list[str], scenarios: str, directory: str) -> None:
    """Each writer once on a few rows of each scenario, untimed: imports (psmpi, PyTables)
    and first-call costs stay out of the first round."""
    with tempfile.TemporaryDirectory(prefix="psmpi-bench-", dir=directory) as tmp:
        for s in scenarios:
            batches = batched(make_data(s, 4), 2)
            for writer in writers_of(s, writers):
                given = [as_columns(b) for b in batches] if writer == "psmpi-columns" else batches
                write(writer, s, os.path.join(tmp, f"{s}-{writer}.h5"), given)


def baseline_round(args, size: tuple, directory: str, rep: int, out: dict) -> None:
    """Scenario (a) in child processes, this checkout and the baseline taking turns
    (the order alternates from round to round)."""
    checkouts = [("this", CHECKOUT), ("baseline", args.baseline)]
    for writer in ("psmpi-columns", "psmpi"):
        for label, checkout in checkouts if rep % 2 == 0 else checkouts[::-1]:
            result = in_child(writer, checkout, size[0], size[1], directory)
            if "error" in result:
                say(f"round {rep + 1}/{args.reps} (a) {writer} {label} FAILED: {result['error']}")
                continue
            out.setdefault(("base", writer, label), []).append(result)
            say(f"round {rep + 1}/{args.reps} (a) {writer} in a child, {label}: "
                f"{size[0] / result['seconds']:,.0f} rows/s")


def ratios(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b)]


def report(args, writers: list[str], sizes: dict, out: dict) -> None:
    disk = out[("disk",)]
    med, lo, hi = spread(disk)
    print(f"Disk: sequential write of {args.disk_mib} MiB in 8 MiB blocks, fsync at the end, "
          f"in the same directory: **{med / MIB:,.0f} MiB/s** median ({lo / MIB:,.0f} – "
          f"{hi / MIB:,.0f})\n")
    rows = []
    for s in args.scenarios:
        n, batch = sizes[s]
        nbytes = out["bytes", s]
        for writer in writers_of(s, writers):
            rates = [n / t for t in out[s, writer]]
            med, lo, hi = spread(rates)
            mib_s = f"{nbytes / statistics.median(out[s, writer]) / MIB:,.0f}" if nbytes else "–"
            cpu = statistics.median(ratios(out["cpu", s, writer], out[s, writer]))
            rows.append([f"({s}) {SCENARIOS[s].title}", f"{n:,} / {batch:,}", writer, fmt(med),
                         f"{fmt(lo)} – {fmt(hi)}", mib_s, f"{cpu:.2f}", len(rates)])
    print(table(["rows", "rows / batch", "writer", "rows/s median", "rows/s min – max",
                 "array MiB/s", "CPU s / wall s", "rounds"], rows))
    print("\nCPU s / wall s: the share of the time the writer's process ran (with a loaded "
          "machine, it also waits for a core); the rest it waited, for the disk or a core.\n")
    print()
    peers = [w for w in writers if w not in ("psmpi", "psmpi-columns")]
    rows = []
    for s in args.scenarios:
        mine = "psmpi-columns" if s == "a" else "psmpi"
        rows.append([f"({s}) {mine}"] + [
            common.ratio_cell(ratios([1 / t for t in out[s, mine]], [1 / t for t in out[s, p]]))
            for p in peers])
    print(table(["rows/s ratio, median of rounds (min – max)"] + [f"psmpi / {p}" for p in peers],
                rows))
    print()
    targets(args, sizes, out)
    print()
    print("Writers:")
    common.list_systems(writers, WRITERS)
    print("- psmpi rows and their sizes: " + "; ".join(
        f"({s}) {SCENARIOS[s].title}" for s in args.scenarios) + ". Every psmpi row also gets "
        "the 12 bookkeeping columns of a map (the peers do not)")


def targets(args, sizes: dict, out: dict) -> None:
    if "a" in args.scenarios:
        baseline_report(args, sizes, out)
    if "c" in args.scenarios:
        n = sizes["c"][0]
        share = ratios([n * MIB / t for t in out["c", "psmpi"]], out[("disk",)])
        med = statistics.median(share)
        print(f"- target (c) ≥ {TARGET_DISK_SHARE:.0%} of the disk's sequential write rate: "
              f"{'met' if med >= TARGET_DISK_SHARE else 'MISSED'} ({med:.0%} median of rounds, "
              f"{min(share):.0%} – {max(share):.0%})")
    for s in "de":
        if s in args.scenarios:
            n, batch = sizes[s]
            med = statistics.median([n / t for t in out[s, "psmpi"]])
            note = "" if batch == 1000 else f" (measured at batch {batch}: not the target's 1,000)"
            print(f"- target ({s}) ≥ {TARGET_RATE:,} rows/s at batches of 1,000: "
                  f"{'met' if med >= TARGET_RATE else 'MISSED'} ({fmt(med)} rows/s){note}")


def baseline_report(args, sizes: dict, out: dict) -> None:
    if not args.baseline:
        print("- target (a) not more than 5 % slower than before issue 13: not measured "
              "(run with --baseline CHECKOUT)")
        return
    n = sizes["a"][0]
    rows, verdicts = [], []
    for writer in ("psmpi-columns", "psmpi"):
        this, base = out.get(("base", writer, "this"), []), out.get(("base", writer, "baseline"), [])
        if not this or not base:
            rows.append([writer, "failed", "", "", ""])
            continue
        wall = ratios([b["seconds"] for b in base], [t["seconds"] for t in this])
        cpu = ratios([b["cpu"] for b in base], [t["cpu"] for t in this])
        rows.append([writer, fmt(statistics.median([n / t["seconds"] for t in this])),
                     fmt(statistics.median([n / b["seconds"] for b in base])),
                     common.ratio_cell(wall), common.ratio_cell(cpu)])
        verdicts.append((writer, statistics.median(wall), statistics.median(cpu)))
    print(f"(a) in child processes, this checkout against the baseline {args.baseline} "
          f"(`git -C {args.baseline} rev-parse HEAD`: {git_head(args.baseline)}), "
          f"{n:,} rows in batches of {sizes['a'][1]:,}; each child process the best of "
          f"{CHILD_REPEATS} writes after a warm-up; ratios per round, their median:\n")
    print(table(["writer", "this rows/s", "baseline rows/s", "this / baseline, wall",
                 "this / baseline, CPU"], rows))
    print()
    for writer, wall, cpu in verdicts:
        ok = wall >= TARGET_SLOWDOWN
        print(f"- target (a) {writer} not more than 5 % slower than the baseline: "
              f"{'met' if ok else 'MISSED'} (wall {wall:.3f}×, CPU {cpu:.3f}×)")


def git_head(checkout: str) -> str:
    import subprocess
    try:
        return subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"],
                              check=False, capture_output=True, text=True,
                              timeout=30).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round (smoke run)")
    parser.add_argument("--reps", type=int, help="rounds (default 5, 1 with --quick)")
    parser.add_argument("--scenarios", default="abcde", help="a subset of abcde")
    parser.add_argument("--dir", help="directory for the files (default: the temporary directory)")
    parser.add_argument("--disk-mib", type=int,
                        help="MiB of the disk test (default: as many as (c) writes, 512; 8 with --quick)")
    parser.add_argument("--baseline", help="a psmpi checkout to compare scenario (a) with")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args.one, args.rows, args.batch)
    args.reps = args.reps or (1 if args.quick else 5)
    if args.baseline:
        args.baseline = os.path.abspath(args.baseline)
    bad = set(args.scenarios) - set(SCENARIOS)
    if bad or not args.scenarios:
        parser.error(f"--scenarios takes letters of abcde, not {''.join(sorted(bad))!r}")
    sizes = {s: (sc.quick_rows, sc.quick_batch) if args.quick else (sc.rows, sc.batch)
             for s, sc in SCENARIOS.items()}
    args.disk_mib = args.disk_mib or sizes["c"][0]  # as many bytes as (c) writes
    directory = os.path.abspath(args.dir or tempfile.gettempdir())
    common.header("store_values: rows/s committed for rows of rich values (issue 13)")
    print(f"- {args.reps} rounds; in each round the disk test, then every writer writes the same "
          f"rows once per scenario, in turn, to a new file in {directory}; median of rounds")
    print(f"- load average (1 min) before the run: {os.getloadavg()[0]:.1f}")
    writers = available()
    out = rounds(args, writers, sizes, directory)
    print(f"- load average (1 min) after the run: {os.getloadavg()[0]:.1f}: other processes "
          f"slow every writer alike, but the CPU-bound ones more than the disk test\n")
    report(args, writers, sizes, out)


if __name__ == "__main__":
    main()

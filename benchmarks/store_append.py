"""HDF5 appends in rows/s at several batch sizes: psmpi's Store against plain h5py and pandas.

Rows have 12 columns (4 int, 4 float, 2 str, 2 bool) and are built before the timing.
``psmpi-nosum`` is psmpi's writer with its Fletcher-32 checksums turned off
(``psmpi.store.schema.FLETCHER32 = False``): the ratio to it is what the checksums cost.
Each writer gets a new file per measurement; the timing covers every batch of the rows
(for psmpi: admit() of each row, then append() of the batch, a two-phase commit with
two flushes), not opening or closing the file. The writers take turns within each round.

    python benchmarks/store_append.py           # 5 rounds, up to 200k rows per measurement
    python benchmarks/store_append.py --quick   # a tenth of the rows (smoke run)
    python benchmarks/store_append.py --cpu     # CPU time of this process instead of wall time
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time

from common import fmt, header, say, spread, table

BATCHES = (1, 10, 100, 1000, 10000)
ROWS = {1: 3000, 10: 20000, 100: 100000, 1000: 200000, 10000: 200000}  # rows per measurement
TARGET_BATCH, TARGET_RATE = 1000, 200_000
CLOCK = time.perf_counter  # --cpu: time.process_time
TARGET_CHECKSUM_RATIO = 0.95  # psmpi with checksums at most 5 % slower than without
WRITERS = {
    "psmpi": "psmpi.store.Store.open(path) / .table(name).admit(row) per row + .append(batch)",
    "psmpi-nosum": "the same, with psmpi.store.schema.FLETCHER32 = False: no checksums on the chunks",
    "h5py": "plain h5py: 12 resizable chunked datasets (chunks of 4096 rows), per batch one "
            "np.array per column, resize, write, File.flush() (no commit counter)",
    "pandas": "pandas.HDFStore(path).append(key, DataFrame(batch), format table, index=False, "
              "min_itemsize 32 for the str columns) + flush() per batch; the store stays open "
              "(DataFrame.to_hdf(append=True) would reopen the file for every batch)",
}


def make_rows(n: int) -> list[dict]:
    """n rows of 12 mixed columns, every value different."""
    return [{"i0": i, "i1": 2 * i, "i2": -i, "i3": i % 97,
             "f0": i * 0.5, "f1": i / 3.0, "f2": -1.25 * i, "f3": float(i % 13),
             "s0": f"name-{i}", "s1": "abcdefgh"[i % 8] * 5,
             "b0": i % 2 == 0, "b1": i % 3 == 0} for i in range(n)]


def batched(rows: list[dict], size: int) -> list[list[dict]]:
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def write_psmpi(path: str, batches: list[list[dict]]) -> float:
    from psmpi.store import Store
    with Store.open(path) as store:
        t = store.table("bench", "results")
        t0 = CLOCK()
        for batch in batches:
            for row in batch:
                problem = t.admit(row)
                assert problem is None, problem
            t.append(batch)
        return CLOCK() - t0


def write_psmpi_nosum(path: str, batches: list[list[dict]]) -> float:
    from psmpi.store import schema
    schema.FLETCHER32 = False
    try:
        return write_psmpi(path, batches)
    finally:
        schema.FLETCHER32 = True


def h5py_dtype(value):
    import h5py
    import numpy as np
    return h5py.string_dtype() if isinstance(value, str) else np.asarray(value).dtype


def write_h5py(path: str, batches: list[list[dict]]) -> float:
    import h5py
    import numpy as np
    with h5py.File(path, "w") as f:
        first = batches[0][0]
        dss = {k: f.create_dataset(k, shape=(0,), maxshape=(None,), chunks=(4096,),
                                   dtype=h5py_dtype(v)) for k, v in first.items()}
        n = 0
        t0 = CLOCK()
        for batch in batches:
            k = len(batch)
            for key, ds in dss.items():
                values = np.array([row[key] for row in batch], dtype=ds.dtype)
                ds.resize((n + k,))
                ds[n:n + k] = values
            n += k
            f.flush()
        return CLOCK() - t0


def write_pandas(path: str, batches: list[list[dict]]) -> float:
    import pandas as pd
    with pd.HDFStore(path, mode="w") as store:
        t0 = CLOCK()
        for batch in batches:
            store.append("bench", pd.DataFrame(batch), format="table", index=False,
                         min_itemsize={"s0": 32, "s1": 32})
            store.flush()
        return CLOCK() - t0


def available() -> list[str]:
    writers = ["psmpi", "psmpi-nosum", "h5py"]
    if importlib.util.find_spec("tables") is None:
        print("- skipped pandas: pandas.HDFStore needs PyTables ('tables'), which is not "
              f"installed in this environment ({sys.executable}); benchmarks/setup.sh "
              "installs it in benchmarks/.venv")
    else:
        writers.append("pandas")
    return writers


def rounds(writers: list[str], batches: tuple, rows_per: dict, reps: int) -> dict:
    """{(writer, batch size): [rows/s, ...]}, the writers taking turns in each round."""
    rates: dict = {(w, b): [] for w in writers for b in batches}
    data = {b: batched(make_rows(rows_per[b]), b) for b in batches}
    for rep in range(reps):
        for b in batches:
            for writer in writers:
                with tempfile.TemporaryDirectory(prefix="psmpi-bench-") as tmp:
                    write = globals()["write_" + writer.replace("-", "_")]
                    seconds = write(os.path.join(tmp, "t.h5"), data[b])
                rates[writer, b].append(rows_per[b] / seconds)
                say(f"round {rep + 1}/{reps} batch {b} {writer}: {rows_per[b] / seconds:,.0f} rows/s")
    return rates


def report(writers: list[str], batches: tuple, rows_per: dict, rates: dict) -> None:
    rows = []
    for b in batches:
        for writer in writers:
            med, lo, hi = spread(rates[writer, b])
            rows.append([f"{b:,}", writer, f"{rows_per[b]:,}", fmt(med), f"{fmt(lo)} – {fmt(hi)}",
                         len(rates[writer, b])])
    print(table(["batch", "writer", "rows", "rows/s median", "rows/s min – max", "rounds"], rows))
    print()
    peers = [w for w in writers if w != "psmpi"]
    rows = []
    for b in batches:
        cells = []
        for peer in peers:
            med, lo, hi = spread([m / p for m, p in zip(rates["psmpi", b], rates[peer, b])])
            cells.append(f"{med:.2f}× ({lo:.2f} – {hi:.2f})")
        rows.append([f"{b:,}"] + cells)
    print(table(["batch"] + [f"psmpi / {p}, median of rounds (min – max)" for p in peers], rows))
    print()
    if TARGET_BATCH in batches:
        med = spread(rates["psmpi", TARGET_BATCH])[0]
        verdict = "met" if med >= TARGET_RATE else "MISSED"
        print(f"- target psmpi ≥ {TARGET_RATE:,} rows/s at batch {TARGET_BATCH}: {verdict} "
              f"({fmt(med)} rows/s)")
    if "psmpi-nosum" in writers:
        # A commit's cost in time: map() commits about once a second (commit_seconds) or
        # every commit_rows rows, so small batches come at most once a second.
        for b in batches:
            med = spread([m / p for m, p in zip(rates["psmpi", b], rates["psmpi-nosum", b])])[0]
            per_commit = b / spread(rates["psmpi", b])[0] - b / spread(rates["psmpi-nosum", b])[0]
            verdict = "met" if med >= TARGET_CHECKSUM_RATIO else "MISSED"
            print(f"- target checksums cost ≤ {1 - TARGET_CHECKSUM_RATIO:.0%} at batch {b:,}: "
                  f"{verdict} (psmpi / psmpi-nosum = {med:.3f}; {per_commit * 1e6:,.0f} us "
                  f"more per commit of {b:,} rows)")
    print()
    print("Writers:")
    for writer in writers:
        print(f"- {writer}: {WRITERS[writer]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the rows (smoke run)")
    parser.add_argument("--reps", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--cpu", action="store_true",
                        help="time with this process's CPU time (steadier on a shared machine; "
                        "the writes go to the page cache, so it is most of the time)")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.cpu else time.perf_counter
    rows_per = {b: max(b, n // 10) if args.quick else n for b, n in ROWS.items()}
    header("store_append: HDF5 appends, rows of 12 columns (4 int, 4 float, 2 str, 2 bool)")
    print(f"- timed with {'CPU time of the process' if args.cpu else 'wall time'}")
    print(f"- {args.reps} rounds; in each round every writer writes the same rows once per batch "
          f"size, in turn, to a new file in a temporary directory")
    writers = available()
    print()
    report(writers, BATCHES, rows_per, rounds(writers, BATCHES, rows_per, args.reps))


if __name__ == "__main__":
    main()

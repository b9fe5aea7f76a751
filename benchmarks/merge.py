"""Merging shard files (issue 19): ``psmpi.merge_shards`` against a hand-written h5py copy.

A study of FILES shards of ROWS rows each, in two scenarios:

    scalars  _pset_index, _pset_hash (32 chars), a (int), x, y (float), label (str), ok (bool)
    arrays   the same plus v, a 16-float64 array per row (one fixed shape: an "array" column)

One shard file is written through psmpi's Store API (as a map's driver writes its columns,
with the shard attributes a sharded map records) and copied to the other FILES-1 names: the
merge reads the same bytes either way. Then, in every round, in turn:

    psmpi   ``psmpi.merge_shards("study.h5")`` into a new study.h5: the fingerprint checks,
            the lock, every column copied in bulk as stored (Table.append_from), the
            two-phase commit per block of 65,536 rows, fsync at the end
    h5py    a hand-written copy of the same columns: per shard, per column, read the
            committed rows and append them to a dataset of the same dtype, chunks and
            Fletcher-32 filter in one output file; fsync at the end

Each timing runs from nothing to the closed, fsynced output; the output is removed before
the next. ``--inputs`` also times ``psmpi.merge`` of two files of ROWS different psets
given as inputs (the general merge of files that are not shards: the results deduplicated
by pset hash, then copied in bulk where a block is kept whole), for comparison.

    python benchmarks/merge.py                           # 100 files x 100,000 rows, 3 rounds
    python benchmarks/merge.py --files 20 --rows 100000  # smaller
    python benchmarks/merge.py --quick                   # a smoke test (seconds)
    python benchmarks/merge.py --inputs                  # also psmpi.merge with inputs
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import fmt, header, say, spread, table

import psmpi
from psmpi import layout
from psmpi.store import Store

TARGET = 0.8  # psmpi at least 0.8x the rows/s of the hand-written copy
BLOCK = 10_000  # rows per append when writing the shard file


def columns(k0: int, n: int, arrays: bool) -> dict[str, np.ndarray]:
    i = np.arange(k0, k0 + n)
    cols = {layout.PSET_INDEX: i,
            layout.PSET_HASH: np.char.zfill(i.astype("U"), 32).astype("S32"),
            "a": i * 3, "x": i * 0.5, "y": np.sqrt(i.astype(float)),
            "label": np.array(["p" + str(v % 1000) for v in range(n)], dtype=object),
            "ok": i % 2 == 0}
    if arrays:
        cols["v"] = np.outer(i, np.ones(16)) + np.arange(16)
    return cols


def write_shard(path: str, rows: int, n_files: int, arrays: bool, first: int = 0) -> None:
    """Shard 0 of ``n_files``: ``rows`` rows of map "m" (psets ``first``...), written
    column-wise as a map's driver writes them, with the shard attributes of a sharded map."""
    with Store.open(path) as store:
        table = store.table("m")
        for lo in range(0, rows, BLOCK):
            cols = columns(first + lo, min(BLOCK, rows - lo), arrays)
            v = cols.pop("v", None)
            if v is None:
                table.append_values({}, len(cols["a"]), cols)
                continue
            batch = [{"v": row} for row in v]
            for row in batch:
                assert table.admit(row) is None
            table.append(batch, cols)
        store.note_planned("m", rows)
        store.note_map_attrs("m", {
            layout.SHARD_ATTR: np.array([0, n_files], dtype=np.int64),
            layout.STUDY_FINGERPRINT_ATTR: "benchmark",
            layout.STUDY_N_PSETS_ATTR: np.int64(rows * n_files),
            layout.SHARD_RESUBMIT_ATTR: "{}"})


def make_study(folder: str, files: int, rows: int, arrays: bool) -> list[str]:
    study = os.path.join(folder, "study.h5")
    first = layout.shard_path(study, 0, files)
    write_shard(first, rows, files, arrays)
    paths = [first]
    for k in range(1, files):
        paths.append(layout.shard_path(study, k, files))
        shutil.copyfile(first, paths[-1])
    return paths


def fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def by_psmpi(folder: str, shards: list[str]) -> int:
    added = psmpi.merge_shards(os.path.join(folder, "study.h5"))
    return added["m"]


def by_h5py(folder: str, shards: list[str]) -> int:
    """The same columns, copied by hand: read each shard's committed rows, append."""
    out = os.path.join(folder, "by-hand.h5")
    total = 0
    with h5py.File(out, "w", libver="latest") as target:
        group = target.create_group("m/results/columns")
        for path in shards:
            with h5py.File(path, "r", locking=False) as f:
                source = f["m/results"]
                n = int(source[layout.N_COMMITTED][()])
                for name, ds in source[layout.COLUMNS].items():
                    if name not in group:
                        group.create_dataset(name, shape=(0,) + ds.shape[1:], dtype=ds.dtype,
                                             maxshape=(None,) + ds.shape[1:], chunks=ds.chunks,
                                             fletcher32=ds.fletcher32)
                    dest = group[name]
                    values = ds[:n]
                    dest.resize(total + n, axis=0)
                    dest[total:total + n] = values
                total += n
            target.flush()
    fsync(out)
    return total


def outputs(folder: str) -> list[str]:
    return [os.path.join(folder, name) for name in ("study.h5", "by-hand.h5")]


def measure(folder: str, shards: list[str], rounds: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {"psmpi": [], "h5py": []}
    for r in range(rounds):
        for name, merge in (("psmpi", by_psmpi), ("h5py", by_h5py)):
            for path in outputs(folder):
                if os.path.exists(path):
                    os.remove(path)
            started = time.perf_counter()
            n = merge(folder, shards)
            seconds = time.perf_counter() - started
            rates[name].append(n / seconds)
            say(f"round {r + 1}: {name}: {n:,} rows in {seconds:.2f} s")
    for path in outputs(folder):
        if os.path.exists(path):
            os.remove(path)
    return rates


def as_inputs(folder: str, shards: list[str], rows: int, arrays: bool) -> float:
    """rows/s of psmpi.merge (the general merge, deduplicating) of the first shard file and
    a file of as many other psets: every row is kept."""
    other = os.path.join(folder, "other.h5")
    write_shard(other, rows, 1, arrays, first=rows)
    out = os.path.join(folder, "inputs.h5")
    started = time.perf_counter()
    counts = psmpi.merge([shards[0], other], out)
    seconds = time.perf_counter() - started
    os.remove(out)
    os.remove(other)
    return sum(counts.values()) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inputs", action="store_true",
                        help="also time psmpi.merge over two of the files given as inputs")
    parser.add_argument("--quick", action="store_true", help="3 files of 2,000 rows, 1 round")
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    if args.quick:
        args.files, args.rows, args.rounds = 3, 2_000, 1
    header("merge: psmpi.merge_shards against a hand-written h5py copy (issue 19)")
    print(f"- {args.files} shard files of {args.rows:,} rows each; {args.rounds} rounds, the "
          f"two merges in turn in each; median of rounds")
    print(f"- load average (1 min) before the run: {os.getloadavg()[0]:.1f}\n")
    lines, ratios, extra = [], [], []
    for scenario in ("scalars", "arrays"):
        with tempfile.TemporaryDirectory(dir=args.dir) as folder:
            say(f"{scenario}: writing {args.files} shard files")
            shards = make_study(folder, args.files, args.rows, scenario == "arrays")
            size = os.path.getsize(shards[0]) * len(shards)
            rates = measure(folder, shards, args.rounds)
            per_round = [p / h for p, h in zip(rates["psmpi"], rates["h5py"])]
            ratio = spread(per_round)
            ratios.append((scenario, ratio))
            for name in ("psmpi", "h5py"):
                mid, low, high = spread(rates[name])
                lines.append([scenario, name, fmt(mid), f"{fmt(low)} – {fmt(high)}",
                              fmt(mid * size / (args.files * args.rows) / 2**20)])
            if args.inputs:
                extra.append((scenario, as_inputs(folder, shards, args.rows,
                                                  scenario == "arrays")))
    print(table(["rows", "merge", "rows/s median", "rows/s min – max", "input MiB/s"], lines))
    print()
    for scenario, (mid, low, high) in ratios:
        verdict = "met" if mid >= TARGET else "MISSED"
        print(f"- target psmpi ≥ {TARGET}x the hand-written copy, {scenario}: {verdict} "
              f"({mid:.2f}x, rounds {low:.2f} – {high:.2f})")
    for scenario, rate in extra:
        print(f"- psmpi.merge OUT IN IN (files given as inputs: deduplicated by pset hash, "
              f"then in bulk), {scenario}, two files of different psets: {fmt(rate)} rows/s")
    print(f"\n- load average (1 min) after the run: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

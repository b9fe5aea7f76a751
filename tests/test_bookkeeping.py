"""Bookkeeping columns: pset ids (UUIDs the driver and the workers derive alike), psweep's
column names and their types when read, and files written before the names changed.

tests/golden/old-format/e4c7260.h5 was written by psmpi at commit e4c7260 (before psweep's
names) with::

    def worker(pset):
        if pset["a"] == 3:
            raise ValueError("a == 3 fails")
        return {"y": pset["a"] * 1.5, "tag": f"t{pset['a']}"}

    psmpi.map(worker, [{"a": a} for a in range(5)], name="sweep", out="e4c7260.h5",
              backend="serial", verbose=0, logfile=False, calc_dir="calc")

Its tables store ``_t_start`` and ``_runtime`` and 32-hex-digit ``_pset_id``s.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import uuid

import h5py
import numpy as np
import pandas as pd
import pytest

import psmpi
from psmpi.store import bookkeeping

OLD_FILE = pathlib.Path(__file__).parent / "golden" / "old-format" / "e4c7260.h5"
EDGES = [0, 1, 2, 3, 2**31, 2**32 - 1, 2**32, 2**53 + 1, 2**62 - 1, 2**62, 2**62 + 1,
         2**63 - 1, 2**63, 2**63 + 1, 2**64 - 2, 2**64 - 1]


# ---------------------------------------------------------------------- pset ids
def driver_ids(key, indexes):
    stamp = bookkeeping.RunStamp(uuid.uuid4().hex, key, 0, 0, "calc")
    return [i.decode() for i in stamp.columns(np.array(indexes, dtype=np.uint64))["_pset_id"]]


@pytest.mark.parametrize("key", [(0, 0), (2**64 - 1, 2**64 - 1), (1, 2**63)]
                         + [bookkeeping.new_pset_key() for _ in range(5)])
def test_driver_and_worker_derive_the_same_ids(key):
    rng = np.random.default_rng(list(key))
    indexes = EDGES + list(range(1000)) + rng.integers(0, 2**64 - 1, 2000, dtype=np.uint64).tolist()
    assert driver_ids(key, indexes) == [bookkeeping.pset_id(key, i) for i in indexes]


def test_ids_are_canonical_version_4_uuids():
    key = bookkeeping.new_pset_key()
    for text in driver_ids(key, EDGES + list(range(100))):
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_ids_of_a_run_are_distinct_and_of_two_runs_unrelated():
    key = bookkeeping.new_pset_key()
    ids = driver_ids(key, range(1_000_000))
    assert len(set(ids)) == len(ids)
    # the lower 62 bits are a bijection of the index: distinct wherever the indexes differ
    # below 2**62, however far apart
    far = [i * (2**62 // 1000) + 7 for i in range(1000)]
    lows = {int(i.replace("-", "")[16:], 16) & (2**62 - 1) for i in driver_ids(key, far)}
    assert len(lows) == 1000
    other = driver_ids(bookkeeping.new_pset_key(), range(1000))
    assert not set(other) & set(ids[:1000])


def undo_xorshift(y, shift):
    x = y
    for _ in range(62 // shift + 1):
        x = y ^ (x >> shift)
    return x


def index_of(key, pset_id):
    """The pset index (modulo 2**62) a pset id was made from: the lower half undone step by
    step, which proves that it is a bijection of the index."""
    m = 2**62
    x = int(pset_id.replace("-", "")[16:], 16) & (m - 1)
    x = undo_xorshift(x, 31)
    x = x * pow(bookkeeping._C2, -1, m) % m
    x = undo_xorshift(x, 27)
    x = x * pow(bookkeeping._C1, -1, m) % m
    x = undo_xorshift(x, 30)
    return (x - key[1]) * pow(bookkeeping._GAMMA, -1, m) % m


def test_the_index_can_be_recovered_from_the_id():
    key = bookkeeping.new_pset_key()
    indexes = EDGES + np.random.default_rng().integers(0, 2**63, 1000).tolist()
    assert [index_of(key, i) for i in driver_ids(key, indexes)] == [i % 2**62 for i in indexes]


def test_ids_are_not_derived_from_the_run_id():
    key = bookkeeping.new_pset_key()
    a = bookkeeping.RunStamp("0" * 32, key, 0, 0, "calc").columns(np.arange(3))["_pset_id"]
    b = bookkeeping.RunStamp("f" * 32, key, 0, 0, "calc").columns(np.arange(3))["_pset_id"]
    assert (a == b).all()  # the run id plays no part; the run's own random key does
    c = bookkeeping.RunStamp("0" * 32, bookkeeping.new_pset_key(), 0, 0, "calc").columns(
        np.arange(3))["_pset_id"]
    assert not set(a) & set(c)


def test_ids_look_random():
    """Each of the 122 free bits is set in about half of the ids of consecutive psets, and
    consecutive ids differ in about half their bits."""
    stamp = bookkeeping.RunStamp("0" * 32, bookkeeping.new_pset_key(), 0, 0, "calc")
    halves = stamp.id_halves(np.arange(100_000))
    bits = np.unpackbits(halves.astype(">u8").view(np.uint8).reshape(-1, 16), axis=1)
    fixed = [48, 49, 50, 51, 64, 65]  # the version nibble and the variant bits
    free = np.delete(bits, fixed, axis=1)
    assert np.abs(free.mean(axis=0) - 0.5).max() < 0.01
    flips = (free[1:] != free[:-1]).sum(axis=1)
    assert abs(flips.mean() - 61) < 0.5


def test_calc_dir_is_under_the_pset_id():
    key = bookkeeping.new_pset_key()
    columns = bookkeeping.RunStamp("0" * 32, key, 3, 7, "out/calc").columns(np.array([5, 9]))
    assert [d.decode() for d in columns["_calc_dir"]] == [
        os.path.join("out/calc", bookkeeping.pset_id(key, i)) for i in (5, 9)]
    assert columns["_pset_seq"].tolist() == [7, 8] and columns["_run_seq"].tolist() == [3, 3]


# ---------------------------------------------------------------------- names and types
def test_readable_maps_old_names_and_makes_times_datetimes():
    raw = pd.DataFrame({"a": [1, 2], "_t_start": [1.5e9, np.nan], "_runtime": [0.25, np.nan]})
    df = bookkeeping.readable(raw)
    assert list(df.columns) == ["a", "_time_utc", "_pset_runtime"]
    assert df["_time_utc"].iloc[0] == pd.Timestamp("2017-07-14 02:40:00", tz="UTC")
    assert pd.isna(df["_time_utc"].iloc[1]) and df["_pset_runtime"].iloc[0] == 0.25
    assert list(raw.columns) == ["a", "_t_start", "_runtime"]  # the raw frame is left alone
    assert bookkeeping.posix_seconds(df["_time_utc"]).iloc[0] == 1.5e9
    assert bookkeeping.posix_seconds(raw["_t_start"]).iloc[0] == 1.5e9


def test_time_utc_is_stored_as_float_posix_seconds(tmp_path):
    path = tmp_path / "s.h5"
    psmpi.map(lambda p: {"y": 1}, [{"a": 1}], out=str(path), name="m", backend="serial",
              verbose=0)
    with h5py.File(path, "r") as f:
        columns = f["m/results/columns"]
        assert columns["_time_utc"].dtype == np.float64 and "_t_start" not in columns
        raw = columns["_time_utc"][0]
        assert columns["_pset_runtime"].dtype == np.float64
    assert psmpi.read(path)["_time_utc"].iloc[0] == pd.Timestamp(raw, unit="s", tz="UTC")


# ---------------------------------------------------------------------- files of an older psmpi
def old_copy(tmp_path):
    path = tmp_path / "old.h5"
    shutil.copyfile(OLD_FILE, path)
    return path


def raw_column(path, table, name):
    with h5py.File(path, "r") as f:
        return f[f"sweep/{table}/columns/{name}"][:]


def stored_columns(path, table):
    with h5py.File(path, "r") as f:
        return list(f[f"sweep/{table}/columns"])


def test_an_old_file_reads_with_todays_names():
    results = psmpi.read(OLD_FILE)
    assert results["a"].tolist() == [0, 1, 2, 4] and results["tag"].tolist() == ["t0", "t1", "t2", "t4"]
    assert not {"_t_start", "_runtime"} & set(results.columns)
    assert str(results["_time_utc"].dtype) == "datetime64[ns, UTC]"
    seconds = raw_column(OLD_FILE, "results", "_t_start")
    assert (bookkeeping.posix_seconds(results["_time_utc"]) - seconds).abs().max() < 1e-6
    assert (results["_pset_runtime"] == raw_column(OLD_FILE, "results", "_runtime")).all()
    assert all(len(i) == 32 for i in results["_pset_id"])  # old ids are kept as they were
    failures = psmpi.read(OLD_FILE, failures=True)
    assert failures["_exception"].tolist() == ["ValueError: a == 3 fails"]
    assert failures["_time_utc"].notna().all() and "_t_start" not in failures.columns


def fixed_worker(pset):
    return {"y": pset["a"] * 1.5, "tag": f"t{pset['a']}"}


def test_resuming_an_old_file_appends_under_its_names(tmp_path):
    path = old_copy(tmp_path)
    old = psmpi.read(path)
    res = psmpi.map(fixed_worker, [{"a": a} for a in range(7)], out=str(path), name="sweep",
                    backend="serial", verbose=0)
    assert res.progress.resumed == 4 and res.stats.computed == 3 and not res.missing
    assert res.results["a"].tolist() == list(range(7))
    # a table that has the old names keeps writing them: one column per quantity
    columns = stored_columns(path, "results")
    assert "_t_start" in columns and "_runtime" in columns
    assert "_time_utc" not in columns and "_pset_runtime" not in columns
    rows = psmpi.read(path)
    assert len(rows) == 7 and str(rows["_time_utc"].dtype) == "datetime64[ns, UTC]"
    assert rows["_time_utc"].notna().all() and rows["_pset_runtime"].notna().all()
    pd.testing.assert_frame_equal(rows.iloc[:4], old)  # the old rows are untouched
    new = rows.iloc[4:]
    assert all(uuid.UUID(i).version == 4 for i in new["_pset_id"])
    assert new["_run_seq"].tolist() == [1, 1, 1] and new["_pset_seq"].tolist() == [5, 6, 7]
    assert (rows["_time_utc"].iloc[4:] > rows["_time_utc"].iloc[:4].max()).all()


def test_failures_of_a_resumed_old_file_read_as_datetimes(tmp_path):
    path = old_copy(tmp_path)

    def still_failing(pset):
        raise ValueError("again")

    res = psmpi.map(still_failing, [{"a": 3}, {"a": 9}], out=str(path), name="sweep",
                    backend="serial", verbose=0, repeat=True)
    assert len(res.missing) == 2
    assert str(res.missing["_time_utc"].dtype) == "datetime64[ns, UTC]"
    assert res.missing["_time_utc"].notna().all() and "_t_start" not in res.missing.columns
    assert "_t_start" in stored_columns(path, "failures")
    failures = psmpi.read(path, failures=True)
    assert len(failures) == 3 and failures["_time_utc"].notna().all()


# ---------------------------------------------------------------------- the command on old files
def psmpi_cmd(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "psmpi", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_command_reads_an_old_file(tmp_path):
    path = old_copy(tmp_path)
    proc = psmpi_cmd("status", "--json", path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)["maps"][0]
    start = raw_column(path, "results", "_t_start")
    assert summary["first_start"] == pytest.approx(start.min())
    proc = psmpi_cmd("show", "-a", "-w", "_time_utc>2000-01-01", path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "_time_utc" in proc.stdout and "_pset_runtime" in proc.stdout and "4 of 4 rows" in proc.stdout
    assert "+00:00" in proc.stdout and "_t_start" not in proc.stdout
    proc = psmpi_cmd("show", "-w", "_time_utc<2000-01-01T00:00+01:00", path, cwd=tmp_path)
    assert proc.returncode == 0 and "0 of 4 rows" in proc.stdout, proc.stderr
    proc = psmpi_cmd("show", "-w", "_time_utc>soon", path, cwd=tmp_path)
    assert proc.returncode == 2 and "holds times" in proc.stderr
    proc = psmpi_cmd("failures", path, cwd=tmp_path)
    assert proc.returncode == 1 and "a == 3 fails" in proc.stdout and "started 20" in proc.stdout
    proc = psmpi_cmd("check", path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = psmpi_cmd("export", "--csv", "-", path, cwd=tmp_path)
    assert proc.returncode == 0 and "_time_utc" in proc.stdout.splitlines()[0]


def test_report_of_an_old_file(tmp_path):
    pytest.importorskip("matplotlib")
    path = old_copy(tmp_path)
    proc = psmpi_cmd("report", path, "-o", tmp_path / "r.png", "--no-html", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r.png").stat().st_size > 0


def test_merge_writes_todays_names(tmp_path):
    old = old_copy(tmp_path)
    new = tmp_path / "new.h5"
    res = psmpi.map(fails_on_5, [{"a": a} for a in range(4, 7)], out=str(new), name="sweep",
                    backend="serial", verbose=0)
    assert len(res.missing) == 1
    merged = tmp_path / "merged.h5"
    proc = psmpi_cmd("merge", merged, old, new, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for table in ("results", "failures"):
        columns = stored_columns(merged, table)
        assert "_time_utc" in columns and "_t_start" not in columns and "_runtime" not in columns
    rows = psmpi.read(merged)
    assert rows["a"].tolist() == [0, 1, 2, 4, 6]  # a=4 in both files: kept once
    assert rows["_time_utc"].notna().all() and rows["_pset_runtime"].notna().all()
    old_rows = psmpi.read(old)
    pd.testing.assert_frame_equal(rows.iloc[:4], old_rows)
    failures = psmpi.read(merged, failures=True)
    assert failures["a"].tolist() == [3, 5] and failures["_time_utc"].notna().all()


def fails_on_5(pset):
    if pset["a"] == 5:
        raise ValueError("5")
    return fixed_worker(pset)

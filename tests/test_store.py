"""The HDF5 results store: round trips, schema evolution, refusals, recovery, locks, errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest

from psmpi import store
from psmpi.errors import ConfigError, InternalError, StoreError
from psmpi.store import Store


def put(table: store.Table, rows: list[dict]) -> range:
    """Admit then append ``rows``; every one must be admitted."""
    for r in rows:
        assert table.admit(r) is None, r
    return table.append(rows)


def scalar_rows() -> list[dict]:
    return [
        {"n": 1, "x": 0.5, "s": "a", "ok": True},
        {"n": np.int32(-2), "x": np.float32(1.5), "s": np.str_("été ✓"), "ok": np.bool_(False)},
        {"n": None, "x": float("nan"), "s": None, "ok": None},
        {"n": 2**62, "x": None, "ok": True},            # "s" absent
        {"n": np.uint64(7), "x": np.array(2.0), "s": np.array("0-d"), "ok": np.array(True)},  # 0-d arrays
    ]


@pytest.fixture
def tmp_store(tmp_path):
    with Store.open(tmp_path / "study.h5") as s:
        yield s


# ---------------------------------------------------------------- round trips
def test_every_scalar_kind_round_trips_like_pandas(tmp_store):
    rows = scalar_rows()
    assert put(tmp_store.table("m"), rows) == range(0, 5)
    got = tmp_store.table("m").read()
    expected = pd.DataFrame({"s": ["a", "été ✓", None, None, "0-d"]})  # absent -> None, as stored
    expected["n"] = [1.0, -2.0, np.nan, 2.0**62, 7.0]
    expected["x"] = [0.5, 1.5, np.nan, np.nan, 2.0]
    expected["ok"] = pd.Series([True, False, None, True, True], dtype=object)
    expected = expected[["n", "x", "s", "ok"]]
    pd.testing.assert_frame_equal(got, expected)
    assert got["s"].tolist()[:2] == ["a", "été ✓"] and pd.isna(got["s"][2]) and pd.isna(got["s"][3])
    assert isinstance(got.index, pd.RangeIndex)


def test_kinds_without_nulls_keep_their_dtypes(tmp_store):
    rows = [{"n": i, "x": i / 2, "s": str(i), "ok": i % 2 == 0} for i in range(5)]
    got = put(tmp_store.table("m"), rows) and tmp_store.table("m").read()
    pd.testing.assert_frame_equal(got, pd.DataFrame(rows))
    assert got.dtypes.to_dict() == pd.DataFrame(rows).dtypes.to_dict()
    assert got["n"].dtype == np.int64 and got["ok"].dtype == bool
    # nulls (None or absent) in int, float and str columns: exactly what pandas makes of the dicts
    holes = [{"n": 1, "x": 0.5, "s": "a"}, {"n": None, "x": None, "s": None}, {"s": "c"}, {"n": 4}]
    put(tmp_store.table("holes"), holes)
    pd.testing.assert_frame_equal(tmp_store.table("holes").read(), pd.DataFrame(holes))


def test_read_column_is_raw(tmp_store):
    t = tmp_store.table("m")
    put(t, [{"n": 3, "s": "x"}, {"n": None, "s": None}])
    assert t.read_column("n").tolist() == [3, 0] and t.read_column("n").dtype == np.int64
    assert t.read_column("s").tolist() == ["x", ""] and isinstance(t.read_column("s")[0], str)
    with pytest.raises(KeyError, match="no column 'nope'"):
        t.read_column("nope")


def test_new_columns_mid_run_are_null_before(tmp_store):
    t = tmp_store.table("m")
    put(t, [{"a": 1}, {"a": 2}])
    put(t, [{"a": 3, "b": "new", "c": 1.5}])
    put(t, [{"a": 4, "only_none": None}])  # a key that never had a value makes no column
    df = t.read()
    assert t.columns == ["a", "b", "c"] == list(df.columns)
    assert df["a"].tolist() == [1, 2, 3, 4]
    assert df["b"].isna().tolist() == [True, True, False, True] and df["b"][2] == "new"
    assert np.array_equal(df["c"].to_numpy(), [np.nan, np.nan, 1.5, np.nan], equal_nan=True)


def test_int_column_widens_to_float_mid_run_keeping_committed_data(tmp_path):
    path = tmp_path / "w.h5"
    big = 2**53 - 1  # exact in float64
    with Store.open(path) as s:
        t = s.table("m")
        put(t, [{"first": 0, "y": big, "z": "a"}, {"first": 1, "y": None, "z": "b"}])
        put(t, [{"first": 2, "y": 2.5, "z": "c"}, {"first": 3, "y": 4, "z": "d"}])
        df = t.read()
        assert t.columns == ["first", "y", "z"]  # widening keeps the column order
    assert df["y"].dtype == np.float64
    assert np.array_equal(df["y"].to_numpy(), [big, np.nan, 2.5, 4.0], equal_nan=True)
    with h5py.File(path, "r") as f:
        g = f["m/results"]
        assert g["columns/y"].dtype == np.float64 and g["columns/y"].attrs["kind"] == "float"
        assert list(g["columns"]) == ["first", "y", "z"] and "y" not in g.get("staging", {})
    pd.testing.assert_frame_equal(store.read(path), df)


def test_widening_of_rows_admitted_but_not_yet_appended(tmp_store):
    t = tmp_store.table("m")
    rows = [{"y": 1}, {"y": 2.5}, {"y": 3}]
    assert put(t, rows) == range(0, 3)
    assert t.read()["y"].tolist() == [1.0, 2.5, 3.0]
    assert t.admit({"y": 7}) is None  # a float column takes ints


def test_array_columns_keep_shape_and_dtype(tmp_store):
    t = tmp_store.table("m")
    a0 = np.arange(6, dtype=np.int32).reshape(2, 3)
    put(t, [{"a": a0, "v": np.array([1.0, 2.0])}, {"a": None, "v": np.array([3.0, 4.0])}, {}])
    df = t.read()
    assert df["a"].dtype == object and df["a"][1] is None and df["a"][2] is None
    assert df["a"][0].dtype == np.int32 and np.array_equal(df["a"][0], a0)
    assert t.read_column("a").shape == (3, 2, 3)
    # an int32 array column widened by a float64 value, committed values intact
    put(t, [{"a": np.full((2, 3), 0.5)}])
    df = t.read()
    assert df["a"][0].dtype == np.float64 and np.array_equal(df["a"][0], a0)
    assert np.array_equal(df["a"][3], np.full((2, 3), 0.5))
    assert t.admit({"a": np.zeros((2, 3), dtype=np.int8)}) is None  # fits: no widening
    assert tmp_store.table("m").read_column("a").dtype == np.float64


# ---------------------------------------------------------------- general columns
@pytest.mark.parametrize("value", [
    [1, 2], {"a": 1}, 1 + 2j, b"raw", np.array(["a", "b"]), np.array([1 + 1j]),
    np.zeros((0, 3)), 2**63, -(2**63) - 1,
])
def test_values_without_a_native_kind_are_stored_as_general(tmp_store, value):
    t = tmp_store.table("m")
    put(t, [{"ok": 1, "k": value}])
    got = t.read()["k"][0]
    if isinstance(value, np.ndarray):
        assert got.dtype == value.dtype and got.shape == value.shape and (got == value).all()
    else:
        assert type(got) is type(value) and got == value
    assert tmp_store.table("m").read_column("k")[0] is not None


def test_unpicklable_value_is_refused(tmp_store):
    t = tmp_store.table("m")
    message = t.admit({"ok": 1, "k": [lambda: 0]})
    assert message is not None and "\n" not in message and "'k'" in message and "pickled" in message
    assert t.columns == [] and t.admit({"ok": "str now"}) is None  # the refused row changed nothing


@pytest.mark.parametrize("first, then", [
    (1.5, "a"), (1, True), (True, 1), ("a", 1.0), (1, np.zeros(2)),
    (np.zeros(2), np.zeros(3)), (np.zeros(2), 1.0), (np.zeros(2, bool), np.zeros(2, np.int8)),
])
def test_mismatched_types_make_the_column_general_keeping_values(tmp_store, first, then):
    t = tmp_store.table("m")
    put(t, [{"y": first}])
    assert t.admit({"y": then}) is None
    t.append([{"y": then}])
    got = tmp_store.table("m").read()["y"].tolist()
    for value, back in zip((first, then), got):
        if isinstance(value, np.ndarray):
            assert back.dtype == value.dtype and np.array_equal(back, value)
        else:
            assert type(back) is type(value) and back == value


def test_admit_sees_rows_admitted_but_not_appended(tmp_store):
    t = tmp_store.table("m")
    assert t.admit({"y": 1.0}) is None
    assert t.admit({"y": "text"}) is None  # the column becomes general
    assert t.n_rows == 0


def test_append_of_unadmitted_values_is_an_internal_error(tmp_store):
    t = tmp_store.table("m")
    put(t, [{"y": 1.0}])
    with pytest.raises(InternalError, match="without admit"):
        t.append([{"z": 1}])
    with pytest.raises(InternalError, match="admit"):
        t.append([{"y": "text"}])


@pytest.mark.parametrize("key", ["a/b", "x\0y", ".", "..", "", "k" * 256])
def test_dangerous_column_keys_are_internal_errors(tmp_store, key):
    with pytest.raises(InternalError):
        tmp_store.table("m").admit({key: 1})


@pytest.mark.parametrize("name", ["a/b", "/abs", "x\0y", ".", "..", "", "k" * 256])
def test_bad_map_names_are_refused(tmp_store, name):
    with pytest.raises(ConfigError, match="name"):
        tmp_store.table(name)
    assert tmp_store.map_names() == []


# ---------------------------------------------------------------- many batches, reads
def test_many_batches_and_read_rows_order(tmp_path):
    rng = np.random.default_rng(1)
    rows, path = [], tmp_path / "many.h5"
    with Store.open(path, fsync_interval=0.0) as s:
        t = s.table("m")
        for _ in range(60):
            batch = [{"i": len(rows) + j, "f": float(rng.normal()), "s": f"s{len(rows) + j}",
                      "maybe": None if rng.random() < 0.3 else int(rng.integers(9))}
                     for j in range(int(rng.integers(1, 200)))]
            assert put(t, batch).start == len(rows)
            rows += batch
        assert t.n_rows == len(rows)
        pd.testing.assert_frame_equal(t.read(), pd.DataFrame(rows))
        pick = np.array([17, 3, len(rows) - 1, 0, 250])
        got = t.read(rows=pick, columns=["s", "i"])
        assert list(got.columns) == ["s", "i"] and isinstance(got.index, pd.RangeIndex)
        assert got["i"].tolist() == pick.tolist() and got["s"].tolist() == [f"s{k}" for k in pick]
        assert t.read(rows=np.array([], dtype=np.int64)).shape == (0, 4)
        with pytest.raises(IndexError):
            t.read(rows=[len(rows)])
    pd.testing.assert_frame_equal(store.read(path), pd.DataFrame(rows))


def test_in_memory_store_touches_no_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Store.open(None) as s:
        assert s.path is None
        put(s.table("m"), [{"a": 1, "s": "x"}])
        put(s.table("m", "failures"), [{"_kind": "exception"}])
        assert s.table("m").read()["a"].tolist() == [1]
        assert s.map_names() == ["m"]
    assert os.listdir(tmp_path) == []


def test_reopen_and_append(tmp_path):
    path = tmp_path / "r.h5"
    with Store.open(path) as s:
        put(s.table("m"), [{"a": 1, "s": "x"}])
        put(s.table("m", "failures"), [{"why": "boom"}])
    with Store.open(path) as s:
        t = s.table("m")
        assert t.n_rows == 1 and t.columns == ["a", "s"]
        assert t.read_column("a").dtype == np.int64  # the schema came back from the file
        assert put(t, [{"a": 2, "s": "y", "new": True}]) == range(1, 2)
    df = store.read(path, "m")
    assert df["a"].tolist() == [1, 2] and df["new"].tolist() == [None, True]
    assert store.read(path, failures=True)["why"].tolist() == ["boom"]


def test_uncommitted_tail_of_a_torn_batch_is_truncated_on_open(tmp_path):
    path = tmp_path / "torn.h5"
    with Store.open(path) as s:
        put(s.table("m"), [{"a": i, "s": f"s{i}", "o": None if i == 1 else i} for i in range(3)])
    with h5py.File(path, "a") as f:  # a killed writer: rows past n_committed, stale mask
        g = f["m/results"]
        for name in ("a", "s", "o"):
            g["columns"][name].resize((10,))
        g["columns/a"][3:10] = 666
        g["nulls/o"].resize((10,))
        g["nulls/o"][3:10] = True
    assert store.read(path)["a"].tolist() == [0, 1, 2]  # readers stop at n_committed...
    with h5py.File(path, "r") as f:
        assert f["m/results/columns/a"].shape == (10,)  # ...and change nothing
    with Store.open(path) as s:
        t = s.table("m")
        with h5py.File(path, "r", locking=False) as f:
            assert {ds.shape[0] for ds in f["m/results/columns"].values()} == {3}
            assert f["m/results/nulls/o"].shape == (3,)
        put(t, [{"a": 3, "s": "s3"}, {"a": 4, "s": "s4", "o": 40}])
    df = store.read(path)
    assert df["a"].tolist() == [0, 1, 2, 3, 4]
    assert np.array_equal(df["o"].to_numpy(), [0, np.nan, 2, np.nan, 40], equal_nan=True)


def test_interrupted_widening_is_seen_by_readers_and_finished_by_writers(tmp_path):
    path = tmp_path / "stage.h5"
    with Store.open(path) as s:
        put(s.table("m"), [{"a": 1, "y": 2, "z": 3}])
    with h5py.File(path, "a") as f:  # killed after the old column was deleted, before the move
        g = f["m/results"]
        staged = g.create_group("staging").create_dataset("y", data=[2.0], maxshape=(None,))
        staged.attrs["kind"] = "float"
        del g["columns/y"]
    df = store.read(path)
    assert df["y"].tolist() == [2.0] and df["y"].dtype == np.float64
    with Store.open(path) as s:
        t = s.table("m")
        put(t, [{"a": 5, "y": 6.5, "z": 7}])
    df = store.read(path)
    assert df["y"].tolist() == [2.0, 6.5]
    with h5py.File(path, "r") as f:
        assert "y" in f["m/results/columns"] and len(f["m/results/staging"]) == 0


def test_interrupted_column_creation_leaves_nothing_behind(tmp_path):
    path = tmp_path / "orphan.h5"
    with Store.open(path) as s:
        put(s.table("m"), [{"a": 1}, {"a": 2}])
    with h5py.File(path, "a") as f:  # killed after a new column's mask was made, before the column
        f["m/results/nulls"].create_dataset("c", shape=(2,), maxshape=(None,), dtype=bool, fillvalue=True)
        del f["m/results/columns/a"].attrs["kind"]  # and an attribute that never made it to disk
    with Store.open(path) as s:
        t = s.table("m")
        assert t.columns == ["a"] and t.read_column("a").dtype == np.int64  # kind from the dtype
        put(t, [{"a": 3, "c": "new"}])
    df = store.read(path)
    assert df["a"].tolist() == [1, 2, 3] and df["c"].isna().tolist() == [True, True, False]


def test_plain_h5py_reads_the_documented_layout(tmp_path):
    path = tmp_path / "plain.h5"
    with Store.open(path) as s:
        put(s.table("first"), [{"z": 1, "a": "x", "arr": np.ones(3, np.int16)}, {"z": None, "a": "y"}])
        s.table("second", "failures")
    with h5py.File(path, "r", locking=False) as f:
        assert f.attrs["psmpi_format"] == 1 and list(f) == ["first", "second"]
        m = f["first"]
        assert {"created", "psmpi_version"} <= set(m.attrs) and m.attrs["created"].endswith("+00:00")
        t = m["results"]
        n = int(t["n_committed"][()])
        assert n == 2 and t["n_committed"].dtype == np.int64
        assert list(t["columns"]) == ["z", "a", "arr"]
        assert [t["columns"][c].attrs["kind"] for c in t["columns"]] == ["int", "str", "array"]
        assert t["columns/z"][:n].tolist() == [1, 0] and t["nulls/z"][:n].tolist() == [False, True]
        assert t["columns/a"].asstr()[:n].tolist() == ["x", "y"]
        assert t["columns/arr"].dtype == np.int16 and t["columns/arr"].shape[1:] == (3,)
        assert t["nulls/arr"][:n].tolist() == [False, True]
        assert int(f["second/failures/n_committed"][()]) == 0


# ---------------------------------------------------------------- lock
def read_lock(path) -> dict:
    with open(f"{path}.lock") as fh:
        return json.load(fh)


def test_lock_file_refuses_a_second_writer_and_goes_on_close(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    path = tmp_path / "l.h5"
    s = Store.open(path)
    info = read_lock(path)
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
    assert info["slurm_job_id"] == "4242" and info["started"]
    with pytest.raises(StoreError) as err:
        Store.open(path)
    message = str(err.value)
    for part in (f"pid {os.getpid()}", f"host {socket.gethostname()}", "Slurm job 4242", "l.h5.lock",
                 "wait for it to finish"):
        assert part in message
    put(s.table("m"), [{"a": 1}])
    assert store.read(path)["a"].tolist() == [1]  # readers ignore the lock
    s.close()
    assert not os.path.exists(f"{path}.lock")
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.table("m").append([{"a": 2}])


def test_stale_lock_of_a_dead_pid_is_reclaimed_with_a_warning(tmp_path):
    path = tmp_path / "stale.h5"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(f"{path}.lock", "w") as fh:
        json.dump({"host": socket.gethostname(), "pid": dead.pid, "slurm_job_id": None,
                   "started": "2024-01-01T00:00:00+00:00"}, fh)
    with pytest.warns(UserWarning, match=f"dead pid {dead.pid}"):
        s = Store.open(path)
    assert read_lock(path)["pid"] == os.getpid()
    s.close()
    assert not os.path.exists(f"{path}.lock")


def test_lock_of_another_host_or_unreadable_is_not_reclaimed(tmp_path):
    path = tmp_path / "other.h5"
    with open(f"{path}.lock", "w") as fh:
        json.dump({"host": "node-17", "pid": 999999999, "slurm_job_id": "77", "started": "x"}, fh)
    with pytest.raises(StoreError, match="pid 999999999 on host node-17 \\(Slurm job 77\\)"):
        Store.open(path)
    with open(f"{path}.lock", "w") as fh:
        fh.write("{not json")
    with pytest.raises(StoreError, match="cannot be read.*delete"):
        Store.open(path)
    assert not os.path.exists(path)  # nothing was created


# ---------------------------------------------------------------- file errors
def test_not_an_hdf5_or_not_a_psmpi_file(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(StoreError, match="not an HDF5 file"):
        Store.open(text)
    assert not os.path.exists(f"{text}.lock")  # the lock was released
    with pytest.raises(StoreError, match="not an HDF5 file"):
        store.read(text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["data"] = [1, 2]
    with pytest.raises(StoreError, match="not a psmpi results file"):
        Store.open(other)
    with pytest.raises(StoreError, match="not a psmpi results file"):
        store.map_names(other)
    with pytest.raises(StoreError, match="does not exist"):
        store.read(tmp_path / "missing.h5")


def test_unwritable_paths_are_refused_before_anything_happens(tmp_path, monkeypatch):
    with pytest.raises(StoreError, match="mkdir -p"):
        Store.open(tmp_path / "no" / "such" / "dir" / "s.h5")
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(tmp_path / "file" / "s.h5")
    with pytest.raises(StoreError, match="is a directory"):
        Store.open(tmp_path)
    locked = tmp_path / "ro"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access",
                        lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    with pytest.raises(StoreError, match=f"{locked} is not writable"):
        Store.open(locked / "s.h5")
    assert os.listdir(locked) == []


def test_read_only_directory_for_real(tmp_path):
    """chmod for ordinary users; root writes through permissions, so a read-only mount."""
    locked = tmp_path / "ro"
    locked.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(locked)],
                       check=True)
    else:
        locked.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="not writable"):
            Store.open(locked / "s.h5")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(locked)], check=False)
        else:
            locked.chmod(0o700)


# ---------------------------------------------------------------- public readers
def test_read_chooses_the_map(tmp_path):
    path = tmp_path / "maps.h5"
    with Store.open(path) as s:
        put(s.table("alpha"), [{"a": 1}])
        put(s.table("beta"), [{"b": 2}])
        assert s.map_names() == ["alpha", "beta"]
    assert store.map_names(path) == ["alpha", "beta"]
    with pytest.raises(StoreError, match="alpha.*beta.*name="):
        store.read(path)
    with pytest.raises(StoreError, match="no map 'gamma'"):
        store.read(path, "gamma")
    assert store.read(path, "beta")["b"].tolist() == [2]
    assert store.read(path, "beta", failures=True).empty


def test_read_while_the_store_is_open_for_writing(tmp_path):
    path = tmp_path / "open.h5"
    with Store.open(path) as s:
        t = s.table("m")
        put(t, [{"a": 1}])
        assert store.read(path)["a"].tolist() == [1]
        put(t, [{"a": 2}])
        assert store.read(path)["a"].tolist() == [1, 2]
        assert os.path.exists(f"{path}.lock")


def test_fsync_interval(tmp_path, monkeypatch):
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd) or real_fsync(fd))
    with Store.open(tmp_path / "a.h5", fsync_interval=0.0) as s:
        t = s.table("m")
        put(t, [{"a": 1}])
        put(t, [{"a": 2}])
        assert len(calls) == 2  # one per append
    assert len(calls) == 3  # and one on close
    with Store.open(tmp_path / "b.h5", fsync_interval=3600) as s:
        put(s.table("m"), [{"a": 1}])
        s.flush()
        assert len(calls) == 3  # none before the interval...
        s.flush(fsync=True)
        assert len(calls) == 4  # ...unless asked
    assert len(calls) == 5


def test_strings_are_fixed_width_utf8_and_widen_without_loss(tmp_path):
    path = tmp_path / "s.h5"
    with Store.open(path) as writer:
        t = writer.table("m")
        rows = [{"s": "ab"}, {"s": "ünïcødé ✓"}, {"s": None}]
        assert all(t.admit(r) is None for r in rows)
        t.append(rows)
        long_rows = [{"s": "x" * 1000}, {"s": ""}]
        assert all(t.admit(r) is None for r in long_rows)
        t.append(long_rows)
        assert t.read()["s"].tolist()[:2] == ["ab", "ünïcødé ✓"]
    with h5py.File(path, "r", locking=False) as f:
        ds = f["m/results/columns/s"]
        assert ds.dtype.kind == "S" and ds.dtype.itemsize == 1024  # no HDF5 global heap
    back = store.read(path, name="m")["s"].tolist()
    assert back[0:2] == ["ab", "ünïcødé ✓"] and back[3:] == ["x" * 1000, ""]
    assert back[2] is None or back[2] != back[2]  # null


def test_the_writer_has_no_chunk_cache_and_readers_keep_theirs(tmp_path):
    # HDF5 2.0's default 1 MiB chunk cache made a writer's memory grow by everything it
    # wrote (benchmarks/mpi_memory.py: 1041 MiB at 10 million psets, 608 MiB without it)
    with Store.open(tmp_path / "s.h5") as s:
        put(s.table("m"), [{"a": 1}])
        assert s._file().id.get_access_plist().get_cache()[2] == 0
    with store.open_h5(str(tmp_path / "s.h5"), "r") as f:
        assert f.id.get_access_plist().get_cache()[2] > 0


def test_a_commit_calls_between_columns_before_its_rows_count(tmp_store):
    """The driver hands out groups from inside a long commit: the hook runs between the
    columns, and what it sees is the table before the commit (rows count only at its end)."""
    table = tmp_store.table("m")
    put(table, [{"a": 1, "b": 2.0}])
    seen = []
    with tmp_store.serving_between_columns(lambda: seen.append(table.n_rows)):
        assert put(table, [{"a": i, "b": i / 2, "c": "x"} for i in range(100)]) == range(1, 101)
    assert len(seen) >= 3 and set(seen) == {1}, seen  # once a column at least, none counted
    put(table, [{"a": 0}])
    assert len(seen) >= 3 and table.n_rows == 102


def test_a_table_that_commits_big_batches_gets_big_chunks(tmp_path):
    # HDF5's cost per chunk dominates commits of many rows (schema.BIG_COMMIT_ROWS);
    # the last, partly filled chunk rewritten by every append dominates small ones.
    from psmpi.store import schema
    path = tmp_path / "chunks.h5"
    big, small = schema.BIG_COMMIT_ROWS, schema.BIG_COMMIT_ROWS - 1
    with Store.open(path) as s:
        for name, k in (("big", big), ("small", small)):
            t = s.table(name)
            rows = [{"i": i, "s": f"s{i}", "b": i % 2 == 0} for i in range(k)]
            t.admit(rows[0])
            t.append(rows)
            rows = [{"i": k, "s": "x", "b": True, "later": 1.5}]  # a column made by a small commit
            t.admit(rows[0])
            t.append(rows)
    with h5py.File(path, "r") as f:
        chunk_bytes = {(name, key): ds.chunks[0] * ds.dtype.itemsize
                       for name in ("big", "small")
                       for key, ds in f[f"{name}/results/columns"].items()}
    assert chunk_bytes[("big", "i")] == 1 << 16 and chunk_bytes[("big", "s")] == 1 << 16
    assert chunk_bytes[("big", "b")] == 1 << 13  # at most 8192 rows a chunk
    assert chunk_bytes[("small", "i")] == 1 << 13 and chunk_bytes[("small", "s")] == 1 << 13
    assert chunk_bytes[("big", "later")] == chunk_bytes[("small", "later")] == 1 << 13
    assert store.read(path, "big")["i"].tolist() == list(range(big + 1))

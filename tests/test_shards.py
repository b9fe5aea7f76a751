"""One study over many jobs (issue 19): shards, merging them, and their status."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

import psmpi
from psmpi import config, layout
from psmpi.driver.sharding import Shard, _slurm_array_shard, balanced_bins, shard_for
from psmpi.errors import ConfigError, StoreError
from psmpi.store import Store, Table, check, open_h5
from psmpi.tools.shards import ranges, resubmit_line, shards_status

PSETS = [{"a": i} for i in range(23)]


@pytest.fixture(autouse=True)
def no_array(monkeypatch):
    """No enclosing job array or shard setting leaks into these tests."""
    for var in list(os.environ):
        if var.startswith(("SLURM_", "PSMPI_")):
            monkeypatch.delenv(var)


def square(pset):
    return {"y": pset["a"] ** 2, "v": np.arange(3) * pset["a"], "label": "n" * (pset["a"] % 5)}


def run_shard(out, k, n, psets=PSETS, **kwargs):
    return psmpi.map(square, psets, name="square", out=out, backend="serial", verbose=0,
                     shard=(k, n), **kwargs)


def merged_rows(path):
    df = psmpi.read(str(path), "square")
    return df.sort_values("_pset_index").reset_index(drop=True)


def assert_every_pset_once(path, psets=PSETS):
    df = merged_rows(path)
    assert df["_pset_index"].tolist() == list(range(len(psets)))
    assert df["y"].tolist() == [p["a"] ** 2 for p in psets]
    assert all(np.array_equal(v, np.arange(3) * a) for v, a in zip(df["v"], df["a"]))
    assert df["label"].tolist() == ["n" * (p["a"] % 5) for p in psets]
    assert not check(str(path)).damaged


# ------------------------------------------------------------------ which psets a shard takes
def test_shards_split_by_index_and_keep_study_indexes(tmp_path):
    out = tmp_path / "study.h5"
    got = []
    for k in range(4):
        res = run_shard(out, k, 4)
        assert res.path == str(tmp_path / f"study.shard-{k:03d}-of-004.h5")
        assert res.results["a"].tolist() == [i for i in range(23) if i % 4 == k]
        got += psmpi.read(res.path, "square")["_pset_index"].tolist()
    assert sorted(got) == list(range(23))
    assert not out.exists()


def test_shards_balanced_by_cost(tmp_path):
    costs = [float((i * 7) % 11 + 1) for i in range(23)]
    loads, got = [], []
    for k in range(3):
        res = run_shard(tmp_path / "study.h5", k, 3, cost=lambda p: costs[p["a"]])
        mine = res.results["a"].tolist()
        got += mine
        loads.append(sum(costs[a] for a in mine))
    assert sorted(got) == list(range(23))
    assert max(loads) - min(loads) <= max(costs)  # greedy longest-first is this close


def test_balanced_bins_is_longest_first_into_the_lightest_bin():
    assert balanced_bins([5, 1, 4, 3, 3], 2) == [0, 1, 1, 1, 0]
    assert balanced_bins([1.0] * 6, 3) == [0, 1, 2, 0, 1, 2]


def test_one_shard_or_none_writes_the_study_file(tmp_path):
    out = tmp_path / "study.h5"
    res = run_shard(out, 0, 1)
    assert res.path == str(out) and len(res.results) == 23
    res = psmpi.map(square, PSETS, name="square", out=out, backend="serial", verbose=0)
    assert res.progress.resumed == 23


def test_environment_wins_over_the_keyword(tmp_path, monkeypatch):
    monkeypatch.setenv("PSMPI_SHARD", "2/3")
    res = run_shard(tmp_path / "study.h5", 0, 5)
    assert res.path.endswith("study.shard-002-of-003.h5")
    assert res.results["a"].tolist() == [i for i in range(23) if i % 3 == 2]


def test_shard_setting_is_checked():
    assert config.resolve({}, {}, environ={"PSMPI_SHARD": "3/10"}).shard == (3, 10)
    assert config.resolve({}, {}, environ={"PSMPI_SHARD": "off"}).shard is False
    assert config.resolve({}, {}, environ={"PSMPI_SHARD": "array:0-9"}).shard == "array:0-9"
    with pytest.raises(ConfigError, match="PSMPI_SHARD"):
        config.resolve({}, {}, environ={"PSMPI_SHARD": "array:0"})
    with pytest.raises(ConfigError, match="PSMPI_SHARD"):
        config.resolve({}, {}, environ={"PSMPI_SHARD": "10/10"})
    with pytest.raises(ConfigError, match="PSMPI_SHARD"):
        config.resolve({}, {}, environ={"PSMPI_SHARD": "three"})
    with pytest.raises(ConfigError, match="shard"):
        config.check_kwargs({"shard": (1, 0)}, "map()")


@pytest.mark.parametrize("env,expected", [
    ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "99",
      "SLURM_ARRAY_TASK_COUNT": "100"}, (7, 100, 0, 1)),
    ({"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_MAX": "13"},
     (2, 4, 10, 1)),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}, (3, 4, 0, 1)),
    ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "6",
      "SLURM_ARRAY_TASK_COUNT": "4"}, (2, 4, 0, 2)),
])
def test_slurm_job_array_task_is_a_shard(env, expected):
    shard = _slurm_array_shard(env)
    assert (shard.k, shard.n, shard.array_min, shard.array_step) == expected


def test_slurm_array_uneven_indexes_are_refused_and_off_switches_it_off():
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "9",
           "SLURM_ARRAY_TASK_COUNT": "3"}  # --array=1,5,9 is even: fine
    assert _slurm_array_shard(env).k == 1
    env["SLURM_ARRAY_TASK_MAX"] = "8"  # --array=1,5,8
    with pytest.raises(ConfigError, match="PSMPI_SHARD=k/n"):
        _slurm_array_shard(env)
    assert shard_for(False, env) is None
    env["SLURM_ARRAY_TASK_ID"] = "12"  # a resubmitted part of the array 10-13
    assert shard_for("array:10-13", env) == Shard(2, 4, 10, 1)
    assert shard_for("array:0-6:2", {"SLURM_ARRAY_TASK_ID": "4"}) == Shard(2, 4, 0, 2)
    with pytest.raises(ConfigError, match="not one"):
        shard_for("array:0-3", {})
    with pytest.raises(ConfigError, match="PSMPI_SHARD=k/n"):
        shard_for("array:0-3", {"SLURM_ARRAY_TASK_ID": "4"})
    assert shard_for(None, {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "1"}) is None


# ------------------------------------------------------------------ merging
def test_merge_every_pset_once_and_incrementally(tmp_path):
    out = tmp_path / "study.h5"
    run_shard(out, 0, 3)
    run_shard(out, 2, 3, limit=3)  # a straggler: stopped after 3 of its psets
    assert psmpi.merge_shards(str(out)) == {"square": 8 + 3}
    assert psmpi.merge_shards(str(out)) == {}  # nothing new
    run_shard(out, 1, 3)
    run_shard(out, 2, 3)  # the straggler resumed
    assert psmpi.merge_shards(str(out)) == {"square": 8 + 4}
    assert_every_pset_once(out)
    [summary] = psmpi.status(str(out))
    assert (summary.total, summary.done, summary.remaining) == (23, 23, 0)
    with h5py.File(out, "r") as f:
        assert json.loads(f["square"].attrs[layout.MERGED_SHARDS_ATTR]) == {
            "0": [8, 0], "1": [8, 0], "2": [7, 0]}


def test_merge_keeps_failures_and_pickled_and_general_values(tmp_path):
    def worker(pset):
        if pset["a"] == 5:
            raise ValueError("five")
        return {"g": {"k": [pset["a"]]}, "r": np.ones(pset["a"] % 3)}

    out = tmp_path / "study.h5"
    for k in range(2):
        psmpi.map(worker, PSETS, name="square", out=out, backend="serial", verbose=0,
                  shard=(k, 2))
    psmpi.merge_shards(str(out))
    df = merged_rows(out)
    assert df["_pset_index"].tolist() == [i for i in range(23) if i != 5]
    assert [g["k"][0] for g in df["g"]] == df["a"].tolist()
    assert [len(r) for r in df["r"]] == [a % 3 for a in df["a"]]
    fails = psmpi.failures(str(out))["square"]
    assert fails["_pset_index"].tolist() == [5]


def test_merge_falls_back_to_rows_where_the_shards_columns_differ(tmp_path):
    """One shard stored ints, the other floats and longer strings: the merge widens."""
    def worker(pset):
        a = pset["a"]
        return {"y": a if a % 2 == 0 else a + 0.5, "s": "x" * (1 if a % 2 == 0 else 40)}

    psets = [{"a": i} for i in range(10)]
    out = tmp_path / "study.h5"
    for k in range(2):
        psmpi.map(worker, psets, name="square", out=out, backend="serial", verbose=0,
                  shard=(k, 2))
    psmpi.merge_shards(str(out))
    df = merged_rows(out)
    assert df["y"].tolist() == [a if a % 2 == 0 else a + 0.5 for a in range(10)]
    assert [len(s) for s in df["s"]] == [1 if a % 2 == 0 else 40 for a in range(10)]


def test_merge_refuses_shards_of_another_study(tmp_path):
    out = tmp_path / "study.h5"
    run_shard(out, 0, 2)
    run_shard(out, 1, 2, psets=PSETS[:-1])  # other psets
    with pytest.raises(StoreError, match="different study"):
        psmpi.merge_shards(str(out))
    os.remove(tmp_path / "study.shard-001-of-002.h5")
    run_shard(out, 1, 3)  # another shard count
    with pytest.raises(StoreError, match="2 and 3 shards"):
        psmpi.merge_shards(str(out))


def test_merge_refuses_adding_another_studys_shards_to_a_merged_file(tmp_path):
    out = tmp_path / "study.h5"
    run_shard(out, 0, 2)
    run_shard(out, 1, 2)
    psmpi.merge_shards(str(out))
    for k in range(2):
        os.remove(tmp_path / f"study.shard-{k:03d}-of-002.h5")
        run_shard(out, k, 2, psets=PSETS + [{"a": 99}])
    with pytest.raises(StoreError, match="different study"):
        psmpi.merge_shards(str(out))


def test_merge_without_shards_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no shard files"):
        psmpi.merge_shards(str(tmp_path / "study.h5"))


def test_append_from_copies_columns_as_stored(tmp_path):
    rows = [{"a": i, "s": "x" * (i % 5), "g": [i] if i % 3 else None, "r": np.arange(i % 4.0),
             "f": None if i % 7 == 0 else 1.5 * i} for i in range(50)]
    with Store.open(tmp_path / "s.h5") as store:
        t = store.table("m")
        assert all(t.admit(r) is None for r in rows)
        t.append(rows)
    with Store.open(tmp_path / "t.h5") as store:
        t = store.table("m")
        assert all(t.admit(r) is None for r in rows[:5])
        t.append(rows[:5])
        with open_h5(str(tmp_path / "s.h5"), "r") as f:
            source = Table(f["m/results"])
            assert t.append_from(source, 10, 30) == range(5, 25)
            assert t.append_from(source, 30, 99) == range(25, 45)
    got = psmpi.read(str(tmp_path / "t.h5"), "m")
    want = psmpi.read(str(tmp_path / "s.h5"), "m")
    for col in want.columns:
        for x, y in zip(want[col].iloc[10:], got[col].iloc[5:]):
            assert np.array_equal(x, y) or (x != x and y != y) or x == y, col
    assert not check(str(tmp_path / "t.h5")).damaged


# ------------------------------------------------------------------ status and the CLI
def test_status_shows_every_shard_and_the_resubmit_line(tmp_path, monkeypatch):
    out = tmp_path / "study.h5"
    env = {"SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_MAX": "13",
           "SLURM_ARRAY_TASK_COUNT": "4", "PSMPI_JOB_SCRIPT": "array.sbatch study.py"}
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    for task, limit in ((10, 0), (12, 2)):
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(task))
        psmpi.map(square, PSETS, name="square", out=out, backend="serial", verbose=0,
                  limit=limit)
    states = shards_status(str(out))
    assert [s.state for s in states] == ["done", "missing", "incomplete", "missing"]
    line = "sbatch --array=11-13 --export=ALL,PSMPI_SHARD=array:10-13 array.sbatch study.py"
    assert resubmit_line(states) == line
    proc = subprocess.run([sys.executable, "-m", "psmpi", "status", str(out)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert line in proc.stdout
    assert "8 done, 0 failed, 15 left of 23" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "psmpi", "merge", str(out)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(psmpi.read(str(out), "square")) == 8


def test_resubmit_without_an_array_names_the_shard_settings():
    states = [Shard(0, 2), Shard(1, 2)]
    from psmpi.tools.shards import ShardState
    shards = [ShardState(s.k, s.n, f"f{s.k}", st, []) for s, st in zip(states, ("done", "missing"))]
    assert resubmit_line(shards) == "run them again with PSMPI_SHARD=1/2"
    assert ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


def test_append_from_widens_a_narrower_str_column(tmp_path):
    with Store.open(tmp_path / "s.h5") as store:
        t = store.table("m")
        rows = [{"s": "long" * 20, "i": i} for i in range(3)]
        assert all(t.admit(r) is None for r in rows)
        t.append(rows)
    with Store.open(tmp_path / "t.h5") as store:
        t = store.table("m")
        assert t.admit({"s": "ab", "i": -1}) is None
        t.append([{"s": "ab", "i": -1}])
        with open_h5(str(tmp_path / "s.h5"), "r") as f:
            assert t.append_from(Table(f["m/results"]), 0, 3) == range(1, 4)
            t2 = Table(f["m/results"])
        assert t2.n_rows == 3
    got = psmpi.read(str(tmp_path / "t.h5"), "m")
    assert got["s"].tolist() == ["ab"] + ["long" * 20] * 3 and got["i"].tolist() == [-1, 0, 1, 2]


def test_append_from_refuses_other_columns_and_writes_nothing(tmp_path):
    with Store.open(tmp_path / "s.h5") as store:
        t = store.table("m")
        assert t.admit({"x": 1.5}) is None
        t.append([{"x": 1.5}])
    with Store.open(tmp_path / "t.h5") as store:
        t = store.table("m")
        assert t.admit({"x": 1}) is None  # an int column: another kind
        t.append([{"x": 1}])
        with open_h5(str(tmp_path / "s.h5"), "r") as f:
            assert t.append_from(Table(f["m/results"]), 0, 1) is None
        assert t.n_rows == 1


def test_merge_of_inputs_keeps_a_hash_as_often_as_the_source_with_most_copies():
    """psmpi.merge's deduplication, now in numpy: n copies in one source, m in another,
    max(n, m) kept."""
    from psmpi.tools.merging import _Dedup

    dedup = _Dedup()
    hashes = [[b"b", b"a", b"b"], [b"b", b"b", b"b", b"c"], [b"a", b"c", b"a"], []]
    keep = [dedup.results(np.array(h, "S32"), k).tolist() for k, h in enumerate(hashes)]
    assert keep == [[True, True, True], [False, False, True, True], [False, False, True], []]
    assert dict(zip(dedup.present.hashes.tolist(), dedup.present.counts.tolist())) == {
        b"a": 2, b"b": 3, b"c": 1}


def test_shards_of_a_generator_know_their_length_once_complete(tmp_path):
    out = tmp_path / "study.h5"
    for k in range(2):
        res = psmpi.map(square, ({"a": i} for i in range(9)), name="square", out=out,
                        backend="serial", verbose=0, shard=(k, 2))
        assert res.results["a"].tolist() == list(range(k, 9, 2))
    states = shards_status(str(out))
    assert [s.state for s in states] == ["done", "done"]
    assert [s.maps[0].total for s in states] == [5, 4]
    assert states[0].study_psets == {"square": 9}
    psmpi.merge_shards(str(out))
    [summary] = psmpi.status(str(out))
    assert (summary.total, summary.done, summary.remaining) == (9, 9, 0)


def test_a_generator_shard_stopped_by_limit_stays_incomplete(tmp_path):
    out = tmp_path / "study.h5"
    psmpi.map(square, ({"a": i} for i in range(9)), name="square", out=out, backend="serial",
              verbose=0, shard=(0, 2), limit=2)
    assert shards_status(str(out))[0].state == "incomplete"


def test_status_tells_failed_and_running_shards_and_prints_json(tmp_path):
    from psmpi.store.lock import release_lock, take_lock

    def worker(pset):
        if pset["a"] == 1:
            raise ValueError("one")
        return {"y": 1}

    out = tmp_path / "study.h5"
    for k in range(3):
        psmpi.map(worker, PSETS, name="square", out=out, backend="serial", verbose=0,
                  shard=(k, 3))
    lock = take_lock(str(tmp_path / "study.shard-002-of-003.h5"))  # as a running survey
    try:
        states = shards_status(str(out))
        assert [s.state for s in states] == ["done", "failed", "running"]
        assert resubmit_line(states) is None
        proc = subprocess.run([sys.executable, "-m", "psmpi", "status", "--json", str(out)],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
    finally:
        release_lock(lock)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [s["state"] for s in report["shards"]] == ["done", "failed", "running"]
    assert report["overall"]["square"] == {"done": 22, "failed": 1, "total": 23, "left": 0}
    assert report["resubmit"] is None


def test_merge_skips_a_map_a_shard_created_but_never_wrote(tmp_path):
    out = tmp_path / "study.h5"
    run_shard(out, 0, 2)
    with Store.open(tmp_path / "study.shard-001-of-002.h5") as store:
        store.table("square")  # killed before its attributes and first commit
    assert psmpi.merge_shards(str(out)) == {"square": 12}
    with Store.open(tmp_path / "study.shard-001-of-002.h5") as store:
        t = store.table("square")
        assert t.admit({"y": 1}) is None
        t.append([{"y": 1}])
    with pytest.raises(StoreError, match="not written as a shard"):
        psmpi.merge_shards(str(out))

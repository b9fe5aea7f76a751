"""The behaviour contract every backend must meet.

Each ``check_*`` function takes the backend name and a scratch directory and raises
AssertionError on a violation. ``tests/test_contract.py`` runs them under pytest for the
in-process backends; ``tests/run_contract.py`` runs them as a script, which is how they run
under ``mpiexec -n K`` (code after init() runs on rank 0 only).
"""

from __future__ import annotations

import datetime
import functools
import math
import os
import threading
import uuid

import numpy as np
import pandas as pd

import psmpi


def multiply(pset):
    return {"y": pset["a"] * pset["b"]}


def three_args(pset, system_kwargs, user_kwargs):
    return {"y": pset["a"] * user_kwargs["factor"], "seen_index": system_kwargs["pset_index"]}


def fail_on_odd(pset):
    if pset["a"] % 2:
        raise ValueError(f"odd a={pset['a']}")
    return {"y": pset["a"]}


def bad_returns(pset):
    kind = pset["kind"]
    if kind == "ok":
        return {"y": 1.5}
    if kind == "list":
        return [1, 2]
    if kind == "clash":
        return {"kind": "x"}
    if kind == "unstorable":
        return {"y": "\ud800"}  # a lone surrogate: UTF-8 cannot encode it
    if kind == "rich":
        return {"y": [1, 2, 3]}  # stored: the column becomes general
    if kind == "unpicklable":
        return {"y": threading.Lock()}
    if kind == "unloadable":
        return {"y": Unloadable()}
    return None


def _refuse(*args):
    raise RuntimeError("this object refuses to be unpickled")


class Unloadable:
    """Pickles fine, fails when unpickled: the driver must not crash on it."""

    def __reduce__(self):
        return (_refuse, ())


def typed(pset):
    i = pset["i"]
    return {
        "f": i / 2, "n": i * 3, "flag": i % 2 == 0, "s": f"row-{i}" * (i + 1),
        "maybe": None if i == 1 else float(i),
        "arr": np.arange(6, dtype=np.int32).reshape(2, 3) + i,
        "vec": np.linspace(0, 1, 4) * i,
    }


def run(backend, tmp, psets, worker=multiply, **kwargs):
    kwargs.setdefault("out", os.path.join(tmp, "study.h5"))
    kwargs.setdefault("verbose", 0)
    return psmpi.map(worker, psets, backend=backend, **kwargs)


def check_product_rows_in_order(backend, tmp):
    psets = psmpi.params.product({"a": [1, 2, 3]}, {"b": [10, 20]})
    res = run(backend, tmp, psets, name="product")
    assert len(res) == 6
    assert list(res.results.columns) == ["a", "b", "y"]
    assert res.results["y"].tolist() == [10, 20, 20, 40, 30, 60]
    assert [r.y for r in res.itertuples()] == [10, 20, 20, 40, 30, 60]
    assert next(res.iterdicts()) == {"a": 1, "b": 10, "y": 10}
    assert res.progress.finished == 6 and res.progress.total == 6
    assert res.progress.failures == 0 and res.progress.active == 0
    assert len(res.missing) == 0
    stored = psmpi.read(res.path, name="product")
    assert len(stored) == 6 and sorted(stored["y"]) == sorted(res.results["y"])


def check_three_argument_worker(backend, tmp):
    psets = [{"a": a} for a in range(5)]
    res = run(backend, tmp, psets, worker=three_args, user_kwargs={"factor": 7}, name="three")
    assert res.results["y"].tolist() == [0, 7, 14, 21, 28]
    assert res.results["seen_index"].tolist() == [0, 1, 2, 3, 4]


def check_exceptions_become_missing(backend, tmp):
    psets = [{"a": a} for a in range(10)]
    res = run(backend, tmp, psets, worker=fail_on_odd, name="odd")
    assert res.results["a"].tolist() == [0, 2, 4, 6, 8]
    missing = res.missing.to_df()
    assert missing["a"].tolist() == [1, 3, 5, 7, 9]
    assert (missing["_kind"] == "exception").all()
    assert missing["_exception"].iloc[0] == "ValueError: odd a=1"
    assert "raise ValueError" in missing["_traceback"].iloc[0]
    assert missing["_host"].iloc[0]
    assert str(missing["_time_utc"].dtype) == "datetime64[ns, UTC]" and missing["_time_utc"].notna().all()
    assert res.progress.failures == 5 and res.progress.exceptions == 5
    assert res.missing.to_psets() == [{"a": a} for a in (1, 3, 5, 7, 9)]
    # re-running the missing psets with a fixed worker completes the map
    again = run(backend, tmp, res.missing.to_psets(), worker=lambda p: {"y": -p["a"]}, name="odd")
    assert again.results["y"].tolist() == [-1, -3, -5, -7, -9]
    assert len(psmpi.read(res.path, name="odd")) == 10


def check_bad_results_fail_one_pset(backend, tmp):
    kinds = ["ok", "list", "clash", "unstorable", "unpicklable", "unloadable", "rich", "none", "ok"]
    res = run(backend, tmp, [{"kind": k} for k in kinds], worker=bad_returns, name="bad")
    assert res.results["kind"].tolist() == ["ok", "rich", "none", "ok"]
    assert res.results["y"].tolist()[:2] == [1.5, [1, 2, 3]]
    got = dict(zip(res.missing.df["kind"], res.missing.df["_kind"]))
    assert got == {"list": "bad_result", "clash": "bad_result", "unstorable": "unstorable",
                   "unpicklable": "unpicklable", "unloadable": "unpicklable"}, got
    messages = dict(zip(res.missing.df["kind"], res.missing.df["_exception"]))
    assert "must return a dict" in messages["list"]
    assert "clashes" in messages["clash"]


def updated_pset(pset):
    """psweep's pattern: the pset with the results added, some values as numpy scalars."""
    out = {**pset, "a": np.int64(pset["a"]), "x": float(pset["x"]), "y": pset["a"] * 2}
    if pset["a"] == 3:
        out["v"] = np.arange(2) + pset["a"]  # an array: this group goes row by row
    if pset["a"] == 4:
        out["a"] = 40  # a changed pset value fails its pset
    return out


def check_returning_the_updated_pset(backend, tmp):
    """A result repeating pset keys with equal values is stored once; a changed value fails."""
    nan = float("nan")
    columns = run(backend, tmp, [{"a": a, "x": nan} for a in (1, 2)], worker=updated_pset,
                  name="updated-columns", group_size=2)
    rows = run(backend, tmp, [{"a": a, "x": 0.5} for a in (3, 4, 5)], worker=updated_pset,
               name="updated-rows", group_size=3)
    assert list(columns.results.columns) == ["a", "x", "y"], columns.results
    assert columns.results["y"].tolist() == [2, 4] and columns.results["x"].isna().all()
    assert rows.results["a"].tolist() == [3, 5] and rows.results["y"].tolist() == [6, 10]
    assert list(rows.results.columns) == ["a", "x", "y", "v"], rows.results
    assert rows.missing.df["_kind"].tolist() == ["bad_result"]
    message = rows.missing.df["_exception"].iloc[0]
    assert "'a'" in message and "40" in message and "4 (int)" in message, message
    stored = psmpi.read(rows.path, name="updated-rows")
    assert sorted(stored["a"]) == [3, 5] and stored.columns.tolist().count("a") == 1


def fails_unless_fixed(pset):
    if not pset.get("fixed"):
        raise ValueError("not fixed")
    return {"seen": repr(sorted(pset.items()))}


def seen_pset(pset):
    return {"seen": repr(sorted(pset.items()))}


def check_rerun_of_missing_is_exact(backend, tmp):
    """map(worker, results.missing) reruns the failed psets as given: None, NaN, absent keys."""
    psets = [{"a": 1, "b": None, "s": "x"}, {"a": 2, "s": None}, {"a": 3, "b": float("nan")},
             {"a": 4, "b": 2.5, "s": "z", "fixed": True}]
    first = run(backend, tmp, psets, worker=fails_unless_fixed, name="rerun")
    assert isinstance(first.missing, pd.DataFrame) and len(first.missing) == 3
    again = run(backend, tmp, first.missing, worker=seen_pset, name="rerun")
    assert again.stats.computed == 3 and len(again.missing) == 0
    assert again.results["seen"].tolist() == [repr(sorted(p.items())) for p in psets[:3]]
    stored = psmpi.read(again.path, name="rerun")
    assert sorted(stored["_pset_hash"]) == sorted(psmpi.params.pset_hash(p) for p in psets)


def check_resume_computes_only_missing(backend, tmp):
    psets = [{"a": a, "b": 1} for a in range(20)]
    first = run(backend, tmp, psets[:12], name="resume")
    assert first.progress.resumed == 0 and len(first) == 12
    again = run(backend, tmp, psets, name="resume")
    assert again.progress.resumed == 12
    assert again.stats.computed == 8
    assert again.results["a"].tolist() == list(range(20))
    assert len(psmpi.read(again.path, name="resume")) == 20


def check_identical_psets_are_separate(backend, tmp):
    res = run(backend, tmp, [{"a": 3, "b": 0.5}] * 5, name="dupes")
    assert len(res) == 5
    res = run(backend, tmp, [{"a": 3, "b": 0.5}] * 7, name="dupes")
    assert res.progress.resumed == 5 and res.stats.computed == 2 and len(res) == 7
    assert len(psmpi.read(res.path, name="dupes")) == 7


def check_empty_psets(backend, tmp):
    res = run(backend, tmp, [], name="empty")
    assert len(res) == 0 and len(res.missing) == 0 and res.progress.total == 0


def check_limit(backend, tmp):
    res = run(backend, tmp, [{"a": a, "b": 2} for a in range(10)], limit=3, name="limited")
    assert res.results["a"].tolist() == [0, 1, 2]


def check_lambda_and_closure_workers(backend, tmp):
    offset = 100
    res = run(backend, tmp, [{"a": 1}, {"a": 2}], worker=lambda p: {"y": p["a"] + offset},
              name="lam")
    assert res.results["y"].tolist() == [101, 102]


def check_types_round_trip(backend, tmp):
    res = run(backend, tmp, [{"i": i} for i in range(4)], worker=typed, name="typed")
    df = res.results
    assert df["f"].dtype == np.float64 and df["n"].dtype == np.int64
    assert df["flag"].dtype == bool and df["flag"].tolist() == [True, False, True, False]
    assert df["s"].tolist() == [f"row-{i}" * (i + 1) for i in range(4)]
    assert math.isnan(df["maybe"].iloc[1]) and df["maybe"].iloc[3] == 3.0
    assert df["arr"].iloc[2].dtype == np.int32 and df["arr"].iloc[2].shape == (2, 3)
    assert (df["arr"].iloc[2] == np.arange(6).reshape(2, 3) + 2).all()
    assert np.allclose(df["vec"].iloc[3], np.linspace(0, 1, 4) * 3)
    back = psmpi.read(res.path, name="typed").sort_values("_pset_index")
    assert back["n"].tolist() == df["n"].tolist()
    assert back["s"].tolist() == df["s"].tolist()


class Opaque:
    """No portable encoding: stored as its pickle."""

    def __init__(self, n):
        self.n = n

    def __eq__(self, other):
        return isinstance(other, Opaque) and other.n == self.n


def rich(pset):
    i = pset["i"]
    return {
        "nested": {"a": [1, (2.5, None)], "b": {"c": "x" * i}},
        "mixed": i if i % 2 else f"s{i}",            # int here, str there
        "ragged": np.arange(i + 1, dtype=np.int16),   # shape changes from row to row
        "z": complex(i, -i), "raw": bytes([i, 0, 255]),
        "when": datetime.datetime(2024, 1, 1 + i, tzinfo=datetime.timezone.utc),
        "big": 2**53 + i if i == 2 else 0.5,          # int beyond float64 exactness, float
        "long": "é" * 3000 if i == 1 else "short",    # longer than a fixed-width str column
        "np": np.float32(i) if i % 2 else np.uint64(2**64 - 1),
        "opaque": Opaque(i),
    }


def check_rich_values_round_trip(backend, tmp):
    import warnings

    psets = [{"i": i} for i in range(4)]
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        res = run(backend, tmp, psets, worker=rich, name="rich")
    assert len(res.missing) == 0
    # psmpi never unpickles from a file unless asked: pickled values come back as bytes
    opaque = psmpi.read(res.path, name="rich").sort_values("i")["opaque"]
    assert res.results.sort_values("i")["opaque"].tolist() == opaque.tolist()
    assert all(isinstance(v, bytes) for v in opaque)
    for df in (res.results.drop(columns="opaque"), psmpi.read(res.path, name="rich", unpickle=True)):
        df = df.sort_values("i").reset_index(drop=True)
        for i, row in df.iterrows():
            want = {k: v for k, v in rich({"i": i}).items() if k in df}
            for key, value in want.items():
                got = row[key]
                if isinstance(value, np.ndarray):
                    assert got.dtype == value.dtype and np.array_equal(got, value), (key, got)
                else:
                    assert type(got) is type(value) and got == value, (key, got, value)


def check_generator_and_dataframe_psets(backend, tmp):
    gen = ({"a": a, "b": 2} for a in range(4))
    res = run(backend, tmp, gen, name="gen")
    assert res.results["y"].tolist() == [0, 2, 4, 6]
    frame = pd.DataFrame({"a": [1, 2], "b": [5, 6]})
    res = run(backend, tmp, frame, name="frame")
    assert res.results["y"].tolist() == [5, 12]


def check_group_size_and_many_psets(backend, tmp):
    psets = [{"a": a, "b": 3} for a in range(1000)]
    res = run(backend, tmp, psets, group_size=7, name="many")
    assert res.results["y"].tolist() == [3 * a for a in range(1000)]
    res = run(backend, tmp, psets, name="many-adaptive", out=None)
    assert res.results["y"].tolist() == [3 * a for a in range(1000)]
    assert res.path is None


def check_multistage(backend, tmp):
    stage1 = run(backend, tmp, psmpi.params.product({"a": [1, 2]}, {"b": [3]}), name="stage1")
    stage2_psets = psmpi.params.product(stage1.results[["a", "y"]], {"c": [10, 20]})
    stage2 = run(backend, tmp, stage2_psets, worker=lambda p: {"z": p["y"] * p["c"]},
                 name="stage2")
    assert stage2.results["z"].tolist() == [30, 60, 60, 120]


def check_keep_results_false(backend, tmp):
    res = run(backend, tmp, [{"a": 1, "b": 2}], keep_results=False, name="nokeep")
    assert len(res) == 0
    assert psmpi.read(res.path, name="nokeep")["y"].tolist() == [2]




class Model:
    """A worker as a method, a classmethod, a staticmethod or the instance itself."""

    scale = 10

    def __init__(self, offset):
        self.offset = offset

    def run(self, pset):
        if pset["a"] < 0:
            raise ValueError("negative a")
        return {"y": pset["a"] + self.offset}

    def __call__(self, pset):
        return {"y": pset["a"] * 2 + self.offset}

    @classmethod
    def scaled(cls, pset):
        return {"y": pset["a"] * cls.scale}

    @staticmethod
    def negated(pset):
        return {"y": -pset["a"]}


def add_to_a(pset, amount):
    return {"y": pset["a"] + amount}


def check_callable_workers(backend, tmp):
    """Every kind of callable works as a worker, on every backend."""
    psets = [{"a": 1}, {"a": 2}]
    workers = {"bound": (Model(100).run, [101, 102]), "instance": (Model(5), [7, 9]),
               "classmethod": (Model.scaled, [10, 20]), "staticmethod": (Model.negated, [-1, -2]),
               "staticmethod-object": (Model.__dict__["negated"], [-1, -2]),
               "partial": (functools.partial(add_to_a, amount=3), [4, 5]),
               "partial-of-bound": (functools.partial(Model(7).run), [8, 9])}
    for name, (worker, expected) in workers.items():
        res = run(backend, tmp, psets, worker=worker, name=name)
        assert res.results["y"].tolist() == expected, (name, res.results, res.missing.df)
    failed = run(backend, tmp, [{"a": -1}], worker=Model(0).run, name="bound-fails")
    assert failed.missing.df["_exception"].tolist() == ["ValueError: negative a"]
    assert 'raise ValueError("negative a")' in failed.missing.df["_traceback"].iloc[0]
    # builtins: dict.clear returns None (a row of the pset alone); len returns no dict
    cleared = run(backend, tmp, psets, worker=dict.clear, name="builtin")
    assert cleared.results.to_dict("records") == psets
    counted = run(backend, tmp, psets, worker=len, name="builtin-len")
    assert counted.missing.df["_kind"].tolist() == ["bad_result"] * 2


def unencodable_strings(pset):
    """Results whose key or value UTF-8 cannot encode (a lone surrogate), by pset["how"]."""
    how = pset["how"]
    if how == "key":
        return {"y\udcff": 1}
    if how == "value":
        return {"s": "x\udcff"}
    return {"y": 2, "s": "fine"}


def check_unencodable_result_keys_fail_their_pset(backend, tmp):
    """A lone surrogate in a result key or value fails its pset (unstorable), not the map."""
    every_key = run(backend, tmp, [{"how": "key", "i": i} for i in range(6)],
                    worker=unencodable_strings, name="keys")  # one layout: the column path
    every_value = run(backend, tmp, [{"how": "value", "i": i} for i in range(6)],
                      worker=unencodable_strings, name="values")
    hows = ["ok", "key", "value"] * 3
    mixed = run(backend, tmp, [{"how": h, "i": i} for i, h in enumerate(hows)],
                worker=unencodable_strings, name="mixed")
    for res in (every_key, every_value):
        assert len(res) == 0, res.results
        assert res.missing.df["_kind"].tolist() == ["unstorable"] * 6, res.missing.df
    assert mixed.results["i"].tolist() == [0, 3, 6] and mixed.results["y"].tolist() == [2] * 3
    assert mixed.missing.df["how"].tolist() == ["key", "value"] * 3
    assert set(mixed.missing.df["_kind"]) == {"unstorable"}
    message = every_key.missing.df["_exception"].iloc[0]
    assert "'y\\udcff'" in message and "UTF-8 cannot encode" in message, message
    assert "rename" in message, message
    stored = psmpi.read(mixed.path, name="mixed", failures=True)
    assert sorted(stored["_pset_index"]) == [1, 2, 4, 5, 7, 8]
    assert sorted(psmpi.read(mixed.path, name="mixed")["i"]) == [0, 3, 6]


def int_result(pset):
    return {"y": pset["a"] * 2}


def str_result(pset):
    return {"y": f"text {pset['a']}"}


def check_changed_study_on_resume(backend, tmp):
    first = run(backend, tmp, [{"a": a} for a in range(6)], worker=int_result, name="changed")
    assert first.progress.stale == 0
    # three psets removed, two added: the new ones are computed, the removed ones reported
    again = run(backend, tmp, [{"a": a} for a in (0, 1, 2, 10, 11)], worker=int_result,
                name="changed")
    assert again.progress.resumed == 3 and again.stats.computed == 2
    assert again.progress.stale == 3
    assert again.results["a"].tolist() == [0, 1, 2, 10, 11]
    assert len(psmpi.read(again.path, name="changed")) == 8  # nothing removed from the file
    # a changed result type makes the column general: every value kept as it came
    mixed = run(backend, tmp, [{"a": 20}], worker=str_result, name="changed")
    assert len(mixed) == 1 and len(mixed.missing) == 0
    back = psmpi.read(again.path, name="changed")
    assert len(back) == 9 and back["y"].iloc[-1] == str_result({"a": 20})["y"]
    assert all(type(y) is int for y in back["y"].iloc[:-1])


def writes_to_calc_dir(pset, system_kwargs, user_kwargs):
    here = psmpi.context()
    os.makedirs(here.calc_dir)  # fails if two psets were given the same directory
    with open(os.path.join(here.calc_dir, "out.txt"), "w") as f:
        f.write(str(pset["a"]))
    return {"seen_id": here.pset_id, "kw_id": system_kwargs["pset_id"],
            "seen_run": here.run_id, "seen_hash": here.pset_hash}


def is_uuid4(text):
    return str(uuid.UUID(text)) == text and uuid.UUID(text).version == 4


def check_bookkeeping_columns(backend, tmp):
    calc = os.path.join(tmp, "calc")
    psets = [{"a": a} for a in range(6)]
    began = pd.Timestamp.now(tz="UTC")
    first = run(backend, tmp, psets[:4], worker=writes_to_calc_dir, name="books", calc_dir=calc)
    ended = pd.Timestamp.now(tz="UTC")
    stored = psmpi.read(first.path, name="books")
    assert len(set(stored["_run_id"])) == 1 and set(stored["_run_seq"]) == {0}
    assert sorted(stored["_pset_seq"]) == [0, 1, 2, 3]
    assert stored["_pset_id"].is_unique and (stored["_pset_id"] == stored["seen_id"]).all()
    assert all(is_uuid4(i) for i in stored["_pset_id"])
    assert not any(stored["_run_id"].iloc[0] in i.replace("-", "") for i in stored["_pset_id"])
    # psweep's names: _time_utc a UTC datetime when read, _pset_runtime seconds
    assert str(stored["_time_utc"].dtype) == "datetime64[ns, UTC]"
    assert stored["_time_utc"].between(began, ended).all()
    assert (stored["_pset_runtime"] >= 0).all() and stored["_pset_runtime"].dtype == float
    assert not {"_t_start", "_runtime"} & set(stored.columns)
    assert (stored["kw_id"] == stored["seen_id"]).all()
    assert (stored["_run_id"] == stored["seen_run"]).all()
    assert (stored["_pset_hash"] == stored["seen_hash"]).all()
    for row in stored.to_dict("records"):
        assert row["_calc_dir"] == os.path.join(calc, row["_pset_id"])
        with open(os.path.join(row["_calc_dir"], "out.txt")) as f:
            assert f.read() == str(row["a"])
    # resuming: old rows keep their ids, the new ones get the next run and pset numbers
    second = run(backend, tmp, psets, worker=writes_to_calc_dir, name="books", calc_dir=calc)
    assert second.progress.resumed == 4 and second.stats.computed == 2
    stored = psmpi.read(second.path, name="books")
    assert sorted(stored["_run_seq"]) == [0, 0, 0, 0, 1, 1]
    assert sorted(stored["_pset_seq"]) == list(range(6)) and stored["_pset_id"].is_unique


def check_repeat_computes_again_under_new_ids(backend, tmp):
    psets = [{"a": a, "b": 2} for a in range(5)]
    first = run(backend, tmp, psets, name="repeat")
    again = run(backend, tmp, psets, name="repeat", repeat=True)
    assert again.progress.resumed == 0 and again.stats.computed == 5
    assert again.results["y"].tolist() == first.results["y"].tolist()
    stored = psmpi.read(again.path, name="repeat")
    assert len(stored) == 10 and stored["_pset_id"].is_unique
    assert sorted(stored["_run_seq"]) == [0] * 5 + [1] * 5
    by_run = stored.groupby("_run_seq")["_pset_hash"].apply(sorted)
    assert by_run[0] == by_run[1]  # the same psets, computed twice


# ---------------------------------------------------------------- rich psets
def rich_psets():
    """Psets holding lists, tuples, dicts, arrays, datetimes ...: one key's type changes too."""
    plus2 = datetime.timezone(datetime.timedelta(hours=2))
    return [
        {"i": 0, "path": [(0, 0), (1, 0)], "opts": {"solver": "cg", "tol": 1e-6},
         "x": np.arange(3, dtype=np.int16)},
        {"i": 1, "path": [], "opts": {"tol": 1e-3, "solver": "gmres", "extra": [None, 1j]},
         "x": 2.5},
        {"i": 2, "path": [(2, 3)], "opts": None, "x": np.array([[1.5, np.nan]], dtype=np.float32)},
        {"i": 3, "path": ["a", b"b"], "opts": {"when": datetime.datetime(2024, 1, 1, tzinfo=plus2)},
         "x": "text"},
        {"i": 4, "path": [1, [2, [3.5]]], "x": np.datetime64("2024-01-02"),
         "opts": {"t": pd.Timestamp("2024-01-01 00:00:00.000000001", tz="Europe/Paris")}},
        {"i": 5, "path": (1, 2), "opts": {}, "x": 2**70},
    ]


def same(a, b) -> bool:
    """Equal values of the same types all the way down: arrays by dtype, shape and bytes,
    NaN equal to NaN, datetimes with their time zones."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, np.generic):  # NaT != NaT: compared as bytes
        return a.dtype == b.dtype and a.tobytes() == b.tobytes()
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, datetime.datetime):
        return a == b and str(a.tzinfo) == str(b.tzinfo)
    return bool(a == b)


def type_tree(v) -> str:
    """The types inside a value, to show what a worker was given."""
    if isinstance(v, np.ndarray):
        return f"ndarray[{v.dtype}]{v.shape}"
    if isinstance(v, (list, tuple)):
        return f"{type(v).__name__}({','.join(map(type_tree, v))})"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{type_tree(x)}" for k, x in v.items()) + "}"
    return type(v).__name__


def fails_on_odd_i(pset):
    if pset["i"] % 2:
        raise ValueError(f"odd i={pset['i']}")
    return {"types": type_tree(pset)}


def types_of(pset):
    return {"types": type_tree(pset)}


def assert_rows_show(df, psets):
    """Each row of df (pset columns and more) holds one of psets exactly, by column "i"."""
    by_i = {p["i"]: p for p in psets}
    assert sorted(df["i"]) == sorted(by_i), (df["i"].tolist(), sorted(by_i))
    # column by column: DataFrame.to_dict would turn numpy.datetime64 into pandas.Timestamp
    columns = {key: df[key].tolist() for key in df.columns}
    for n, i in enumerate(columns["i"]):
        for key, value in by_i[i].items():
            assert same(columns[key][n], value), (i, key, columns[key][n], value)


def check_rich_psets_round_trip(backend, tmp):
    """Rich psets reach the worker, the results, the file and missing exactly as given,
    and map(worker, missing) reruns them exactly."""
    psets = rich_psets()
    first = run(backend, tmp, psets, worker=fails_on_odd_i, name="rich-psets")
    assert first.results["types"].tolist() == [type_tree(p) for p in psets[::2]]
    assert_rows_show(first.results, psets[::2])
    assert_rows_show(psmpi.read(first.path, name="rich-psets"), psets[::2])
    stored = psmpi.read(first.path, name="rich-psets")
    assert sorted(stored["_pset_hash"]) == sorted(psmpi.params.pset_hash(p) for p in psets[::2])
    assert_rows_show(first.missing, psets[1::2])
    again = first.missing.to_psets()
    assert len(again) == 3 and all(same(a, b) for a, b in zip(again, psets[1::2])), again
    rerun = run(backend, tmp, first.missing, worker=types_of, name="rich-psets")
    assert rerun.stats.computed == 3 and len(rerun.missing) == 0
    assert rerun.results["types"].tolist() == [type_tree(p) for p in psets[1::2]]
    assert_rows_show(psmpi.read(first.path, name="rich-psets"), psets)


def check_resume_of_rich_psets_computes_only_the_missing(backend, tmp):
    psets = rich_psets()
    first = run(backend, tmp, psets[:4], worker=types_of, name="rich-resume")
    assert first.stats.computed == 4
    again = run(backend, tmp, psets, worker=types_of, name="rich-resume")
    assert again.progress.resumed == 4 and again.stats.computed == 2
    assert_rows_show(again.results, psets)
    assert_rows_show(psmpi.read(again.path, name="rich-resume"), psets)  # each exactly once
    # the same psets with nested dict keys in another order are the same psets
    shuffled = [{k: dict(reversed(v.items())) if isinstance(v, dict) else v
                 for k, v in reversed(p.items())} for p in psets]
    last = run(backend, tmp, shuffled, worker=types_of, name="rich-resume")
    assert last.progress.resumed == 6 and last.stats.computed == 0


CHECKS = {name[len("check_"):]: fn for name, fn in sorted(globals().items())
          if name.startswith("check_")}

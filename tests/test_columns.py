"""Groups that travel as columns: the worker's packing, the store's admission, equivalence
with the row-by-row path, and the fallback when a column does not fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import psmpi
from psmpi.store import Store
from psmpi.worker import task


def group_of(*psets: dict) -> list[tuple[int, dict]]:
    return list(enumerate(psets))


def test_a_group_of_plain_scalars_becomes_columns_in_order():
    cols = task.as_columns([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}],
                           [{"y": 1.5, "ok": True}, {"y": np.float64(2.5), "ok": None}])
    assert list(cols) == ["a", "b", "y", "ok"]
    assert plain(cols) == {"a": [1, 2], "b": ["x", "y"], "y": [1.5, 2.5], "ok": [True, None]}
    # one Python type of float, bool or int64: a numpy array; mixed, str or None: as given
    assert cols["a"].dtype == np.int64 and type(cols["y"]) is tuple and type(cols["b"]) is tuple
    wide = task.as_columns([{"a": 2**63}, {"a": 1}], [{"f": 0.5, "t": True}] * 2)
    assert wide["a"] == (2**63, 1) and wide["f"].dtype == np.float64 and wide["t"].dtype == bool


def plain(columns: dict) -> dict:
    return {k: v.tolist() if isinstance(v, np.ndarray) else list(v) for k, v in columns.items()}


@pytest.mark.parametrize("psets, results", [
    ([{"a": 1, "b": 2}, {"b": 2, "a": 1}], [{}, {}]),              # pset key order differs
    ([{"a": 1}, {"a": 2}], [{"y": 1}, {"y": 1, "z": 2}]),          # result keys differ
    ([{"a": 1}, {"a": 2}], [{"y": [1, 2]}, {"y": [3]}]),           # not a scalar
    ([{"a": 1}, {"a": 2}], [{"y": np.zeros(3)}, {"y": np.ones(3)}]),  # arrays go row by row
    ([{"a": 1}, {"a": 2}], [{"y": np.uint64(1)}, {"y": 2}]),       # needs the int64 range check
    ([{"a": 1}, {"a": 2}], [{"y": 1}, {"y": type("F", (float,), {})(2.0)}]),  # a subclass
])
def test_other_groups_stay_rows(psets, results):
    assert task.as_columns(psets, results) is None


def test_worker_sends_columns_unless_a_pset_failed():
    def worker(pset):
        if pset["a"] == 3:
            raise ValueError("three")
        return {"y": pset["a"] * 2}

    t = task.Task(worker, "m", "serial")
    fine = t(group_of({"a": 1}, {"a": 2}))
    assert plain(fine.columns) == {"a": [1, 2], "y": [2, 4]} and fine.payloads == []
    mixed = t(group_of({"a": 1}, {"a": 3}))
    assert mixed.columns is None and mixed.payloads[0] is not None and mixed.payloads[1] is None
    assert mixed.errors[1][0] == task.EXCEPTION


def frames_of_both_paths(tmp_path, batches: list[list[dict]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Store the same rows once row by row and once as columns; read both back."""
    frames = []
    for how in ("rows", "columns"):
        with Store.open(tmp_path / f"{how}.h5") as s:
            t = s.table("m")
            for rows in batches:
                if how == "rows":
                    for row in rows:
                        assert t.admit(row) is None
                    t.append(rows)
                else:
                    values = {k: tuple(r[k] for r in rows) for k in rows[0]}
                    assert t.admit_columns(values) is None
                    t.append_values(values, len(rows))
            frames.append(t.read())
    return frames[0], frames[1]


def test_columns_store_exactly_what_rows_store(tmp_path):
    batches = [
        [{"n": 1, "x": 0.5, "s": "a", "ok": True, "none": None},
         {"n": None, "x": float("nan"), "s": None, "ok": np.bool_(False), "none": None}],
        [{"n": np.int32(-2), "x": 3, "s": "été ✓" * 20, "ok": None, "none": None}],  # widens s
        [{"n": 2**62, "x": np.float32(1.5), "s": np.str_("z"), "ok": True, "none": 1.0}],  # new column
        [{"n": 2.5, "x": 1.0, "s": "", "ok": False, "none": None}],    # n widens to float
    ]
    by_rows, by_columns = frames_of_both_paths(tmp_path, batches)
    pd.testing.assert_frame_equal(by_rows, by_columns)
    # 2**62 is not exact as a float: n becomes general, each value kept as it came
    assert by_columns["n"].tolist() == [1, None, -2, 2**62, 2.5]
    assert list(map(type, by_columns["n"])) == [int, type(None), int, int, float]
    assert by_columns["none"].isna().sum() == 4


@pytest.mark.parametrize("first, then", [
    ({"v": "text"}, {"v": 1}),                  # another kind
    ({"v": 1}, {"v": 2**63}),                   # beyond int64, found by the extremes
    ({"v": 1}, {"v": -(2**63) - 1}),
    ({"v": "a"}, {"v": "x" * 5000}),            # too long for a fixed-width column
])
def test_columns_the_table_cannot_hold_natively_become_general_on_both_paths(tmp_path, first, then):
    batches = [[first], [then], [first]]
    by_rows, by_columns = frames_of_both_paths(tmp_path, batches)
    pd.testing.assert_frame_equal(by_rows, by_columns)
    assert by_columns["v"].tolist() == [first["v"], then["v"], first["v"]]


def test_mixed_kinds_in_one_column_are_refused(tmp_store):
    assert "several kinds" in tmp_store.table("m").admit_columns({"v": (1, "one")})


@pytest.fixture
def tmp_store(tmp_path):
    with Store.open(tmp_path / "study.h5") as s:
        yield s


def surprising_worker(pset):
    """Results that change type and keys between psets, so some groups fall back to rows."""
    i = pset["i"]
    if i % 50 == 7:
        return {"y": "text"}         # the int column becomes general
    if i % 10 == 3:
        return {"y": i, "extra": float(i)}
    return {"y": i}


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_a_group_the_table_refuses_is_stored_row_by_row(tmp_path, backend):
    psets = [{"i": i} for i in range(200)]
    r = psmpi.map(surprising_worker, psets, out=tmp_path / "s.h5", backend=backend, verbose=0,
                  group_size=25, ncores=2)
    text = {i for i in range(200) if i % 50 == 7}
    assert len(r.missing) == 0
    df = r.to_df()
    assert sorted(df["i"]) == list(range(200))
    assert [y for i, y in zip(df["i"], df["y"])] == [
        "text" if i in text else i for i in df["i"]]
    extra = df.set_index("i")["extra"]
    assert extra[extra.notna()].index.tolist() == [i for i in range(200) if i % 10 == 3 and i not in text]
    back = psmpi.read(tmp_path / "s.h5").sort_values("i")
    assert back["y"].tolist() == ["text" if i in text else i for i in range(200)]


def test_surrogates_are_refused_in_psets_and_results_and_escaped_in_messages(tmp_path):
    with pytest.raises(psmpi.PsetError, match="UTF-8 cannot encode"):
        psmpi.map(surprising_worker, [{"i": "\udc80"}], out=None, backend="serial")

    def worker(pset):
        if pset["i"] == 1:
            return {"s": "\ud800"}
        if pset["i"] == 2:
            raise ValueError("bad \udc80")
        return {"s": "ok"}

    r = psmpi.map(worker, [{"i": i} for i in range(3)], out=tmp_path / "s.h5",
                  backend="serial", verbose=0)
    failed = r.missing.to_df().set_index("i")
    assert failed.loc[1, "_kind"] == task.UNSTORABLE and "UTF-8" in failed.loc[1, "_exception"]
    assert failed.loc[2, "_exception"] == "ValueError: bad \\udc80"
    assert r.to_df()["s"].tolist() == ["ok"]


# ------------------------------------------------------------------ grids sent as index ranges
from psmpi.backends.serial import SerialBackend  # noqa: E402
from psmpi.driver.inflight import InFlight  # noqa: E402
from psmpi.worker.spans import Grid, Span  # noqa: E402

MIXED_AXES = {"a": [1, 2.5, "été", None, [1, 2], (3,), True, np.float64(0.5), 2**70],
              "b": range(3), "c": [float("nan"), -0.0]}


def test_a_grid_rebuilds_and_hashes_its_psets_as_the_space_does():
    space = psmpi.params.product(*({k: v} for k, v in MIXED_AXES.items()))
    grid = Grid.of(space)
    psets = list(space)
    assert grid.psets(0, len(psets)) == psets
    assert grid.psets(5, 11) == psets[5:11]
    hashes = [psmpi.params.pset_hash(p) for p in psets]
    fresh = Grid.of(space)  # hash parts encoded span by span, in any order, as needed
    assert fresh.hashes(30, 40) + fresh.hashes(0, 30) == hashes[30:40] + hashes[:30]
    assert [part is not None for part in fresh._parts[0]] == [True] * 7 + [False] * 2
    assert grid.hashes(0, len(psets)) == hashes
    columns = grid.columns(4, 20)
    assert isinstance(columns["b"], np.ndarray) and columns["b"].tolist() == [
        p["b"] for p in psets[4:20]]
    assert columns["a"] == [p["a"] for p in psets[4:20]]  # mixed types: a list
    assert Grid.of(psmpi.params.concat({"a": 1}, {"a": 2})) is None


def test_in_flight_holds_a_span_as_one_entry_until_a_pset_is_asked_for():
    grid = Grid.of(psmpi.params.product({"a": range(10)}, {"b": ["x", "y"]}))
    inflight = InFlight(grid)
    inflight.add(Span(0, 6))
    inflight.add(Span(6, 10))
    inflight.add([(12, {"a": 6, "b": "x"})])
    assert len(inflight) == 11 and dict.__len__(inflight) == 1
    assert inflight.get(7) == {"a": 3, "b": "y"}  # unfolds the span 6-10 only
    assert len(inflight) == 11 and dict.__len__(inflight) == 5
    inflight.pop_span((6, 10))  # came back whole after all
    inflight.pop_span((0, 6))
    assert list(inflight.items()) == [(12, {"a": 6, "b": "x"})] and len(inflight) == 1


GROUPS: list = []  # the groups the serial backend was given, by spy_map


def spy_map(worker, psets, path, **kwargs) -> psmpi.MapResults:
    """psmpi.map on the serial backend, recording in GROUPS the groups it is given."""
    run = SerialBackend.run
    GROUPS.clear()

    def spied(self, task, groups):
        return run(self, task, (GROUPS.append(group) or group for group in groups))

    SerialBackend.run = spied
    try:
        return psmpi.map(worker, psets, out=path, backend="serial", verbose=0, **kwargs)
    finally:
        SerialBackend.run = run


def grid_worker(pset):
    if pset["a"] == 7 and pset["b"] == 1:
        raise ValueError("seven")
    if pset["a"] == 11:
        return {"y": np.arange(pset["b"] + 1)}  # a rich value: that group goes pset by pset
    return {"y": pset["a"] * 10 + pset["b"], "s": f"s{pset['a']}"}


def test_a_grid_goes_as_spans_and_stores_what_a_list_of_psets_stores(tmp_path):
    space = psmpi.params.product({"a": range(30)}, {"b": [0, 1, 2]}, {"c": ["x"]})
    by_span = spy_map(grid_worker, space, tmp_path / "span.h5", group_size=4)
    assert GROUPS and all(type(g) is Span for g in GROUPS)
    by_list = spy_map(grid_worker, list(space), tmp_path / "list.h5", group_size=4)
    assert all(type(g) is list for g in GROUPS)
    volatile = ["_rank", "_pid", "_time_utc", "_pset_runtime", "_run_id", "_pset_id",
                "_calc_dir", "_host"]
    frames = []
    for path in ("span.h5", "list.h5"):
        df = psmpi.read(tmp_path / path).sort_values("_pset_index").reset_index(drop=True)
        frames.append(df.drop(columns=volatile))
    pd.testing.assert_frame_equal(frames[0], frames[1])
    assert len(frames[0]) == 89 and frames[0]["_pset_hash"].tolist() == [
        psmpi.params.pset_hash(p) for i, p in enumerate(space) if i != 22]
    assert by_span.missing.to_psets() == by_list.missing.to_psets() == [{"a": 7, "b": 1, "c": "x"}]
    assert by_span.to_df().equals(by_list.to_df())


def failing_at_22(pset):
    if pset["a"] == 11 and pset["b"] == 0.5:  # pset 22
        raise ValueError("fails every time")
    return {"y": pset["a"] * pset["b"]}


def test_a_grid_with_limit_then_resumed_computes_each_pset_once(tmp_path):
    space = psmpi.params.product({"a": range(50)}, {"b": [0.5, 1.5]})
    first = spy_map(failing_at_22, space, tmp_path / "s.h5", limit=30, name="m")
    assert len(first) == 29 and all(type(g) is Span for g in GROUPS)
    assert sorted(i for g in GROUPS for i in g.indexes()) == list(range(30))
    # a hole among the committed psets: pset 22 failed, so it runs again, as a span of one
    rest = spy_map(failing_at_22, space, tmp_path / "s.h5", name="m")
    assert all(type(g) is Span for g in GROUPS)
    assert sorted(i for g in GROUPS for i in g.indexes()) == [22] + list(range(30, 100))
    assert rest.progress.resumed == 29 and len(rest) == 99
    df = psmpi.read(tmp_path / "s.h5")
    assert sorted(df["_pset_index"]) == [i for i in range(100) if i != 22]
    assert df["_pset_hash"].tolist() == [psmpi.params.pset_hash(p) for p in
                                         (list(space)[i] for i in df["_pset_index"])]
    again = spy_map(failing_at_22, space, tmp_path / "s.h5", name="m")
    assert [tuple(g) for g in GROUPS] == [(22, 23)]
    assert again.progress.resumed == 99 and again.to_df().equals(rest.to_df())
    assert again.missing.to_psets() == [{"a": 11, "b": 0.5}]


def test_numpy_columns_are_admitted_like_tuples_of_their_values(tmp_path):
    """What the worker packs as arrays is stored as the same values as tuples: a new column,
    one of its kind, ints into a float column; another kind refused (stored row by row)."""
    batches = [{"i": np.array([1, 2]), "f": np.array([0.5, 1.5]), "b": np.array([True, False])},
               {"i": np.array([3, 4]), "f": np.array([7, 2**60]), "b": np.array([False, True])}]
    frames = []
    for how in ("tuples", "arrays"):
        with Store.open(tmp_path / f"{how}.h5") as s:
            t = s.table("m")
            for values in batches:
                if how == "tuples":
                    values = {k: tuple(v.tolist()) for k, v in values.items()}
                assert t.admit_columns(values) is None
                t.append_values(values, 2)
            if how == "arrays":
                assert "another kind" in t.admit_columns({"b": np.array([1.5, 2.5])})
            frames.append(t.read())
    pd.testing.assert_frame_equal(frames[0], frames[1])
    assert frames[1]["f"].tolist() == [0.5, 1.5, 7, 2**60]

"""Rich values in the store: the general column kind, exact widening, long str, pickles."""

from __future__ import annotations

import datetime
import enum
import json
import multiprocessing
import os
import uuid
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import psmpi
from psmpi import store, values
from psmpi.store import Store, commit, schema

LONG = "λ" * 40_000  # 80 KB of UTF-8: beyond HDF5's 64 KiB object header


def put(table, rows):
    for r in rows:
        assert table.admit(r) is None, r
    return table.append(rows)


def same(a, b) -> bool:
    """Equal values of the same types, arrays by dtype, shape and content, NaN equal to NaN."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape):
            return False
        if a.dtype.kind == "O":
            return all(map(same, a.reshape(-1).tolist(), b.reshape(-1).tolist()))
        return a.tobytes() == b.tobytes()
    if type(a) is not type(b):
        return False
    if isinstance(a, np.generic):
        return a.dtype == b.dtype and a.tobytes() == b.tobytes()
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (float, np.floating)) and np.isnan(a):
        return bool(np.isnan(b))
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    return a == b


# ---------------------------------------------------------------- the two bugs
def test_int_column_widened_by_a_float_keeps_big_ints_exact(tmp_path):
    path = tmp_path / "w.h5"
    with Store.open(path) as s:
        put(s.table("m"), [{"y": 2**53 + 1}, {"y": 3}])
    with Store.open(path) as s:  # across runs
        put(s.table("m"), [{"y": 0.5}])
    got = psmpi.read(path)["y"].tolist()
    assert got == [2**53 + 1, 3, 0.5] and list(map(type, got)) == [int, int, float]


def test_float_column_that_gets_a_big_int_keeps_it_exact(tmp_store):
    t = tmp_store.table("m")
    put(t, [{"y": 0.5}])
    put(t, [{"y": -(2**53) - 3}, {"y": 2**53}])  # the second fits a float exactly
    assert t.read()["y"].tolist() == [0.5, -(2**53) - 3, 2**53]


def test_int_column_widened_by_a_float_stays_float_when_exact(tmp_store):
    t = tmp_store.table("m")
    put(t, [{"y": 2**53}, {"y": None}])
    put(t, [{"y": 1.5}])
    assert t.read_column("y").dtype == np.float64


def test_long_str_results_exceptions_and_psets_are_stored_whole(tmp_path):
    def worker(pset):
        if pset["i"] == 1:
            raise ValueError(LONG)
        return {"s": LONG if pset["i"] == 2 else "short", "echo": len(pset["p"])}

    psets = [{"i": i, "p": LONG if i == 3 else "p"} for i in range(4)]
    for _ in range(2):  # and again on the same file: the rerun of the failed pset fails again
        r = psmpi.map(worker, psets, out=tmp_path / "s.h5", backend="serial", verbose=0, name="long")
        failed = r.missing.to_df()
        assert failed["i"].tolist() == [1] and LONG in failed["_exception"].iloc[0]
        df = r.to_df().sort_values("i")
        assert df["s"].tolist() == ["short", LONG, "short"] and df["p"].tolist()[-1] == LONG
    stored = psmpi.read(tmp_path / "s.h5", name="long").sort_values("i")
    assert stored["s"].tolist() == ["short", LONG, "short"]


# ---------------------------------------------------------------- pickles
class Opaque:
    def __init__(self, n):
        self.n = n

    def __eq__(self, other):
        return type(other) is Opaque and other.n == self.n


def test_values_without_encoding_are_pickled_with_one_warning_per_key(tmp_path):
    path = tmp_path / "p.h5"
    with Store.open(path) as s:
        t = s.table("m")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i in range(3):
                put(t, [{"o": Opaque(i), "q": [Opaque(i)]}])
        texts = [str(w.message) for w in caught]
        assert len(texts) == 2 and "'o'" in texts[0] and "'q'" in texts[1]
    raw = psmpi.read(path)
    assert isinstance(raw["o"][0], bytes) and isinstance(raw["q"][0][0], bytes)
    back = psmpi.read(path, unpickle=True)
    assert back["o"].tolist() == [Opaque(i) for i in range(3)]
    assert back["q"].tolist() == [[Opaque(i)] for i in range(3)]


def test_only_an_unpicklable_value_fails_its_pset(tmp_path):
    def worker(pset):
        return {"y": (lambda: 0) if pset["i"] else [1, 2]}

    r = psmpi.map(worker, [{"i": 0}, {"i": 1}], out=tmp_path / "u.h5", backend="serial", verbose=0)
    assert r.to_df()["y"].tolist() == [[1, 2]]
    assert r.missing.to_df()["_kind"].tolist() in (["unstorable"], ["unpicklable"])


# ---------------------------------------------------------------- plain h5py
def test_general_columns_read_with_plain_h5py(tmp_path):
    path = tmp_path / "h.h5"
    rows = [{"y": [1, {"a": 2.5}]}, {}, {"y": "text"}, {"y": 1 + 2j}]
    with Store.open(path) as s:
        put(s.table("m"), rows)
    # the recipe of the README and the store docstring
    with h5py.File(path, "r", locking=False) as f:
        t = f["m/results"]
        n = int(t["n_committed"][()])
        pointers, heap = t["columns/y"][:n], t["heaps/y"]
        nulls = t["nulls/y"][:n] if "y" in t["nulls"] else np.zeros(n, bool)
        docs = [None if null else json.loads(heap[o:o + k].tobytes())
                for (o, k), null in zip(pointers.tolist(), nulls)]
        assert t["columns/y"].attrs["kind"] == "general" and t["heaps/y"].fletcher32
    assert docs == [[1, {"a": 2.5}], None, "text", {"__complex__": [1.0, 2.0]}]


# ---------------------------------------------------------------- interrupted widening
def _widen_and_die(path, when):
    def swap_in(table, col):
        if when == "after delete":
            del table._g["columns"][col.name]
            table._store._f.flush()
        os._exit(9)

    commit._swap_in = swap_in
    s = Store.open(path)
    put(s.table("m"), [{"y": [1, 2]}])
    os._exit(0)  # not reached


@pytest.mark.parametrize("when", ["before delete", "after delete"])
def test_a_kill_mid_widening_to_general_leaves_the_committed_rows_exact(tmp_path, when):
    path = tmp_path / "k.h5"
    with Store.open(path) as s:
        put(s.table("m"), [{"x": i, "y": 2**53 + i if i % 2 else None} for i in range(2000)])
    child = multiprocessing.get_context("fork").Process(target=_widen_and_die, args=(path, when))
    child.start()
    child.join(60)
    assert child.exitcode == 9
    os.remove(f"{path}.lock") if os.path.exists(f"{path}.lock") else None
    want = [2**53 + i if i % 2 else None for i in range(2000)]
    df = psmpi.read(path)  # a reader sees the committed rows exact, mid-widening
    assert len(df) == 2000 and [None if pd.isna(v) else v for v in df["y"]] == want
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Store.open(path) as s:  # the next writer finishes or undoes it, then appends
            t = s.table("m")
            put(t, [{"x": -1, "y": [1, 2]}])
    df = psmpi.read(path)
    assert df["y"].tolist()[:2000] == want and df["y"].iloc[2000] == [1, 2]
    with h5py.File(path, "r") as f:
        assert list(f["m/results/heaps"]) == ["y"] and len(f["m/results/staging"]) == 0


# ---------------------------------------------------------------- round trips
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
    st.complex_numbers(allow_nan=False), st.text(max_size=20), st.binary(max_size=20),
    st.datetimes(timezones=st.sampled_from([None, datetime.timezone.utc,
                                            datetime.timezone(datetime.timedelta(hours=-5))])),
    st.dates(), st.timedeltas(),
    hnp.from_dtype(np.dtype(np.int16)), hnp.from_dtype(np.dtype(np.float32)),
    hnp.from_dtype(np.dtype(np.uint64)), hnp.from_dtype(np.dtype(np.complex64)),
    hnp.from_dtype(np.dtype("datetime64[ns]")), hnp.from_dtype(np.dtype(bool)),
    hnp.arrays(st.sampled_from([np.int8, np.float64, np.complex128, np.bool_, "U3"]),
               hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


def _no_lone_surrogates(v) -> bool:
    try:
        json.dumps(values.tree(v)).encode("utf-8")
        return not isinstance(v, str) or v.encode("utf-8") is not None
    except UnicodeEncodeError:
        return False


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_values, min_size=1, max_size=6))
def test_any_values_round_trip_through_the_store(tmp_path_factory, column):
    column = [v for v in column if _no_lone_surrogates(v)]
    path = tmp_path_factory.mktemp("rt") / "rt.h5"
    with Store.open(path) as s:
        t = s.table("m")
        for v in column:  # one append per row: widening between appends, too
            put(t, [{"v": v, "i": 1}])
    df = psmpi.read(path) if column else pd.DataFrame()
    back = df["v"].tolist() if "v" in df else [None] * len(column)
    for want, got in zip(column, back):
        if want is None or (isinstance(want, float) and np.isnan(want) and not isinstance(got, str)
                            and got is None):
            continue  # None and a NaN of a float column read as null
        if isinstance(want, np.ndarray) and want.ndim == 0:
            want = want[()]  # a 0-d array is stored as its scalar
        assert same(want, got) or _native_equal(want, got), (want, got)


def _native_equal(want, got) -> bool:
    """A value of a native column reads as the column's type (numpy ints as int64, ...)."""
    if isinstance(want, (bool, np.bool_)):
        return type(got) in (bool, np.bool_) and bool(want) == bool(got)
    if isinstance(want, (int, np.integer)) and not isinstance(want, (bool, np.bool_)):
        return isinstance(got, (int, np.integer, float, np.floating)) and got == want
    if isinstance(want, (float, np.floating)):
        return isinstance(got, (float, np.floating)) and (got == want or np.isnan(want) and np.isnan(got))
    if isinstance(want, (str, np.str_)):
        return got == want
    if isinstance(want, np.ndarray):
        return isinstance(got, np.ndarray) and got.shape == want.shape and np.array_equal(got, want)
    return False


@pytest.mark.parametrize("value", [3**20000, -(3**20000), {"__tuple__": 1}, {"__int__": "0x1"},
                                   float("inf"), -0.0, np.float16(1.5), np.longdouble(1) / 3,
                                   np.datetime64("2020-01-01T00:00:00.123456789"), np.str_("é")],
                         ids=lambda v: type(v).__name__)
def test_edge_values_round_trip(value):
    assert same(values.decode(values.encode(value)), value)


@settings(max_examples=80, deadline=None)
@given(_values)
def test_encoding_round_trips(value):
    if not _no_lone_surrogates(value):
        return
    assert same(values.decode(values.encode(value)), value)


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_rich_values_through_map(tmp_path, backend):
    def worker(pset):
        i = pset["i"]
        return {"v": [i, (i, "x"), {"k": np.arange(i, dtype=np.uint8)}],
                "t": pd.Timestamp("2024-03-01 12:00:00.000000001", tz="Europe/Paris") + pd.Timedelta(days=i),
                "d": datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(i),
                "mixed": {"a": 1} if i % 2 else 2.5}

    r = psmpi.map(worker, [{"i": i} for i in range(5)], out=tmp_path / "r.h5",
                  backend=backend, verbose=0, ncores=2)
    for df in (r.to_df(), psmpi.read(tmp_path / "r.h5")):
        df = df.sort_values("i")
        for i, row in zip(df["i"], df.to_dict("records")):
            want = worker({"i": i})
            for key in want:
                assert same(row[key], want[key]), (key, row[key], want[key])
            assert str(row["t"].tz) == "Europe/Paris"


@pytest.fixture
def tmp_store(tmp_path):
    with Store.open(tmp_path / "study.h5") as s:
        yield s


def test_merge_copies_general_values_and_pickles_as_they_are(tmp_path):
    from psmpi.tools.merging import copy_maps

    def worker(pset):
        return {"o": Opaque(pset["i"]), "v": [pset["i"], b"x"], "y": 2**70 if pset["i"] else 1.5}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for part in ("a", "b"):
            psmpi.map(worker, [{"i": i} for i in ((0, 1) if part == "a" else (2, 3))],
                      out=tmp_path / f"{part}.h5", backend="serial", verbose=0, name="m")
    copy_maps([str(tmp_path / "a.h5"), str(tmp_path / "b.h5")], str(tmp_path / "all.h5"))
    df = psmpi.read(tmp_path / "all.h5", unpickle=True).sort_values("i")
    assert df["o"].tolist() == [Opaque(i) for i in range(4)]
    assert df["v"].tolist() == [[i, b"x"] for i in range(4)]
    assert df["y"].tolist() == [1.5, 2**70, 2**70, 2**70]


def _stored_like(want, got) -> bool:
    if isinstance(want, np.ndarray) and want.ndim == 0:
        want = want[()]
    if want is None or isinstance(want, float) and np.isnan(want):
        return got is None or isinstance(got, float) and np.isnan(got)
    return same(want, got) or _native_equal(want, got)


@pytest.mark.parametrize("backend, examples", [("serial", 15), ("multiprocessing", 4)])
def test_generated_values_through_map(tmp_path_factory, backend, examples):
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(_values, min_size=1, max_size=5))
    def check(column):
        column = [v for v in column if _no_lone_surrogates(v)]
        if not column:
            return

        def worker(pset):
            return {"v": column[pset["i"]]}

        path = tmp_path_factory.mktemp("map") / "m.h5"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = psmpi.map(worker, [{"i": i} for i in range(len(column))], out=path,
                          backend=backend, verbose=0, ncores=2)
        assert len(r.missing) == 0
        df = psmpi.read(path).sort_values("i")
        got = df["v"].tolist() if "v" in df else [None] * len(column)
        for want, back in zip(column, got):
            assert _stored_like(want, back), (want, back)

    check()


def test_object_arrays_are_checked_element_by_element(tmp_store):
    t = tmp_store.table("m")
    good = np.array([1, "a", None], dtype=object)
    put(t, [{"a": good}, {"a": np.zeros(2)}])
    bad = np.array([lambda: 0, 1], dtype=object)
    assert "cannot be pickled" in t.admit({"a": bad})
    got = t.read()["a"].tolist()
    assert same(got[0], good) and same(got[1], np.zeros(2))


def test_a_str_utf8_cannot_encode_is_refused_whatever_the_column_kind(tmp_path):
    # The same value must fail its pset whether the column was made general by earlier rows
    # or not: on multiprocessing the order of groups decides which came first.
    with store.Store.open(str(tmp_path / "s.h5")) as s:
        t = s.table("m")
        assert t.admit({"y": [1, 2]}) is None
        t.append([{"y": [1, 2]}])
        assert "UTF-8 cannot encode" in t.admit({"y": "a\udcff"})
        assert t.admit({"y": "é"}) is None


@pytest.mark.parametrize("value, kind", [
    ("x" * 4096, "str"),  # longer than the 1024 chars that surely fit, but 4 KiB of UTF-8
    ("λ" * 2048, "str"),  # 4096 bytes: the longest a fixed-width column takes
    ("λ" * 2049, "general"),
    (np.str_("λ" * 2049), "general"),
    ("short", "str"),
])
def test_a_str_column_given_columns_turns_general_only_for_a_str_too_long(tmp_store, value, kind):
    # append_values checks the lengths of a str column's values (Table._settle) with a
    # quick test in C first; None and numpy str among the values take the exact one
    t = tmp_store.table("m")
    assert t.admit_columns({"s": ("a", "b")}) is None
    t.append_values({"s": ("a", "b")}, 2)
    for column in [(value, None, "c"), (None, value)]:
        assert t.admit_columns({"s": column}) is None
        t.append_values({"s": column}, len(column))
    assert t._cols["s"].kind == kind
    got = [None if isinstance(v, float) else v for v in t.read()["s"].tolist()]  # NaN: null str
    assert got == ["a", "b", value, None, "c", None, value]


_ARRAY_DTYPES = st.one_of(hnp.scalar_dtypes(), hnp.datetime64_dtypes(), hnp.timedelta64_dtypes(),
                          hnp.unicode_string_dtypes(), hnp.byte_string_dtypes(),
                          st.just(np.dtype(">f8")), st.just(np.dtype("<U0")))


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(_ARRAY_DTYPES, hnp.array_shapes(min_dims=0, min_side=0, max_side=4)))
def test_an_array_encodes_to_the_bytes_of_its_json_tree(array):
    # encode() writes plain arrays without json (values._array_json): the same bytes
    want = json.dumps(values.tree(array), separators=(",", ":")).encode("ascii")
    assert values.encode(array) == want
    assert values.encode(array[::-1] if array.ndim else array) == json.dumps(
        values.tree(array[::-1] if array.ndim else array), separators=(",", ":")).encode("ascii")
    assert same(values.decode(values.encode(array)), array)


def test_a_value_admit_encoded_is_not_encoded_again_by_append(tmp_store, monkeypatch):
    # admit() encodes a dict to know it can be stored; append() takes those bytes (a second
    # encoding cost 40 % of committing nested dicts, store_values.py e). A pickled one still
    # warns, and a row refused by admit leaves nothing behind.
    calls = []
    encode = values.encode
    monkeypatch.setattr(values, "encode", lambda v, note=None: calls.append(v) or encode(v, note))
    t = tmp_store.table("m")
    shared = {"k": [1.5, None]}
    rows = [{"d": {"a": i, "b": (i, "x")}} for i in range(3)] + [{"d": shared}, {"d": shared}]
    assert t.admit({"d": {"z": 1}, "s": "\udcff"}) is not None  # refused: never appended
    calls.clear()
    assert all(t.admit(r) is None for r in rows) and len(calls) == 5
    t.append(rows)
    assert len(calls) == 5  # nothing encoded twice
    with pytest.warns(UserWarning, match="'d'.*stored as pickles"):
        put(t, [{"d": {"o": Opaque(1)}}])
    assert len(calls) == 6
    got = t.read()["d"].tolist()
    assert got[:5] == [r["d"] for r in rows]
    assert len(t._encoded) == 0



def test_big_ints_stay_exact_whichever_way_they_reach_a_float_column(tmp_path):
    # Table._settle scans only the float columns of keys that were ever given an int:
    # every way an int is admitted must say so (admit_columns checks ints with _check)
    path = tmp_path / "w.h5"
    big = 2**53 + 1
    with Store.open(path) as s:
        put(s.table("m"), [{"a": 1, "b": 1.5, "e": 1.5}])
    with Store.open(path) as s:  # a new Table: all it knows of "a" comes from the file
        t = s.table("m")
        # a: an int column widened in the same batch; e: a 0-d array's int into a float column
        put(t, [{"a": big, "b": 1.5, "e": np.array(big)}, {"a": 0.5, "b": 1.5, "e": 0.5}])
        for values in ({"b": (big, 3)}, {"b": (None, -big)}):  # the columns path
            assert t.admit_columns(values) is None
            t.append_values(values, 2)
    df = psmpi.read(path)
    assert df["a"].tolist()[:3] == [1, big, 0.5] and df["e"].tolist()[:3] == [1.5, big, 0.5]
    assert df["b"].tolist()[-4:] == [big, 3, None, -big]


# ---------------------------------------------------------------- json straight from dicts and lists
class _Level(enum.IntEnum):
    LOW = 1


class _Colour(enum.Enum):
    RED = "red"


class _Name(str):
    pass


class _Count(int):
    pass


class _Ratio(float):
    pass


class _Items(list):
    pass


class _Table(dict):
    pass


_BIG = 2**10_000  # the smallest int tree() writes in hex
_odd_scalars = st.one_of(
    st.sampled_from([_Level.LOW, _Colour.RED, _Name("n"), _Count(3), _Ratio(0.5), np.float64(2.5),
                     np.str_("s"), np.int64(7), np.bool_(True), np.longdouble(1) / 3, 3 + 4j,
                     b"\x00\xff", bytearray(b"ab"), values.PickleBytes(b"\x80\x05N."),
                     pd.Timestamp("2026-01-01T00:00:00.123456789", tz="Europe/Paris"),
                     _BIG - 1, _BIG, -_BIG, 10**3011, 2**14_000, float("nan"), -0.0,
                     datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
                     datetime.date(2026, 1, 2), datetime.timedelta(seconds=1.5), Opaque(2),
                     np.arange(3), np.array([1, "a"], dtype=object), "é\udcff", "1" * 3011]),
    hnp.from_dtype(np.dtype("datetime64[ns]")), hnp.from_dtype(np.dtype(np.float32)))
_keys = st.one_of(st.text(max_size=6), st.sampled_from(sorted(values.TAGS)),
                  st.sampled_from([1, 2.5, None, True, (1, 2), _Name("k")]))


def _containers(inner):
    return st.one_of(
        st.lists(inner, max_size=5), st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=6), inner, max_size=5),
        st.dictionaries(_keys, inner, max_size=3),
        st.dictionaries(st.sampled_from(sorted(values.TAGS)), inner, min_size=1, max_size=1),
        st.builds(_Items, st.lists(inner, max_size=3)),
        st.builds(_Table, st.dictionaries(st.text(max_size=3), inner, max_size=3)))


# half the leaves odd: one_of alone would draw each of its many branches alike
_json_leaves = st.booleans().flatmap(lambda odd: _odd_scalars if odd else _scalars)
_json_values = st.recursive(_json_leaves, _containers, max_leaves=16)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.lists(_json_values, min_size=1, max_size=5),
                 st.dictionaries(st.text(max_size=6), _json_values, min_size=1, max_size=6),
                 _json_values))
def test_json_straight_from_a_value_decodes_as_json_of_its_tree(value):
    # encode() writes a dict or list with orjson, tree() only for the types JSON has no type
    # for (values._plain_json): its bytes may differ from the slow path json.dumps(tree(v))
    # ("1e-9", UTF-8), never what they decode to, nor the pickle note
    slow_note, note = values.Pickled(), values.Pickled()
    try:
        want = slow_json(value, slow_note)
    except values.Unencodable:
        with pytest.raises(values.Unencodable):
            values.encode(value)
        return
    got = values.encode(value, note)
    assert slow_json(values.decode(got, unpickle="keep")) == want
    assert note.used == slow_note.used


def slow_json(value, note=None):
    return json.dumps(values.tree(value, note), separators=(",", ":")).encode("ascii")


def test_values_orjson_writes_its_own_way_take_the_slow_path():
    # each of these orjson writes unlike tree() (or cannot write): the fast path steps aside
    cases = [[(1, 2)], {"a": _Level.LOW}, {"a": _Colour.RED}, {"a": _Name("x")}, [_Items([1])],
             {"a": _Table(b=1)}, {1: "a"}, {"a": {"__tuple__": 1}}, [2**64], [2**10_001],
             [-(2**10_001)], [values.PickleBytes(b"x")], {"o": Opaque(1)}, [float("nan")],
             {"x": [float("inf"), None]}, {"k": [True, {"x": (None,)}]}, [3 + float("nan") * 1j],
             [pd.Timestamp("2026-01-01", tz="UTC")], [uuid.uuid4()], {"s": "é\udcff"}]
    for value in cases:
        assert values._plain_json(value) is None, value
    nested = {"x": [1.5, None, "é", "null"], "d": {"t": datetime.date(2026, 1, 1),
                                                   "n": [np.int64(3), np.float64(0.5)]}}
    fast = values._plain_json({k: v for k, v in nested.items() if k != "x"})
    assert fast is not None and slow_json(values.decode(fast)) == slow_json(
        {k: v for k, v in nested.items() if k != "x"})
    assert values._plain_json(nested) is None  # a str holding "null": nulls cannot be counted
    assert values.decode(values.encode(nested)) == nested


def test_a_value_containing_itself_is_unencodable_on_both_paths():
    loop: list = [1]
    loop.append(loop)
    shared = [1.5]
    for value in (loop, {"a": loop}):
        with pytest.raises(values.Unencodable, match="nested too deeply"):
            values.encode(value)
    assert values.decode(values.encode({"a": shared, "b": shared})) == {"a": [1.5], "b": [1.5]}


# ---------------------------------------------------------------- ragged arrays
def _kind(path, key, table="results"):
    with h5py.File(path, "r") as f:
        return f[f"m/{table}/columns/{key}"].attrs["kind"]


def test_arrays_of_changing_shape_make_a_ragged_column_read_with_plain_h5py(tmp_path):
    path = tmp_path / "r.h5"
    want = [np.arange(3.0), None, np.zeros(0), np.full(5, -1.5), np.arange(2.0)]
    with Store.open(path) as s:
        put(s.table("m"), [{"y": want[0]}])  # a fixed-shape "array" column first
        put(s.table("m"), [{"y": v} for v in want[1:]])  # then another shape: ragged
    assert _kind(path, "y") == "ragged"
    with h5py.File(path, "r") as f:  # plain h5py: heap bytes, pointers, shapes, dtype
        t = f["m/results"]
        n = int(t["n_committed"][()])
        pointers, shapes, heap = t["columns/y"][:n], t["shapes/y"][:n], t["heaps/y"]
        dtype = np.dtype(t["columns/y"].attrs["dtype"])
        nulls = t["nulls/y"][:n]
        got = [None if null else np.frombuffer(heap[o:o + k].tobytes(), dtype).reshape(shape)
               for (o, k), shape, null in zip(pointers.tolist(), shapes, nulls)]
        assert all(t[name].fletcher32 for name in ("columns/y", "shapes/y", "heaps/y"))
    for a, b in zip(want, got):
        assert (a is None and b is None) or same(a, b)
    back = psmpi.read(path)["y"].tolist()
    assert all((a is None and b is None) or same(a, b) for a, b in zip(want, back))


def test_a_first_batch_of_changing_shapes_is_ragged_and_dtypes_widen_exactly(tmp_store):
    t = tmp_store.table("m")
    put(t, [{"y": np.arange(2, dtype=np.int8)}, {"y": np.arange(3, dtype=np.int16)}])
    assert t._cols["y"].kind == "ragged" and t._cols["y"].dtype == np.int16
    put(t, [{"y": np.arange(4, dtype=np.int32).reshape(4) * 1000}])
    put(t, [{"y": np.array([0.5])}])  # int32 -> float64: exact, the column is rewritten
    assert t._cols["y"].kind == "ragged" and t._cols["y"].dtype == np.float64
    put(t, [{"y": np.zeros((2, 2))}])  # another ndim: general
    assert t._cols["y"].kind == "general"
    back = t.read()["y"].tolist()
    assert [v.tolist() for v in back] == [[0, 1], [0, 1, 2], [0, 1000, 2000, 3000], [0.5],
                                          [[0, 0], [0, 0]]]
    assert [v.dtype for v in back] == [np.float64] * 5


@pytest.mark.parametrize("first", [np.array([2**53 + 1, 1]), np.array([2**53 + 1, 1, 5])])
def test_int64_arrays_widened_by_float_arrays_keep_big_ints_exact(tmp_store, first):
    t = tmp_store.table("m")
    put(t, [{"y": first}])
    put(t, [{"y": np.array([0.5, 1.5])}])
    back = t.read()["y"].tolist()
    assert t._cols["y"].kind == "general"
    assert back[0].dtype == np.int64 and back[0].tolist() == first.tolist()
    assert back[1].tolist() == [0.5, 1.5]


def test_an_old_general_column_of_arrays_keeps_appending_as_general(tmp_path, monkeypatch):
    path = tmp_path / "old.h5"
    with monkeypatch.context() as m:  # what psmpi before the ragged kind wrote
        m.setattr(schema, "_array_change",
                  lambda key, col, dtype, shape: (key, "general", schema._POINTER, ()))
        with Store.open(path) as s:
            put(s.table("m"), [{"y": np.arange(2.0)}, {"y": np.arange(3.0)}])
    assert _kind(path, "y") == "general"
    with Store.open(path) as s:
        put(s.table("m"), [{"y": np.arange(4.0)}, {"y": None}, {"y": np.arange(1.0)}])
    assert _kind(path, "y") == "general"
    back = psmpi.read(path)["y"].tolist()
    assert [None if v is None else v.tolist() for v in back] == [
        [0, 1], [0, 1, 2], [0, 1, 2, 3], None, [0]]


_RAGGED_DTYPES = st.sampled_from([np.int8, np.uint16, np.int32, np.int64, np.uint64, np.float16,
                                  np.float32, np.float64, np.complex64, np.complex128, np.bool_,
                                  ">f8", ">i4"])


@st.composite
def _ragged_columns(draw):
    """Arrays of one ndim, most of one dtype, some maybe of a second (a widening), or of
    another ndim (general); batch sizes."""
    dtypes = [np.dtype(draw(_RAGGED_DTYPES)), np.dtype(draw(_RAGGED_DTYPES))]
    ndim = draw(st.integers(1, 3))
    other = draw(st.sampled_from([0, 0, 0, 1, 2]))  # 0: one dtype; 1: two; 2: and other ndims
    column = []
    for _ in range(draw(st.integers(1, 12))):
        k = ndim + (draw(st.integers(-1, 1)) if other == 2 and ndim > 1 else 0)
        dtype = dtypes[draw(st.integers(0, 1))] if other else dtypes[0]
        shapes = hnp.array_shapes(min_dims=k, max_dims=k, min_side=0, max_side=6)
        column.append(draw(st.one_of(st.none(), hnp.arrays(dtype, shapes))))
    return column, draw(st.lists(st.integers(1, 5), min_size=1))


def _same_values(want, got) -> bool:
    """Same shape and values, in the dtype the column widened to (exact) or the value's."""
    if got.dtype == want.dtype:
        return same(got, want)
    wide = schema._exact_wide(want.dtype, got.dtype)
    return wide == got.dtype and got.shape == want.shape and np.array_equal(
        got, want.astype(wide), equal_nan=wide.kind in "fc")


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(_ragged_columns())
def test_ragged_arrays_round_trip(tmp_path_factory, drawn):
    column, sizes = drawn
    path = tmp_path_factory.mktemp("rg") / "rg.h5"
    with Store.open(path) as s:
        t, lo = s.table("m"), 0
        while lo < len(column):  # batches of drawn sizes: widening within and between them
            k = sizes[lo % len(sizes)]
            put(t, [{"v": v, "i": 1} for v in column[lo:lo + k]])
            lo += k
    df = psmpi.read(path)
    back = df["v"].tolist() if "v" in df else [None] * len(column)
    for want, got in zip(column, back):
        if want is None:
            assert got is None
        else:  # as given (a general column), or in native order, maybe widened (ragged)
            native = want.astype(want.dtype.newbyteorder("="))
            assert same(got, want) or _same_values(native, got), (want, got)


def test_merge_and_check_know_ragged_columns(tmp_path):
    from psmpi.tools.merging import copy_maps

    def worker(pset):
        return {"y": np.arange(pset["i"] % 4, dtype=np.float32)}

    for part in ("a", "b"):
        psmpi.map(worker, [{"i": i} for i in ((0, 1, 2) if part == "a" else (3, 4, 5))],
                  out=tmp_path / f"{part}.h5", backend="serial", verbose=0, name="m")
    assert _kind(tmp_path / "a.h5", "y") == "ragged"
    copy_maps([str(tmp_path / "a.h5"), str(tmp_path / "b.h5")], str(tmp_path / "all.h5"))
    df = psmpi.read(tmp_path / "all.h5").sort_values("i")
    assert [v.tolist() for v in df["y"]] == [list(range(i % 4)) for i in range(6)]
    assert all(v.dtype == np.float32 for v in df["y"])
    assert _kind(tmp_path / "all.h5", "y") == "ragged"
    assert not store.check(tmp_path / "all.h5").damaged
    with h5py.File(tmp_path / "all.h5", "r+") as f:  # a flipped bit in the shapes
        offset = f["m/results/shapes/y"].id.get_chunk_info(0).byte_offset
    with open(tmp_path / "all.h5", "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([byte ^ 0x01]))
    report = store.check(tmp_path / "all.h5")
    assert report.damaged and [d.column for d in report.tables[0].damaged] == ["y"], report.text()


def _widen_ragged_and_die(path, when, value):
    def swap_in(table, col):
        g = table._g
        if when != "before delete":
            del g["columns"][col.name]
            if when == "after heap":
                commit._move_heap_in(g, col.name)
            table._store._f.flush()
        os._exit(9)

    commit._swap_in = swap_in
    s = Store.open(path)
    put(s.table("m"), [{"y": value}])
    os._exit(0)  # not reached


_WIDENINGS = {
    "array -> ragged": (lambda i: np.full(2, i, np.int32), np.zeros(3, np.int32), "ragged"),
    "ragged -> wider ragged": (lambda i: np.full(i % 5, i, np.int32), np.zeros(3), "ragged"),
    "ragged -> general": (lambda i: np.full(i % 5, i, np.int32), {"a": 1}, "general"),
}


@pytest.mark.parametrize("when, widening", [
    (when, widening) for widening in _WIDENINGS for when in ("before delete", "after delete")
] + [("after heap", "ragged -> wider ragged"), ("after heap", "ragged -> general")])
def test_a_kill_mid_widening_of_arrays_leaves_the_committed_rows_exact(tmp_path, when, widening):
    first, second, then = _WIDENINGS[widening]
    path = tmp_path / "k.h5"
    want = [first(i) if i % 3 else None for i in range(3000)]
    with Store.open(path) as s:
        put(s.table("m"), [{"x": i, "y": v} for i, v in enumerate(want)])
    child = multiprocessing.get_context("fork").Process(target=_widen_ragged_and_die,
                                                        args=(path, when, second))
    child.start()
    child.join(60)
    assert child.exitcode == 9
    os.remove(f"{path}.lock") if os.path.exists(f"{path}.lock") else None

    def exact(back):
        return len(back) >= 3000 and all(
            (w is None and b is None) or (b is not None and np.array_equal(w, b))
            for w, b in zip(want, back[:3000]))

    assert exact(psmpi.read(path)["y"].tolist())  # a reader, mid-widening
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Store.open(path) as s:  # the next writer finishes or undoes it, then appends
            put(s.table("m"), [{"x": -1, "y": second}])
    back = psmpi.read(path)["y"].tolist()
    assert exact(back) and len(back) == 3001 and _kind(path, "y") == then
    assert same(back[3000], second) if then == "ragged" else back[3000] == second
    with h5py.File(path, "r") as f:
        t = f["m/results"]
        assert list(t["heaps"]) == ["y"] and len(t["staging"]) == 0 and len(t["staging_heaps"]) == 0
        assert list(t.get("shapes", {})) == (["y"] if then == "ragged" else [])

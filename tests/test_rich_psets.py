"""Psets holding rich values: what pset_hash makes of them, the store round trip, params."""

from __future__ import annotations

import datetime
import math
import os
import subprocess
import sys
import zoneinfo

import numpy as np
import pandas as pd
import pytest
from contract import same, type_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import psmpi
from psmpi import params, values
from psmpi.errors import PsetError
from psmpi.params import pset_hash
from psmpi.store import Store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------- fixed hashes
# Written by psmpi before rich psets (commit e4c7260) and matched by every _pset_hash column
# of the files it wrote: they must never change.
SCALAR_HASHES = [
    ({}, "9ac46f232bbdd2d9420e8a29f9e27023"),
    ({"a": 1}, "7d64bd321fdb6f78cd159f9669fcfdac"),
    ({"a": 1, "b": "x"}, "0bb4c62d5b3857f53867b8254f1790f6"),
    ({"a": -7, "b": 0.25, "c": True, "d": False, "e": None}, "87e91e5df95f549e931643d8f33917ea"),
    ({"x": float("nan")}, "a47748dcff3943e77f0d8dca990469f4"),
    ({"x": float("inf")}, "640fb7adf7a487f03db5916a8157d279"),
    ({"x": -float("inf")}, "2932bf58bd7969536c13041669a97f59"),
    ({"x": 1e300}, "731dfdbd1d018981a41ce252b9e06004"),
    ({"x": -0.0}, "3d0cde2476152c8c677a742e3a5eceb5"),
    ({"x": 0.1}, "165c09beb74dfef3692ba8573ac667d5"),
    ({"x": 2**63 - 1}, "eb30201f63ed584cbd3328032ab24874"),
    ({"x": -(2**63)}, "1bc2547b8af0e95b595435eaa5af7ffa"),
    ({"x": 2**70}, "472b79435f661cf52650ac1b929e65cd"),
    ({"s": ""}, "cebe2aacaccac2b58755efcb25319ff2"),
    ({"s": "é ✓ ;=:"}, "ff62e4bddc5b1a23c8559f99fc8e44a9"),
    ({"s": "a;1:b=i1"}, "f29f8b0105bcf067818363e7f1843a0e"),
    ({"n": np.int32(5), "f": np.float32(0.1), "b": np.bool_(True), "u": np.str_("u")},
     "9abcb27278a1c7362c27f2ef18ad8115"),
    ({"long key name with spaces": "v", "z": 3.5, "a": 1e-300}, "ca48cc976b4e1956a4f10d5db1383098"),
    ({"x": 5e-324}, "f45358e5f57c767f30d873802b33bcfa"),
]

# The tokens of rich values, fixed when they were introduced: a change breaks resuming.
RICH_HASHES = [
    ({"l": [1, 2.5, None]}, "cb6950903401a0ce72e0b8ef9e7f8bc6"),
    ({"t": (1, "x", b"\x00\xff")}, "1fc81217b1fef7ca343dd90e0126f357"),
    ({"d": {"b": {"y": [], "x": ()}, "a": {}}}, "5cf04a50d4fd853567e07348e2b9dc8c"),
    ({"a": np.arange(6, dtype=np.int16).reshape(2, 3)}, "1f6c3cf7f51f113117b5cdb7d3a3cfa5"),
    ({"a": np.array(["x", "yz"]), "e": np.zeros(0)}, "4d351f6bf9b87ed421ada8387f47ac41"),
    ({"c": 1 + 2j, "z": np.complex64(-0.5j)}, "523bc7213a940c8537c540927e490d5b"),
    ({"w": datetime.datetime(2024, 1, 2, 3, 4, 5, 6)}, "27f151d3dde7c22c71b94a93eb7da827"),
    ({"z": datetime.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))},
     "d63dcf12630943192336142aaed96e69"),
    ({"p": pd.Timestamp("2024-01-01 00:00:00.000000001", tz="UTC")},
     "fad6b364f82aa9daa4039ea71fb25222"),
    ({"day": datetime.date(2024, 2, 29), "dt": datetime.timedelta(days=-1, microseconds=3)},
     "de1d7f0593b9649e7f7dc26e3604a1c2"),
    ({"m": np.datetime64("2024-01-01T00:00:00.123456789"), "n": np.datetime64("NaT"),
      "td": np.timedelta64(3, "M"), "ps": np.timedelta64(1500, "ps")},
     "c5f9c9b48396bb2c73d93b97c443927c"),
    ({"big": 3**9000}, "25379e93fe088f86331ffee35a70482d"),  # beyond str()'s 4300 digits
    ({"nested": [{"k": [np.float32("nan"), {"v": (np.int8(1), np.bool_(False))}]}]},
     "fe0d70c7da076716e8abb080e0e5411d"),
]


@pytest.mark.parametrize("pset, digest", SCALAR_HASHES, ids=lambda v: str(v)[:30])
def test_hashes_of_scalar_psets_never_change(pset, digest):
    assert pset_hash(pset) == digest


@pytest.mark.parametrize("pset, digest", RICH_HASHES, ids=lambda v: str(v)[:30])
def test_hashes_of_rich_psets_never_change(pset, digest):
    assert pset_hash(pset) == digest


def test_hash_of_a_rich_pset_is_the_same_in_another_process():
    pset = "{'d': {'b': [1, (2.5, None)], 'a': b'x'}, 'when': datetime.datetime(2024, 1, 1)}"
    code = f"import datetime; from psmpi.params import pset_hash; print(pset_hash({pset}))"
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=ROOT, timeout=60, check=True,
                              env={"PYTHONHASHSEED": seed, "PYTHONPATH": ROOT}).stdout.strip()
               for seed in ("1", "2")}
    assert digests == {pset_hash(eval(pset))}


# ---------------------------------------------------------------- equality rules
PARIS = zoneinfo.ZoneInfo("Europe/Paris")
UTC = datetime.timezone.utc


@pytest.mark.parametrize("left, right", [
    ({"b": 1, "a": [2]}, {"a": [2.0], "b": np.int64(1)}),          # nested key order, 1 == 1.0
    ([float("nan")], [np.float32("nan")]),                            # NaN anywhere alike
    (np.array([1, 2]), np.array([1.0, 2.0], dtype=np.float32)),     # arrays by shape and values
    (np.array([[1], [2]], dtype=np.uint8), np.array([[1], [2]], dtype=np.int64)),
    (np.array(3), 3),                                                 # 0-d: stored as its scalar
    (1 + 0j, 1), (np.complex64(2.5), 2.5),                            # 1+0j == 1 in Python
    (datetime.datetime(2024, 1, 1, 12, tzinfo=PARIS),
     datetime.datetime(2024, 1, 1, 11, tzinfo=UTC)),                # aware: the UTC instant
    (pd.Timestamp("2024-01-01 11:00", tz="UTC"), datetime.datetime(2024, 1, 1, 11, tzinfo=UTC)),
    (pd.Timestamp("2024-01-01 11:00"), datetime.datetime(2024, 1, 1, 11)),
    (np.datetime64("2024-01-01T11:00"), datetime.datetime(2024, 1, 1, 11)),
    (np.datetime64("2024-01-01", "D"), np.datetime64("2024-01-01T00:00:00.000", "ms")),
    (np.timedelta64(1, "D"), datetime.timedelta(days=1)),
    (np.timedelta64(1, "Y"), np.timedelta64(12, "M")),
    (np.datetime64("NaT"), np.datetime64("NaT", "ns")),
    (np.bytes_(b"ab"), b"ab"), (np.str_("é"), "é"),
])
def test_hash_alike(left, right):
    assert pset_hash({"k": left}) == pset_hash({"k": right})


@pytest.mark.parametrize("left, right", [
    ((1, 2), [1, 2]),                                                 # (1, 2) != [1, 2] in Python
    ([1, 2], np.array([1, 2])), ((), []), ({}, []), ([], None), ([[]], []),
    ("ab", b"ab"), (b"", ""), ([1, [2]], [[1], 2]), ([1, 2], [2, 1]),
    (np.array([1, 2]), np.array([[1, 2]])), (np.array([True]), np.array([1])),
    (np.zeros((0, 2)), np.zeros((2, 0))),
    ({"a": 1}, {"a": 1, "b": None}), ({"a;1:b=i1": 1}, {"a": 1, "b": 1}),
    (datetime.datetime(2024, 1, 1), datetime.datetime(2024, 1, 1, tzinfo=UTC)),  # naive != aware
    (datetime.date(2024, 1, 1), datetime.datetime(2024, 1, 1)),    # as in Python
    (pd.Timestamp("2024-01-01 00:00:00.000000001"), datetime.datetime(2024, 1, 1)),
    (datetime.timedelta(0), 0), (1 + 1j, 1), (complex(1, float("nan")), 1),
    (np.timedelta64(1, "M"), np.timedelta64(30, "D")), (np.datetime64("NaT"), float("nan")),
    (["s1:x;"], ["x", "x"]),
])
def test_hash_differs(left, right):
    assert pset_hash({"k": left}) != pset_hash({"k": right})


def test_values_without_canonical_form_are_refused_before_compute(tmp_path):
    calls = []

    def worker(pset):
        calls.append(pset)
        return {"y": 1}

    class Opaque:
        pass

    psets = [{"a": [1]}, {"a": [1, Opaque()]}, {"a": {"k": {2: "x"}}}, {"a": 2}]
    with pytest.raises(PsetError) as info:
        psmpi.map(worker, psets, out=tmp_path / "x.h5", backend="serial", verbose=0)
    text = str(info.value)
    assert "2 of 4 psets are invalid" in text and calls == []
    assert "pset 1: value of key 'a' is or holds a value of type " in text and "Opaque" in text
    assert "pset 2: value of key 'a' is or holds a dict with a key of type int" in text
    assert "build the object in the worker" in text


# ---------------------------------------------------------------- generated round trips
_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.complex_numbers(),
    st.text(max_size=12), st.binary(max_size=12),
    st.datetimes(timezones=st.sampled_from([None, UTC, PARIS,
                                            datetime.timezone(datetime.timedelta(hours=-5))])),
    st.dates(), st.timedeltas(),
    st.builds(pd.Timestamp, st.integers(-2**62, 2**62),
              tz=st.sampled_from([None, "UTC", "Asia/Tokyo"])),
    hnp.from_dtype(np.dtype(np.int16)), hnp.from_dtype(np.dtype(np.float32)),
    hnp.from_dtype(np.dtype(np.uint64)), hnp.from_dtype(np.dtype(np.complex64)),
    hnp.from_dtype(np.dtype("datetime64[ns]")), hnp.from_dtype(np.dtype("timedelta64[s]")),
    hnp.from_dtype(np.dtype(bool)), hnp.from_dtype(np.dtype("U3")),
    hnp.arrays(st.sampled_from([np.int8, np.uint32, np.float64, np.complex128, np.bool_, "U3",
                                "S2", "M8[us]"]),
               hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)),
)
_pset_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=10)


def _reordered(v):
    """``v`` with the keys of every dict in it reversed."""
    if type(v) is dict:
        return {k: _reordered(v[k]) for k in reversed(list(v))}
    if type(v) in (list, tuple):
        return type(v)(map(_reordered, v))
    return v


def _storable(v) -> bool:
    return not params.pset_problems({"v": v})  # a str UTF-8 cannot encode is refused


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=5).filter(lambda k: not k.startswith("_")
                                                             and "/" not in k and "\0" not in k
                                                             and k not in (".", "..")),
                       _pset_values, max_size=4))
def test_generated_psets_hash_alike_whatever_the_order_of_their_keys(pset):
    if params.pset_problems(pset):
        return
    assert pset_hash(_reordered(pset)) == pset_hash(pset)
    assert pset_hash(dict(reversed(list(pset.items())))) == pset_hash(pset)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_pset_values, min_size=1, max_size=6))
def test_generated_pset_values_hash_alike_after_the_store_round_trip(tmp_path_factory, column):
    """Each value under one pset key, one row at a time, as map() stores psets; the value
    read back hashes as the one given, and a container reads back exactly as given."""
    column = [v for v in column if _storable(v)]
    path = tmp_path_factory.mktemp("rt") / "rt.h5"
    with Store.open(path) as s:
        t = s.table("m")
        for i, v in enumerate(column):  # widening between appends, as when psets come in
            assert t.admit({"i": i, "v": v}) is None
            t.append([{"i": i, "v": v}])
    df = psmpi.read(path) if column else pd.DataFrame({"i": []})
    back = df["v"].tolist() if "v" in df else [None] * len(column)
    for want, got in zip(column, back):
        if want is None:
            continue  # a null: None, or NaN in a float column (as before rich psets)
        assert pset_hash({"v": got}) == pset_hash({"v": want}), (want, got)
        if type(want) in (list, tuple, dict):
            assert same(got, want), (want, got)


@settings(max_examples=100, deadline=None)
@given(_pset_values)
def test_generated_pset_values_hash_alike_after_encoding(value):
    if _storable(value):
        assert pset_hash({"v": values.decode(values.encode(value))}) == pset_hash({"v": value})


# ---------------------------------------------------------------- params
def test_an_axis_of_lists_dicts_as_one_value_and_arrays_as_values():
    space = params.product({"opts": [[1, 2], [3]]}, {"cfg": {"solver": "cg"}}, {"n": 2})
    assert space.to_list() == [{"opts": [1, 2], "cfg": {"solver": "cg"}, "n": 2},
                               {"opts": [3], "cfg": {"solver": "cg"}, "n": 2}]
    arrays = params.product({"x": [np.zeros(2), np.ones(3)]}).to_list()
    assert [a["x"].shape for a in arrays] == [(2,), (3,)]
    assert params.product({"t": np.array(["2024-01-01"], dtype="M8[ns]")}).to_list() == [
        {"t": np.datetime64("2024-01-01", "ns")}]  # not the int tolist() would make
    assert len(params.zip(path=[[0], [0, 1], (0, 1, 2)], k=[1, 2, 3])) == 3
    with pytest.raises(PsetError, match="1-D sequence"):
        params.product({"x": np.zeros((2, 2))})


def test_subtract_and_missing_compare_rich_values_by_hash():
    space = params.product({"path": [[1, 2], (1, 2), [1, 2.0, 3]]}, {"o": [{"a": 1, "b": [2]}]})
    done = [{"o": {"b": [2.0], "a": 1}, "path": [1, 2]}]
    assert [p["path"] for p in params.missing(space, done)] == [(1, 2), [1, 2.0, 3]]
    assert [p["path"] for p in space - done] == [(1, 2), [1, 2.0, 3]]
    frame = pd.DataFrame({"path": [[1, 2], (1, 2)], "o": [{"a": 1, "b": [2]}] * 2, "_x": [0, 1]})
    assert [p["path"] for p in params.missing(space, frame)] == [[1, 2.0, 3]]


def test_dataframes_with_list_cells_are_spaces_and_to_df_keeps_them():
    frame = pd.DataFrame({"v": [[1, 2], [3]], "a": [np.arange(2), np.arange(3)], "n": [1, 2]})
    psets = params.as_space(frame).to_list()
    assert psets[0]["v"] == [1, 2] and psets[1]["a"].tolist() == [0, 1, 2]
    df = params.product({"v": [[1, 2], [3]]}, {"d": [{"k": (1,)}]}).to_df()
    assert df["v"].tolist() == [[1, 2], [3]] and df["d"].tolist() == [{"k": (1,)}] * 2
    assert params.concat({"v": [[1]]}, {"w": [(2,)]}).to_list()[1]["v"] != []  # NaN fill
    assert math.isnan(params.concat({"v": [[1]]}, {"w": [(2,)]}).to_list()[1]["v"])


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_pset_values, min_size=1, max_size=5))
def test_generated_psets_through_map_reach_the_worker_and_resume(tmp_path_factory, column):
    psets = [{"i": i, "v": v} for i, v in enumerate(column) if _storable(v)]
    path = tmp_path_factory.mktemp("map") / "m.h5"

    def worker(pset):  # what the worker was given: its types and its hash
        return {"types": type_tree(pset["v"]), "h": pset_hash(pset)}

    first = psmpi.map(worker, psets, out=path, backend="serial", verbose=0, name="m")
    assert len(first.missing) == 0 and len(first) == len(psets)
    assert first.results["types"].tolist() == [type_tree(p["v"]) for p in psets]
    assert first.results["h"].tolist() == [pset_hash(p) for p in psets]
    stored = psmpi.read(path, name="m")
    assert sorted(stored["_pset_hash"]) == sorted(pset_hash(p) for p in psets)
    again = psmpi.map(worker, psets, out=path, backend="serial", verbose=0, name="m")
    assert again.progress.resumed == len(psets) and again.stats.computed == 0


def test_numpy_datetimes_in_dataframe_cells_stay_what_they_are():
    cells = [np.datetime64("2024-01-02T03:04:05.000000001"), np.timedelta64(5, "s")]
    frame = pd.DataFrame({"t": pd.Series([cells[0], None], dtype=object),
                          "d": pd.Series([cells[1], cells[1]], dtype=object)})
    pset = params.as_space(frame).to_list()[0]
    assert pset_hash(pset) == pset_hash({"t": cells[0], "d": cells[1]})
    assert type(pset["t"]) is np.datetime64 and type(pset["d"]) is np.timedelta64


def test_a_datetime_column_of_a_dataframe_gives_timestamps_and_nan_for_nat():
    frame = pd.DataFrame({"t": pd.to_datetime(["2024-01-02", None]), "a": [1, 2]})
    psets = params.as_space(frame).to_list()
    assert psets[0]["t"] == pd.Timestamp("2024-01-02") and math.isnan(psets[1]["t"])
    assert params.pset_problems(psets[0]) == [] and params.pset_problems(psets[1]) == []

"""Behaviour tests of psmpi.params: spaces, set operations, hashing, pset checks."""

from __future__ import annotations

import collections
import datetime
import decimal
import itertools
import math
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from psmpi.errors import PsetError
from psmpi.params import as_space, concat, missing, product, pset_hash, pset_problems, subtract
from psmpi.params import zip as pzip


def same(a: list[dict], b: list[dict]) -> bool:
    """Equality of pset lists where NaN equals NaN (dict == would say nan != nan)."""
    return [pset_hash(p) for p in a] == [pset_hash(p) for p in b] and \
        [list(p) for p in a] == [list(p) for p in b]


# --- product -------------------------------------------------------------------------


def test_product_order_is_last_factor_fastest():
    s = product({"a": [1, 2, 3]}, {"b": [10, 20]})
    assert len(s) == 6
    assert s.keys == ["a", "b"]
    assert s.to_list() == [{"a": a, "b": b} for a in (1, 2, 3) for b in (10, 20)]


def test_product_of_dict_keys_follows_dict_order():
    s = product({"b": [1, 2], "a": ["x", "y"]})
    assert s.to_list() == [{"b": 1, "a": "x"}, {"b": 1, "a": "y"},
                           {"b": 2, "a": "x"}, {"b": 2, "a": "y"}]


def test_product_broadcasts_scalars_including_str():
    s = product({"a": [1, 2], "name": "run", "x": 0.5, "n": None})
    assert s.to_list() == [{"a": 1, "name": "run", "x": 0.5, "n": None},
                           {"a": 2, "name": "run", "x": 0.5, "n": None}]


def test_product_accepts_numpy_and_range_axes_as_plain_python():
    s = product({"a": np.array([1, 2]), "b": range(2)})
    psets = s.to_list()
    assert psets == [{"a": 1, "b": 0}, {"a": 1, "b": 1}, {"a": 2, "b": 0}, {"a": 2, "b": 1}]
    assert type(psets[0]["a"]) is int


def test_product_mixes_spaces_lists_and_frames():
    s = product({"a": [1, 2]}, [{"b": 1, "c": 2}, {"b": 3, "c": 4}], pzip(d=[7, 8]))
    assert len(s) == 8
    assert s.keys == ["a", "b", "c", "d"]
    assert s.to_list()[:3] == [{"a": 1, "b": 1, "c": 2, "d": 7},
                               {"a": 1, "b": 1, "c": 2, "d": 8},
                               {"a": 1, "b": 3, "c": 4, "d": 7}]


def test_product_with_a_results_frame_drops_underscore_columns():
    df = pd.DataFrame({"a": np.array([1, 2], dtype=np.int64), "x": [0.5, 1.5],
                       "_pset_hash": ["h1", "h2"], "_time": [1.0, 2.0]})
    s = product(df, {"seed": [0, 1]})
    assert s.keys == ["a", "x", "seed"]
    psets = s.to_list()
    assert psets[1] == {"a": 1, "x": 0.5, "seed": 1}
    assert {type(p["a"]) for p in psets} == {int}
    assert {type(p["x"]) for p in psets} == {float}


def test_frame_object_column_numpy_scalars_become_python_scalars():
    df = pd.DataFrame({"a": pd.Series([np.int64(1), np.float32(0.5)], dtype=object)})
    psets = as_space(df).to_list()
    assert [type(p["a"]) for p in psets] == [int, float]


def test_frame_nullable_and_string_columns():
    df = pd.DataFrame({"n": pd.array([1, None], dtype="Int64"), "s": ["x", "y"]})
    psets = as_space(df).to_list()
    assert psets[0] == {"n": 1, "s": "x"} and type(psets[0]["n"]) is int
    assert math.isnan(psets[1]["n"]) and type(psets[1]["s"]) is str
    assert missing(df, [{"n": float("nan"), "s": "y"}]).to_list() == [{"n": 1, "s": "x"}]


def test_product_duplicate_key_is_named():
    with pytest.raises(PsetError, match="'a'"):
        product({"a": [1, 2]}, {"b": [1], "a": [3]})


def test_product_of_nothing_and_of_empty_axis():
    assert product().to_list() == [{}]
    s = product({"a": []}, {"b": [1, 2]})
    assert len(s) == 0 and s.to_list() == []


def test_operators():
    a = as_space({"a": [1, 2]})
    assert (a * {"b": [3]}).to_list() == [{"a": 1, "b": 3}, {"a": 2, "b": 3}]
    assert ({"b": [3]} * a).to_list() == [{"b": 3, "a": 1}, {"b": 3, "a": 2}]
    assert (a + {"a": 5}).to_list() == [{"a": 1}, {"a": 2}, {"a": 5}]
    assert ([{"a": 0}] + a).to_list() == [{"a": 0}, {"a": 1}, {"a": 2}]
    assert (a - {"a": 1}).to_list() == [{"a": 2}]


# --- laziness, iteration -------------------------------------------------------------


def peak_bytes(fn):
    """Peak memory Python allocated while running fn(): 9M psets would take gigabytes."""
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_huge_product_is_lazy():
    def build():
        s = product({"a": range(3000)}, {"b": range(3000)})
        return s, len(s), list(itertools.islice(s, 5))
    (s, n, first), peak = peak_bytes(build)
    assert n == 9_000_000
    assert peak < 20 * 2**20, peak
    assert first == [{"a": 0, "b": b} for b in range(5)]
    assert "9000000 psets" in repr(s)


def test_huge_product_with_non_grid_factor_streams_first_factor():
    def build():
        s = product(pzip(a=range(3000), c=1), {"b": range(3000)})
        return len(s), list(itertools.islice(s, 2))
    (n, first), peak = peak_bytes(build)
    assert n == 9_000_000 and peak < 20 * 2**20, peak
    assert first == [{"a": 0, "c": 1, "b": 0}, {"a": 0, "c": 1, "b": 1}]


def test_space_is_reiterable_and_yields_fresh_dicts():
    s = product({"a": [1, 2]}, [{"b": 1}]) + {"c": [1]}
    first = s.to_list()
    for p in s:
        p["a"] = "mutated"
    assert s.to_list() == first
    assert list(s) == list(s)


def test_repr_is_short():
    assert repr(product({"a": [1, 2, 3]}, {"b": [1, 2]})) == "Space(6 psets, keys=['a', 'b'])"


def test_to_df():
    df = concat({"a": [1]}, {"b": ["x"]}).to_df()
    assert list(df.columns) == ["a", "b"]
    assert len(df) == 2 and df["b"].iloc[1] == "x" and math.isnan(df["b"].iloc[0])
    assert df["a"].iloc[0] == 1 and math.isnan(df["a"].iloc[1])
    assert len(product().to_df()) == 1


def test_as_space_rejects_other_types():
    for bad in (3, "abc", {1, 2}, None):
        with pytest.raises(PsetError, match="dict of axes"):
            as_space(bad)
    with pytest.raises(PsetError, match=r"\[1\]"):
        as_space([{"a": 1}, 5])
    with pytest.raises(PsetError, match="1-D sequence"):
        as_space({"a": {1, 2}})


def test_as_space_list_snapshots_and_fills_nan():
    lst = [{"a": 1}, {"b": 2}]
    s = as_space(lst)
    lst.append({"a": 3})
    assert len(s) == 2
    assert same(s.to_list(), [{"a": 1, "b": float("nan")}, {"a": float("nan"), "b": 2}])


# --- zip -----------------------------------------------------------------------------


def test_zip_broadcasts_scalars():
    s = pzip({"a": [1, 2, 3], "b": [4, 5, 6], "c": 7})
    assert s.to_list() == [{"a": 1, "b": 4, "c": 7}, {"a": 2, "b": 5, "c": 7},
                           {"a": 3, "b": 6, "c": 7}]


def test_zip_kwargs_and_spaces_position_wise():
    s = pzip([{"a": 1}, {"a": 2}], product({"b": [5, 6]}), c=[8, 9], d="k")
    assert s.keys == ["a", "b", "c", "d"]
    assert s.to_list() == [{"a": 1, "b": 5, "c": 8, "d": "k"},
                           {"a": 2, "b": 6, "c": 9, "d": "k"}]
    assert s.to_list() == s.to_list()


def test_zip_only_scalars_is_one_pset():
    assert pzip(a=1, b="x").to_list() == [{"a": 1, "b": "x"}]


def test_zip_length_error_names_every_key_and_length():
    with pytest.raises(PsetError) as err:
        pzip({"a": [1, 2, 3], "b": [1, 2]}, [{"c": 1}], d=5)
    msg = str(err.value)
    assert "'a' has 3" in msg and "'b' has 2" in msg and "factor 1 (keys ['c']) has 1" in msg
    assert "'d'" not in msg  # scalars broadcast, they have no length


def test_zip_duplicate_key():
    with pytest.raises(PsetError, match="'a'"):
        pzip({"a": [1]}, a=[2])


# --- concat --------------------------------------------------------------------------


def test_concat_fills_missing_keys_with_nan():
    s = concat({"a": [1, 2]}, pzip(a=[2, 3], b=[4, 4]))
    assert len(s) == 4 and s.keys == ["a", "b"]
    psets = s.to_list()
    assert [p["a"] for p in psets] == [1, 2, 2, 3]
    assert math.isnan(psets[0]["b"]) and math.isnan(psets[1]["b"])
    assert [p["b"] for p in psets[2:]] == [4, 4]


def test_concat_reorders_keys_of_later_factors():
    s = concat({"a": 1, "b": 2}, {"b": 3, "a": 4}, {"c": 5})
    assert [p["a"] for p in s][:2] == [1, 4] and [p["b"] for p in s][:2] == [2, 3]
    assert all(list(p) == ["a", "b", "c"] for p in s)
    assert concat().to_list() == []


# --- subtract, missing ---------------------------------------------------------------


def test_subtract_removes_matches_on_subtrahend_keys():
    s = subtract({"a": [1, 2, 3], "b": [1, 2, 3]}, {"a": [2]})
    assert s.to_list() == [{"a": a, "b": b} for a in (1, 3) for b in (1, 2, 3)]
    assert len(s) == 6


def test_subtract_with_extra_key_is_ambiguous_and_points_to_missing():
    with pytest.raises(PsetError, match=r"'c'.*missing\(\)|'c'.*missing\("):
        subtract({"a": [1, 2, 3]}, {"a": [2], "c": [4]})


def test_missing_ignores_extra_keys_of_b():
    s = missing({"a": [1, 2, 3]}, {"a": [2], "c": [4]})
    assert s.to_list() == [{"a": 1}, {"a": 3}]


def test_missing_against_results_frame():
    todo = product({"a": [1, 2, 3]}, {"x": [0.5, 1.0]})
    done = pd.DataFrame({"a": [1.0, 3.0], "x": [0.5, 1.0], "result": [[1, 2], [3]],
                         "_pset_hash": ["h", "h"]})
    rest = missing(todo, done)
    assert rest.to_list() == [{"a": 1, "x": 1.0}, {"a": 2, "x": 0.5}, {"a": 2, "x": 1.0},
                              {"a": 3, "x": 0.5}]
    assert len(rest) == 4 and rest.to_list() == rest.to_list()


def test_missing_value_equality_like_pset_hash():
    a = as_space([{"a": 1}, {"a": float("nan")}, {"a": True}, {"a": "1"}, {"a": 2.5}])
    b = [{"a": np.int64(1)}, {"a": float("nan")}, {"a": np.float32(2.5)}]
    assert missing(a, b).to_list() == [{"a": True}, {"a": "1"}]


def test_missing_when_b_lacks_a_key_keeps_everything():
    assert len(missing({"a": [1, 2], "b": 1}, {"a": [1]})) == 2


def test_subtract_and_missing_need_str_keys():
    with pytest.raises(PsetError, match="keys must be str"):
        missing({1: [1, 2]}, [{1: 1}])


def test_missing_is_lazy_in_a():
    def build():
        s = missing(product({"a": range(3000)}, {"b": range(3000)}), {"a": 0, "b": range(10)})
        return list(itertools.islice(s, 2))
    first, peak = peak_bytes(build)
    assert first == [{"a": 0, "b": 10}, {"a": 0, "b": 11}]
    assert peak < 20 * 2**20, peak


# --- pset_hash -----------------------------------------------------------------------


def test_hash_format_and_key_order():
    h = pset_hash({"a": 1, "b": "x"})
    assert len(h) == 32 and int(h, 16) >= 0
    assert pset_hash({"b": "x", "a": 1}) == h


@pytest.mark.parametrize("left, right", [
    (3, np.int64(3)), (3, np.uint8(3)), (1, 1.0), (0.5, np.float32(0.5)), (-0.0, 0),
    (float("nan"), np.float64("nan")), (True, np.bool_(True)), ("s", np.str_("s")),
    (None, None), (2**70, float(2**70)),
])
def test_hash_equal_values(left, right):
    assert pset_hash({"k": left}) == pset_hash({"k": right})


@pytest.mark.parametrize("left, right", [
    (True, 1), (False, 0), (1, 2), (1, "1"), (0.1, np.float32(0.1)), (None, "None"),
    (None, float("nan")), ("", None), (1.5, 1), ("a;1:b=i1", "a"),
])
def test_hash_different_values(left, right):
    assert pset_hash({"k": left}) != pset_hash({"k": right})


def test_hash_different_keys_and_no_ambiguity():
    assert pset_hash({"a": 1}) != pset_hash({"b": 1})
    assert pset_hash({"a": "x;1:b=i1"}) != pset_hash({"a": "x", "b": 1})
    assert pset_hash({}) != pset_hash({"": None})


def test_hash_is_stable_across_processes():
    code = "from psmpi.params import pset_hash; print(pset_hash({'a': 1, 'b': 'x', 'c': 0.25}))"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, env={"PYTHONHASHSEED": "123", "PYTHONPATH": str(root)})
    assert out.stdout.strip() == pset_hash({"a": 1, "b": "x", "c": 0.25})


def test_hash_rejects_values_without_canonical_form_and_bad_keys():
    for bad in (object(), [1, object()], {"x": {1: 2}}, {1, 2}):
        with pytest.raises(PsetError, match="no canonical form"):
            pset_hash({"k": bad})
    with pytest.raises(PsetError, match="keys must be str"):
        pset_hash({1: 1})
    with pytest.raises(PsetError):
        pset_hash([("a", 1)])


# --- pset_problems -------------------------------------------------------------------


def test_valid_psets_have_no_problems():
    assert pset_problems({"a": 1, "b": 0.5, "c": "x", "d": None, "e": True}) == []
    assert pset_problems({"n": np.int64(3), "f": np.float32(1), "b": np.bool_(0),
                          "s": np.str_("x"), "u": np.uint64(5), "big": 2**63 - 1}) == []
    # rich values: what the results file stores exactly and pset_hash hashes
    assert pset_problems({"l": [1, (2, None)], "d": {"x": {"y": [np.float32(1)]}},
                          "a": np.zeros((2, 3)), "c": 1j, "b": b"x", "huge": 2**100,
                          "u": np.uint64(2**64 - 1), "t": datetime.datetime(2020, 1, 1),
                          "day": datetime.date(2020, 1, 1), "dt": datetime.timedelta(1),
                          "m": np.datetime64("2020-01-01"), "ts": pd.Timestamp(0, tz="UTC"),
                          "o": np.array([[1], "x"], dtype=object)}) == []
    assert pset_problems({}) == []


@pytest.mark.parametrize("key, needle", [
    (1, "must be str"), ("", "empty"), (".", "HDF5"), ("..", "HDF5"),
    ("a/b", "contains '/'"), ("a\0b", "NUL"), ("_hidden", "reserved"),
    ("x" * 256, "at most 255"),
])
def test_key_rules(key, needle):
    problems = pset_problems({key: 1})
    assert len(problems) == 1 and needle in problems[0]


def test_key_of_255_characters_is_fine_and_every_problem_is_listed():
    assert pset_problems({"x" * 255: 1}) == []
    problems = pset_problems({"_a/b": [1], "ok": object()})
    assert len(problems) == 3
    assert any("'ok'" in p and "object" in p for p in problems)


@pytest.mark.parametrize("value, needle", [
    (object(), "holds a value of type object"), ([1, {2}], "of type set"), ({"a": {1: 2}}, "key of type int"),
    (np.zeros(2, dtype=[("x", int)]), "dtype [('x'"), ((1, decimal.Decimal(1)), "type decimal.Decimal"),
    (np.array([None, object()], dtype=object), "type object"), ("\ud800", "UTF-8"),
    (collections.OrderedDict(a=1), "collections.OrderedDict"),
])
def test_value_rules(value, needle):
    problems = pset_problems({"k": value})
    assert len(problems) == 1 and needle in problems[0] and "'k'" in problems[0]


def test_message_text_says_how_to_fix():
    assert pset_problems({"a/b": 1}) == [
        "key 'a/b' contains '/': HDF5 would read it as a path; rename the parameter"]
    assert pset_problems({"x": [1, object()]}) == [
        "value of key 'x' is or holds a value of type object, which psmpi cannot store exactly or hash; a "
        "pset may hold None, bool, int, float, complex, str, bytes, numpy scalars and arrays, "
        "datetime, date, timedelta, numpy.datetime64, pandas.Timestamp, and lists, tuples and "
        "dicts with str keys of these: pass the parameters it is built from (or a str naming "
        "it) and build the object in the worker"]


def test_non_dict_pset_is_one_problem():
    for bad in ([("a", 1)], None, "a=1"):
        problems = pset_problems(bad)
        assert len(problems) == 1 and "dict" in problems[0]


def test_checked_keys_cache_does_not_hide_problems_of_values():
    assert pset_problems({"cached": 1}) == []
    assert len(pset_problems({"cached": [object()]})) == 1


def test_plain_psets_is_true_only_where_pset_problems_finds_nothing():
    from psmpi import params
    assert params.plain_psets([{"a": 1, "b": 2.5}, {"a": None, "c": True}, {}])
    for bad in ([{"a": 1}, {"_a": 1}], [{"a": "str"}], [{"a": [1]}], [{1: 2}], [{"a": 1}, 5],
                [{"a/b": 1}], [{"a": {"x": 1}}]):
        assert not params.plain_psets(bad), bad
    assert params.plain_psets([{"ray": 1}]) and not params.plain_psets([{"ray": 1}], "ray")
    psets = [{"a": 1, "b": 2.5}, {"a": None, "c": True}]
    assert all(not params.pset_problems(p) for p in psets)

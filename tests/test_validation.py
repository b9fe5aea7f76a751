"""Bad input is refused before any compute, with one error listing every offender."""

import math
import os

import pandas as pd
import pytest

import psmpi
from psmpi.errors import ConfigError, PsetError


def counting_worker(pset):
    # A side effect the test can see: proves whether anything was computed.
    with open(os.environ["PSMPI_TEST_CALLS"], "a") as f:
        f.write("x")
    return {"y": 1}


@pytest.fixture
def calls(tmp_path, monkeypatch):
    path = tmp_path / "calls"
    path.write_text("")
    monkeypatch.setenv("PSMPI_TEST_CALLS", str(path))
    return path


def run(psets, tmp_path, **kwargs):
    return psmpi.map(counting_worker, psets, backend="serial", verbose=0,
                     out=str(tmp_path / "v.h5"), **kwargs)


def test_every_bad_pset_is_listed_and_nothing_runs(tmp_path, calls):
    psets = [{"a": 1}, {"a/b": 2}, {"_x": 3}, {"a": [1, object()]}, {"a": 4}, {1: 5}, {"": 1},
             "not a dict", {"a": 1, "b\0": 2}]
    with pytest.raises(PsetError) as info:
        run(psets, tmp_path)
    text = str(info.value)
    assert "7 of 9 psets are invalid" in text
    for index in (1, 2, 3, 5, 6, 7, 8):
        assert f"pset {index}:" in text, (index, text)
    assert "'/'" in text and "'_x'" in text and "type object" in text
    assert calls.read_text() == ""


def test_same_problem_lists_index_ranges(tmp_path, calls):
    psets = [{"a/b": i} for i in range(100)]
    with pytest.raises(PsetError, match=r"psets 0-99: key 'a/b'"):
        run(psets, tmp_path)


def test_types_changing_across_psets_are_computed_and_read_back_as_given(tmp_path, calls):
    """The store widens or makes the column general: every mix reads back exactly."""
    psets = [{"a": 1}, {"a": 2.5}, {"a": "x"}, {"a": None}, {"a": [1, (2,)]}, {"a": True}]
    res = run(psets, tmp_path)
    assert len(res) == 6 and len(calls.read_text()) == 6
    back = psmpi.read(tmp_path / "v.h5").sort_values("_pset_index")["a"].tolist()
    assert back == [1, 2.5, "x", None, [1, (2,)], True]
    assert list(map(type, back)) == [int, float, str, type(None), list, bool]


def test_generator_stops_at_bad_pset_and_keeps_what_was_done(tmp_path, calls):
    def psets():
        yield {"a": 1}
        yield {"a": 2}
        yield {"a/": 3}
    with pytest.raises(PsetError, match="pset 2"):
        run(psets(), tmp_path, group_size=1)
    # what was computed before the bad pset is committed and resumable
    assert len(psmpi.read(tmp_path / "v.h5")) == len(calls.read_text())


def test_dict_instead_of_list(tmp_path):
    with pytest.raises(PsetError, match="params.product"):
        run({"a": [1, 2]}, tmp_path)


def test_not_iterable(tmp_path):
    with pytest.raises(PsetError, match="got int"):
        run(5, tmp_path)


def test_unknown_map_kwarg(tmp_path):
    with pytest.raises(ConfigError, match="unknown keyword argument 'ncore'"):
        run([{"a": 1}], tmp_path, ncore=2)


def test_bad_worker_signature(tmp_path):
    with pytest.raises(ConfigError, match="must take"):
        psmpi.map(lambda: None, [{"a": 1}], backend="serial", out=None, verbose=0)


def test_empty_list_is_fine(tmp_path, calls):
    res = run([], tmp_path)
    assert len(res) == 0


def test_grid_with_a_bad_value_lists_every_offending_pset(tmp_path, calls):
    space = psmpi.params.product({"a": [1, 2]}, {"b": [0.5, object(), 1.5]})
    with pytest.raises(PsetError, match=r"psets 1, 4: value of key 'b' is or holds a value of "
                                        r"type object"):
        run(space, tmp_path)
    assert calls.read_text() == ""


def test_big_grid_is_checked_by_axis(monkeypatch):
    calls = []
    real_check = psmpi.driver.source.PsetChecker.check
    monkeypatch.setattr(psmpi.driver.source.PsetChecker, "check",
                        lambda self, i, p: calls.append(i) or real_check(self, i, p))
    space = psmpi.params.product({"a": range(3000)}, {"b": range(3000)})
    stream, total = psmpi.driver.source.checked_psets(space)
    assert total == 9_000_000
    assert len(calls) == 6000  # one check per axis value, not one per pset (9,000,000)
    assert next(stream) == (0, {"a": 0, "b": 0})


@pytest.mark.parametrize("psets", [
    [{"a": 1}, {"a\udcff": 2}],                               # a list
    psmpi.params.product({"a": [1]}, {"b\udcff": [1, 2]}),  # a grid, checked axis by axis
], ids=["list", "grid"])
def test_pset_key_utf8_cannot_encode_is_refused_before_compute(tmp_path, calls, psets):
    with pytest.raises(PsetError) as info:
        run(psets, tmp_path)
    text = str(info.value)
    assert "UTF-8 cannot encode" in text and "\\udcff" in text and "rename" in text, text
    assert "pset 1:" in text or "psets 0-1:" in text, text
    text.encode("utf-8")  # the message itself can be printed and logged
    assert calls.read_text() == ""


def test_pset_key_utf8_cannot_encode_stops_a_generator_before_its_pset(tmp_path, calls):
    def psets():
        yield {"a": 1}
        yield {"a\udcff": 2}

    with pytest.raises(PsetError, match=r"pset 1: key 'a\\udcff' is a str that UTF-8 cannot"):
        run(psets(), tmp_path)
    assert psmpi.read(str(tmp_path / "v.h5"))["a"].tolist() == [1]


@pytest.mark.parametrize("how", ["map", "init", "environment"])
def test_map_name_utf8_cannot_encode_is_a_config_error(tmp_path, calls, monkeypatch,
                                                      serial_session, how):
    if how == "environment":
        monkeypatch.setenv("PSMPI_NAME", "m\udcff")
    with pytest.raises(ConfigError, match=r"name .*UTF-8 cannot encode") as info:
        if how == "init":
            psmpi.init(backend="serial", name="m\udcff")
        run([{"a": 1}], tmp_path, **({"name": "m\udcff"} if how == "map" else {}))
    str(info.value).encode("utf-8")
    assert calls.read_text() == ""


@pytest.mark.parametrize("psets", [
    psmpi.params.concat({"s": ["x"]}, {"t": [1]}),        # NaN fill after a str
    psmpi.params.concat({"t": [1]}, {"s": ["x", "y"]}),   # NaN first
    [{"s": True}, {"s": float("nan")}],
    [{"s": float("nan")}, {"s": False}],
    iter([{"s": "x"}, {"s": "y"}, {"s": float("nan")}]),  # a generator
])
def test_nan_under_a_str_or_bool_key_is_computed_and_stored_as_given(tmp_path, calls, psets):
    """params.concat's documented NaN fill: a str or bool column takes NaN (it becomes general)."""
    given = list(psets) if isinstance(psets, list) else psets
    res = run(given, tmp_path, group_size=1)
    assert len(res.missing) == 0 and len(res) == len(calls.read_text())
    back = psmpi.read(tmp_path / "v.h5").sort_values("_pset_index")["s"].tolist()
    nan_at = [i for i, v in enumerate(back) if isinstance(v, float)]
    assert len(nan_at) >= 1 and all(math.isnan(back[i]) for i in nan_at)
    assert all(type(v) in (str, bool) for i, v in enumerate(back) if i not in nan_at), back
    hashes = psmpi.read(tmp_path / "v.h5").sort_values("_pset_index")["_pset_hash"].tolist()
    assert hashes == [psmpi.params.pset_hash(p) for p in res.results.drop(columns="y")
                      .to_dict("records")]


@pytest.mark.parametrize("psets", [
    [{"s": "x"}, {"s": None}], [{"s": True}, {"s": None}],
    pd.DataFrame({"s": ["x", None], "b": [True, None]}),
    psmpi.params.concat({"s": ["x"]}, {"t": [1], "s": None}),
])
def test_none_under_a_str_or_bool_key_is_computed_and_stored(tmp_path, calls, psets):
    res = run(psets, tmp_path)
    assert len(res) == 2 and len(res.missing) == 0, res.missing.df
    assert res.results["s"].iloc[1] is None or pd.isna(res.results["s"].iloc[1])

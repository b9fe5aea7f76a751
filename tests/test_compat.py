"""paramsurvey compatibility: results.missing is a DataFrame that map() reruns exactly, and
params.product takes a MapResults. (PARAMSURVEY_* variables: tests/test_config.py.)"""

from __future__ import annotations

import math

import pandas as pd
import pytest

import psmpi

pytestmark = pytest.mark.usefixtures("serial_session")


def fails_unless_fixed(pset):
    if not pset.get("fixed"):
        raise ValueError(f"pset {pset}")
    return {"y": 1}


def echo(pset):
    """Records every pset it is given as it got it."""
    return {"seen": repr(sorted(pset.items()))}


def test_missing_is_a_dataframe_with_the_old_api(tmp_path):
    res = psmpi.map(fails_unless_fixed, [{"a": a} for a in range(4)], out=str(tmp_path / "s.h5"))
    missing = res.missing
    assert isinstance(missing, pd.DataFrame) and isinstance(missing, psmpi.Missing)
    for column in ("a", "_kind", "_exception", "_traceback", "_rank", "_host", "_pid",
                   "_pset_index"):
        assert column in missing.columns, column
    assert missing["a"].tolist() == [0, 1, 2, 3] and len(missing) == 4 and bool(missing)
    assert type(missing.df) is pd.DataFrame and missing.df.equals(pd.DataFrame(missing))
    assert missing.to_df().equals(missing.df)
    assert missing.to_psets() == [{"a": a} for a in range(4)]
    assert [d["a"] for d in missing.iterdicts()] == [0, 1, 2, 3]
    some = missing[missing["a"] % 2 == 1]  # pandas operations keep a Missing
    assert isinstance(some, psmpi.Missing) and some.to_psets() == [{"a": 1}, {"a": 3}]
    empty = psmpi.map(square, [{"a": 1}], out=None).missing
    assert isinstance(empty, pd.DataFrame) and len(empty) == 0 and not empty
    assert empty.to_psets() == []


def square(pset):
    return {"y": pset["a"] ** 2}


PSETS = [{"a": 1, "b": None, "s": "x"}, {"a": 2, "s": None}, {"a": 3, "b": 2.5, "s": "z"},
         {"a": 4, "b": math.nan, "s": "w", "t": None}, {"a": 5, "t": None}]


def test_to_psets_round_trips_none_absent_and_nan(tmp_path):
    path = str(tmp_path / "s.h5")
    res = psmpi.map(fails_unless_fixed, PSETS, out=path, name="m")
    got = res.missing.to_psets()
    assert [psmpi.params.pset_hash(p) for p in got] == [psmpi.params.pset_hash(p) for p in PSETS]
    assert [sorted(p) for p in got] == [sorted(p) for p in PSETS]  # absent stays absent
    assert got[0]["b"] is None and got[1]["s"] is None and math.isnan(got[3]["b"])


def test_map_of_missing_reruns_exactly_those_psets(tmp_path):
    path = str(tmp_path / "s.h5")
    first = psmpi.map(fails_unless_fixed, PSETS, out=path, name="m")
    assert len(first.missing) == len(PSETS)
    again = psmpi.map(echo, first.missing, out=path, name="m")
    assert len(again.missing) == 0 and again.progress.finished == len(PSETS)
    assert again.results["seen"].tolist() == [repr(sorted(p.items())) for p in PSETS]
    # the stored rows are those psets: a third run of the original psets resumes them all
    third = psmpi.map(echo, PSETS, out=path, name="m")
    assert third.progress.resumed == len(PSETS) and third.stats.computed == 0


def test_an_edited_missing_frame_runs_as_edited(tmp_path):
    res = psmpi.map(fails_unless_fixed, [{"a": 1}, {"a": 2}], out=None)
    edited = res.missing.copy()
    edited["fixed"] = True
    assert edited.to_psets() == [{"a": 1, "fixed": True}, {"a": 2, "fixed": True}]
    assert psmpi.map(fails_unless_fixed, edited, out=None).results["y"].tolist() == [1, 1]


def test_missing_from_a_file_gives_the_stored_psets(tmp_path):
    path = str(tmp_path / "s.h5")
    psmpi.map(fails_unless_fixed, [{"a": 1, "s": "x"}, {"a": 2, "s": None}], out=path)
    stored = psmpi.Missing(psmpi.read(path, failures=True))
    assert stored.to_psets() == [{"a": 1, "s": "x"}, {"a": 2, "s": None}]


def test_product_takes_a_map_results(tmp_path):
    stage1 = psmpi.map(square, psmpi.params.product({"a": [1, 2]}), out=str(tmp_path / "s.h5"))
    space = psmpi.params.product(stage1, {"c": [10, 20]})
    assert space.to_list() == [{"a": 1, "y": 1, "c": 10}, {"a": 1, "y": 1, "c": 20},
                               {"a": 2, "y": 4, "c": 10}, {"a": 2, "y": 4, "c": 20}]
    assert len(psmpi.params.as_space(stage1)) == 2
    last = psmpi.params.concat(stage1, {"a": 3}).to_list()[-1]
    assert last["a"] == 3 and math.isnan(last["y"])


def test_a_plain_frame_of_missing_drops_the_bookkeeping_columns(tmp_path):
    res = psmpi.map(fails_unless_fixed, [{"a": 1, "s": "x"}, {"a": 2, "s": None}], out=None)
    again = psmpi.map(echo, res.missing.df, out=None)
    assert again.results["seen"].tolist() == [repr([("a", 1), ("s", "x")]),
                                              repr([("a", 2), ("s", None)])]


def test_missing_pickles_and_keeps_per_pset_ray_options_out(tmp_path):
    import pickle

    res = psmpi.map(fails_unless_fixed, [{"a": 1, "ray": {"num_cpus": 1}}], out=None)
    assert res.missing.to_psets() == [{"a": 1}]
    back = pickle.loads(pickle.dumps(res.missing))
    assert isinstance(back, psmpi.Missing) and back.to_psets() == [{"a": 1}]


def test_a_pset_key_named_like_an_attribute_and_concatenated_missing(tmp_path):
    res = psmpi.map(fails_unless_fixed, [{"psets": 1, "df": "x"}, {"psets": 2, "df": None}],
                    out=None)
    assert res.missing.to_psets() == [{"psets": 1, "df": "x"}, {"psets": 2, "df": None}]
    assert type(res.missing.df) is pd.DataFrame and res.missing["df"].tolist()[0] == "x"
    both = pd.concat([res.missing, res.missing])
    assert both.to_psets() == [{"psets": 1, "df": "x"}, {"psets": 2, "df": None}] * 2

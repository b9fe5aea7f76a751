"""Post-processing helpers: filter_rows, print_table, missing_psets."""

import io

import numpy as np
import pandas as pd
import pytest

import psmpi
from psmpi import ConfigError, filter_rows, missing_psets, print_table


@pytest.fixture
def df():
    return pd.DataFrame({"a": [1, 2, 3, 4], "name": ["x", "y", "x", None],
                         "y": [0.5, np.nan, 2.5, 3.5], "_pset_hash": ["h1", "h2", "h3", "h4"]})


@pytest.mark.parametrize("conditions, expected", [
    ([], [1, 2, 3, 4]),
    ([("a", ">", 2)], [3, 4]),
    ([("a", ">=", 2), ("a", "<", 4)], [2, 3]),
    ([("a", "<=", 1)], [1]),
    ([("name", "==", "x")], [1, 3]),
    ([("name", "!=", "x")], [2, 4]),
    ([("a", "in", [1, 4, 9])], [1, 4]),
    ([("a", "not in", (1, 4))], [2, 3]),
    ([("y", "==", None)], [2]),
    ([("y", "!=", float("nan"))], [1, 3, 4]),
    ([("name", "==", None)], [4]),
    ([("y", ">", 1.0)], [3, 4]),
    ([("name", "~", "^[xy]$")], [1, 2, 3]),
    ([("a", "~", "[24]")], [2, 4]),
])
def test_filter_rows(df, conditions, expected):
    out = filter_rows(df, conditions)
    assert out["a"].tolist() == expected
    assert list(out.index) == [a - 1 for a in expected]  # the original index is kept


@pytest.mark.parametrize("conditions, message", [
    ([("a", ">")], r"must be a tuple \(column, operator, value\)"),
    (["a > 2"], "must be a tuple"),
    ([("b", ">", 2)], r"no column 'b'; the columns are \['a'"),
    ([("a", "=>", 2)], r"unknown operator '=>'"),
    ([("a", "in", 2)], "'in' needs a list of values"),
    ([("a", "in", "12")], "'in' needs a list of values"),
    ([("name", "<", 3)], "cannot compare column 'name'"),
    ([("name", "~", "(")], "is not a regular expression"),
    (("a", ">", 2), r"must be a list of conditions: \[\('a', '>', 2\)\]"),
])
def test_filter_rows_refuses_bad_conditions(df, conditions, message):
    with pytest.raises(ConfigError, match=message):
        filter_rows(df, conditions)


def test_print_table_hides_bookkeeping_columns_by_default(df):
    out = io.StringIO()
    print_table(df.iloc[:2], file=out)
    assert out.getvalue().splitlines() == [" a name   y", " 1    x 0.5", " 2    y NaN"]


def test_print_table_columns_in_given_order(df, capsys):
    print_table(df.iloc[:1], ["y", "_pset_hash"])
    assert capsys.readouterr().out.splitlines() == ["  y _pset_hash", "0.5         h1"]


def test_print_table_empty_and_unknown_column(df, capsys):
    print_table(df.iloc[:0], ["a"])
    assert capsys.readouterr().out == "(no rows; columns ['a'])\n"
    with pytest.raises(ConfigError, match=r"no column\(s\) \['b'\]"):
        print_table(df, ["a", "b"])


def square(pset):
    return {"y": pset["a"] ** 2}


def stored(tmp_path, psets, name="sq"):
    path = tmp_path / "study.h5"
    psmpi.map(square, psets, name=name, out=path, backend="serial", verbose=0, logfile=False)
    return path


def test_missing_psets_from_a_file_is_what_map_would_compute(tmp_path):
    space = psmpi.params.product({"a": [1, 2, 3]}, {"b": [10, 20]})
    path = stored(tmp_path, space.to_list()[::2])  # a=1,b=10; a=2,b=10; a=3,b=10
    todo = missing_psets(space, path)
    assert todo.to_list() == [{"a": 1, "b": 20}, {"a": 2, "b": 20}, {"a": 3, "b": 20}]
    assert isinstance(todo, psmpi.params.Space) and len(todo) == 3
    res = psmpi.map(square, todo, name="sq", out=path, backend="serial", verbose=0, logfile=False)
    assert res.progress.resumed == 0 and len(res) == 3
    assert len(missing_psets(space, path)) == 0


def test_missing_psets_counts_identical_psets(tmp_path):
    path = stored(tmp_path, [{"a": 1}, {"a": 1}, {"a": 2}])
    space = [{"a": 1}] * 5 + [{"a": 2}, {"a": 3}]
    assert missing_psets(space, path).to_list() == [{"a": 1}] * 3 + [{"a": 3}]
    again = missing_psets(space, path)  # re-iterable, each pass from the full counts
    assert again.to_list() == again.to_list()


def test_missing_psets_chooses_the_map_by_name(tmp_path):
    stored(tmp_path, [{"a": 1}], name="one")
    path = stored(tmp_path, [{"a": 2}], name="two")
    assert missing_psets({"a": [1, 2]}, path, name="one").to_list() == [{"a": 2}]
    assert missing_psets({"a": [1, 2]}, psmpi.read(path, "two")).to_list() == [{"a": 1}]
    with pytest.raises(psmpi.StoreError, match="pass name="):
        missing_psets({"a": [1, 2]}, path)


def test_missing_psets_on_some_keys_is_psyrun_missing(tmp_path):
    path = stored(tmp_path, [{"a": 1, "b": 10}, {"a": 2, "b": 99}])
    space = {"a": [1, 2, 3], "b": [10, 20]}
    assert missing_psets(space, path, on=["a"]).to_list() == [{"a": 3, "b": 10}, {"a": 3, "b": 20}]
    assert missing_psets(space, path, on=["a", "b"]).to_list() == [
        {"a": 1, "b": 20}, {"a": 2, "b": 10}, {"a": 2, "b": 20}, {"a": 3, "b": 10},
        {"a": 3, "b": 20}]


def test_missing_psets_refusals():
    plain = pd.DataFrame({"a": [1]})
    with pytest.raises(ConfigError, match="no _pset_hash column.*on="):
        missing_psets({"a": [1, 2]}, plain)
    assert missing_psets({"a": [1, 2]}, plain, on=["a"]).to_list() == [{"a": 2}]
    with pytest.raises(ConfigError, match=r"on=\['c'\], but \['c'\] are not columns of both"):
        missing_psets({"a": [1, 2]}, plain, on=["c"])
    with pytest.raises(ConfigError, match="results file path or a DataFrame, not int"):
        missing_psets({"a": [1]}, 3)


def test_missing_psets_with_an_empty_file_map(tmp_path):
    path = stored(tmp_path, [])
    assert missing_psets({"a": [1, 2]}, path, name="sq").to_list() == [{"a": 1}, {"a": 2}]
    assert len(missing_psets({"a": [1, 2]}, pd.DataFrame(), on=["a"])) == 2

"""Post-processing helpers: filter stored rows, print them, find what a space still lacks.

>>> import pandas as pd
>>> df = pd.DataFrame({"a": [1, 2, 3], "name": ["x", "y", "x"], "y": [0.5, 1.5, 2.5]})
>>> filter_rows(df, [("a", ">=", 2), ("name", "==", "x")])
   a name    y
2  3    x  2.5
"""

from __future__ import annotations

import collections
import operator
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from .. import layout, params
from ..errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

_COMPARE = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
            ">": operator.gt, ">=": operator.ge}
OPERATORS = (*_COMPARE, "in", "not in", "~")
"""The operators of :func:`filter_rows` conditions."""


def is_null(value: Any) -> bool:
    """None or NaN: a cell without a value."""
    return value is None or (isinstance(value, float) and value != value)


def _mask(df: pd.DataFrame, condition: Any) -> pd.Series:
    if not (isinstance(condition, (tuple, list)) and len(condition) == 3):
        raise ConfigError(f"filter condition {condition!r} must be a tuple (column, operator, "
                          "value), e.g. ('a', '>', 2)")
    column, op, value = condition
    if column not in df.columns:
        raise ConfigError(f"filter condition {condition!r}: no column {column!r}; the columns "
                          f"are {list(df.columns)}")
    if op not in OPERATORS:
        raise ConfigError(f"filter condition {condition!r}: unknown operator {op!r}; use one "
                          f"of {list(OPERATORS)}")
    col = df[column]
    if op == "~":
        return _search(col, value, condition)
    if op in ("in", "not in"):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise ConfigError(f"filter condition {condition!r}: {op!r} needs a list of values")
        found = col.isin(list(value))
        return ~found if op == "not in" else found
    if is_null(value) and op in ("==", "!="):  # NaN == NaN is False: nulls need isna()
        return col.isna() if op == "==" else col.notna()
    try:
        return _COMPARE[op](col, value).fillna(False).astype(bool)  # NA compares as no match
    except TypeError as exc:
        raise ConfigError(f"filter condition {condition!r}: cannot compare column {column!r} "
                          f"({col.dtype}) with {value!r}: {exc}") from None


def _search(col: pd.Series, pattern: Any, condition: Any) -> pd.Series:
    """Where the regular expression ``pattern`` is found in the value's text (nulls: never)."""
    try:
        found = re.compile(str(pattern)).search
    except re.error as exc:
        raise ConfigError(f"filter condition {condition!r}: {pattern!r} is not a regular "
                          f"expression: {exc}") from None
    return col.map(lambda v: not is_null(v) and found(str(v)) is not None).astype(bool)


def filter_rows(df: pd.DataFrame, conditions: Sequence[tuple]) -> pd.DataFrame:
    """The rows of ``df`` for which every condition holds.

    Parameters
    ----------
    df : pandas.DataFrame
        For example ``psmpi.read("study.h5")``.
    conditions : list of (column, operator, value)
        Operators: ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``in`` and ``not in``
        (value a list), ``~`` (a regular expression found in the value's text; a null
        never matches). ``("a", "==", None)`` selects rows where ``a`` has no value
        (null or NaN), ``!=`` the others. An empty list keeps every row.

    Returns
    -------
    pandas.DataFrame
        The matching rows, with their original index.

    Raises
    ------
    ConfigError
        For a malformed condition, an unknown column or operator, or values that
        cannot be compared; the condition is named.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"a": [1, 2, 3], "b": [None, "u", "v"]})
    >>> filter_rows(df, [("a", "in", [1, 3]), ("b", "!=", None)])
       a  b
    2  3  v
    """
    import pandas as pd
    if isinstance(conditions, tuple) and conditions and isinstance(conditions[0], str):
        raise ConfigError(f"conditions must be a list of conditions: [{conditions!r}]")
    mask = pd.Series(True, index=df.index)
    for condition in conditions:
        mask &= _mask(df, condition)
    return df[mask]


def print_table(df: pd.DataFrame, columns: Sequence[str] | None = None, *,
                file: TextIO | None = None) -> None:
    """Print rows as an aligned table, without the index.

    Parameters
    ----------
    df : pandas.DataFrame
        The rows.
    columns : list of str, optional
        The columns, in this order. Default: every column not starting with ``_``
        (psmpi's bookkeeping columns hidden), or all if that leaves none.
    file : file object, optional
        Where to print (default ``sys.stdout``).

    Examples
    --------
    >>> import pandas as pd
    >>> print_table(pd.DataFrame({"a": [1, 20], "_pset_hash": ["x", "y"], "y": [0.5, 1.0]}))
     a   y
     1 0.5
    20 1.0
    """
    if columns is None:
        columns = [c for c in df.columns if not str(c).startswith("_")] or list(df.columns)
    unknown = [c for c in columns if c not in df.columns]
    if unknown:
        raise ConfigError(f"print_table: no column(s) {unknown}; the columns are {list(df.columns)}")
    out = sys.stdout if file is None else file
    if len(df) == 0:
        print(f"(no rows; columns {list(columns)})", file=out)
    else:
        print(df[list(columns)].to_string(index=False), file=out)


def _stored(results: Any, name: str | None) -> pd.DataFrame:
    import pandas as pd
    if isinstance(results, pd.DataFrame):
        return results
    if isinstance(results, (str, os.PathLike)):
        from ..store import read  # here: post-processing without h5py at import time

        return read(results, name)
    raise ConfigError(f"results must be a results file path or a DataFrame, not "
                      f"{type(results).__name__}")


def missing_psets(space: Any, results: Any, name: str | None = None, *,
                  on: Sequence[str] | None = None) -> params.Space:
    """The psets of ``space`` that have no stored result yet.

    Parameters
    ----------
    space : Space, dict of axes, list of dicts or DataFrame
        Anything :func:`psmpi.params.as_space` accepts.
    results : str, os.PathLike or pandas.DataFrame
        A results file (read with :func:`psmpi.read`) or rows read from one.
    name : str, optional
        The map in the file, if it holds several.
    on : list of str, optional
        Default (None): exactly the psets ``map()`` would still compute on this file, by
        :func:`psmpi.params.pset_hash` of each whole pset against the stored
        ``_pset_hash`` column, counting identical psets (three copies and one stored
        row leave two). With ``on=["a", "b"]``: the psets whose values of these keys
        appear in no stored row, whatever their other keys (psyrun's ``missing``).

    Returns
    -------
    Space
        Lazy, in the order of ``space``: feed it to ``map()``, or ``len()`` it.

    Raises
    ------
    ConfigError
        If ``results`` has no ``_pset_hash`` column (pass ``on=``) or lacks an ``on`` key.

    Examples
    --------
    >>> import pandas as pd
    >>> stored = pd.DataFrame({"a": [1, 1], "b": [10, 20], "y": [0, 0]})
    >>> missing_psets({"a": [1, 2], "b": [10, 20]}, stored, on=["a", "b"]).to_list()
    [{'a': 2, 'b': 10}, {'a': 2, 'b': 20}]
    >>> missing_psets({"a": [1, 2], "b": [10, 20]}, stored, on=["a"]).to_list()
    [{'a': 2, 'b': 10}, {'a': 2, 'b': 20}]
    """
    space = params.as_space(space)
    df = _stored(results, name)
    if len(df) == 0:  # a map with no rows yet may have no columns either
        return space
    if on is not None:
        on = list(on)
        lacking = [k for k in on if k not in df.columns or k not in space.keys]
        if lacking:
            raise ConfigError(f"missing_psets: on={on}, but {lacking} are not columns of both "
                              f"the results {list(df.columns)} and the space {space.keys}")
        return params.subtract(space, df[on])
    if layout.PSET_HASH not in df.columns:
        raise ConfigError("missing_psets: the results have no _pset_hash column (read them "
                          "with psmpi.read, which keeps it), or pass on=[keys] to compare "
                          "parameter columns")
    stored = collections.Counter(df[layout.PSET_HASH].astype(str))
    keys = space.keys

    def rows() -> Any:
        left = stored.copy()  # every iteration starts from the full count
        for pset in space:
            digest = params.pset_hash(pset)
            if left[digest] > 0:
                left[digest] -= 1
            else:
                yield tuple(pset[k] for k in keys)

    return params.Space(keys, rows)

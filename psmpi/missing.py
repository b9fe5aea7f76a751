"""psmpi.Missing: the psets of a map that produced no result, as a pandas DataFrame.

A module of its own because the class derives from ``pandas.DataFrame``: defining it imports
pandas (0.3-0.5 s), which ``import psmpi`` and worker processes must not pay. The driver
imports it when a map finishes; ``psmpi.Missing`` is resolved on first use (psmpi/__init__.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd

from . import layout
from .results import _rows_as_dicts
from .values import hash_token


class Missing(pd.DataFrame):
    """The psets of a map that produced no result, with why: a pandas DataFrame.

    The pset columns plus ``_kind`` (exception, bad_result, unpicklable, unstorable,
    crashed, timeout), ``_exception`` ("Type: message"), ``_traceback``, ``_rank``, ``_host``,
    ``_pid``, ``_pset_index`` and the other bookkeeping columns, as paramsurvey's
    ``results.missing``. Rerun them with ``psmpi.map(worker, missing)`` or
    ``psmpi.map(worker, missing.to_psets())``; ``missing.df`` is the plain DataFrame. Unlike a
    DataFrame, ``bool(missing)`` says whether it has rows.
    """

    # The psets as map() was given them, by pset index: what the table cannot tell apart
    # (a key absent or None, None or NaN) they still hold. pandas carries them along.
    # (``_``: a pset key never is, so no column hides it from getattr)
    _metadata = ["_psets"]
    _psets: dict[int, dict] | None = None

    def __init__(self, data: Any = None, *args: Any, psets: dict[int, dict] | None = None,
                 **kwargs: Any):
        super().__init__(data, *args, **kwargs)
        if psets is not None:
            self._psets = psets

    @property
    def _constructor(self) -> type:
        return Missing

    def __bool__(self) -> bool:
        return len(self) > 0

    def __repr__(self) -> str:
        if not len(self):
            return "Missing(0 psets)"
        return f"Missing({len(self)} psets)\n{pd.DataFrame.__repr__(self)}"

    @property
    def df(self) -> pd.DataFrame:
        """The same table as a plain DataFrame."""
        return pd.DataFrame(self)

    def to_df(self) -> pd.DataFrame:
        return self.df

    def iterdicts(self) -> Iterator[dict]:
        return _rows_as_dicts(self.df)

    def to_psets(self) -> list[dict]:
        """The failed psets as dicts, bookkeeping columns dropped, ready for map().

        A row whose pset columns still hold the pset map() was given gives that pset exactly
        (None, NaN and absent keys as they were). Other rows (edited ones, or a Missing made
        from ``psmpi.read(..., failures=True)``) give their columns' values, with a missing
        value under a str or bool key as None and a key that is None in every row left out
        (the file stores no column for it).
        """
        from .params import as_space

        rows = as_space(self.df).to_list()
        originals = self._psets
        if not originals or layout.PSET_INDEX not in self.columns:
            return rows
        for i, index in enumerate(self[layout.PSET_INDEX].tolist()):
            original = originals.get(index)
            if original is not None and _holds(rows[i], original):
                rows[i] = dict(original)  # per-pset ray options stay out
        return rows


_ABSENT = object()


def _is_na(value: Any) -> bool:
    return value is None or value is _ABSENT or (isinstance(value, float) and value != value)


def _holds(row: dict, pset: dict) -> bool:
    """Whether a row read back from the table shows ``pset``, as far as the table can tell."""
    for key in row.keys() | pset.keys():
        given, shown = pset.get(key, _ABSENT), row.get(key, _ABSENT)
        if _is_na(given) and _is_na(shown):
            continue
        if given is _ABSENT or shown is _ABSENT:
            return False
        try:  # as pset_hash compares: 1 == 1.0, arrays by shape and values, NaN inside alike
            if hash_token(given) != hash_token(shown):
                return False
        except (TypeError, RecursionError):  # no canonical form: not shown as it was
            return False
    return True

"""Parameter spaces: build, combine, hash and check psets.

A *pset* is a plain dict ``{name: value}`` (which values: :func:`pset_problems`). A
:class:`Space` is a lazy, re-iterable collection of psets built with :func:`product`,
:func:`zip`, :func:`concat`, :func:`subtract` and :func:`missing` (operators ``*``, ``+``,
``-``). A Space stores a recipe, never the list of psets: a product of two 3000-value
axes (9 million psets) costs a few kilobytes until iterated.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import itertools
import math
import operator
import sys
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, islice, repeat
from typing import Any

import numpy as np

from psmpi import values as _values
from psmpi.errors import PsetError

__all__ = ["Space", "product", "zip", "concat", "subtract", "missing", "as_space",
           "pset_hash", "pset_problems", "key_problems", "utf8_encodable"]

_zip = builtins.zip  # this module defines its own zip(); internals need the builtin
_NAN = float("nan")  # fill value of concat(); a plain float so it hashes like any NaN

class Space:
    """A lazy, re-iterable parameter space: an ordered collection of psets.

    Build spaces with :func:`product`, :func:`zip`, :func:`concat`, :func:`as_space`;
    the constructor is internal. Iterating yields a new dict per pset, so callers may
    mutate what they get. ``*`` is :func:`product`, ``+`` :func:`concat`, ``-``
    :func:`subtract`; the other operand may be anything :func:`as_space` accepts.

    Examples
    --------
    >>> s = as_space({"a": [1, 2, 3]}) * {"b": [10, 20]}
    >>> len(s), s.keys
    (6, ['a', 'b'])
    >>> next(iter(s))
    {'a': 1, 'b': 10}
    """

    __slots__ = ("_keys", "_rows", "_len", "_axes")

    def __init__(self, keys: Iterable[Any], rows: Callable[[], Iterator[tuple]],
                 length: Any = None, axes: list[list] | None = None) -> None:
        self._keys = list(keys)
        self._rows = rows  # zero-arg callable -> fresh iterator of value tuples, in key order
        self._len = length  # int, zero-arg callable, or None (count by one pass, then cache)
        # value lists of a pure grid: lets product() flatten into one itertools.product
        self._axes = axes

    @property
    def keys(self) -> list:
        """The parameter names, in order (a copy)."""
        return list(self._keys)

    @property
    def axes(self) -> dict | None:
        """``{key: values}`` if the space is a pure grid (a product of value lists), else None.

        >>> product({"a": [1, 2]}, {"b": "x"}).axes
        {'a': [1, 2], 'b': ['x']}
        >>> print(concat({"a": 1}, {"a": 2}).axes)
        None
        """
        return None if self._axes is None else dict(_zip(self._keys, self._axes))

    def __iter__(self) -> Iterator[dict]:
        # map/zip run in C: about twice as fast as a generator expression
        return map(dict, map(_zip, repeat(self._keys), self._rows()))

    def __len__(self) -> int:
        if not isinstance(self._len, int):
            if callable(self._len):
                self._len = self._len()
            else:  # a filtered space: one pass, cached because spaces are immutable
                self._len = sum(1 for _ in self._rows())
        return self._len

    def __repr__(self) -> str:
        return f"Space({len(self)} psets, keys={self._keys!r})"

    def __mul__(self, other: Any) -> Space:
        return product(self, other)

    def __rmul__(self, other: Any) -> Space:
        return product(other, self)

    def __add__(self, other: Any) -> Space:
        return concat(self, other)

    def __radd__(self, other: Any) -> Space:
        return concat(other, self)

    def __sub__(self, other: Any) -> Space:
        return subtract(self, other)

    def __rsub__(self, other: Any) -> Space:
        return subtract(other, self)

    def to_list(self) -> list[dict]:
        """All psets as a list of dicts.

        >>> zip(a=[1, 2], b="x").to_list()
        [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'x'}]
        """
        return list(self)

    def to_df(self) -> Any:
        """All psets as a pandas DataFrame, one row per pset, one column per key.

        >>> product({"a": [1, 2]}, {"b": 0.5}).to_df()
           a    b
        0  1  0.5
        1  2  0.5
        """
        import pandas as pd  # imported here: workers that never call to_df skip its import cost

        if not self._keys:
            return pd.DataFrame(index=range(len(self)))
        return pd.DataFrame(list(self._rows()), columns=self._keys)


def _grid(keys: list, axes: list[list]) -> Space:
    return Space(keys, lambda: itertools.product(*axes), lambda: math.prod(map(len, axes)), axes)


def _from_rows(keys: list, rows: list[tuple]) -> Space:
    return Space(keys, rows.__iter__, len(rows))


def _flat(parts: tuple) -> tuple:
    return tuple(chain.from_iterable(parts))


def _getter(idx: list[int]) -> Callable[[tuple], tuple]:
    """A function row -> (row[i] for i in idx), always a tuple (unlike bare itemgetter)."""
    if len(idx) == 1:
        i = idx[0]
        return lambda row: (row[i],)
    return operator.itemgetter(*idx) if idx else (lambda row: ())


def _as_axis(key: Any, value: Any) -> list | None:
    """The values of a sequence axis, or None if value is one value (to broadcast).

    A list, tuple, range or 1-D array is an axis of its items, whatever they are: an axis
    of lists is ``[[1, 2], [3]]``. A str, bytes, dict or anything not iterable is one value.
    """
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__") \
            or getattr(value, "ndim", 1) == 0:
        return None
    if isinstance(value, (set, frozenset)) or getattr(value, "ndim", 1) != 1:
        raise PsetError(f"values of key {key!r} must be one value or a 1-D sequence of "
                        f"values, not {type(value).__name__}: pass a list (a list of arrays "
                        f"for array values)")
    if isinstance(value, np.ndarray) and value.dtype.kind in "mM":
        return list(value)  # tolist() would make datetime64[ns] plain ints
    # tolist() turns numpy/pandas values into plain Python scalars
    return value.tolist() if hasattr(value, "tolist") else list(value)


def _dict_space(axes: dict) -> Space:
    values = [_as_axis(k, v) for k, v in axes.items()]
    return _grid(list(axes), [[v] if vals is None else vals
                              for v, vals in _zip(axes.values(), values)])


def _list_space(psets: list | tuple) -> Space:
    bad = [i for i, p in enumerate(psets) if not isinstance(p, dict)]
    if bad:
        raise PsetError(f"a list of psets must hold only dicts; items {bad[:10]} are not")
    keys = list(dict.fromkeys(k for p in psets for k in p))
    # snapshot now, so later edits of the caller's list do not change the space
    return _from_rows(keys, [tuple(map(p.get, keys, repeat(_NAN))) for p in psets])


def _plain(value: Any, missing: tuple) -> Any:
    if isinstance(value, np.generic) and value.dtype.kind not in "mM":
        return value.item()  # not datetime64/timedelta64: item() may make them a date or an int
    # pd.NA of nullable columns, pd.NaT of datetime columns: a missing value, NaN
    return _NAN if value is missing[0] or value is missing[1] else value


def _is_missing(value: Any) -> bool:
    return value is None or (type(value) is float and value != value)


def _missing_as_none(values: list) -> list:
    """A column's values with its missing ones as None if the others are all str or all bool.

    pandas shows a missing value of a str column as NaN (a float), which no str or bool
    column of the results file can hold; None it can, and pandas calls it missing alike.
    """
    present = [v for v in values if not _is_missing(v)]
    if len(present) == len(values) or not present:
        return values
    kind = type(present[0])
    if kind not in (str, bool) or not all(type(v) is kind for v in present):
        return values
    return [None if _is_missing(v) else v for v in values]


def _frame_space(df: Any) -> Space:
    # '_' columns are a previous stage's bookkeeping (_pset_hash, _time, ...): not parameters
    cols = [i for i, c in enumerate(df.columns) if not (isinstance(c, str) and c.startswith("_"))]
    pd = sys.modules["pandas"]
    columns, missing = [], (pd.NA, pd.NaT)
    for i in cols:
        col = df.iloc[:, i]
        values = col.tolist()  # plain Python scalars for numeric and string dtypes
        if col.dtype == object or col.hasnans:  # numpy scalars, or pd.NA of nullable dtypes
            values = _missing_as_none([_plain(v, missing) for v in values])
        columns.append(values)
    rows = list(_zip(*columns)) if cols else [()] * len(df)
    return _from_rows([df.columns[i] for i in cols], rows)


def as_space(obj: Any) -> Space:
    """Turn a Space, dict of axes, list/tuple of pset dicts, DataFrame or MapResults into a
    Space.

    Parameters
    ----------
    obj
        A dict ``{key: sequence or value}`` is the product over its keys: a list, tuple,
        range or 1-D array is an axis of its items (lists too: ``[[1, 2], [3]]`` is two
        values); anything else, str and dict included, is a one-value axis. A list of
        psets fills keys some psets lack with NaN. DataFrame rows are psets; columns
        starting with ``_`` are dropped, and a missing value (NaN, None) in a column of str
        or of bool values is None. A
        :class:`psmpi.MapResults` is its ``results`` DataFrame: one pset per result row,
        with its pset and result columns (empty if the map ran with ``keep_results=False``).

    Raises
    ------
    PsetError
        For any other type.

    Examples
    --------
    >>> as_space([{"a": 1}, {"a": 2, "b": 3}]).to_list()
    [{'a': 1, 'b': nan}, {'a': 2, 'b': 3}]
    >>> as_space(3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    psmpi.errors.PsetError: cannot make a parameter space from int: ...
    """
    if isinstance(obj, Space):
        return obj
    if isinstance(obj, dict):
        return _dict_space(obj)
    if isinstance(obj, (list, tuple)):
        return _list_space(obj)
    pd = sys.modules.get("pandas")  # no pandas imported means obj cannot be a DataFrame
    if pd is not None and isinstance(obj, pd.DataFrame):
        return _frame_space(obj)
    results = sys.modules.get("psmpi.results")  # likewise for a MapResults
    if results is not None and isinstance(obj, results.MapResults):
        return _frame_space(obj.results)
    raise PsetError(f"cannot make a parameter space from {type(obj).__name__}: pass a Space, "
                    "a dict of axes {key: values}, a list of pset dicts, a pandas DataFrame or "
                    "a MapResults")


def _disjoint_keys(op: str, key_lists: Iterable[list]) -> list:
    keys: list = []
    for ks in key_lists:
        for k in ks:
            if k in keys:
                raise PsetError(f"{op}: key {k!r} appears in more than one factor; give each "
                                "parameter once (zip() varies keys together, concat() appends)")
            keys.append(k)
    return keys


def _product2(a: Space, b: Space) -> Space:
    keys = _disjoint_keys("product", [a._keys, b._keys])
    if a._axes is not None and b._axes is not None:
        return _grid(keys, a._axes + b._axes)

    def rows() -> Iterator[tuple]:
        # a is streamed, b repeated: materialise b once unless it is a cheap grid
        inner = None if b._axes is not None else list(b._rows())
        for row in a._rows():
            yield from map(row.__add__, b._rows() if inner is None else inner)

    return Space(keys, rows, lambda: len(a) * len(b))


def product(*factors: Any) -> Space:
    """Cartesian product of the factors; the last factor varies fastest.

    Parameters
    ----------
    *factors
        Anything :func:`as_space` accepts: a dict ``{key: sequence or scalar}``, a
        Space, a list/tuple of pset dicts, a DataFrame (``_`` columns dropped) or the
        MapResults of an earlier map (its result rows).

    Raises
    ------
    PsetError
        If a key appears in two factors.

    Examples
    --------
    >>> product({"a": [1, 2, 3]}, {"b": [10, 20]}).to_list()[:3]
    [{'a': 1, 'b': 10}, {'a': 1, 'b': 20}, {'a': 2, 'b': 10}]
    >>> len(product({"a": range(3000)}, {"b": range(3000)}))
    9000000
    """
    spaces = [as_space(f) for f in factors]
    return functools.reduce(_product2, spaces) if spaces else _grid([], [])


def zip(*factors: Any, **axes: Any) -> Space:  # noqa: A001 - mirrors psweep's pzip
    """Vary the factors together, position by position.

    Parameters
    ----------
    *factors, **axes
        Dicts ``{key: sequence or scalar}`` and keyword axes (scalars broadcast), or
        Spaces, lists of psets and DataFrames (merged pset by pset).

    Returns
    -------
    Space
        One pset per position; a single pset if every value is a scalar.

    Raises
    ------
    PsetError
        If the sequences differ in length (each key/factor and its length is named).

    Examples
    --------
    >>> zip({"a": [1, 2, 3], "b": [4, 5, 6], "c": 7}).to_list()
    [{'a': 1, 'b': 4, 'c': 7}, {'a': 2, 'b': 5, 'c': 7}, {'a': 3, 'b': 6, 'c': 7}]
    """
    parts = []  # (label, keys, length or None if broadcast, zero-arg iterator of row tuples)
    for i, f in enumerate([*factors, axes]):  # keyword axes act as one trailing dict
        if isinstance(f, dict):
            for k, v in f.items():
                vals = _as_axis(k, v)
                if vals is None:
                    parts.append((repr(k), [k], None, functools.partial(repeat, (v,))))
                else:  # builtin zip of one sequence yields the 1-tuples we need
                    parts.append((repr(k), [k], len(vals), functools.partial(_zip, vals)))
        else:
            s = as_space(f)
            parts.append((f"factor {i} (keys {s._keys})", s._keys, len(s), s._rows))
    keys = _disjoint_keys("zip", [p[1] for p in parts])
    sized = [(label, n) for label, _, n, _ in parts if n is not None]
    if len({n for _, n in sized}) > 1:
        listing = ", ".join(f"{label} has {n}" for label, n in sized)
        raise PsetError(f"zip: lengths differ: {listing}; give all sequences the same "
                        "length, or use product() for all combinations")
    n = sized[0][1] if sized else 1  # only scalars: a single pset
    makers = [p[3] for p in parts]
    return Space(keys, lambda: map(_flat, islice(_zip(*(m() for m in makers)), n)), n)


def _reorder(src: list, dst: list) -> Callable[[tuple], tuple]:
    """Row mapper from src key order to dst key order; keys src lacks become NaN."""
    pos = {k: i for i, k in enumerate(src)}
    get = _getter([pos.get(k, len(src)) for k in dst])  # index len(src): the NaN appended below
    return lambda row: get(row + (_NAN,))


def concat(*factors: Any) -> Space:
    """The factors' psets one after the other; missing keys are filled with NaN.

    Parameters
    ----------
    *factors
        Anything :func:`as_space` accepts. Keys are the ordered union of theirs.

    Examples
    --------
    >>> concat({"a": [1, 2]}, {"a": [2, 3], "b": 4}).to_list()
    [{'a': 1, 'b': nan}, {'a': 2, 'b': nan}, {'a': 2, 'b': 4}, {'a': 3, 'b': 4}]
    """
    spaces = [as_space(f) for f in factors]
    keys = list(dict.fromkeys(k for s in spaces for k in s._keys))

    def rows() -> Iterator[tuple]:
        return chain.from_iterable(
            s._rows() if s._keys == keys else map(_reorder(s._keys, keys), s._rows())
            for s in spaces)

    return Space(keys, rows, lambda: sum(map(len, spaces)))


def _without(a: Space, b: Space, keys: list) -> Space:
    """Psets of a whose values on keys equal those of no pset of b."""
    if not all(isinstance(k, str) for k in keys):
        raise PsetError(f"cannot compare psets with keys {keys!r}: keys must be str")
    keys = sorted(keys)
    pa, pb = (_getter([s._keys.index(k) for k in keys]) for s in (a, b))
    seen = {_digest(keys, pb(row)) for row in b._rows()}  # b materialised once, as digests
    return Space(a._keys, lambda: (row for row in a._rows() if _digest(keys, pa(row)) not in seen))


def subtract(a: Any, b: Any) -> Space:
    """Psets of a that match no pset of b on b's keys (``a - b``).

    Parameters
    ----------
    a, b
        Anything :func:`as_space` accepts. Values compare as in :func:`pset_hash`.

    Raises
    ------
    PsetError
        If b has a key a lacks: use :func:`missing` then.

    Examples
    --------
    >>> subtract({"a": [1, 2, 3], "b": [1, 2, 3]}, {"a": 2}).to_list()[:2]
    [{'a': 1, 'b': 1}, {'a': 1, 'b': 2}]
    >>> len(as_space({"a": [1, 2, 3]}) - {"a": 2})
    2
    """
    a, b = as_space(a), as_space(b)
    extra = [k for k in b._keys if k not in a._keys]
    if extra:
        raise PsetError(f"subtract: key(s) {extra} of the subtrahend are not keys of the "
                        f"minuend {a._keys}, so the result is ambiguous; use missing(a, b) "
                        "to compare on a's keys only")
    return _without(a, b, b._keys)


def missing(a: Any, b: Any) -> Space:
    """Psets of a not in b, comparing on a's keys only (b's extra keys are ignored).

    Parameters
    ----------
    a, b
        Anything :func:`as_space` accepts; typically ``missing(space, results_df)``
        gives the psets still to run. Values compare as in :func:`pset_hash`. b is
        hashed once; a is filtered lazily.

    Examples
    --------
    >>> missing({"a": [1, 2, 3]}, [{"a": 2.0, "c": 4}]).to_list()
    [{'a': 1}, {'a': 3}]
    """
    a, b = as_space(a), as_space(b)
    if any(k not in b._keys for k in a._keys):
        return a  # b lacks one of a's keys: no pset of a can be in b
    return _without(a, b, a._keys)


def _token(key: Any, v: Any) -> str:
    try:
        return _values.hash_token(v)
    except TypeError as exc:
        raise PsetError(f"cannot hash value of key {key!r}: {exc} has no canonical form; a "
                        f"pset may hold {_values.PSET_KINDS_TEXT}") from None
    except RecursionError:
        raise PsetError(f"cannot hash value of key {key!r}: it is nested too deeply (or "
                        f"contains itself)") from None


def _digest(keys: list, values: Iterable) -> bytes:
    return hashlib.blake2b(_encoded(tuple(keys), list(values)), digest_size=16).digest()


def pset_hash(pset: dict) -> str:
    """Stable 32-hex-character hash of a pset, equal for psets Python calls equal.

    Independent of key order, in the pset and in dicts it holds; ``1 == 1.0 ==
    numpy.int64(1)``, all NaNs (and NaTs) are equal, ``True`` differs from ``1``. Rich
    values: a list differs from a tuple and from an array with the same items (Python does
    not call them equal either); arrays hash by shape and element values, each element like
    the scalar it is, so ``numpy.array([1, 2])`` and ``numpy.array([1.0, 2.0])`` hash alike
    whatever their dtypes (the store may widen an array column's dtype); aware datetimes
    (and pandas.Timestamp) hash by their UTC instant, naive ones by their wall time, and the
    two never alike; a numpy.datetime64 hashes as the naive datetime of its instant; a date
    differs from a datetime. Built from a canonical text with length-prefixed tokens, never
    from ``hash()``, pickle or a repr other than ``repr(float)``: stable across processes,
    platforms and Python versions, and the hashes of scalar psets are those of every
    earlier psmpi.

    Raises
    ------
    PsetError
        For non-str keys, or a value with no canonical form (an arbitrary object, a dict
        with non-str keys).

    Examples
    --------
    >>> pset_hash({"a": 1, "b": "x"})
    '0bb4c62d5b3857f53867b8254f1790f6'
    >>> pset_hash({"b": "x", "a": 1.0}) == pset_hash({"a": 1, "b": "x"})
    True
    >>> pset_hash({"o": {"x": 1, "y": [2]}}) == pset_hash({"o": {"y": [2], "x": 1.0}})
    True
    >>> pset_hash({"p": (1, 2)}) == pset_hash({"p": [1, 2]})
    False
    """
    if not isinstance(pset, dict):
        raise PsetError(f"cannot hash a {type(pset).__name__}: a pset is a dict")
    return hashlib.blake2b(_encoded(tuple(pset), list(pset.values())),
                           digest_size=16).hexdigest()


def _encoded(keys: tuple, values: list) -> bytes:
    """Canonical bytes of a pset: its (key, value) pairs sorted by key, length-prefixed.

    The value tokens are :func:`psmpi.values.hash_token`'s; the common ones are inlined.
    """
    plan = _HASH_PLANS.get(keys) or _hash_plan(keys)
    parts = [HASH_HEADER]  # version tag, so a future encoding cannot collide
    append = parts.append
    try:
        for i, prefix in plan:
            # exact-type tests first: the common case is one comparison; length prefixes
            # keep the encoding unambiguous without escaping
            v = values[i]
            t = type(v)
            if t is str:
                append(f"{prefix}s{len(v)}:{v};")
            elif t is int:
                append(f"{prefix}i{v};")
            elif t is float and v == v and not v.is_integer():
                append(f"{prefix}f{v!r};")
            else:
                append(f"{prefix}{_token(keys[i], v)};")
    except ValueError:  # an int beyond Python's str() digit limit: the slow path has no limit
        parts[1:] = [f"{prefix}{_token(keys[i], values[i])};" for i, prefix in plan]
    return "".join(parts).encode("utf-8", "surrogatepass")


HASH_HEADER = "psmpi-pset-1;"


def encoded_part(key: str, value: Any) -> bytes:
    """The bytes ``(key, value)`` adds to the canonical encoding of every pset holding it.

    A pset's encoding is :data:`HASH_HEADER` then the parts of its keys in sorted order, so
    the psets of a grid can be hashed from one part per axis value (psmpi.worker.spans).
    """
    return _encoded((key,), [value])[len(HASH_HEADER):]


# Psets of a survey share a few key orders: for each, which value comes at which place of
# the sorted encoding and the encoded key before it. Saves sorting and formatting keys.
_HASH_PLANS: dict[tuple, tuple[tuple[int, str], ...]] = {}


def _hash_plan(keys: tuple) -> tuple[tuple[int, str], ...]:
    try:
        order = sorted(range(len(keys)), key=keys.__getitem__)
    except TypeError:
        raise PsetError(f"cannot hash pset with keys {list(keys)!r}: keys must be str") from None
    if not all(isinstance(k, str) for k in keys):
        raise PsetError(f"cannot hash pset with keys {list(keys)!r}: keys must be str")
    if len(_HASH_PLANS) > 1000:  # psets with ever new keys: do not grow without bound
        _HASH_PLANS.clear()
    plan = _HASH_PLANS[keys] = tuple((i, f"{len(keys[i])}:{keys[i]}=") for i in order)
    return plan


_PSET_SCALAR_TYPES = _values.PSET_SCALAR_TYPES
_GOOD_KEYS: set[str] = set()  # keys already checked: the common path is one set lookup
# value types that need no check at all (a str must be tested for lone surrogates)
_PLAIN_TYPES = _PSET_SCALAR_TYPES - {str}


def key_problems(k: Any, what: str = "parameter") -> list[str]:
    """Why ``k`` cannot name a column (a pset ``parameter`` or a ``result``), as fixes; [] if it can.

    >>> key_problems("a/b")
    ["key 'a/b' contains '/': HDF5 would read it as a path; rename the parameter"]
    """
    if not isinstance(k, str):
        return [f"key {k!r} is a {type(k).__name__}: {what} names must be str"]
    if not k:
        return [f"key '' is empty: give the {what} a name"]
    out = []
    if k in (".", ".."):
        out.append(f"key {k!r} is an HDF5 path component: rename the " + what)
    if "/" in k:
        out.append(f"key {k!r} contains '/': HDF5 would read it as a path; rename the " + what)
    if "\0" in k:
        out.append(f"key {k!r} contains a NUL character: HDF5 cannot store it; "
                   "rename the " + what)
    if k.startswith("_"):
        out.append(f"key {k!r} starts with '_', reserved for psmpi's bookkeeping columns; "
                   "rename the " + what)
    if len(k) > 255:
        out.append(f"key {k[:20]!r}... has {len(k)} characters: at most 255; shorten it")
    if not utf8_encodable(k):
        out.append(f"key {k!r} is a str that UTF-8 cannot encode (a lone surrogate, as left by "
                   f"errors='surrogateescape'), so HDF5 cannot store it; rename the {what}, "
                   f"e.g. to key.encode('utf-8', 'replace').decode()")
    return out


utf8_encodable = _values.utf8_encodable


def plain_psets(psets: list | tuple, reserved: str | None = None) -> bool:
    """True if every pset is a dict with valid keys (none of them ``reserved``) and only
    non-str plain scalar values, so that :func:`pset_problems` finds nothing in any; tested
    in C, with no Python call per pset (False says nothing: check each pset then).

    >>> plain_psets([{"a": 1, "b": 2.5}, {"a": 2, "b": None}]), plain_psets([{"a": "x"}])
    (True, False)
    """
    if not set(map(type, psets)) <= {dict}:
        return False
    keys = set(chain.from_iterable(psets))
    if reserved in keys:
        return False
    if not _GOOD_KEYS.issuperset(keys):
        if any(not isinstance(k, str) or key_problems(k) for k in keys - _GOOD_KEYS):
            return False
        if len(_GOOD_KEYS) < 10_000:
            _GOOD_KEYS.update(keys)
    return _PLAIN_TYPES.issuperset(map(type, chain.from_iterable(map(dict.values, psets))))


def pset_problems(pset: Any) -> list[str]:
    """Every problem of one pset, as messages saying how to fix it; [] if fine.

    Keys must be non-empty str, not ``.``/``..``, without ``/`` or NUL, not starting
    with ``_`` (psmpi's bookkeeping columns), at most 255 characters. Values may be what
    the results file stores exactly and :func:`pset_hash` hashes: None, bool, int, float,
    complex, str, bytes, numpy scalars and arrays, datetime, date, timedelta,
    numpy.datetime64, pandas.Timestamp, and lists, tuples and dicts with str keys of these,
    nested in any way (see :func:`psmpi.values.pset_value_problem`).

    Examples
    --------
    >>> pset_problems({"a": 1, "b": "x"})
    []
    >>> pset_problems({"a/b": 1})
    ["key 'a/b' contains '/': HDF5 would read it as a path; rename the parameter"]
    >>> pset_problems({"x": [1, (2, 3.5)], "d": {"n": None}})
    []
    >>> len(pset_problems({"x": [object()], "_y": 1}))  # one problem each
    2
    """
    if type(pset) is dict and _GOOD_KEYS.issuperset(pset) and \
            _PLAIN_TYPES.issuperset(map(type, pset.values())):
        return []  # the common case, tested in C: keys seen before, plain non-str values
    if not isinstance(pset, dict):
        return [f"a pset must be a dict {{name: value}}, not {type(pset).__name__}"]
    problems: list[str] = []
    for k, v in pset.items():
        if k not in _GOOD_KEYS:
            bad = key_problems(k)
            if bad:
                problems.extend(bad)
            elif len(_GOOD_KEYS) < 10_000:  # bounded: psets with ever-new keys must not leak
                _GOOD_KEYS.add(k)
        t = type(v)
        if t not in _PSET_SCALAR_TYPES or (t is str and not v.isascii()):
            msg = _values.pset_value_problem(k, v)
            if msg:
                problems.append(msg)
    return problems

"""Groups of a grid that travel as index ranges: the space's definition goes to every worker
once (inside the :class:`~psmpi.worker.task.Task`), then each group is only ``(start, stop)``.

A worker rebuilds the psets of its :class:`Span` from the :class:`Grid`, hashes them from one
precomputed part per axis value, and returns the results; rank 0 rebuilds the pset columns
with numpy, so no pset becomes a Python object on rank 0 (nor is pickled, sent or unpickled).

>>> from psmpi import params
>>> grid = Grid.of(params.product({"a": [1, 2, 3]}, {"b": ["x", "y"]}))
>>> grid.psets(2, 5)
[{'a': 2, 'b': 'x'}, {'a': 2, 'b': 'y'}, {'a': 3, 'b': 'x'}]
>>> grid.hashes(0, 1) == [params.pset_hash({"a": 1, "b": "x"})]
True
>>> grid.columns(2, 5)["a"].tolist(), grid.columns(2, 5)["b"]
([2, 2, 3], ['x', 'y', 'x'])
"""

from __future__ import annotations

import functools
import hashlib
import operator
from itertools import repeat
from typing import Any, NamedTuple

import numpy as np

from .. import params, values

# Exact types of axis values rank 0 turns into a numpy column (int only within int64);
# str stays a list: the store encodes str columns from Python strings.
_NUMPY_AXIS = {bool: np.bool_, float: np.float64, int: np.int64}


class Span(NamedTuple):
    """The psets ``start <= index < stop`` of the map's :class:`Grid`: a group sent as two ints."""

    start: int
    stop: int

    def __len__(self) -> int:  # a group's length is its number of psets, not 2
        return self.stop - self.start

    def indexes(self) -> range:
        return range(self.start, self.stop)


def group_indexes(group: Any) -> Any:
    """The pset indexes of a group: a list of ``(index, pset)`` pairs or a :class:`Span`."""
    if type(group) is Span:
        return group.indexes()
    return [index for index, _ in group]


class Grid:
    """A pure grid (a product of value lists) by its axes: the psets of any index range,
    their hashes and their columns, in bulk. The last axis varies fastest."""

    def __init__(self, keys: list[str], axes: list[list]):
        self.keys = list(keys)
        self.axes = [list(axis) for axis in axes]
        self.radices = [len(axis) for axis in self.axes]
        self.n = int(np.prod(self.radices, dtype=np.int64)) if self.keys else 0
        self._objects = [_object_array(axis) for axis in self.axes]
        # Per axis, the encoded hash part of each value, None until a span needs it (a worker
        # of a grid with a 20,000-value axis needs only the values of its own spans), and how
        # many are still None; made at the first hashes() (rank 0 never hashes a grid).
        self._parts: list[np.ndarray] | None = None
        self._unencoded: list[int] = []
        self._typed: dict[int, np.ndarray | None] = {}

    @classmethod
    def of(cls, space: Any) -> Grid | None:
        """The grid of a :class:`psmpi.params.Space` that is one (with keys), else None."""
        axes = space.axes if isinstance(space, params.Space) else None
        if not axes:
            return None
        return cls(list(axes), list(axes.values()))

    def __len__(self) -> int:
        return self.n

    def digits(self, start: int, stop: int) -> list[np.ndarray]:
        """For each axis, the position of its value in each pset of ``[start, stop)``."""
        rest = np.arange(start, stop, dtype=np.int64)
        digits = []
        for radix in reversed(self.radices):
            digits.append(rest % radix)
            rest = rest // radix
        return digits[::-1]

    def psets(self, start: int, stop: int) -> list[dict]:
        """The psets of ``[start, stop)`` as new dicts (their values shared, as a Space's)."""
        columns = [objects[d].tolist() for objects, d in zip(self._objects,
                                                              self.digits(start, stop))]
        return list(map(dict, map(zip, repeat(self.keys), zip(*columns))))

    def hashes(self, start: int, stop: int) -> list[str]:
        """:func:`psmpi.params.pset_hash` of each pset of ``[start, stop)``."""
        digits = self.digits(start, stop)
        order = sorted(range(len(self.keys)), key=self.keys.__getitem__)
        encoded = functools.reduce(operator.add, [self.hash_parts(i, digits[i]) for i in order])
        blake2b = hashlib.blake2b
        return [blake2b(e, digest_size=16).hexdigest() for e in encoded.tolist()]

    def hash_parts(self, i: int, positions: np.ndarray) -> np.ndarray:
        """The encoded parts of axis ``i``'s values at ``positions``, encoding the values not
        encoded before; the header leads the parts of the first key in sorted order."""
        if self._parts is None:
            self._parts = [np.full(radix, None, dtype=object) for radix in self.radices]
            self._unencoded = list(self.radices)
        parts = self._parts[i]
        if not self._unencoded[i]:  # every value encoded: no search for the missing ones
            return parts[positions]
        todo = [j for j in np.unique(positions).tolist() if parts[j] is None]
        if todo:
            self._unencoded[i] -= len(todo)
            key = self.keys[i]
            header = params.HASH_HEADER.encode() if key == min(self.keys) else b""
            for j in todo:
                parts[j] = header + params.encoded_part(key, self.axes[i][j])
        return parts[positions]

    def columns(self, start: int, stop: int) -> dict[str, Any]:
        """``{key: values}`` of the psets of ``[start, stop)``: numpy arrays where an axis
        holds one numeric type, lists otherwise."""
        columns = {}
        for i, (key, d) in enumerate(zip(self.keys, self.digits(start, stop))):
            typed = self.typed_axis(i)
            columns[key] = typed[d] if typed is not None else self._objects[i][d].tolist()
        return columns

    def typed_axis(self, i: int) -> np.ndarray | None:
        if i not in self._typed:
            axis = self.axes[i]
            types = set(map(type, axis))
            dtype = _NUMPY_AXIS.get(types.pop()) if len(types) == 1 else None
            if dtype is np.int64 and not values.I64_MIN <= min(axis) <= max(axis) <= values.I64_MAX:
                dtype = None
            self._typed[i] = None if dtype is None else np.array(axis, dtype=dtype)
        return self._typed[i]


def _object_array(items: list) -> np.ndarray:
    """A 1-d object array of ``items`` (np.array would make lists of lists 2-d)."""
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):  # one by one: a list item must stay one element
        array[i] = item
    return array

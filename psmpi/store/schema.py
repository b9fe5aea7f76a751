"""The schema of a table: its columns, their HDF5 dtypes, and what a new row changes.

Which value makes which kind is :mod:`psmpi.values`' (section "kinds of stored columns");
this module owns the HDF5 side: the pointer dtype of a general column, chunk shapes, fill
values, a column's kind read back from its dataset, and admission, i.e. whether a row fits
the table and which new columns and widenings it needs (applied by :mod:`.commit`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import values as _values
from ..errors import InternalError, StoreError
from ..values import (
    COLUMN_KINDS,
    DTYPES,
    I64_MAX,
    I64_MIN,
    PLAIN_NOT_STR,
    SCALAR_KINDS,
    STR_MAX_CHARS,
    slow_kind,
    utf8_encodable,
)

if TYPE_CHECKING:
    import h5py

    from .table import Table

# Every chunk psmpi writes carries a Fletcher-32 checksum that HDF5 verifies on each read:
# without it a flipped bit in the raw data is read back as a wrong value. A module constant
# so that benchmarks/store_append.py can measure what it costs.
FLETCHER32 = True
# A general column: one (offset, length) pair per row into its heap, heaps/<key>. A compound
# dtype, so that a psmpi before the general kind refuses the column instead of misreading it.
_POINTER = np.dtype([("offset", "<i8"), ("length", "<i8")])
# Value types of the rows whose layout admit() remembers: native scalars (see admit).
_LAYOUT_TYPES = frozenset(COLUMN_KINDS).difference((np.ndarray,))
# A ragged column (numeric arrays of one dtype and ndim, of varying shape): one (offset,
# nbytes) pair per row into its heap of the values' raw C-order bytes, and each value's shape
# in shapes/<key>. Its own field names, so that a psmpi before the ragged kind refuses it.
_RAGGED = np.dtype([("offset", "<i8"), ("nbytes", "<i8")])
_HEAP_KINDS = frozenset(("general", "ragged"))
# Heap chunks: a ragged column's values are arrays of kilobytes and more, and 64 KiB
# chunks wrote them 1.6x faster than 8 KiB ones (store_values.py d: 34k against 21k
# rows/s; fewer chunks to index and checksum), at the cost of rewriting up to 64 KiB of
# the last chunk per append; a general column's values are mostly small.
_HEAP_CHUNK = {"general": 8192, "ragged": 65536}
_DTYPES = {**DTYPES, "general": _POINTER}
# dtype kinds of a ragged column's values, and of an "array" column's (fixed shape)
_RAGGED_KINDS, _ARRAY_KINDS = "biufc", "biuf"


class _Column:
    """What a table knows of one column; ``ds`` None while its creation is pending."""

    __slots__ = ("name", "kind", "dtype", "shape", "ds", "mask", "heap", "heap_end", "pending",
                 "ndim", "shapes", "pending_shapes")

    def __init__(self, name: str, kind: str, dtype: np.dtype, shape: tuple = (),
                 ds: h5py.Dataset | None = None, mask: h5py.Dataset | None = None):
        self.name, self.kind, self.dtype, self.shape = name, kind, dtype, shape
        self.ds, self.mask = ds, mask
        # general columns: the heap dataset, the end of its committed bytes, and the bytes
        # of the rows being appended
        self.heap: h5py.Dataset | None = None
        self.heap_end = 0
        self.pending: Any = b""
        # ragged columns: the values' ndim (dtype: their dtype), the shapes dataset, and the
        # shapes of the rows being appended
        self.ndim = 0
        self.shapes: h5py.Dataset | None = None
        self.pending_shapes: np.ndarray | None = None

    def change(self, kind: str, dtype: np.dtype, shape: tuple) -> None:
        """Take a schema change of admission: ``shape`` is a ragged value's (its ndim kept)."""
        if kind == "ragged":
            self.kind, self.dtype, self.shape, self.ndim = kind, dtype, (), len(shape)
        else:
            self.kind, self.dtype, self.shape = kind, dtype, shape


def _new_column(key: str, kind: str, dtype: np.dtype, shape: tuple) -> _Column:
    col = _Column(key, kind, dtype)
    col.change(kind, dtype, shape)
    return col


def _pointer_dtype(kind: str) -> np.dtype:
    """The dtype of a column's dataset: pointers for the kinds with a heap."""
    return _RAGGED if kind == "ragged" else _POINTER if kind == "general" else _DTYPES[kind]


def _lengths(pointers: np.ndarray) -> np.ndarray:
    """The byte lengths of a general or ragged column's pointers."""
    return pointers[pointers.dtype.names[1]]


def _exact_wide(a: np.dtype, b: np.dtype) -> np.dtype | None:
    """The dtype holding every value of dtypes ``a`` and ``b`` exactly, or None (bool does
    not mix with numbers; an int64 does not fit a float64's 53-bit mantissa)."""
    if (a.kind == "b") != (b.kind == "b"):
        return None
    wide = np.result_type(a, b)
    if wide.kind not in _RAGGED_KINDS:
        return None
    if wide.kind in "fc":
        digits = np.finfo(wide).nmant + 1
        for d in (a, b):
            if d.kind in "iu" and np.iinfo(d).bits - (d.kind == "i") > digits:
                return None
    return wide


def _check_name(name: Any, what: str = "map name") -> str | None:
    """Why ``name`` cannot be an HDF5 link name (HDF5 would mangle it), or None."""
    if not isinstance(name, str) or not name:
        return f"{what} {name!r} must be a non-empty str"
    if "/" in name or "\0" in name or name in (".", "..") or len(name) > 255:
        return (f"{what} {name!r} is not allowed: use at most 255 characters, "
                f"without '/' or NUL, other than '.' and '..'")
    if not name.isascii() and not utf8_encodable(name):
        return (f"{what} {name!r} is a str that UTF-8 cannot encode (a lone surrogate), so "
                f"HDF5 cannot store it")
    return None


def _check_storage(ds: h5py.Dataset) -> None:
    """Refuse a dataset whose data lives outside the file: HDF5 would read and write there."""
    import h5py
    plist = ds.id.get_create_plist()
    what = None
    if plist.get_layout() == h5py.h5d.VIRTUAL:
        what = "is a virtual dataset (its data is read from other datasets, maybe other files)"
    elif plist.get_external_count():
        name = plist.get_external(0)[0].decode("utf-8", "replace")
        what = f"uses external storage (its data is in the file {name!r})"
    if what is not None:
        raise StoreError(f"{ds.file.filename}: dataset {ds.name.lstrip('/')!r} {what}. psmpi reads "
                         f"and writes nothing outside the results file, and never writes such "
                         f"datasets: this file was altered; choose another file")


def _kind_of(ds: h5py.Dataset) -> str:
    """A column's kind: its dataset's shape and dtype decide it (the attribute only says it)."""
    import h5py
    if ds.dtype.names == _POINTER.names:
        return "general"
    if ds.dtype.names == _RAGGED.names:
        return "ragged"
    if ds.ndim > 1:
        return "array"
    if ds.dtype.kind == "S" or h5py.check_string_dtype(ds.dtype) is not None:
        return "str"
    kind = {"b": "bool", "i": "int", "f": "float"}.get(ds.dtype.kind)
    if kind is None:
        raise StoreError(f"{ds.file.filename}: column {ds.name} has dtype {ds.dtype}, which this "
                         f"psmpi does not know: the file was written by a newer psmpi (or "
                         f"altered); upgrade psmpi to read it")
    return kind


def _fill(kind: str, dtype: np.dtype) -> Any:
    if kind == "str":
        return b""
    if kind in _HEAP_KINDS:
        return np.zeros((), _pointer_dtype(kind))[()]
    return np.nan if dtype.kind == "f" else dtype.type(0)


# A column created by a commit of at least BIG_COMMIT_ROWS rows gets chunks of about 64 KiB,
# others of about 8 KiB. An append rewrites the last, partly filled chunk of every column
# whole (read, checksum verified, checksum computed, written): with 64 KiB chunks checksums
# made appends of 1-100 rows 30-40 % slower, with 8 KiB 15 % (CPU time, store_append.py),
# and nothing at 1000 rows and more. But HDF5 spends some 20 us per chunk written: in
# commits of 10,000 rows and more, 64 KiB chunks write 2.5-3x faster (mpi_throughput.py:
# psmpi 0.53x -> 0.60x mpi4py.futures). Tables that commit big batches are fast studies,
# which keep doing so; chunks are fixed when a dataset is made.
BIG_COMMIT_ROWS = 4096
_CHUNK_BYTES, _BIG_CHUNK_BYTES = 1 << 13, 1 << 16


def _chunks(shape: tuple, dtype: np.dtype, rows: int) -> tuple:
    """Chunks of a column created by a commit of ``rows`` rows (see BIG_COMMIT_ROWS)."""
    row_bytes = max(1, int(np.prod(shape, dtype=np.int64)) * (16 if dtype.kind == "O" else dtype.itemsize))
    target = _BIG_CHUNK_BYTES if rows >= BIG_COMMIT_ROWS else _CHUNK_BYTES
    return (max(1, min(target // 8, target // row_bytes)),) + shape


# ---------------------------------------------------------------------- admission
def admit(table: Table, row: dict) -> str | None:
    """Record the schema changes ``row`` implies, or say why it cannot be stored
    (:meth:`Table.admit`)."""
    layout = (*row, *map(type, row.values()))
    if layout in table._layouts:
        for v in row.values():
            if type(v) is int and not I64_MIN <= v <= I64_MAX or (
                    type(v) is str and (not v.isascii() or len(v) > STR_MAX_CHARS)):
                break
        else:
            return None
    cols = table._cols
    changes = None
    for key, v in row.items():
        kind = COLUMN_KINDS.get(type(v))
        if kind == "int":
            table._int_keys.add(key)
        col = cols.get(key)
        if col is not None and kind == col.kind and (
                kind in PLAIN_NOT_STR or (kind == "str" and v.isascii() and len(v) <= STR_MAX_CHARS)
                or (kind == "int" and (type(v) is not int or I64_MIN <= v <= I64_MAX))):
            continue
        if kind == "array" and col is not None and v.dtype == col.dtype and (
                v.ndim == col.ndim if col.kind == "ragged" else
                col.kind == "array" and v.shape == col.shape):
            continue  # an array that fits its column as it is (the check below costs 10 us)
        if col is not None and col.kind == "general" and kind is not None and kind != "array" and (
                kind != "str" or v.isascii() or utf8_encodable(v)):
            continue  # a native scalar: always encodable (a str UTF-8 cannot encode is
            # refused in every column alike, whatever kind earlier rows gave it)
        if kind == "null":
            continue
        problem, change = _check(table, key, v, kind, col)
        if problem is not None:
            return problem
        if change is not None:
            changes = [change] if changes is None else changes + [change]
    for key, kind, dtype, shape in changes or ():
        col = cols.get(key)
        if col is None:
            cols[key] = _new_column(key, kind, dtype, shape)
        else:
            col.change(kind, dtype, shape)
    # arrays: their shape varies; other types: their contents vary (a list may hold
    # anything), so only rows of native scalars skip the checks next time
    if len(table._layouts) < 1000 and _LAYOUT_TYPES.issuperset(layout[len(row):]):
        table._layouts.add(layout)
    return None


def admit_columns(table: Table, values: dict[str, Sequence]) -> str | None:
    """:func:`admit` for rows given as columns of scalars (:meth:`Table.admit_columns`):
    a column's types are checked once, and ints by their extremes, instead of every value."""
    changes = []
    for key, column in values.items():
        if type(column) is np.ndarray:
            problem = _admit_numpy_column(table, key, column, changes)
            if problem is not None:
                return problem
            continue
        kinds = {COLUMN_KINDS.get(t) for t in set(map(type, column))}
        kinds.discard("null")
        if not kinds:
            continue  # only None: like an absent key, no column needed
        kind = kinds.pop()
        if kinds or kind not in SCALAR_KINDS:
            return f"column {key!r} holds values of several kinds or not scalars"
        col = table._cols.get(key)
        present = [v for v in column if v is not None] if None in column else column
        if kind == "str" and not all(map(str.isascii, present)) and not all(
                map(utf8_encodable, present)):
            return f"column {key!r} holds a str that UTF-8 cannot encode"
        if kind == "int":
            probes = (min(present), max(present))  # only the extremes can overflow int64
        elif col is not None and col.kind == kind:
            continue
        else:
            probes = (present[0],)
        problem = _check_probes(table, key, probes, kind, col, changes)
        if problem is not None:
            return problem
    for key, kind, dtype, shape in changes:
        col = table._cols.get(key)
        if col is None:
            table._cols[key] = _new_column(key, kind, dtype, shape)
        else:
            col.change(kind, dtype, shape)
    return None


# dtypes of the numpy columns admit_columns takes whole (rank 0 rebuilds a grid's pset
# columns as these, psmpi.worker.spans), and the kind of column each makes
_NUMPY_COLUMN_KINDS = {np.dtype(np.int64): "int", np.dtype(np.float64): "float",
                       np.dtype(np.bool_): "bool"}


def _admit_numpy_column(table: Table, key: str, column: np.ndarray, changes: list
                        ) -> str | None:
    """admit_columns for a 1-d numpy column: by its dtype, into a new column, one of its
    own kind, or ints into a float column (checked by their extremes, as a tuple's are);
    into any other column refused, so that the caller stores the rows one by one."""
    kind = _NUMPY_COLUMN_KINDS.get(column.dtype) if column.ndim == 1 else None
    col = table._cols.get(key)
    widened = col is not None and col.kind == "float" and kind == "int"
    if kind is None or (col is not None and col.kind != kind and not widened):
        return f"column {key!r} is a numpy array of another kind than the stored column"
    if not len(column) or (col is not None and not widened):
        return None
    probes = (column.min().item(), column.max().item()) if kind == "int" else (column[0].item(),)
    return _check_probes(table, key, probes, kind, col, changes)


def _check_probes(table: Table, key: str, probes: tuple, kind: str | None,
                  col: _Column | None, changes: list) -> str | None:
    """_check each of ``probes``: the first refusal, else None with the schema changes
    they need added to ``changes``."""
    for v in probes:
        problem, change = _check(table, key, v, kind, col)
        if problem is not None:
            return problem
        if change is not None:
            changes.append(change)
    return None


def _check(table: Table, key: str, v: Any, kind: str | None, col: _Column | None
           ) -> tuple[str | None, tuple | None]:
    """The slow path of admit(): (refusal, None) or (None, schema change or None)."""
    kind = kind or slow_kind(v)
    if kind == "int":
        table._int_keys.add(key)  # an int subclass, or a 0-d array's int
    shape, dtype = (), _DTYPES.get(kind or "")
    if kind == "array":
        if v.ndim == 0:
            table._zero_d.add(key)
            return _check(table, key, v[()], None, col)
        shape, dtype = v.shape, v.dtype.newbyteorder("=")
        if dtype.kind == "O":
            kind = None  # its elements may be anything: check they encode
        elif dtype.kind not in _RAGGED_KINDS or dtype.names is not None:
            kind = "general"  # an exotic array: encoded whole, with dtype and shape
        elif dtype.kind not in _ARRAY_KINDS or v.size == 0:
            kind = "ragged"  # an (N, 0) dataset or a complex one: the raw bytes instead
    if kind is None:
        note = _values.Pickled()
        try:
            table._encoded[id(v)] = (v, _values.encode(v, note), note.used)
        except _values.Unencodable as exc:
            return (f"result {key!r} cannot be stored: {exc}; return values psmpi can "
                    f"encode (see docs/guide/values.md) or picklable ones"), None
        kind = "general"
    elif kind == "int" and not I64_MIN <= int(v) <= I64_MAX:
        kind = "general"  # kept exact
    elif kind == "str" and not utf8_encodable(v):
        return (f"result {key!r} is a str that UTF-8 cannot encode (a lone surrogate, as "
                f"left by errors='surrogateescape'); return "
                f"s.encode('utf-8', 'replace').decode() instead"), None
    elif kind == "str" and len(v.encode("utf-8")) > _values.STR_MAX_BYTES:
        kind = "general"  # too long for a fixed-width column: see values.STR_MAX_BYTES
    if kind == "general":
        shape, dtype = (), _POINTER
    if col is None:
        problem = _check_name(key, "result key")
        if problem is not None:
            raise InternalError(problem)
        return None, (key, kind, dtype, shape)
    return _compatible(key, col, kind, dtype, shape)


def _compatible(key: str, col: _Column, kind: str, dtype: np.dtype, shape: tuple
                ) -> tuple[str | None, tuple | None]:
    """No refusal: values of kinds a column cannot hold make it general. Whether an
    int column widened to float stays exact is settled when appending (_settle)."""
    if kind == col.kind and kind not in ("array", "ragged") or (
            (kind, col.kind) == ("int", "float") or col.kind == "general"):
        return None, None
    if (kind, col.kind) == ("float", "int"):
        return None, (key, "float", _DTYPES["float"], ())
    if kind in ("array", "ragged") and col.kind in ("array", "ragged"):
        return None, _array_change(key, col, dtype, shape)
    return None, (key, "general", _POINTER, ())


def _array_change(key: str, col: _Column, dtype: np.dtype, shape: tuple) -> tuple | None:
    """An array column given an array: the same column, a wider dtype, ragged (another shape
    of the same ndim), or general (no dtype holds both exactly, or another ndim)."""
    wide = _exact_wide(col.dtype, dtype)
    ndim = len(col.shape) if col.kind == "array" else col.ndim
    if wide is None or len(shape) != ndim:
        return (key, "general", _POINTER, ())
    if col.kind == "array" and shape == col.shape and wide.kind in _ARRAY_KINDS:
        return None if wide == col.dtype else (key, "array", wide, shape)
    if col.kind == "ragged" and wide == col.dtype:
        return None
    return (key, "ragged", wide, shape)


def _admit_array(table: Table, name: str, array: np.ndarray, k: int) -> None:
    """Take a whole column given as an array into the schema (psmpi's own columns)."""
    kind = {"i": "int", "u": "int", "f": "float", "b": "bool", "O": "str", "U": "str",
            "S": "str"}.get(array.dtype.kind)
    if kind is None or array.shape != (k,):
        raise InternalError(f"column {name!r} given as an array of {array.dtype} and shape "
                            f"{array.shape} for {k} rows")
    col = table._cols.get(name)
    if col is None:
        problem = _check_name(name, "column")
        if problem is not None:
            raise InternalError(problem)
        table._cols[name] = _Column(name, kind, _DTYPES[kind], ())
    elif (kind, col.kind) == ("float", "int"):
        col.kind, col.dtype = "float", _DTYPES["float"]
    elif kind != col.kind and (kind, col.kind) != ("int", "float"):
        raise InternalError(f"column {name!r} holds {col.kind} but was given {kind} values")

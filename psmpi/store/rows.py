"""Reading a table's committed rows: columns, slices and frames, nulls and decoding.

Every read goes through :func:`_slice`, which turns h5py's errors into a DamageError naming
the rows, and takes the committed rows of a torn last chunk that its checksum proves intact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import values as _values
from ..values import exact_as_float
from .damage import _H5_ERRORS, _bad_ranges, _NoColumn, _torn_chunk
from .schema import _Column

if TYPE_CHECKING:
    import h5py
    import pandas as pd

    from .table import Table


def read_column(table: Table, name: str, decode: bool = True) -> np.ndarray:
    """The committed values of column ``name``, raw (:meth:`Table.read_column`)."""
    col = _column(table, name)
    if not decode and col.kind == "str":
        values = _slice(table, col.ds, 0, table._n, f"column {name!r}")
        if col.ds.dtype.kind == "S":
            return values
        return np.array(values, dtype=bytes)  # variable-length strings of an older writer
    return _raw(table, col, 0, table._n)


def read_slice(table: Table, name: str, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Committed rows [lo, hi) of column ``name``, raw, and its null mask (None: no nulls)."""
    col, hi = _column(table, name), min(hi, table._n)
    return _raw(table, col, lo, hi), _nulls(table, col, lo, hi)


def _column(table: Table, name: str) -> _Column:
    col = table._cols.get(name)
    if col is None or col.ds is None:
        raise _NoColumn(f"{table} has no column {name!r}; its columns are {table.columns}")
    return col


def _raw(table: Table, col: _Column, lo: int, hi: int) -> np.ndarray:
    values = _slice(table, col.ds, lo, hi, f"column {col.name!r}")
    if col.kind == "general":
        return _decoded(table, col, values, lo, hi)
    if col.kind == "ragged":
        return _arrays(table, col, values, lo, hi)
    if col.kind != "str":
        return values
    with table._damage(f"column {col.name!r} (text that is not UTF-8)", [(lo, hi)]):
        if col.ds.dtype.kind == "S":
            return np.char.decode(values, "utf-8").astype(object)
        return np.array([v.decode("utf-8") for v in values], dtype=object)  # older writer


def _decoded(table: Table, col: _Column, pointers: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The values of a general column's rows [lo, hi) from their pointers into its heap."""
    out = np.empty(len(pointers), dtype=object)
    if not len(pointers):
        return out
    offsets, lengths = pointers["offset"], pointers["length"]
    start, end = int(offsets.min()), int((offsets + lengths).max())
    blob = _slice(table, col.heap, start, end, f"the heap of column {col.name!r}").tobytes()
    with table._damage(f"column {col.name!r} (a value that does not decode)", [(lo, hi)]):
        for i, (offset, length) in enumerate(zip(offsets.tolist(), lengths.tolist())):
            out[i] = _values.decode(blob[offset - start:offset - start + length], table.unpickle)
    return out


def _arrays(table: Table, col: _Column, pointers: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The arrays of a ragged column's rows [lo, hi): each its bytes of the heap, as the
    column's dtype, in its shape (a null: an empty array, masked by the caller)."""
    out = np.empty(len(pointers), dtype=object)
    if not len(pointers):
        return out
    shapes = _slice(table, col.shapes, lo, hi, f"the shapes of column {col.name!r}")
    offsets, nbytes = pointers["offset"], pointers["nbytes"]
    start, end = int(offsets.min()), int((offsets + nbytes).max())
    blob = _slice(table, col.heap, start, end, f"the heap of column {col.name!r}")
    with table._damage(f"column {col.name!r} (bytes that do not fit their shape)", [(lo, hi)]):
        if start % col.dtype.itemsize or (shapes < 0).any():
            raise ValueError("misaligned or negative")
        flat = blob.view(col.dtype)
        for i, (offset, size, shape) in enumerate(zip(
                ((offsets - start) // col.dtype.itemsize).tolist(),
                (nbytes // col.dtype.itemsize).tolist(), map(tuple, shapes.tolist()))):
            out[i] = flat[offset:offset + size].reshape(shape)
    return out


def _slice(table: Table, ds: h5py.Dataset, lo: int, hi: int, what: str) -> np.ndarray:
    """Rows [lo, hi) of ``ds`` as stored (str as bytes); a DamageError naming the rows of
    the chunks that fail their checksum."""
    try:
        return ds[lo:hi]
    except _H5_ERRORS:
        torn = _torn_chunk(ds, table._n) if hi > lo else None
        if torn is not None and lo <= torn[0] + len(torn[1]) and hi > torn[0]:
            start = torn[0]  # rows before it read as usual, the rest from the torn chunk
            head = _slice(table, ds, lo, start, what) if lo < start else ds[0:0]
            return np.concatenate([head, torn[1][max(lo, start) - start:hi - start]])
        with table._damage(what, _bad_ranges(ds, lo, hi) or [(lo, hi)]):
            raise


def _nulls(table: Table, col: _Column, lo: int, hi: int) -> np.ndarray | None:
    if col.mask is None:
        return None
    nulls = np.zeros(hi - lo, bool)
    stored = _slice(table, col.mask, lo, min(hi, col.mask.shape[0]), f"the null mask of column {col.name!r}")
    nulls[:stored.shape[0]] = stored
    return nulls if nulls.any() else None


def read(table: Table, rows: np.ndarray | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """Committed rows as a DataFrame (:meth:`Table.read`)."""
    import pandas as pd

    lo, hi, take = 0, table._n, None
    if rows is not None:
        take = np.asarray(rows, dtype=np.int64).reshape(-1)
        if take.size and (take.min() < 0 or take.max() >= table._n):
            raise IndexError(f"row numbers must be in [0, {table._n}) for {table}")
        lo, hi = (int(take.min()), int(take.max()) + 1) if take.size else (0, 0)
        take = take - lo
    names = table.columns if columns is None else list(columns)
    size = hi - lo if take is None else take.size
    data = {name: _frame_column(table, _column(table, name), lo, hi, take) for name in names}
    for name in names:  # as they are: pandas would make datetimes a datetime64 column
        if table._cols[name].kind in ("general", "ragged"):
            data[name] = pd.Series(data[name], dtype=object, index=pd.RangeIndex(size))
    return pd.DataFrame(data, index=pd.RangeIndex(size))


def _frame_column(table: Table, col: _Column, lo: int, hi: int, take: np.ndarray | None) -> np.ndarray:
    values, nulls = _raw(table, col, lo, hi), _nulls(table, col, lo, hi)
    if take is not None:
        values, nulls = values[take], None if nulls is None else nulls[take]
    if col.kind in ("array", "ragged"):
        out = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            out[i] = None if nulls is not None and nulls[i] else v
        return out
    if nulls is None:
        return values
    if col.kind == "int" and not exact_as_float(values):
        values = values.astype(object)  # NaN would need a float: these ints would round
        values[nulls] = None
    elif col.kind in ("int", "float"):
        values = values.astype(np.float64)
        values[nulls] = np.nan
    else:
        values = values.astype(object)
        values[nulls] = None
    return values

"""Committing rows: gathering values into arrays, the two-phase commit, widening columns,
and the repair a writer makes of what a killed writer left.

Every append is a two-phase commit: schema changes (new datasets, widening) are made and
flushed first, then every heap and column is resized and written, the file is flushed,
``n_committed`` is written and the file is flushed again. A widening writes the new column
(and heap) aside in staging/, flushes, then swaps it in; the next writer finishes or undoes
an interrupted one (:func:`_repair`) and truncates the uncommitted tail.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import values as _values
from ..errors import DamageError, InternalError, StoreError, warn
from ..layout import (
    COLUMNS,
    DTYPE_ATTR,
    FIRST_ROW_ATTR,
    HEAPS,
    KIND_ATTR,
    N_COMMITTED,
    NULLS,
    RETIRED,
    SHAPES,
    STAGED_HEAPS,
    STAGING,
)
from ..values import FLOAT_TYPES, STR_MAX_CHARS, plain, str_width
from . import linking, schema
from .damage import _torn_chunk
from .rows import _nulls, _raw, _slice
from .schema import (
    _HEAP_CHUNK,
    _HEAP_KINDS,
    _POINTER,
    _RAGGED,
    _admit_array,
    _chunks,
    _Column,
    _fill,
    _kind_of,
    _pointer_dtype,
)

if TYPE_CHECKING:
    import h5py

    from .table import Table

# Rows copied at a time when a column is widened.
_COPY_ROWS = 1 << 20


def _create_counter(group: h5py.Group) -> None:
    """``n_committed``: a scalar stored in its object header (compact layout), which HDF5
    checksums; a chunk of its own would cost more and the scalar stays plain to read."""
    import h5py
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_layout(h5py.h5d.COMPACT)
    ds = h5py.h5d.create(group.id, None, h5py.h5t.STD_I64LE,
                         h5py.h5s.create(h5py.h5s.SCALAR), dcpl=plist)
    ds.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(0, dtype=np.int64))
    linking.link([(group, N_COMMITTED, h5py.Dataset(ds))])


def _create_mask(g: h5py.Group, n: int, null: bool) -> h5py.Dataset:
    """A null mask of ``n`` rows, anonymous (see :func:`_link`)."""
    mask = g.create_dataset(None, shape=(n,), maxshape=(None,), dtype=bool, chunks=(8192,),
                            fillvalue=null, fletcher32=schema.FLETCHER32)
    mask.attrs[FIRST_ROW_ATTR] = n
    return mask


def _write(ds: h5py.Dataset, n0: int, array: np.ndarray) -> None:
    """Grow ``ds`` to ``n0 + len(array)`` rows and write ``array`` there (h5py's low-level API)."""
    import h5py
    ds.id.set_extent((n0 + array.shape[0],) + array.shape[1:])
    space = ds.id.get_space()
    space.select_hyperslab((n0,) + (0,) * (array.ndim - 1), array.shape)
    ds.id.write(h5py.h5s.create_simple(array.shape), space, array)


def append_values(table: Table, values: dict[str, Any], k: int,
                  columns: dict[str, np.ndarray] | None = None) -> range:
    """Commit ``k`` admitted rows given as ``{key: sequence of k values}``: apply
    pending schema changes, then a two-phase commit (:meth:`Table.append_values`)."""
    store = table._store
    if store is None or store._f is None:
        raise StoreError(f"{table} is read-only or its store is closed")
    if not k:
        return range(table._n, table._n)
    columns = columns or {}
    for name, array in columns.items():
        _admit_array(table, name, array, k)
    _settle(table, values)
    data = {}
    for name, col in table._cols.items():
        data[name] = (_given(col, columns[name]) if name in columns
                      else _gather(table, col, values.get(name), k))
        store.between_columns()
    table._encoded.clear()
    return _commit_data(table, data, k)


def _commit_data(table: Table, data: dict[str, tuple[np.ndarray, np.ndarray | None]],
                 k: int) -> range:
    """The two-phase commit of ``k`` rows gathered as ``{column: (array, nulls)}``, a heap
    column's bytes waiting in its ``pending`` (offsets from their start)."""
    import h5py
    store = table._store
    n0, n1 = table._n, table._n + k
    store._ensure_space()
    try:
        _prepare(table, data, k)
        for name, col in table._cols.items():
            array, nulls = data[name]
            if col.kind in _HEAP_KINDS:
                _write(col.heap, col.heap_end, np.frombuffer(col.pending, np.uint8))
                array = array.copy()
                array["offset"] += col.heap_end
            if col.kind == "ragged":
                _write(col.shapes, n0, col.pending_shapes)
            _write(col.ds, n0, array)
            if col.mask is not None:
                _write(col.mask, n0, np.zeros(n1 - n0, bool) if nulls is None else nulls)
            store.between_columns()
        store._f.flush()
        table._g[N_COMMITTED].id.write(h5py.h5s.ALL, h5py.h5s.ALL,
                                        np.array(n1, dtype=np.int64))
        store._f.flush()
        store._maybe_fsync()
        store._note_growth()
    except DamageError:  # a chunk to widen or to complete failed its checksum
        store._broken = True
        raise
    except (OSError, RuntimeError) as exc:  # quota, I/O error, lost mount, damage
        store._broken = True
        _raise_if_damaged(table, n0)
        raise StoreError(f"writing {store.path or 'the in-memory file'} failed ({exc}). The "
                         f"{table._n} rows of {table} committed before are intact; free disk "
                         f"space (or fix the file system) and run the same command again "
                         f"to compute the rest") from exc
    table._n = n1
    for col in table._cols.values():
        if col.kind in _HEAP_KINDS:
            col.heap_end += len(col.pending)
            col.pending, col.pending_shapes = b"", None
    return range(n0, n1)


def append_from(table: Table, source: Table, lo: int, hi: int) -> range | None:
    """Commit rows [lo, hi) of ``source`` as they are stored, column by column in bulk.

    Only when both tables have the same columns of the same kinds, dtypes and shapes (a str
    column of ``table`` may be narrower: it is widened); None otherwise, and nothing is
    written: :meth:`Table.admit` and :meth:`Table.append` of the rows then do what it takes.
    """
    store = table._store
    if store is None or store._f is None:
        raise StoreError(f"{table} is read-only or its store is closed")
    hi = min(hi, source._n)
    if hi <= lo:
        return range(table._n, table._n)
    if not _same_schema(table, source):
        return None
    data = {}
    for name, scol in source._cols.items():
        col = table._cols[name]
        where = f"column {name!r}"
        array = _slice(source, scol.ds, lo, hi, where)
        nulls = _nulls(source, scol, lo, hi)
        if scol.kind in _HEAP_KINDS:
            start = int(array[0]["offset"])
            end = int(array[-1]["offset"]) + int(schema._lengths(array[-1]))
            col.pending = _slice(source, scol.heap, start, end, f"the heap of {where}")
            array = array.copy()
            array["offset"] -= start
            if scol.kind == "ragged":
                col.pending_shapes = _slice(source, scol.shapes, lo, hi, f"the shapes of {where}")
        elif scol.kind == "str" and scol.ds.dtype.itemsize > col.dtype.itemsize:
            col.dtype = scol.ds.dtype  # widened by _prepare
        data[name] = (array if scol.kind != "str" else array.astype(col.dtype, copy=False),
                      nulls)
    return _commit_data(table, data, hi - lo)


def _same_schema(table: Table, source: Table) -> bool:
    """Whether rows of ``source`` can be copied into ``table`` as stored (:func:`append_from`)."""
    if table._cols.keys() != source._cols.keys():
        return False
    for name, scol in source._cols.items():
        col = table._cols[name]
        if col.ds is None or scol.ds is None or col.kind != scol.kind or col.shape != scol.shape:
            return False
        stored = _stored_as(col.ds) if col.kind in _HEAP_KINDS else (col.kind, col.ds.dtype)
        if stored != (col.kind, col.dtype):
            return False  # a schema change is pending in table
        if scol.kind == "str":
            if scol.ds.dtype.kind != "S" or col.ds.dtype.kind != "S":
                return False  # an older writer's variable-length str
        elif scol.ds.dtype != col.ds.dtype or (scol.kind == "ragged" and (
                scol.dtype != col.dtype or scol.ndim != col.ndim)):
            return False
    return True


def _settle(table: Table, values: dict[str, Any]) -> None:
    """Make general the float columns that would lose an int (|v| > 2**53), stored or
    coming, and the str columns that get a str too long for fixed width."""
    for name, col in table._cols.items():
        column = values.get(name)
        if col.kind == "float":
            if column is not None and name in table._int_keys and not FLOAT_TYPES.issuperset(
                    map(type, column)) and not all(
                    _values.exact_in_float(v) for v in map(_unwrap_0d, column)
                    if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))):
                col.kind, col.dtype = "general", _POINTER
            elif col.ds is not None and col.ds.dtype.kind in "iu" and table._n:
                stored = _slice(table, col.ds, 0, table._n, f"column {name!r}")
                if not all(map(_values.exact_in_float, (int(stored.min()), int(stored.max())))):
                    col.kind, col.dtype = "general", _POINTER
        elif col.kind == "str" and column is not None and not _short_strs(column) and any(
                len(str(v).encode("utf-8")) > _values.STR_MAX_BYTES for v in column
                if isinstance(v, (str, np.ndarray)) and len(str(v)) > STR_MAX_CHARS):
            col.kind, col.dtype = "general", _POINTER


def _raise_if_damaged(table: Table, n0: int) -> None:
    """After a failed append: a DamageError if a chunk it had to read fails its checksum
    (appending rewrites the last, partly filled chunk of every column)."""
    for col in table._cols.values():
        for ds, what in ((col.ds, "column"), (col.mask, "the null mask of column")):
            if ds is not None and ds.chunks:
                lo = min(n0, ds.shape[0]) // ds.chunks[0] * ds.chunks[0]
                _slice(table, ds, lo, min(n0, ds.shape[0]), f"{what} {col.name!r}")


def _given(col: _Column, array: np.ndarray) -> tuple[np.ndarray, None]:
    """A column given whole, as the dataset's dtype (UTF-8 bytes arrays as they are)."""
    if col.kind != "str":
        return np.asarray(array, dtype=col.dtype), None
    if array.dtype.kind == "U":
        try:  # numpy encodes ASCII in C; ids, hashes and host names are ASCII
            array = array.astype("S")
        except UnicodeEncodeError:
            return _gather_str(col, array.tolist(), len(array))
    elif array.dtype.kind != "S":
        return _gather_str(col, array.tolist(), len(array))
    if array.dtype.itemsize > col.dtype.itemsize:
        col.dtype = np.dtype(f"S{str_width(array.dtype.itemsize)}")
    return array.astype(col.dtype, copy=False), None


def transpose(table: Table, rows: list[dict]) -> dict[str, Any]:
    """``{key: values of the rows}`` of admitted rows (:meth:`Table.transpose`)."""
    first = tuple(rows[0])
    if all(tuple(r) == first for r in rows):  # the common case: every row has the same keys
        values = dict(zip(first, zip(*[r.values() for r in rows])))
    else:
        values = {key: [r.get(key) for r in rows] for key in set().union(*rows)}
    for key in values.keys() - table._cols.keys():
        if any(v is not None for v in values[key]):
            raise InternalError(f"a row with key {key!r} was appended to {table} without admit()")
    return values


def _gather(table: Table, col: _Column, values: Any, k: int) -> tuple[np.ndarray, np.ndarray | None]:
    """One column as an array (nulls filled) and its null mask (None: no nulls)."""
    kind = col.kind
    if values is None:  # no row has this key
        values = (None,) * k
    elif type(values) is np.ndarray and not _native(values, kind):
        values = values.tolist()  # the column changed kind since admission: Python values
    elif col.name in table._zero_d:
        values = [v[()] if type(v) is np.ndarray and v.ndim == 0 else v for v in values]
    if kind == "str":
        return _gather_str(col, values, k)
    if kind == "general":
        return _gather_general(table, col, values, k)
    if kind == "ragged":
        return _gather_ragged(col, values, k)
    if kind == "array":
        nulls = np.fromiter((v is None for v in values), bool, k)
        has_nulls = bool(nulls.any())
    else:
        has_nulls = None in values
        nulls = np.fromiter((v is None for v in values), bool, k) if has_nulls else None
    try:
        if has_nulls:
            fill = _fill(kind, col.dtype)
            if col.shape:
                fill = np.full(col.shape, fill, col.dtype)
            values = [fill if v is None else v for v in values]
        if kind == "array":
            return np.stack(values).astype(col.dtype, copy=False), nulls
        return np.array(values, dtype=col.dtype), nulls
    except (ValueError, TypeError, OverflowError) as exc:
        raise InternalError(f"column {col.name!r} of {table} got values admit() did not check: "
                            f"{exc}") from exc


def _native(array: np.ndarray, kind: str) -> bool:
    """Whether a numpy column (admitted by its dtype) goes into a column of ``kind`` as it is."""
    return (array.dtype.kind, kind) in (("i", "int"), ("i", "float"), ("f", "float"),
                                        ("b", "bool"))


def _gather_general(table: Table, col: _Column, values: Any, k: int
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """(offset, length) pointers of the rows, offsets from the start of their bytes,
    which wait in col.pending; the write adds where the heap ends then."""
    note = _values.Pickled()
    try:
        encoded = [b"" if v is None else _encode(table, v, note) for v in values]
    except _values.Unencodable as exc:
        raise InternalError(f"column {col.name!r} of {table} got a value admit() did not check: "
                            f"{exc}") from exc
    if note.used and col.name not in table._pickled:
        table._pickled.add(col.name)
        warn(f"{table}: values of {col.name!r} have no portable encoding and are "
             f"stored as pickles; psmpi.read returns their bytes (unpickle=True "
             f"unpickles them: only for files you trust)")
    lengths = np.fromiter(map(len, encoded), np.int64, k)
    pointers = np.empty(k, _POINTER)
    pointers["length"] = lengths
    pointers["offset"] = np.cumsum(lengths) - lengths
    col.pending = b"".join(encoded)
    nulls = lengths == 0
    return pointers, (nulls if nulls.any() else None)


def _gather_ragged(col: _Column, values: Any, k: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(offset, nbytes) pointers of the rows (offsets as in :func:`_gather_general`), their
    raw bytes, as the column's dtype in C order, in col.pending, and their shapes in
    col.pending_shapes."""
    nulls = np.fromiter((v is None for v in values), bool, k)
    empty = np.zeros((0,) * col.ndim, col.dtype)
    arrays = [empty if v is None else v for v in values] if nulls.any() else values
    shapes = np.array([a.shape for a in arrays], np.int64).reshape(k, col.ndim)
    sizes = np.prod(shapes, axis=1, dtype=np.int64) if col.ndim else np.ones(k, np.int64)
    flat = np.concatenate([a.reshape(-1) for a in arrays] or [empty.reshape(-1)], dtype=col.dtype)
    pointers = np.empty(k, _RAGGED)
    pointers["nbytes"] = sizes * col.dtype.itemsize
    pointers["offset"] = np.cumsum(pointers["nbytes"]) - pointers["nbytes"]
    col.pending, col.pending_shapes = flat.view(np.uint8), shapes
    return pointers, (nulls if nulls.any() else None)


def _encode(table: Table, v: Any, note: _values.Pickled) -> bytes:
    """The bytes of ``v``: as admit() encoded this very object, else encoded now."""
    known = table._encoded.get(id(v))
    if known is not None and known[0] is v:
        note.used = note.used or known[2]
        return known[1]
    return _values.encode(v, note)


def _unwrap_0d(v: Any) -> Any:
    """A 0-d array's scalar (stored as that scalar), anything else as it is."""
    return v[()] if type(v) is np.ndarray and v.ndim == 0 else v


_STR_TYPES = frozenset((str, np.str_, type(None)))


def _short_strs(column: Sequence) -> bool:
    """Whether ``column`` holds only str and None, no str longer than STR_MAX_CHARS (which
    surely fit a fixed-width column). Checked in C: a loop in Python over every value of
    every str column cost 12 % of a commit of scalar rows (store_values.py, scenario a)."""
    return _STR_TYPES.issuperset(map(type, column)) and max(
        map(len, filter(None, column)), default=0) <= STR_MAX_CHARS


def _gather_str(col: _Column, values: Any, k: int) -> tuple[np.ndarray, np.ndarray | None]:
    """UTF-8 bytes of a fixed width, widening the column if a value is longer."""
    has_nulls = None in values
    nulls = np.fromiter((v is None for v in values), bool, k) if has_nulls else None
    encoded = [b"" if v is None else v.encode("utf-8") for v in values]
    need = max(map(len, encoded), default=0)
    if need > col.dtype.itemsize:
        col.dtype = np.dtype(f"S{str_width(need)}")
    return np.array(encoded, dtype=col.dtype), nulls


def _prepare(table: Table, data: dict, k: int) -> None:
    """Create, widen and mask datasets as the ``k`` rows of ``data`` need (no commit yet):
    new columns (with their heaps and shapes) and null masks, linked by :func:`_link`."""
    g, n = table._g, table._n
    made = []
    for col in table._cols.values():
        new = col.ds is None
        if new:
            if col.kind in _HEAP_KINDS:
                col.heap = _create_heap(g, col)
                made.append((HEAPS, col.name, col.heap))
            if col.kind == "ragged":
                col.shapes = _create_shapes(g, col, n)
                made.append((SHAPES, col.name, col.shapes))
            col.ds = _create(g, col, n, first_row=n, rows=k)
            made.append((COLUMNS, col.name, col.ds))
        if col.mask is None and (new and n or data[col.name][1] is not None):
            col.mask = _create_mask(g, n, null=new)  # a new column's earlier rows are null
            made.append((NULLS, col.name, col.mask))
    _link(table, made)
    for col in table._cols.values():
        if col.kind in _HEAP_KINDS and _stored_as(col.ds) != (col.kind, col.dtype):
            _rewrite(table, col, k)
        elif col.kind not in _HEAP_KINDS and col.ds.dtype != col.dtype:
            _widen(table, col, k)


def _link(table: Table, made: list[tuple[str, str, h5py.Dataset]]) -> None:
    """Link the new (anonymous) datasets ``made`` as ``<group>/<name>`` of the table, each
    whole on disk before its link (:mod:`.linking`)."""
    g = table._g
    linking.link([(linking.require_group(g, where), name, ds) for where, name, ds in made])


def _stored_as(ds: h5py.Dataset) -> tuple[str, np.dtype]:
    """A heap column's kind on disk and its values' dtype (the pointers' for general)."""
    kind = _kind_of(ds)
    return kind, np.dtype(ds.attrs[DTYPE_ATTR]) if kind == "ragged" else _POINTER


def _create(g: h5py.Group, col: _Column, n: int, first_row: int | None,
            rows: int) -> h5py.Dataset:
    """A column's dataset of ``n`` rows (null), anonymous (see :func:`_link`), for a commit
    of ``rows`` rows (its chunks: schema.BIG_COMMIT_ROWS); ``first_row`` stamped if not None."""
    dtype = _pointer_dtype(col.kind) if col.kind in _HEAP_KINDS else col.dtype
    ds = g.create_dataset(None, shape=(n,) + col.shape, maxshape=(None,) + col.shape,
                          dtype=dtype, chunks=_chunks(col.shape, dtype, rows),
                          fillvalue=_fill(col.kind, dtype), fletcher32=schema.FLETCHER32)
    ds.attrs[KIND_ATTR] = col.kind
    if first_row is not None:
        ds.attrs[FIRST_ROW_ATTR] = first_row
    if col.kind == "ragged":
        ds.attrs[DTYPE_ATTR] = col.dtype.str
    return ds


def _create_heap(g: h5py.Group, col: _Column) -> h5py.Dataset:
    """The (empty) heap of a general or ragged column, anonymous (see :func:`_link`)."""
    return g.create_dataset(None, shape=(0,), maxshape=(None,), dtype=np.uint8,
                            chunks=(_HEAP_CHUNK[col.kind],), fillvalue=0,
                            fletcher32=schema.FLETCHER32)


def _create_shapes(g: h5py.Group, col: _Column, n: int) -> h5py.Dataset:
    """The shapes of a ragged column, anonymous (see :func:`_link`): (0,) * ndim for its
    ``n`` earlier (null) rows."""
    ndim = max(1, col.ndim)
    return g.create_dataset(None, shape=(n, col.ndim), maxshape=(None, col.ndim),
                            dtype=np.int64, chunks=(max(1, 1024 // ndim), col.ndim),
                            fillvalue=0, fletcher32=schema.FLETCHER32)


def _rewrite(table: Table, col: _Column, k: int) -> None:
    """Widen a column to general, to ragged, or a ragged one to a wider dtype: write its
    committed values anew into a heap in staging_heaps/ and a pointer column in staging/
    (a column that becomes ragged: its shapes straight into shapes/, unused until the
    swap), flush, then swap both in. Killed before the swap, the next writer drops them
    (_repair); after it, the new column is whole. ``k``: the rows of the commit (chunks)."""
    g = table._g
    old = table._open_column(col.name, col.ds, col.mask)
    heap = _create_heap(g, col)
    made = [(STAGED_HEAPS, col.name, heap)]
    if col.kind == "ragged" and old.kind != "ragged":
        col.shapes = _create_shapes(g, col, table._n)
        made.append((SHAPES, col.name, col.shapes))
    elif col.kind == "ragged":
        col.shapes = old.shapes  # the shapes stay, only the dtype widens
    staged = _create(g, col, table._n, first_row(col.ds), k)
    made.append((STAGING, col.name, staged))
    end = 0
    for lo in range(0, table._n, _COPY_ROWS):
        hi = min(table._n, lo + _COPY_ROWS)
        rows = list(_raw(table, old, lo, hi))
        nulls = _nulls(table, old, lo, hi)
        if nulls is not None:
            rows = [None if null else v for v, null in zip(rows, nulls)]
        part = _Column(col.name, col.kind, col.dtype)
        if col.kind == "ragged":
            part.ndim = col.ndim
            pointers, _ = _gather_ragged(part, rows, hi - lo)
            if old.kind != "ragged":
                col.shapes[lo:hi] = part.pending_shapes
        else:
            pointers, _ = _gather_general(table, part, [plain(v) for v in rows], hi - lo)
        _write(heap, end, np.frombuffer(part.pending, np.uint8))
        pointers["offset"] += end
        staged[lo:hi] = pointers
        end += len(part.pending)
    _link(table, made)
    col.heap, col.heap_end = heap, end
    _swap_in(table, col)


def _widen(table: Table, col: _Column, k: int) -> None:
    """Copy a column to a wider dtype in staging/, flush, then swap it in, keeping the order
    (for a commit of ``k`` rows: its chunks)."""
    staged = _create(table._g, col, table._n, first_row(col.ds), k)
    for lo in range(0, table._n, _COPY_ROWS):
        hi = min(table._n, lo + _COPY_ROWS)
        staged[lo:hi] = _slice(table, col.ds, lo, hi, f"column {col.name!r}").astype(col.dtype)
    _link(table, [(STAGING, col.name, staged)])
    _swap_in(table, col)


def _swap_in(table: Table, col: _Column) -> None:
    """Replace a column by its flushed copy in staging/, keeping the column order."""
    g, flush = table._g, table._store._f.flush
    names = list(g[COLUMNS])
    del g[COLUMNS][col.name]
    if col.name in g.get(STAGED_HEAPS, {}):  # after the column's deletion: see _repair
        _move_heap_in(g, col.name)
    g.move(f"{STAGING}/{col.name}", f"{COLUMNS}/{col.name}")
    for later in names[names.index(col.name) + 1:]:  # moving a link puts it last
        g.move(f"{COLUMNS}/{later}", f"{STAGING}/{later}")
        g.move(f"{STAGING}/{later}", f"{COLUMNS}/{later}")
    for c in table._cols.values():
        if c.ds is not None:
            c.ds = g[COLUMNS][c.name]
    if col.kind != "ragged" and col.name in g.get(SHAPES, {}):
        del g[SHAPES][col.name]
        col.shapes = None
    flush()


def _move_heap_in(g: h5py.Group, name: str) -> None:
    """Replace heaps/<name> by staging_heaps/<name>."""
    heaps = linking.require_group(g, HEAPS)
    if name in heaps:
        del heaps[name]
    g.move(f"{STAGED_HEAPS}/{name}", f"{HEAPS}/{name}")


def first_row(ds: h5py.Dataset) -> int | None:
    """The stamp FIRST_ROW_ATTR of a column or null mask; None if an older psmpi wrote it."""
    stamp = ds.attrs.get(FIRST_ROW_ATTR)
    return None if stamp is None else int(stamp)


def uncommitted(ds: h5py.Dataset, n: int) -> bool:
    """Whether a column or null mask was created by a commit not (yet) done: with ``n``
    rows committed it holds no committed value, and a killed commit may have torn it."""
    stamp = first_row(ds)
    return stamp is not None and stamp >= n


def _retire(g: h5py.Group, path: str) -> None:
    """Unlink ``g[path]``, made by a commit that was killed, keeping the object in retired/.

    Deleting an object reads all of its metadata (to free its chunks), and a kill during a
    flush can leave that torn: HDF5 then refuses the deletion. A second hard link keeps the
    object alive, so unlinking it here reads nothing but its header. Nobody reads retired/.
    """
    linking.require_group(g, RETIRED)[uuid.uuid4().hex] = g[path]
    del g[path]


def _repair(table: Table) -> None:
    """Writer only: finish or undo an interrupted widening, retire what an interrupted commit
    created, truncate uncommitted rows."""
    g, n = table._g, table._n
    if N_COMMITTED not in g:
        _create_counter(g)
    cols = linking.require_group(g, COLUMNS, track_order=True)
    linking.require_group(g, NULLS)
    for name in list(g.get(STAGING, {})):
        if name in cols:  # the swap had not begun: undo
            _retire(g, f"{STAGING}/{name}")
        else:  # the old column was deleted: finish the swap, heap first
            if name in g.get(STAGED_HEAPS, {}):
                _move_heap_in(g, name)
            g.move(f"{STAGING}/{name}", f"{COLUMNS}/{name}")
    for name in list(g.get(STAGED_HEAPS, {})):
        _retire(g, f"{STAGED_HEAPS}/{name}")  # of a widening undone
    for name in [name for name, ds in cols.items() if uncommitted(ds, n)]:
        _retire(g, f"{COLUMNS}/{name}")  # its heap, shapes and mask go below
    for name, mask in list(g[NULLS].items()):
        if name not in cols or uncommitted(mask, n):
            _retire(g, f"{NULLS}/{name}")  # of a column whose creation was interrupted, or new
    for name in list(g.get(SHAPES, {})):
        if name not in cols or _kind_of(cols[name]) != "ragged":
            _retire(g, f"{SHAPES}/{name}")  # of a widening undone, or one to general finished
    for ds in list(cols.values()) + list(g[NULLS].values()) + list(g.get(SHAPES, {}).values()):
        if ds.shape[0] > table._n:
            ds.resize(table._n, axis=0)
        _mend_torn_chunk(table, ds)
    for name in list(g.get(HEAPS, {})):
        if name not in cols or _kind_of(cols[name]) not in _HEAP_KINDS:
            _retire(g, f"{HEAPS}/{name}")  # of a column retired, or a widening undone
            continue
        heap, end = g[HEAPS][name], table._heap_end(cols[name])
        if heap.shape[0] > end:
            heap.resize(end, axis=0)
        _mend_torn_chunk(table, heap, end)
    table._store._f.flush()


def _mend_torn_chunk(table: Table, ds: h5py.Dataset, n: int | None = None) -> None:
    """Writer only: rewrite the last chunk of the ``n`` committed rows (or heap bytes)
    if a killed append tore it (see :func:`_torn_chunk`), so that its checksum is valid."""
    torn = _torn_chunk(ds, table._n if n is None else n)
    if torn is None:
        return
    lo, rows = torn
    n = lo + len(rows)
    ds.resize(lo, axis=0)  # drops the chunk
    ds.resize(n, axis=0)
    ds[lo:n] = rows
    what = {COLUMNS: "column", HEAPS: "the heap of column", SHAPES: "the shapes of column"}.get(
        ds.parent.name.rsplit("/", 1)[-1], "the null mask of column")
    warn(f"{table}: rows {lo}-{n - 1} of {what} {ds.name.rsplit('/', 1)[-1]!r} were "
         f"rewritten: a run killed while appending had left their chunk half "
         f"written (its committed rows intact)")

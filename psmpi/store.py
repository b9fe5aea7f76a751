"""The crash-safe HDF5 results store.

Layout of a results file (readable with plain h5py; only values with no other encoding
are pickled, inside JSON, and never unpickled unless asked)::

    study.h5                   attrs: psmpi_format=1
      <map name>/              one group per map() name; attrs: created (ISO UTC), psmpi_version
        results/               a table of the rows that finished
          n_committed          int64 scalar; only rows [0, n_committed) are valid. Compact
                               layout: the value lives in the (checksummed) object header
          columns/<key>        one chunked (~8 KiB), resizable dataset per column, in creation
                               order: shape (N,) for scalars, (N, *shape) for arrays; attr
                               ``kind`` in {"bool", "int", "float", "str", "array", "general"};
                               a general column holds (offset, length) int64 pairs (a compound
                               dtype) into its heap, length 0 for a null
          heaps/<key>          uint8 bytes of a general column's values, one JSON document
                               per row (psmpi.values), chunked (8 KiB), appended in order
          nulls/<key>          optional bool mask, True where the row has no value; a mask
                               shorter than n_committed means False for the missing tail
          staging/<key>        transient: a column being widened to a wider dtype or to general
        failures/              a table of the same kind for the psets that failed

Integrity. Every chunked dataset has HDF5's Fletcher-32 filter, which HDF5 verifies on each
read; the file is created with a version-2 superblock and its objects are written in the
HDF5 1.10 formats (object headers v2, extensible-array chunk indexes), whose metadata HDF5
checksums. So a flipped byte anywhere psmpi reads is an error, never a wrong value; the
readers turn h5py's errors into a :class:`DamageError` (a StoreError) naming the file, table,
column and rows, and :func:`check` surveys a whole file. A chunk torn by a writer killed
while rewriting it is told from damage by its checksum (:func:`_torn_chunk`): readers take
its committed rows and the next writer rewrites it. Files of psmpi before checksums
(no filters, a contiguous n_committed, version-0 superblock) read and resume as before; the
datasets a writer adds to them are checksummed. Nothing outside the file is touched:
:func:`open_h5` refuses a file with any link that is not a hard link (an external link, or a
soft link that may lead to one), and :class:`Table` refuses a dataset with external storage or
a virtual layout before reading it. psmpi writes none of these.

Values of a row (a dict ``{str: value}``) and the column kinds they make: bool and
numpy.bool_ -> "bool"; int and numpy integers within int64 -> "int" (int64); float and
numpy floating -> "float" (float64, NaN is a value); str -> "str" (UTF-8 in fixed-width bytes,
``S<n>``, n a power of two, widened when a longer string comes; variable-length strings
would live in HDF5's global heap, which a killed writer can leave unwritable); numpy arrays
of bool/int/uint/float dtype and ndim >= 1 -> "array" (one fixed shape and dtype per
column; 0-d arrays count as their scalar); None or an absent key -> null. Everything else
-> "general": containers, complex, bytes, datetimes, other numpy scalars, ints beyond int64,
str longer than values.STR_MAX_BYTES (4 KiB: a fixed-width column of 64 KiB strings cannot
be created, its fill value lives in the object header), arrays of other dtypes, and any
value of a key whose rows disagree in kind or array shape. Each general value is one JSON
document with typed extensions (:mod:`psmpi.values`), UTF-8 bytes appended to
``heaps/<key>``; values with no encoding are pickled there (one warning per key) and read
back as bytes unless ``unpickle=True``; only a value that cannot be pickled is refused by
:meth:`Table.admit`. Widening never loses a committed value: "int" receiving a float
becomes "float" if every stored and incoming int is exact in float64 (|v| <= 2**53, checked
when appending, :meth:`Table._settle`), else "general"; an array column widens to
``np.result_type``; other mismatches make the column general. A widening writes the new
column (and heap) aside in staging/, flushes, then swaps it in; the next writer finishes
or undoes an interrupted one (:meth:`Table._repair`) and drops a heap whose column is not
general.

Reading a column by hand::

    with h5py.File("study.h5", "r", locking=False) as f:
        t = f["my_map/results"]
        n = int(t["n_committed"][()])
        y = t["columns/y"][:n]
        # a general column: one JSON document per row, length 0 for a null
        heap = t["heaps/g"]
        g = [json.loads(heap[o:o + k].tobytes()) if k else None
             for o, k in t["columns/g"][:n].tolist()]

Every append is a two-phase commit: schema changes (new datasets, widening) are made
and flushed first, then every heap and column is resized and written, the file is flushed,
``n_committed`` is written and the file is flushed again. A writer killed at any instant
leaves a readable file whose committed prefix is exact; the next writer truncates the
uncommitted tail. psmpi's own lock file ``<file>.lock`` (JSON: host, pid, Slurm job)
keeps a second writer away; HDF5's flock is not used (Lustre and NFS may lack it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sys
import time
import uuid
import warnings
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

import h5py
import numpy as np

from .errors import ConfigError, DamageError, InternalError, PsmpiError, StoreError
from .lock import release_lock, take_lock, utc_now
from . import values as _values

if TYPE_CHECKING:
    import pandas as pd

FORMAT = 1
TABLE_KINDS = ("results", "failures")
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_COPY_ROWS = 1 << 20
# psmpi stops writing when less than this is free on the file's file system: HDF5 2.0
# segfaults inside H5Dwrite when the disk fills (measured), so the only clean way out is to
# stop before. Costs one statvfs per commit.
MIN_FREE_BYTES = 16 * 2**20
# Every chunk psmpi writes carries a Fletcher-32 checksum that HDF5 verifies on each read:
# without it a flipped bit in the raw data is read back as a wrong value. A module constant
# so that benchmarks/store_append.py can measure what it costs.
FLETCHER32 = True
# Library version bounds. The file is created with HDF5 1.8's version-2 superblock, which is
# checksummed; its objects are written in the 1.10 formats (object headers version 2 and
# extensible-array chunk indexes), whose metadata HDF5 checksums as well. Not the 1.10
# superblock (version 3): it records "open for writing", and HDF5 then refuses readers while
# a run writes and the file of a killed run (measured with HDF5 2.0 and locking=False).
_CREATE_LIBVER = ("v108", "latest")
_WRITE_LIBVER = ("v110", "latest")
# h5py's errors on a damaged file: a failed checksum or read is an OSError, a damaged object
# header often a KeyError, a bad name or string a UnicodeDecodeError (a ValueError).
_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError)
_CHECK_HINT = "run `psmpi check {path}` to see what is damaged and which rows are intact"
# type(value) -> kind: the fast path of admit(); other types go through _slow_kind.
_KINDS: dict[type, str] = {bool: "bool", np.bool_: "bool", int: "int", float: "float",
                           str: "str", np.str_: "str", type(None): "null", np.ndarray: "array"}
_KINDS.update({t: "int" for t in (np.int8, np.int16, np.int32, np.int64,
                                  np.uint8, np.uint16, np.uint32)})
_KINDS.update({t: "float" for t in (np.float16, np.float32, np.float64)})
_SLOW_KINDS = (((bool, np.bool_), "bool"), ((int, np.integer), "int"), ((float, np.floating), "float"),
               (str, "str"), (np.ndarray, "array"))
_PLAIN_NOT_STR = frozenset(("bool", "float"))
_STR_MAX = _values.STR_MAX_BYTES // 4  # chars that surely fit: UTF-8 takes at most 4 bytes a char
_SCALAR_KINDS = frozenset(("bool", "int", "float", "str"))
# A general column: one (offset, length) pair per row into its heap, heaps/<key>. A compound
# dtype, so that a psmpi before the general kind refuses the column instead of misreading it.
_POINTER = np.dtype([("offset", "<i8"), ("length", "<i8")])
_HEAP_CHUNK = 8192
_FLOATS = frozenset((float, type(None), np.float64, np.float32, np.float16))
_STR_TYPES = frozenset((str, np.str_, type(None)))
T = TypeVar("T")
_DTYPES = {"bool": np.dtype(bool), "int": np.dtype(np.int64), "float": np.dtype(np.float64),
           "str": np.dtype("S16"), "general": _POINTER}


@functools.cache
def _version() -> str:
    try:
        from importlib.metadata import version
        return version("psmpi")
    except Exception:
        return str(getattr(sys.modules.get(__package__ or ""), "__version__", "unknown"))


def _check_name(name: Any, what: str = "map name") -> str | None:
    """Why ``name`` cannot be an HDF5 link name (HDF5 would mangle it), or None."""
    if not isinstance(name, str) or not name:
        return f"{what} {name!r} must be a non-empty str"
    if "/" in name or "\0" in name or name in (".", "..") or len(name) > 255:
        return (f"{what} {name!r} is not allowed: use at most 255 characters, "
                f"without '/' or NUL, other than '.' and '..'")
    if not name.isascii() and not _encodable(name):
        return (f"{what} {name!r} is a str that UTF-8 cannot encode (a lone surrogate), so "
                f"HDF5 cannot store it")
    return None


class _NoColumn(KeyError):
    """A column asked for by name is not in the table (not damage)."""


def _reason(exc: BaseException) -> str:
    return exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc) or type(exc).__name__


def _ranges_text(ranges: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"{lo}-{hi - 1}" for lo, hi in ranges)


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _bad_ranges(ds: h5py.Dataset, lo: int, hi: int) -> list[tuple[int, int]]:
    """Row ranges within [lo, hi) of the chunks of ``ds`` that cannot be read, merged."""
    step = ds.chunks[0] if ds.chunks else max(1, hi - lo)
    bad = []
    for start in range(lo - lo % step, hi, step):
        a, b = max(lo, start), min(hi, start + step)
        try:
            ds[a:b]
        except _H5_ERRORS:
            bad.append((a, b))
    return _merged(bad)


def _check_storage(ds: h5py.Dataset) -> None:
    """Refuse a dataset whose data lives outside the file: HDF5 would read and write there."""
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


def _create_counter(group: h5py.Group) -> None:
    """``n_committed``: a scalar stored in its object header (compact layout), which HDF5
    checksums; a chunk of its own would cost more and the scalar stays plain to read."""
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_layout(h5py.h5d.COMPACT)
    ds = h5py.h5d.create(group.id, b"n_committed", h5py.h5t.STD_I64LE,
                         h5py.h5s.create(h5py.h5s.SCALAR), dcpl=plist)
    ds.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(0, dtype=np.int64))


def _torn_chunk(ds: h5py.Dataset, n: int) -> tuple[int, np.ndarray] | None:
    """``(lo, rows lo..n-1)`` if the last chunk of the ``n`` committed rows was torn by an
    interrupted rewrite and its checksum proves those rows intact; else None.

    An append rewrites that chunk whole, in place, in one write. A writer killed during
    that write (a signal lands between two pages) leaves the first pages new and the last
    ones old: the committed rows are the same bytes in both, but the checksum, at the
    chunk's end, is the old one. So the committed rows followed by fill values, which is
    what the chunk held before, must give exactly that checksum; real damage does not.
    """
    n = min(n, ds.shape[0])
    if not n or not ds.fletcher32:
        return None
    lo = (n - 1) // ds.chunks[0] * ds.chunks[0]
    try:
        ds[lo:n]
        return None  # not torn
    except _H5_ERRORS:
        pass
    try:
        _, raw = ds.id.read_direct_chunk((lo,) + (0,) * (ds.ndim - 1))
        before = np.full(ds.chunks, ds.fillvalue, dtype=ds.dtype)
        stored = np.frombuffer(raw, dtype=ds.dtype, count=before.size).reshape(ds.chunks)
        before[:n - lo] = stored[:n - lo]
    except _H5_ERRORS:
        return None
    return (lo, before[:n - lo]) if _filtered_chunk(before)[-4:] == raw[-4:] else None


def _filtered_chunk(rows: np.ndarray) -> bytes:
    """``rows`` (one whole chunk) as HDF5 stores it with the Fletcher-32 filter."""
    with h5py.File(f"psmpi-chunk-{uuid.uuid4().hex}.h5", "w", driver="core",
                   backing_store=False) as f:
        ds = f.create_dataset("c", data=rows, chunks=rows.shape, fletcher32=True)
        return ds.id.read_direct_chunk((0,) * rows.ndim)[1]


def _create_mask(group: h5py.Group, name: str, n: int, null: bool) -> h5py.Dataset:
    return group.create_dataset(name, shape=(n,), maxshape=(None,), dtype=bool, chunks=(8192,),
                                fillvalue=null, fletcher32=FLETCHER32)


def _slow_kind(v: Any) -> str | None:
    """The kind of a value whose exact type is not in _KINDS (subclasses, rarer numpy types)."""
    return next((kind for types, kind in _SLOW_KINDS if isinstance(v, types)), None)


def _kind_of(ds: h5py.Dataset) -> str:
    """A column's kind: its dataset's shape and dtype decide it (the attribute only says it)."""
    if ds.dtype.names == _POINTER.names:
        return "general"
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


def _encodable(text: str) -> bool:
    """Whether UTF-8 can encode ``text`` (lone surrogates it cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _str_width(nbytes: int) -> int:
    """Width for strings of up to ``nbytes``: a power of two, so widening copies are rare."""
    return max(16, 1 << max(0, nbytes - 1).bit_length())


def _fill(kind: str, dtype: np.dtype) -> Any:
    if kind == "str":
        return b""
    if kind == "general":
        return np.zeros((), _POINTER)[()]
    return np.nan if dtype.kind == "f" else dtype.type(0)


def _chunks(shape: tuple, dtype: np.dtype) -> tuple:
    """Chunks of about 8 KiB. An append rewrites the last, partly filled chunk of every
    column whole (read, checksum verified, checksum computed, written): with 64 KiB chunks
    checksums made appends of 1-100 rows 30-40 % slower, with 8 KiB 15 % (CPU time,
    store_append.py), and nothing at 1000 rows and more; reading is as fast."""
    row_bytes = max(1, int(np.prod(shape, dtype=np.int64)) * (16 if dtype.kind == "O" else dtype.itemsize))
    return (max(1, min(1024, (1 << 13) // row_bytes)),) + shape


class _Column:
    """What a table knows of one column; ``ds`` None while its creation is pending."""

    __slots__ = ("name", "kind", "dtype", "shape", "ds", "mask", "heap", "heap_end", "pending")

    def __init__(self, name: str, kind: str, dtype: np.dtype, shape: tuple = (),
                 ds: h5py.Dataset | None = None, mask: h5py.Dataset | None = None):
        self.name, self.kind, self.dtype, self.shape = name, kind, dtype, shape
        self.ds, self.mask = ds, mask
        # general columns: the heap dataset, the end of its committed bytes, and the bytes
        # of the rows being appended
        self.heap: h5py.Dataset | None = None
        self.heap_end = 0
        self.pending = b""


class Table:
    """Rows of one table (``results`` or ``failures``) of one map; see the module docstring.

    Obtain one with :meth:`Store.table`; tables of files opened by :func:`read` are read-only.
    """

    def __init__(self, group: h5py.Group, store: Store | None = None):
        self._g, self._store = group, store
        self._path = group.file.filename
        self._name = f"table {group.name.lstrip('/')!r} of {self._path}"
        self._cols: dict[str, _Column] = {}
        self._zero_d: set[str] = set()  # keys that were given 0-d arrays: unwrapped by append()
        # Layouts (keys and value types) of rows admitted before. A row of a known layout
        # needs only its Python ints range-checked: the schema only grows and widens, so
        # what fitted once fits again. Rows of a survey share a few layouts.
        self._layouts: set[tuple] = set()
        self._pickled: set[str] = set()  # keys warned about: one warning per key
        # Keys ever admitted with an int: only their float columns can lose one, so only
        # those _settle() scans (scanning every float column cost 4 % of a commit of scalars)
        self._int_keys: set[str] = set()
        # Values admit() had to encode to know they can be (containers, datetimes, ...), by
        # id, with the value (so the id stays its own) and whether a pickle was used: the
        # append that follows takes these bytes instead of encoding every value twice.
        self._encoded: dict[int, tuple[Any, bytes, bool]] = {}
        # pickled values: False reads their bytes (see :func:`read`), True unpickles them,
        # "keep" reads them as values.PickleBytes, which append() stores as the same pickle
        self.unpickle: bool | str = False
        with self._damage("its row count (n_committed)"):
            self._n = self._committed(group)
        if store is not None:
            with self._damage("its uncommitted rows (truncating them)"):
                self._repair()
        with self._damage("its list of columns"):
            nulls = group.get("nulls", {})
            for name, ds in self._datasets():
                mask = nulls.get(name)
                for part in (ds, mask):
                    if part is not None:
                        _check_storage(part)
                if ds.shape[0] < self._n:
                    raise DamageError(f"{self} is damaged: column {name!r} has {ds.shape[0]} rows "
                                      f"but {self._n} are committed; "
                                      f"{_CHECK_HINT.format(path=self._path)}")
                kind = _kind_of(ds)
                col = self._cols[name] = _Column(name, kind, ds.dtype, ds.shape[1:], ds, mask)
                if kind == "general":
                    self._open_heap(col)

    def _open_heap(self, col: _Column) -> None:
        heap = self._g.get("heaps", {}).get(col.name)
        if heap is None:
            raise DamageError(f"{self} is damaged: general column {col.name!r} has no heap "
                              f"(heaps/{col.name}); {_CHECK_HINT.format(path=self._path)}")
        _check_storage(heap)
        col.heap, col.heap_end = heap, self._heap_end(col.ds)
        if heap.shape[0] < col.heap_end:
            raise DamageError(f"{self} is damaged: the heap of column {col.name!r} has "
                              f"{heap.shape[0]} bytes but its rows need {col.heap_end}; "
                              f"{_CHECK_HINT.format(path=self._path)}")

    def _heap_end(self, pointers: h5py.Dataset) -> int:
        """End of the heap bytes of the committed rows: offsets only grow, row by row."""
        if not self._n:
            return 0
        last = self._slice(pointers, self._n - 1, self._n, f"column {pointers.name!r}")[0]
        return int(last["offset"]) + int(last["length"])

    @staticmethod
    def _committed(group: h5py.Group) -> int:
        if "n_committed" not in group:
            return 0
        ds = group["n_committed"]
        _check_storage(ds)
        n = int(ds[()])
        if n < 0:
            raise ValueError(f"n_committed is {n}")
        return n

    @contextlib.contextmanager
    def _damage(self, what: str, rows: list[tuple[int, int]] | None = None) -> Any:
        """Turn h5py's errors on reading ``what`` into a DamageError that says where."""
        try:
            yield
        except PsmpiError:
            raise
        except _H5_ERRORS as exc:
            where = f", rows {_ranges_text(rows)}" if rows else ""
            raise DamageError(f"{self}: {what}{where} cannot be read ({_reason(exc)}): the file "
                              f"is damaged there; {_CHECK_HINT.format(path=self._path)}") from exc

    def __repr__(self) -> str:
        return self._name

    def _datasets(self) -> list[tuple[str, h5py.Dataset]]:
        """Columns on disk in creation order; a reader also sees a column caught mid-widening."""
        found = list(self._g["columns"].items()) if "columns" in self._g else []
        names = {name for name, _ in found}
        staged = self._g.get("staging", {})
        return found + [(n, ds) for n, ds in staged.items() if n not in names]

    def _repair(self) -> None:
        """Writer only: finish or undo an interrupted widening, truncate uncommitted rows."""
        g = self._g
        if "n_committed" not in g:
            _create_counter(g)
        if "columns" not in g:
            g.create_group("columns", track_order=True)
        cols = g["columns"]
        g.require_group("nulls")
        for name in list(g.get("staging", {})):
            if name in cols:
                del g["staging"][name]
            else:
                g.move(f"staging/{name}", f"columns/{name}")
        for name in [name for name in g["nulls"] if name not in cols]:
            del g["nulls"][name]  # the mask of a column whose creation was interrupted
        for ds in list(cols.values()) + list(g["nulls"].values()):
            if ds.shape[0] > self._n:
                ds.resize(self._n, axis=0)
            self._mend_torn_chunk(ds)
        for name in list(g.get("heaps", {})):
            if name not in cols or _kind_of(cols[name]) != "general":
                del g["heaps"][name]  # made by a widening to general that was undone
                continue
            heap, end = g["heaps"][name], self._heap_end(cols[name])
            if heap.shape[0] > end:
                heap.resize(end, axis=0)
            self._mend_torn_chunk(heap, end)
        self._store._f.flush()

    def _mend_torn_chunk(self, ds: h5py.Dataset, n: int | None = None) -> None:
        """Writer only: rewrite the last chunk of the ``n`` committed rows (or heap bytes)
        if a killed append tore it (see :func:`_torn_chunk`), so that its checksum is valid."""
        torn = _torn_chunk(ds, self._n if n is None else n)
        if torn is None:
            return
        lo, rows = torn
        n = lo + len(rows)
        ds.resize(lo, axis=0)  # drops the chunk
        ds.resize(n, axis=0)
        ds[lo:n] = rows
        what = {"columns": "column", "heaps": "the heap of column"}.get(
            ds.parent.name.rsplit("/", 1)[-1], "the null mask of column")
        warnings.warn(f"{self}: rows {lo}-{n - 1} of {what} {ds.name.rsplit('/', 1)[-1]!r} were "
                      f"rewritten: a run killed while appending had left their chunk half "
                      f"written (its committed rows intact)", stacklevel=2)

    @property
    def n_rows(self) -> int:
        """Number of committed rows."""
        return self._n

    @property
    def columns(self) -> list[str]:
        """Names of the columns in the file, in creation order."""
        return [c.name for c in self._cols.values() if c.ds is not None]

    # ------------------------------------------------------------------ writing
    def admit(self, row: dict) -> str | None:
        """Check that ``row`` can be stored and record the schema changes it implies.

        Parameters
        ----------
        row : dict
            ``{column name: value}``; see the module docstring for the accepted values.

        Returns
        -------
        str or None
            None if the row can be appended (new columns and widenings are then pending);
            otherwise a one-line message naming the key, the column's and the row's types
            and the fix, and the row must not be appended.
        """
        layout = (*row, *map(type, row.values()))
        if layout in self._layouts:
            for v in row.values():
                if type(v) is int and not _I64_MIN <= v <= _I64_MAX or (
                        type(v) is str and (not v.isascii() or len(v) > _STR_MAX)):
                    break
            else:
                return None
        cols = self._cols
        changes = None
        for key, v in row.items():
            kind = _KINDS.get(type(v))
            if kind == "int":
                self._int_keys.add(key)
            col = cols.get(key)
            if col is not None and kind == col.kind and (
                    kind in _PLAIN_NOT_STR or (kind == "str" and v.isascii() and len(v) <= _STR_MAX)
                    or (kind == "int" and (type(v) is not int or _I64_MIN <= v <= _I64_MAX))):
                continue
            if col is not None and col.kind == "general" and kind is not None and kind != "array" and (
                    kind != "str" or v.isascii() or _encodable(v)):
                continue  # a native scalar: always encodable (a str UTF-8 cannot encode is
                # refused in every column alike, whatever kind earlier rows gave it)
            if kind == "null":
                continue
            problem, change = self._check(key, v, kind, col)
            if problem is not None:
                return problem
            if change is not None:
                changes = [change] if changes is None else changes + [change]
        for key, kind, dtype, shape in changes or ():
            col = cols.get(key)
            if col is None:
                cols[key] = _Column(key, kind, dtype, shape)
            else:
                col.kind, col.dtype, col.shape = kind, dtype, shape
        # arrays: their shape varies; other types: their contents vary (a list may hold
        # anything), so only rows of native scalars skip the checks next time
        if len(self._layouts) < 1000 and all(
                t in _KINDS and t is not np.ndarray for t in layout[len(row):]):
            self._layouts.add(layout)
        return None

    def admit_columns(self, values: dict[str, Sequence]) -> str | None:
        """:meth:`admit` for rows given as columns of scalars (``{key: values}``).

        Checks a column's types once, and ints by their extremes, instead of every value.

        Returns
        -------
        str or None
            None if the rows can be appended with :meth:`append_values` (schema changes are
            then pending); otherwise why not: a column mixes kinds or does not fit the
            table. :meth:`admit` on each row then tells which rows fail and why.
        """
        changes = []
        for key, column in values.items():
            kinds = {_KINDS.get(t) for t in set(map(type, column))}
            kinds.discard("null")
            if not kinds:
                continue  # only None: like an absent key, no column needed
            kind = kinds.pop()
            if kinds or kind not in _SCALAR_KINDS:
                return f"column {key!r} holds values of several kinds or not scalars"
            col = self._cols.get(key)
            present = [v for v in column if v is not None] if None in column else column
            if kind == "str" and not all(map(str.isascii, present)) and not all(
                    map(_encodable, present)):
                return f"column {key!r} holds a str that UTF-8 cannot encode"
            if kind == "int":
                probes = (min(present), max(present))  # only the extremes can overflow int64
            elif col is not None and col.kind == kind:
                continue
            else:
                probes = (present[0],)
            for v in probes:
                problem, change = self._check(key, v, kind, col)
                if problem is not None:
                    return problem
                if change is not None:
                    changes.append(change)
        for key, kind, dtype, shape in changes:
            col = self._cols.get(key)
            if col is None:
                self._cols[key] = _Column(key, kind, dtype, shape)
            else:
                col.kind, col.dtype, col.shape = kind, dtype, shape
        return None

    def _check(self, key: str, v: Any, kind: str | None, col: _Column | None
               ) -> tuple[str | None, tuple | None]:
        """The slow path of admit(): (refusal, None) or (None, schema change or None)."""
        kind = kind or _slow_kind(v)
        if kind == "int":
            self._int_keys.add(key)  # an int subclass, or a 0-d array's int
        shape, dtype = (), _DTYPES.get(kind or "")
        if kind == "array":
            if v.ndim == 0:
                self._zero_d.add(key)
                return self._check(key, v[()], None, col)
            shape, dtype = v.shape, v.dtype.newbyteorder("=")
            if dtype.kind not in "biuf" or v.size == 0:
                kind = "general"  # a ragged or exotic array: encoded whole, with dtype and shape
            if dtype.kind == "O":
                kind = None  # its elements may be anything: check they encode
        if kind is None:
            note = _values.Pickled()
            try:
                self._encoded[id(v)] = (v, _values.encode(v, note), note.used)
            except _values.Unencodable as exc:
                return (f"result {key!r} cannot be stored: {exc}; return values psmpi can "
                        f"encode (see README, Values and the file format) or picklable ones"), None
            kind = "general"
        elif kind == "int" and not _I64_MIN <= int(v) <= _I64_MAX:
            kind = "general"  # kept exact
        elif kind == "str" and not _encodable(v):
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
        return self._compatible(key, col, kind, dtype, shape)

    @staticmethod
    def _compatible(key: str, col: _Column, kind: str, dtype: np.dtype, shape: tuple
                    ) -> tuple[str | None, tuple | None]:
        """No refusal: values of kinds a column cannot hold make it general. Whether an
        int column widened to float stays exact is settled when appending (_settle)."""
        if kind == col.kind and kind != "array" or (kind, col.kind) == ("int", "float") or (
                col.kind == "general"):
            return None, None
        if (kind, col.kind) == ("float", "int"):
            return None, (key, "float", _DTYPES["float"], ())
        if kind == col.kind == "array" and shape == col.shape and (
                (dtype.kind == "b") == (col.dtype.kind == "b")):
            wide = np.result_type(col.dtype, dtype)
            return None, (None if wide == col.dtype else (key, kind, wide, shape))
        return None, (key, "general", _POINTER, ())

    def append(self, rows: list[dict], columns: dict[str, np.ndarray] | None = None) -> range:
        """Commit admitted ``rows``: apply pending schema changes, then a two-phase commit.

        Parameters
        ----------
        rows : list of dict
            Rows that :meth:`admit` accepted, in order, unchanged since (the values admit
            encoded are written as it encoded them).
        columns : dict of numpy.ndarray, optional
            More columns of the same rows, one 1-D array each (int, float, bool, object
            arrays of str, or bytes arrays of UTF-8), e.g. bookkeeping that is cheaper to collect as arrays than to
            put in every row dict. No null values.

        Returns
        -------
        range
            The row numbers the rows were committed as.
        """
        if not rows:
            return range(self._n, self._n)
        return self.append_values(self.transpose(rows), len(rows), columns)

    def append_values(self, values: dict[str, Any], k: int,
                      columns: dict[str, np.ndarray] | None = None) -> range:
        """:meth:`append` for ``k`` rows given as ``{key: sequence of k values}``.

        The values must have been accepted by :meth:`admit_columns`, or be the
        :meth:`transpose` of rows :meth:`admit` accepted.
        """
        store = self._store
        if store is None or store._f is None:
            raise StoreError(f"{self} is read-only or its store is closed")
        if not k:
            return range(self._n, self._n)
        columns = columns or {}
        for name, array in columns.items():
            self._admit_array(name, array, k)
        self._settle(values)
        data = {name: self._given(col, columns[name]) if name in columns
                else self._gather(col, values.get(name), k)
                for name, col in self._cols.items()}
        self._encoded.clear()
        n0, n1 = self._n, self._n + k
        store._ensure_space()
        try:
            self._prepare(data)
            for name, col in self._cols.items():
                array, nulls = data[name]
                if col.kind == "general":
                    _write(col.heap, col.heap_end, np.frombuffer(col.pending, np.uint8))
                    array = array.copy()
                    array["offset"] += col.heap_end
                _write(col.ds, n0, array)
                if col.mask is not None:
                    _write(col.mask, n0, np.zeros(n1 - n0, bool) if nulls is None else nulls)
            store._f.flush()
            self._g["n_committed"].id.write(h5py.h5s.ALL, h5py.h5s.ALL,
                                            np.array(n1, dtype=np.int64))
            store._f.flush()
            store._maybe_fsync()
            store._note_growth()
        except DamageError:  # a chunk to widen or to complete failed its checksum
            store._broken = True
            raise
        except (OSError, RuntimeError) as exc:  # quota, I/O error, lost mount, damage
            store._broken = True
            self._raise_if_damaged(n0)
            raise StoreError(f"writing {store.path or 'the in-memory file'} failed ({exc}). The "
                             f"{self._n} rows of {self} committed before are intact; free disk "
                             f"space (or fix the file system) and run the same command again "
                             f"to compute the rest") from exc
        self._n = n1
        for col in self._cols.values():
            if col.kind == "general":
                col.heap_end += len(col.pending)
                col.pending = b""
        return range(n0, n1)

    def _settle(self, values: dict[str, Any]) -> None:
        """Make general the float columns that would lose an int (|v| > 2**53), stored or
        coming, and the str columns that get a str too long for fixed width."""
        for name, col in self._cols.items():
            column = values.get(name)
            if col.kind == "float":
                if column is not None and name in self._int_keys and not _FLOATS.issuperset(
                        map(type, column)) and not all(
                        _values.exact_in_float(v) for v in map(_unwrap_0d, column)
                        if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))):
                    col.kind, col.dtype = "general", _POINTER
                elif col.ds is not None and col.ds.dtype.kind in "iu" and self._n:
                    stored = self._slice(col.ds, 0, self._n, f"column {name!r}")
                    if not all(map(_values.exact_in_float, (int(stored.min()), int(stored.max())))):
                        col.kind, col.dtype = "general", _POINTER
            elif col.kind == "str" and column is not None and not _short_strs(column) and any(
                    len(str(v).encode("utf-8")) > _values.STR_MAX_BYTES for v in column
                    if isinstance(v, (str, np.ndarray)) and len(str(v)) > _STR_MAX):
                col.kind, col.dtype = "general", _POINTER

    def _raise_if_damaged(self, n0: int) -> None:
        """After a failed append: a DamageError if a chunk it had to read fails its checksum
        (appending rewrites the last, partly filled chunk of every column)."""
        for col in self._cols.values():
            for ds, what in ((col.ds, "column"), (col.mask, "the null mask of column")):
                if ds is not None and ds.chunks:
                    lo = min(n0, ds.shape[0]) // ds.chunks[0] * ds.chunks[0]
                    self._slice(ds, lo, min(n0, ds.shape[0]), f"{what} {col.name!r}")

    def _admit_array(self, name: str, array: np.ndarray, k: int) -> None:
        """Take a whole column given as an array into the schema (psmpi's own columns)."""
        kind = {"i": "int", "u": "int", "f": "float", "b": "bool", "O": "str", "U": "str",
                "S": "str"}.get(array.dtype.kind)
        if kind is None or array.shape != (k,):
            raise InternalError(f"column {name!r} given as an array of {array.dtype} and shape "
                                f"{array.shape} for {k} rows")
        col = self._cols.get(name)
        if col is None:
            problem = _check_name(name, "column")
            if problem is not None:
                raise InternalError(problem)
            self._cols[name] = _Column(name, kind, _DTYPES[kind], ())
        elif (kind, col.kind) == ("float", "int"):
            col.kind, col.dtype = "float", _DTYPES["float"]
        elif kind != col.kind and (kind, col.kind) != ("int", "float"):
            raise InternalError(f"column {name!r} holds {col.kind} but was given {kind} values")

    @staticmethod
    def _given(col: _Column, array: np.ndarray) -> tuple[np.ndarray, None]:
        """A column given whole, as the dataset's dtype (UTF-8 bytes arrays as they are)."""
        if col.kind != "str":
            return np.asarray(array, dtype=col.dtype), None
        if array.dtype.kind == "U":
            try:  # numpy encodes ASCII in C; ids, hashes and host names are ASCII
                array = array.astype("S")
            except UnicodeEncodeError:
                return Table._gather_str(col, array.tolist(), len(array))
        elif array.dtype.kind != "S":
            return Table._gather_str(col, array.tolist(), len(array))
        if array.dtype.itemsize > col.dtype.itemsize:
            col.dtype = np.dtype(f"S{_str_width(array.dtype.itemsize)}")
        return array.astype(col.dtype, copy=False), None

    def transpose(self, rows: list[dict]) -> dict[str, Any]:
        """``{key: values of the rows}`` of admitted rows; keys outside the schema hold only None."""
        first = tuple(rows[0])
        if all(tuple(r) == first for r in rows):  # the common case: every row has the same keys
            values = dict(zip(first, zip(*[r.values() for r in rows])))
        else:
            values = {key: [r.get(key) for r in rows] for key in set().union(*rows)}
        for key in values.keys() - self._cols.keys():
            if any(v is not None for v in values[key]):
                raise InternalError(f"a row with key {key!r} was appended to {self} without admit()")
        return values

    def _gather(self, col: _Column, values: Any, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        """One column as an array (nulls filled) and its null mask (None: no nulls)."""
        kind = col.kind
        if values is None:  # no row has this key
            values = (None,) * k
        elif col.name in self._zero_d:
            values = [v[()] if type(v) is np.ndarray and v.ndim == 0 else v for v in values]
        if kind == "str":
            return self._gather_str(col, values, k)
        if kind == "general":
            return self._gather_general(col, values, k)
        if kind == "array":
            nulls = np.fromiter((v is None for v in values), bool, k)
            has_nulls = bool(nulls.any())
        else:
            has_nulls = None in values
            nulls = np.fromiter((v is None for v in values), bool, k) if has_nulls else None
        try:
            if has_nulls:
                fill = np.full(col.shape, _fill(kind, col.dtype), col.dtype) if col.shape else _fill(kind, col.dtype)
                values = [fill if v is None else v for v in values]
            if kind == "array":
                return np.stack(values).astype(col.dtype, copy=False), nulls
            return np.array(values, dtype=col.dtype), nulls
        except (ValueError, TypeError, OverflowError) as exc:
            raise InternalError(f"column {col.name!r} of {self} got values admit() did not check: {exc}") from exc

    def _gather_general(self, col: _Column, values: Any, k: int
                        ) -> tuple[np.ndarray, np.ndarray | None]:
        """(offset, length) pointers of the rows, offsets from the start of their bytes,
        which wait in col.pending; the write adds where the heap ends then."""
        note = _values.Pickled()
        try:
            encoded = [b"" if v is None else self._encode(v, note) for v in values]
        except _values.Unencodable as exc:
            raise InternalError(f"column {col.name!r} of {self} got a value admit() did not check: {exc}") from exc
        if note.used and col.name not in self._pickled:
            self._pickled.add(col.name)
            warnings.warn(f"{self}: values of {col.name!r} have no portable encoding and are "
                          f"stored as pickles; psmpi.read returns their bytes (unpickle=True "
                          f"unpickles them: only for files you trust)", stacklevel=4)
        lengths = np.fromiter(map(len, encoded), np.int64, k)
        pointers = np.empty(k, _POINTER)
        pointers["length"] = lengths
        pointers["offset"] = np.cumsum(lengths) - lengths
        col.pending = b"".join(encoded)
        nulls = lengths == 0
        return pointers, (nulls if nulls.any() else None)

    def _encode(self, v: Any, note: _values.Pickled) -> bytes:
        """The bytes of ``v``: as admit() encoded this very object, else encoded now."""
        known = self._encoded.get(id(v))
        if known is not None and known[0] is v:
            note.used = note.used or known[2]
            return known[1]
        return _values.encode(v, note)

    @staticmethod
    def _gather_str(col: _Column, values: Any, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        """UTF-8 bytes of a fixed width, widening the column if a value is longer."""
        has_nulls = None in values
        nulls = np.fromiter((v is None for v in values), bool, k) if has_nulls else None
        encoded = [b"" if v is None else v.encode("utf-8") for v in values]
        need = max(map(len, encoded), default=0)
        if need > col.dtype.itemsize:
            col.dtype = np.dtype(f"S{_str_width(need)}")
        return np.array(encoded, dtype=col.dtype), nulls

    def _prepare(self, data: dict) -> None:
        """Create, widen and mask datasets as ``data`` needs, each step flushed (no commit yet)."""
        flush = self._store._f.flush
        new = [c for c in self._cols.values() if c.ds is None]
        for col in new:
            if self._n:  # earlier rows are null: the mask exists before the column does
                col.mask = _create_mask(self._g["nulls"], col.name, self._n, True)
        if new and self._n:
            flush()
        for col in new:
            if col.kind == "general":
                col.heap = self._create_heap(col.name)
            col.ds = self._create(self._g["columns"], col, self._n)
            if col.kind == "general" and self._n:  # earlier rows: null, at offset 0
                flush()
        for col in self._cols.values():
            if col.kind == "general" and col.ds.dtype != _POINTER:
                self._widen_to_general(col)
            elif col.ds.dtype != col.dtype:
                self._widen(col)
        masks = [c for c in self._cols.values() if c.mask is None and data[c.name][1] is not None]
        for col in masks:
            col.mask = _create_mask(self._g["nulls"], col.name, self._n, False)
        if new or masks:
            flush()

    @staticmethod
    def _create(group: h5py.Group, col: _Column, n: int) -> h5py.Dataset:
        ds = group.create_dataset(col.name, shape=(n,) + col.shape, maxshape=(None,) + col.shape,
                                  dtype=col.dtype, chunks=_chunks(col.shape, col.dtype),
                                  fillvalue=_fill(col.kind, col.dtype), fletcher32=FLETCHER32)
        ds.attrs["kind"] = col.kind
        return ds

    def _create_heap(self, name: str) -> h5py.Dataset:
        heaps = self._g.require_group("heaps")
        if name in heaps:
            del heaps[name]  # left by a widening undone in this process
        return heaps.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.uint8,
                                    chunks=(_HEAP_CHUNK,), fillvalue=0, fletcher32=FLETCHER32)

    def _widen_to_general(self, col: _Column) -> None:
        """Encode a column's committed values into a new heap and a pointer column in
        staging/, flush, then swap it in like :meth:`_widen`. Killed before the swap, the
        next writer drops both (_repair); after it, the general column is whole."""
        g, flush = self._g, self._store._f.flush
        old = _Column(col.name, _kind_of(col.ds), col.ds.dtype, col.ds.shape[1:], col.ds, col.mask)
        col.shape = ()
        heap = self._create_heap(col.name)
        staged = self._create(g.require_group("staging"), col, self._n)
        end = 0
        for lo in range(0, self._n, _COPY_ROWS):
            hi = min(self._n, lo + _COPY_ROWS)
            rows = list(self._raw(old, lo, hi))
            nulls = self._nulls(old, lo, hi)
            if nulls is not None:
                rows = [None if null else v for v, null in zip(rows, nulls)]
            heap_col = _Column(col.name, "general", _POINTER)
            pointers, _ = self._gather_general(heap_col, [_plain(v) for v in rows], hi - lo)
            _write(heap, end, np.frombuffer(heap_col.pending, np.uint8))
            pointers["offset"] += end
            staged[lo:hi] = pointers
            end += len(heap_col.pending)
        flush()
        col.heap, col.heap_end = heap, end
        self._swap_in(col)

    def _widen(self, col: _Column) -> None:
        """Copy a column to a wider dtype in staging/, flush, then swap it in, keeping the order."""
        g, flush = self._g, self._store._f.flush
        staged = self._create(g.require_group("staging"), col, self._n)
        for lo in range(0, self._n, _COPY_ROWS):
            hi = min(self._n, lo + _COPY_ROWS)
            staged[lo:hi] = self._slice(col.ds, lo, hi, f"column {col.name!r}").astype(col.dtype)
        flush()
        self._swap_in(col)

    def _swap_in(self, col: _Column) -> None:
        """Replace a column by its flushed copy in staging/, keeping the column order."""
        g, flush = self._g, self._store._f.flush
        names = list(g["columns"])
        del g["columns"][col.name]
        g.move(f"staging/{col.name}", f"columns/{col.name}")
        for later in names[names.index(col.name) + 1:]:  # moving a link puts it last
            g.move(f"columns/{later}", f"staging/{later}")
            g.move(f"staging/{later}", f"columns/{later}")
        for c in self._cols.values():
            if c.ds is not None:
                c.ds = g["columns"][c.name]
        flush()

    # ------------------------------------------------------------------ reading
    def read_column(self, name: str, decode: bool = True) -> np.ndarray:
        """The committed values of column ``name``, raw: nulls hold fill values, str as str
        (``decode=False``: as the UTF-8 bytes array stored, a tenth of the memory)."""
        col = self._column(name)
        if not decode and col.kind == "str":
            values = self._slice(col.ds, 0, self._n, f"column {name!r}")
            if col.ds.dtype.kind == "S":
                return values
            return np.array(values, dtype=bytes)  # variable-length strings of an older writer
        return self._raw(col, 0, self._n)

    def read_slice(self, name: str, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Committed rows [lo, hi) of column ``name``, raw, and its null mask (None: no nulls)."""
        col, hi = self._column(name), min(hi, self._n)
        return self._raw(col, lo, hi), self._nulls(col, lo, hi)

    def _column(self, name: str) -> _Column:
        col = self._cols.get(name)
        if col is None or col.ds is None:
            raise _NoColumn(f"{self} has no column {name!r}; its columns are {self.columns}")
        return col

    def _raw(self, col: _Column, lo: int, hi: int) -> np.ndarray:
        values = self._slice(col.ds, lo, hi, f"column {col.name!r}")
        if col.kind == "general":
            return self._decoded(col, values, lo, hi)
        if col.kind != "str":
            return values
        with self._damage(f"column {col.name!r} (text that is not UTF-8)", [(lo, hi)]):
            if col.ds.dtype.kind == "S":
                return np.char.decode(values, "utf-8").astype(object)
            return np.array([v.decode("utf-8") for v in values], dtype=object)  # older writer

    def _decoded(self, col: _Column, pointers: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """The values of a general column's rows [lo, hi) from their pointers into its heap."""
        out = np.empty(len(pointers), dtype=object)
        if not len(pointers):
            return out
        offsets, lengths = pointers["offset"], pointers["length"]
        start, end = int(offsets.min()), int((offsets + lengths).max())
        blob = self._slice(col.heap, start, end, f"the heap of column {col.name!r}").tobytes()
        with self._damage(f"column {col.name!r} (a value that does not decode)", [(lo, hi)]):
            for i, (offset, length) in enumerate(zip(offsets.tolist(), lengths.tolist())):
                out[i] = _values.decode(blob[offset - start:offset - start + length], self.unpickle)
        return out

    def _slice(self, ds: h5py.Dataset, lo: int, hi: int, what: str) -> np.ndarray:
        """Rows [lo, hi) of ``ds`` as stored (str as bytes); a DamageError naming the rows of
        the chunks that fail their checksum."""
        try:
            return ds[lo:hi]
        except _H5_ERRORS:
            torn = _torn_chunk(ds, self._n) if hi > lo else None
            if torn is not None and lo <= torn[0] + len(torn[1]) and hi > torn[0]:
                start = torn[0]  # rows before it read as usual, the rest from the torn chunk
                head = self._slice(ds, lo, start, what) if lo < start else ds[0:0]
                return np.concatenate([head, torn[1][max(lo, start) - start:hi - start]])
            with self._damage(what, _bad_ranges(ds, lo, hi) or [(lo, hi)]):
                raise

    def _nulls(self, col: _Column, lo: int, hi: int) -> np.ndarray | None:
        if col.mask is None:
            return None
        nulls = np.zeros(hi - lo, bool)
        stored = self._slice(col.mask, lo, min(hi, col.mask.shape[0]), f"the null mask of column {col.name!r}")
        nulls[:stored.shape[0]] = stored
        return nulls if nulls.any() else None

    def read(self, rows: np.ndarray | None = None, columns: list[str] | None = None) -> pd.DataFrame:
        """Committed rows as a DataFrame typed like ``pd.DataFrame(list_of_row_dicts)``.

        Parameters
        ----------
        rows : array of int, optional
            Distinct row numbers in the wanted order; all committed rows by default.
        columns : list of str, optional
            The columns wanted, in that order; all by default.

        Returns
        -------
        pandas.DataFrame
            With a RangeIndex. Null ints become float NaN (None in an object column if a
            float64 would round an int), null bools and arrays None,
            null floats and str NaN; array columns hold one numpy array per row; general
            columns an object column of the values as stored, nulls None.
        """
        import pandas as pd

        lo, hi, take = 0, self._n, None
        if rows is not None:
            take = np.asarray(rows, dtype=np.int64).reshape(-1)
            if take.size and (take.min() < 0 or take.max() >= self._n):
                raise IndexError(f"row numbers must be in [0, {self._n}) for {self}")
            lo, hi = (int(take.min()), int(take.max()) + 1) if take.size else (0, 0)
            take = take - lo
        names = self.columns if columns is None else list(columns)
        size = hi - lo if take is None else take.size
        data = {name: self._frame_column(self._column(name), lo, hi, take) for name in names}
        for name in names:  # as they are: pandas would make datetimes a datetime64 column
            if self._cols[name].kind == "general":
                data[name] = pd.Series(data[name], dtype=object, index=pd.RangeIndex(size))
        return pd.DataFrame(data, index=pd.RangeIndex(size))

    def _frame_column(self, col: _Column, lo: int, hi: int, take: np.ndarray | None) -> np.ndarray:
        values, nulls = self._raw(col, lo, hi), self._nulls(col, lo, hi)
        if take is not None:
            values, nulls = values[take], None if nulls is None else nulls[take]
        if col.kind == "array":
            out = np.empty(len(values), dtype=object)
            for i, v in enumerate(values):
                out[i] = None if nulls is not None and nulls[i] else v
            return out
        if nulls is None:
            return values
        if col.kind == "int" and not _exact_as_float(values):
            values = values.astype(object)  # NaN would need a float: these ints would round
            values[nulls] = None
        elif col.kind in ("int", "float"):
            values = values.astype(np.float64)
            values[nulls] = np.nan
        else:
            values = values.astype(object)
            values[nulls] = None
        return values


class Store:
    """An HDF5 results file opened for writing; use :meth:`Store.open`."""

    def __init__(self, f: h5py.File, path: str | None, lock: str | None, fsync_interval: float):
        self._f: h5py.File | None = f
        self.path, self._lock, self._fsync_interval = path, lock, fsync_interval
        self._last_fsync = time.monotonic()
        self._tables: dict[tuple[str, str], Table] = {}
        self._broken = False  # a write failed: nothing more is written
        self._max_growth = 0  # bytes the file grew by in its largest commit
        self._size_before = 0

    @classmethod
    def open(cls, path: str | os.PathLike | None, *, fsync_interval: float = 10.0) -> Store:
        """Open (or create) a results file for writing and take its lock.

        Parameters
        ----------
        path : str, os.PathLike or None
            The HDF5 file; None keeps everything in memory (nothing touches the disk).
        fsync_interval : float
            Seconds between ``fsync`` calls after commits (node-crash safety).

        Raises
        ------
        StoreError
            The directory is missing or unwritable, another live process holds the lock,
            or the file is not a psmpi HDF5 file.
        """
        if path is None:
            f = h5py.File(f"psmpi-memory-{uuid.uuid4().hex}.h5", "w", driver="core",
                          backing_store=False, track_order=True, libver=_WRITE_LIBVER)
            f.attrs["psmpi_format"] = FORMAT
            return cls(f, None, None, fsync_interval)
        path = os.fspath(path)
        _check_writable(path)
        _check_free_space(path, MIN_FREE_BYTES)
        lock = take_lock(path)
        try:
            f = open_h5(path, "a")
        except BaseException:
            release_lock(lock)
            raise
        return cls(f, path, lock, fsync_interval)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.path or 'memory'!r})"

    def _file(self) -> h5py.File:
        if self._f is None:
            raise StoreError(f"{self} is closed")
        return self._f

    def table(self, map_name: str, kind: str = "results") -> Table:
        """The table ``kind`` ("results" or "failures") of map ``map_name``, created if missing."""
        problem = _check_name(map_name)
        if problem is not None:
            raise ConfigError(problem + "; choose another name=")
        if kind not in TABLE_KINDS:
            raise InternalError(f"table kind {kind!r} is not one of {TABLE_KINDS}")
        if (map_name, kind) not in self._tables:
            f = self._file()
            try:
                group = f.get(map_name)
                if group is None:
                    group = f.create_group(map_name)
                    group.attrs.update({"created": utc_now(), "psmpi_version": _version()})
                elif not isinstance(group, h5py.Group):
                    raise StoreError(f"{self.path} has an object {map_name!r} that is not a psmpi map")
                table = group.require_group(kind)
            except (OSError, RuntimeError, KeyError, ValueError) as exc:
                if isinstance(exc, PsmpiError):
                    raise
                raise DamageError(f"{self.path}: map {map_name!r} ({kind}) cannot be opened "
                                  f"({_reason(exc)}): the file is damaged; "
                                  f"{_CHECK_HINT.format(path=self.path)}") from exc
            self._tables[map_name, kind] = Table(table, self)
        return self._tables[map_name, kind]

    def note_planned(self, map_name: str, n_psets: int) -> None:
        """Record how many psets the current run of ``map_name`` has (``psmpi status``).

        Written once per run, before any row, and flushed: an attribute of fixed size
        rewritten in place, not a new object among the commits.
        """
        self.table(map_name)  # the map's group exists from here on
        self._file()[map_name].attrs["n_psets"] = np.int64(n_psets)
        self._file().flush()

    def map_names(self) -> list[str]:
        """Names of the maps in the file, in creation order."""
        return maps_in(self._file())

    def flush(self, fsync: bool = False) -> None:
        """Write HDF5's buffers to the OS; with ``fsync`` also to the disk."""
        f = self._file()
        f.flush()
        if fsync and self.path is not None:
            os.fsync(f.id.get_vfd_handle())
            self._last_fsync = time.monotonic()

    def _size(self) -> int:
        return os.fstat(self._f.id.get_vfd_handle()).st_size

    def _ensure_space(self) -> None:
        """Refuse to write when the disk is nearly full: HDF5 would crash, not report it."""
        if self.path is None:
            return
        # Room for the larger of the fixed margin and a few of the largest commits so far.
        needed = max(MIN_FREE_BYTES, 4 * self._max_growth)
        try:
            _check_free_space(self.path, needed)
        except StoreError:
            self._broken = True
            raise
        self._size_before = self._size()

    def _note_growth(self) -> None:
        if self.path is not None:
            self._max_growth = max(self._max_growth, self._size() - self._size_before)

    def _close_file(self) -> None:
        try:
            self._f.close()
        except (OSError, RuntimeError):
            if not self._broken:
                raise

    def _maybe_fsync(self) -> None:
        if self.path is not None and time.monotonic() - self._last_fsync >= self._fsync_interval:
            self.flush(fsync=True)

    def close(self) -> None:
        """Flush, fsync and close the file, then remove the lock file. Idempotent.

        After a failed write, the file is closed without a last flush: the committed rows
        are already on disk, and flushing into a full disk would only fail again.
        """
        if self._f is None:
            return
        try:
            if not self._broken:
                self.flush(fsync=True)
            self._close_file()
        finally:
            self._f, self._tables = None, {}
            release_lock(self._lock)


# ---------------------------------------------------------------------- files
def _exact_as_float(ints: np.ndarray) -> bool:
    """Whether every int64 of ``ints`` converts to float64 and back unchanged."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        back = ints.astype(np.float64).astype(np.int64)
    return bool(np.array_equal(back, ints)) and bool((ints != _I64_MAX).all())


def _unwrap_0d(v: Any) -> Any:
    """A 0-d array's scalar (stored as that scalar), anything else as it is."""
    return v[()] if type(v) is np.ndarray and v.ndim == 0 else v


def _short_strs(column: Sequence) -> bool:
    """Whether ``column`` holds only str and None, no str longer than _STR_MAX chars (which
    surely fit a fixed-width column). Checked in C: a loop in Python over every value of
    every str column cost 12 % of a commit of scalar rows (store_values.py, scenario a)."""
    return _STR_TYPES.issuperset(map(type, column)) and max(
        map(len, filter(None, column)), default=0) <= _STR_MAX


def _plain(v: Any) -> Any:
    """A value read from a native column as the Python value a worker returns."""
    if isinstance(v, np.generic) and not isinstance(v, np.datetime64):
        return v.item()
    return v


def _write(ds: h5py.Dataset, n0: int, array: np.ndarray) -> None:
    """Grow ``ds`` to ``n0 + len(array)`` rows and write ``array`` there (h5py's low-level API)."""
    ds.id.set_extent((n0 + array.shape[0],) + array.shape[1:])
    space = ds.id.get_space()
    space.select_hyperslab((n0,) + (0,) * (array.ndim - 1), array.shape)
    ds.id.write(h5py.h5s.create_simple(array.shape), space, array)


def _free_bytes(path: str) -> int:
    st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    return st.f_bavail * st.f_frsize


def _check_free_space(path: str, needed: int) -> None:
    free = _free_bytes(path)
    if free < needed:
        raise StoreError(f"only {free / 2**20:.1f} MiB free on the file system of {path}; psmpi "
                         f"stops writing below {needed / 2**20:.0f} MiB (HDF5 crashes when a disk "
                         f"fills during a write). Free disk space or choose another out=, then "
                         f"run the same command again: committed rows are kept")


def _check_writable(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise StoreError(f"cannot create {path}: directory {folder} does not exist; "
                         f"create it first (mkdir -p {folder}) or choose another path")
    if os.path.isdir(path):
        raise StoreError(f"{path} is a directory; give a file path such as {os.path.join(path, 'study.h5')}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StoreError(f"cannot write {path}: directory {folder} is not writable "
                         f"(psmpi also creates {path}.lock there); choose a writable directory")
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(f"cannot write {path}: the file is not writable; fix its permissions "
                         f"or choose another path")


@functools.cache
def _libhdf5() -> Any:
    """The HDF5 library h5py runs on (the very copy loaded in this process), or None."""
    import ctypes

    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "libhdf5" in line and "_hl" not in line}
    except OSError:  # not Linux
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)  # already loaded: the same instance, so h5py's ids are valid
            lib.H5Fget_eoa.argtypes = [ctypes.c_int64, ctypes.POINTER(ctypes.c_uint64)]
            lib.H5Fincrement_filesize.argtypes = [ctypes.c_int64, ctypes.c_uint64]
            return lib
        except (OSError, AttributeError):
            continue
    return None


def _cover_the_whole_file(f: h5py.File) -> bool:
    """After a killed writer: let HDF5's end of allocated space (EOA) cover the whole file.

    A writer killed inside a flush can leave chunks (and the index pointing at them) on disk
    while the superblock still records the EOA from before they were allocated. The next
    writer then gets "addr overflow" when it rewrites such a chunk (measured: a SIGKILL loop
    failed so in about one run of 32 kills in a few). A clean close leaves EOA == end of file;
    a larger file is this case, and ``H5Fincrement_filesize`` (what ``h5clear --increment``
    does) raises the EOA to the end of the file; a reader's handle only in memory. Returns
    True if it had to. Measured: 18 of 128 SIGKILLs of a writer left such a file.
    """
    lib = _libhdf5()
    if lib is None:
        return False
    import ctypes

    eoa = ctypes.c_uint64()
    if lib.H5Fget_eoa(f.id.id, ctypes.byref(eoa)) < 0:
        return False
    eof = os.fstat(f.id.get_vfd_handle()).st_size
    if eof <= eoa.value:
        return False
    if lib.H5Fincrement_filesize(f.id.id, 0) < 0:
        raise StoreError(f"{f.filename} was left by a writer killed in the middle of a flush, "
                         f"and HDF5 refused to take in its last {eof - eoa.value} bytes; "
                         f"run `psmpi check {f.filename}`")
    return True


def _create_empty(path: str) -> None:
    """Make ``path`` an empty results file: written beside it, then renamed into place."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with h5py.File(tmp, "w", locking=False, track_order=True, libver=_CREATE_LIBVER) as f:
            f.attrs["psmpi_format"] = FORMAT
        os.replace(tmp, path)
    except OSError as exc:  # a disk filled since the free-space check, a lost mount
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise StoreError(f"cannot create {path} ({exc}); free disk space (or fix the file "
                         f"system) and run the same command again") from exc


def open_h5(path: str, mode: str) -> h5py.File:
    """Open ``path`` with h5py (mode "a" creates it if missing or empty, or "r"), checking it
    is a psmpi results file that reaches nothing outside itself; StoreError with the fix if
    not. No lock: :meth:`Store.open` takes it.

    Every link of the file is walked first (about 5 us a link) and any that is not a hard
    link is refused: an external link, or a soft link that may lead to one, would make HDF5
    open another file. Datasets with external storage or a virtual layout are refused where
    psmpi opens them (:class:`Table`), before their data is touched.
    """
    if mode == "r" and not os.path.isfile(path):
        raise StoreError(f"{path} does not exist")
    if mode == "r" and os.path.getsize(path) == 0:
        raise StoreError(f"{path} is empty (0 bytes): no results were written to it yet")
    if mode == "a" and (not os.path.exists(path) or os.path.getsize(path) == 0):
        # Created whole, then renamed: never half-made. An empty file (`touch study.h5`)
        # holds nothing to lose, so it is replaced the same way.
        _create_empty(path)
    # The writer has no raw-data chunk cache: it writes each chunk once, and with HDF5 2.0's
    # default 1 MiB cache the writer's memory grew by the size of everything written
    # (measured: 80 MiB more per 77 MiB of data, freed neither by flush nor by close).
    options = {"rdcc_nbytes": 0, "libver": _WRITE_LIBVER} if mode == "a" else {}
    try:
        f = h5py.File(path, mode, locking=False, **options)
    except OSError as exc:
        raise StoreError(f"{path} is not an HDF5 file (or is damaged) and cannot be opened: {exc}; "
                         f"psmpi writes its results as HDF5, so choose another path") from None
    # Readers too: the space is only taken in memory, so they read what is there.
    _cover_the_whole_file(f)
    try:
        _check_links(f, path)
        try:
            fmt = f.attrs.get("psmpi_format")
        except _H5_ERRORS as exc:
            raise DamageError(f"{path}: the attributes of the file cannot be read ({_reason(exc)}): "
                              f"the file is damaged") from exc
        if fmt is None or int(fmt) > FORMAT:
            what = "was written by a newer psmpi" if fmt is not None else "is an HDF5 file but not a psmpi results file"
            raise StoreError(f"{path} {what}; choose another path")
    except BaseException:
        f.close()
        raise
    return f


_LINK_KINDS = {h5py.h5l.TYPE_SOFT: "a soft link", h5py.h5l.TYPE_EXTERNAL: "an external link"}


def _check_links(f: h5py.File, path: str) -> None:
    """Refuse every link that is not a hard link (psmpi writes none); names the first few."""
    found: list[str] = []

    def visit(name: bytes, info: Any) -> None:
        if info.type != h5py.h5l.TYPE_HARD:
            kind = _LINK_KINDS.get(info.type, "a user-defined link")
            try:
                target = f.id.links.get_val(name)
                target = (":".join(t.decode("utf-8", "replace") for t in target)
                          if isinstance(target, tuple) else target.decode("utf-8", "replace"))
            except _H5_ERRORS:
                target = "?"
            found.append(f"{name.decode('utf-8', 'replace')!r} is {kind} to {target}")

    try:
        f.id.links.visit(visit, info=True)
    except _H5_ERRORS as exc:
        raise DamageError(f"{path}: the groups of the file cannot be read ({_reason(exc)}): the "
                          f"file is damaged; {_CHECK_HINT.format(path=path)}") from exc
    if found:
        more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
        raise StoreError(f"{path}: {'; '.join(found[:5])}{more}. psmpi reads and writes nothing "
                         f"outside the results file and never makes links: this file was altered; "
                         f"choose another file")


# ---------------------------------------------------------------------- public readers
def maps_in(f: h5py.File) -> list[str]:
    """Names of the maps in an open results file, in creation order."""
    try:
        return [name for name, obj in f.items() if isinstance(obj, h5py.Group)]
    except _H5_ERRORS as exc:
        raise DamageError(f"{f.filename}: the list of maps cannot be read ({_reason(exc)}): the "
                          f"file is damaged; {_CHECK_HINT.format(path=f.filename)}") from exc


def map_names(path: str | os.PathLike) -> list[str]:
    """Names of the maps in a results file (opened read-only, without the lock)."""
    with open_h5(os.fspath(path), "r") as f:
        return maps_in(f)


def read(path: str | os.PathLike, name: str | None = None, *, failures: bool = False,
         unpickle: bool = False) -> pd.DataFrame:
    """Read the committed rows of one map of a results file.

    Opens the file read-only without taking the lock, so it works while a run writes it.

    Parameters
    ----------
    path : str or os.PathLike
        The results file.
    name : str, optional
        The map; by default the only map in the file.
    failures : bool
        Read the failed psets instead of the results.
    unpickle : bool
        Unpickle the values stored as pickles (values with no portable encoding). By
        default they are returned as the bytes of their pickle: unpickling a file from
        elsewhere can run any code.

    Returns
    -------
    pandas.DataFrame
        See :meth:`Table.read`.
    """
    path, kind = os.fspath(path), "failures" if failures else "results"
    return reading(path, lambda f: _read_table(f, path, name, kind, unpickle))


def reading(path: str, read: Callable[[h5py.File], T]) -> T:
    """``read(file)`` on ``path`` opened read-only; every error a PsmpiError.

    While a writer holds the lock, a failure is retried twice 0.2 s apart: a reader may
    catch a chunk or an index in the middle of a write. Otherwise a failure is damage.
    """
    for attempt in range(3):
        retry = attempt < 2 and os.path.exists(path + ".lock")
        try:
            with open_h5(path, "r") as f:
                return read(f)
        except (PsmpiError, _NoColumn) as exc:
            if not (retry and isinstance(exc, DamageError)):
                raise  # not a psmpi file, no such map or column, ...
        except _H5_ERRORS as exc:
            if not retry:
                raise DamageError(f"cannot read {path} ({_reason(exc)}): the file is damaged, or "
                                  f"was being written at that instant (then retry); "
                                  f"{_CHECK_HINT.format(path=path)}") from exc
        time.sleep(0.2)
    raise InternalError("unreachable")


def _read_table(f: h5py.File, path: str, name: str | None, kind: str,
                unpickle: bool = False) -> pd.DataFrame:
    import pandas as pd

    names = maps_in(f)
    if name is None and len(names) != 1:
        raise StoreError(f"{path} holds {len(names)} maps {names}; pass name= to choose one")
    name = names[0] if name is None else name
    if name not in names:
        raise StoreError(f"{path} has no map {name!r}; its maps are {names}")
    if kind not in f[name]:
        return pd.DataFrame()
    table = Table(f[name][kind])
    table.unpickle = unpickle
    return table.read()


# ---------------------------------------------------------------------- checking a file
@dataclasses.dataclass
class Damage:
    """One damaged part of a table: a column's rows, or the whole table (``column`` None)."""

    map: str
    table: str
    column: str | None
    rows: tuple[int, int] | None  # [lo, hi) of committed rows; None: unknown
    reason: str

    def __str__(self) -> str:
        if self.column is None:
            return f"map {self.map!r} ({self.table}): cannot be read: {self.reason}"
        rows = f"rows {self.rows[0]}-{self.rows[1] - 1}" if self.rows else "its rows"
        return f"map {self.map!r} ({self.table}): column {self.column!r}, {rows}: {self.reason}"


@dataclasses.dataclass
class TableCheck:
    """What :func:`check` found in one table of one map."""

    map: str
    table: str
    n_rows: int | None  # committed rows; None if the table cannot be read at all
    n_columns: int
    damaged: list[Damage]
    intact: list[tuple[int, int]]  # [lo, hi) row ranges readable in every column


@dataclasses.dataclass
class CheckReport:
    """The result of :func:`check`: per table what is damaged and which rows are intact."""

    path: str
    tables: list[TableCheck] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)  # maps that cannot be opened
    being_written: bool = False

    @property
    def damaged(self) -> bool:
        return bool(self.problems) or any(t.damaged for t in self.tables)

    def text(self) -> str:
        """A human-readable account, one line per table and per damaged part."""
        lines = []
        for t in self.tables:
            if t.n_rows is None:
                lines.append(f"map {t.map!r} ({t.table}): DAMAGED, nothing can be read")
            elif not t.damaged:
                lines.append(f"map {t.map!r} ({t.table}): {t.n_rows} row{'s' * (t.n_rows != 1)}, "
                             f"{t.n_columns} column{'s' * (t.n_columns != 1)}, ok")
            else:
                kept = sum(hi - lo for lo, hi in t.intact)
                lines.append(f"map {t.map!r} ({t.table}): DAMAGED; {kept} of {t.n_rows} rows intact "
                             f"in every column (rows {_ranges_text(t.intact) or 'none'})")
            lines += [f"  damaged: {d}" for d in t.damaged]
        lines += [f"damaged: {p}" for p in self.problems]
        if self.being_written:
            lines.append(f"note: {self.path}.lock exists: if a survey is writing the file, damage "
                         f"found may be a write caught half-way; check again when it is done")
        verdict = "DAMAGED" if self.damaged else "no damage found"
        return "\n".join([f"{self.path}: {verdict}"] + lines)


def check(path: str | os.PathLike) -> CheckReport:
    """Verify a whole results file: every map, table, column and null mask, chunk by chunk.

    Reads the file read-only without the lock. Each chunk's checksum is verified by HDF5
    (files of psmpi before checksums: only that it can be read and decoded).

    Returns
    -------
    CheckReport
        Per table the damaged parts (column and row range) and the row ranges intact in
        every column, which can be saved; ``report.damaged`` says if anything is damaged.

    Raises
    ------
    StoreError
        The file cannot be opened at all (missing, not HDF5 or damaged at its start, not a
        psmpi file, or it has links or datasets that reach outside it).
    """
    path = os.fspath(path)
    report = CheckReport(path, being_written=os.path.exists(path + ".lock"))
    with open_h5(path, "r") as f:
        for name in f:
            try:
                group = f[name]
                kinds = [k for k in TABLE_KINDS if k in group] if isinstance(group, h5py.Group) else []
            except _H5_ERRORS as exc:
                report.problems.append(f"object {name!r}: {_reason(exc)}")
                continue
            report.tables += [_check_table(group, name, kind) for kind in kinds]
    return report


def _check_table(group: h5py.Group, name: str, kind: str) -> TableCheck:
    try:
        table = Table(group[kind])
    except (PsmpiError, *_H5_ERRORS) as exc:
        reason = _reason(exc).split(": the file is damaged")[0]
        return TableCheck(name, kind, None, 0, [Damage(name, kind, None, None, reason)], [])
    n, damaged = table.n_rows, []
    for column in table.columns:
        col = table._cols[column]
        step = min(ds.chunks[0] for ds in (col.ds, col.mask) if ds is not None and ds.chunks) \
            if col.ds.chunks else max(1, n)
        bad = []
        for lo in range(0, n, step):
            try:
                table.read_slice(column, lo, min(n, lo + step))
            except DamageError:
                bad.append((lo, min(n, lo + step)))
        damaged += [Damage(name, kind, column, rows, "fails its checksum or cannot be decoded")
                    for rows in _merged(bad)]
    bad_rows = _merged([d.rows for d in damaged])
    intact, lo = [], 0
    for a, b in bad_rows + [(n, n)]:
        if a > lo:
            intact.append((lo, a))
        lo = max(lo, b)
    return TableCheck(name, kind, n, len(table.columns), damaged, intact)

"""The table façade: one table (``results`` or ``failures``) of one map.

:class:`Table` holds what is known of a table's columns and opens them; its method groups
live with their responsibility: admission in :mod:`.schema`, committing and repair in
:mod:`.commit`, reading in :mod:`.rows`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DamageError, PsmpiError
from ..layout import (
    COLUMNS,
    DTYPE_ATTR,
    HEAPS,
    N_COMMITTED,
    NULLS,
    SHAPES,
    STAGED_HEAPS,
    STAGING,
)
from . import commit as _commit
from . import rows as _rows
from . import schema as _schema
from .damage import _CHECK_HINT, _H5_ERRORS, _ranges_text, _reason
from .schema import _HEAP_KINDS, _check_storage, _Column, _kind_of, _lengths

if TYPE_CHECKING:
    import h5py
    import pandas as pd

    from .file import Store


class Table:
    """Rows of one table (``results`` or ``failures``) of one map; see :mod:`psmpi.store`.

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
                _commit._repair(self)
        with self._damage("its list of columns"):
            nulls = group.get(NULLS, {})
            for name, ds in self._datasets():
                if _commit.uncommitted(ds, self._n):
                    continue  # no committed row has it: maybe torn, never read
                mask = nulls.get(name)
                if mask is not None and _commit.uncommitted(mask, self._n):
                    mask = None  # made for rows not committed: the committed ones are not null
                for part in (ds, mask):
                    if part is not None:
                        _check_storage(part)
                if ds.shape[0] < self._n:
                    raise DamageError(f"{self} is damaged: column {name!r} has {ds.shape[0]} rows "
                                      f"but {self._n} are committed; "
                                      f"{_CHECK_HINT.format(path=self._path)}")
                self._cols[name] = self._open_column(name, ds, mask)

    def _open_column(self, name: str, ds: h5py.Dataset, mask: h5py.Dataset | None) -> _Column:
        kind = _kind_of(ds)
        col = _Column(name, kind, ds.dtype, ds.shape[1:], ds, mask)
        if kind in _HEAP_KINDS:
            self._open_heap(col)
        if kind == "ragged":
            self._open_shapes(col)
        return col

    def _open_shapes(self, col: _Column) -> None:
        shapes = self._g.get(SHAPES, {}).get(col.name)
        if shapes is None or DTYPE_ATTR not in col.ds.attrs:
            raise DamageError(f"{self} is damaged: ragged column {col.name!r} has no shapes "
                              f"({SHAPES}/{col.name}) or no dtype attribute; "
                              f"{_CHECK_HINT.format(path=self._path)}")
        _check_storage(shapes)
        if shapes.shape[0] < self._n or shapes.ndim != 2:
            raise DamageError(f"{self} is damaged: the shapes of column {col.name!r} have "
                              f"shape {shapes.shape} but {self._n} rows are committed; "
                              f"{_CHECK_HINT.format(path=self._path)}")
        col.dtype = np.dtype(col.ds.attrs[DTYPE_ATTR])
        col.shapes, col.ndim = shapes, shapes.shape[1]

    def _open_heap(self, col: _Column) -> None:
        heap = None
        if col.ds.parent.name.rsplit("/", 1)[-1] == STAGING:  # a reader, mid-widening
            heap = self._g.get(STAGED_HEAPS, {}).get(col.name)
        heap = heap if heap is not None else self._g.get(HEAPS, {}).get(col.name)
        if heap is None:
            raise DamageError(f"{self} is damaged: {col.kind} column {col.name!r} has no heap "
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
        last = _rows._slice(self, pointers, self._n - 1, self._n, f"column {pointers.name!r}")[0]
        return int(last["offset"]) + int(_lengths(last))

    @staticmethod
    def _committed(group: h5py.Group) -> int:
        if N_COMMITTED not in group:
            return 0
        ds = group[N_COMMITTED]
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
        found = list(self._g[COLUMNS].items()) if COLUMNS in self._g else []
        names = {name for name, _ in found}
        staged = self._g.get(STAGING, {})
        return found + [(n, ds) for n, ds in staged.items() if n not in names]

    @property
    def n_rows(self) -> int:
        """Number of committed rows."""
        return self._n

    @property
    def columns(self) -> list[str]:
        """Names of the columns in the file, in creation order."""
        return [c.name for c in self._cols.values() if c.ds is not None]

    def bytes_per_row(self) -> float:
        """About how many bytes one committed row takes: its columns, and its share of the
        heaps of general and ragged columns (to size blocks of rows copied at once)."""
        total = 0.0
        for col in self._cols.values():
            if col.ds is not None:
                total += col.ds.dtype.itemsize * int(np.prod(col.ds.shape[1:], dtype=np.int64))
            if col.kind in _HEAP_KINDS and self._n:
                total += col.heap_end / self._n + 8 * col.ndim
        return total

    # ------------------------------------------------------------------ writing
    def admit(self, row: dict) -> str | None:
        """Check that ``row`` can be stored and record the schema changes it implies.

        Parameters
        ----------
        row : dict
            ``{column name: value}``; see :mod:`psmpi.store` for the accepted values.

        Returns
        -------
        str or None
            None if the row can be appended (new columns and widenings are then pending);
            otherwise a one-line message naming the key, the column's and the row's types
            and the fix, and the row must not be appended.
        """
        return _schema.admit(self, row)

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
        return _schema.admit_columns(self, values)

    def append(self, rows: list[dict], columns: dict[str, np.ndarray] | None = None) -> range:
        """Commit admitted ``rows``: apply pending schema changes, then a two-phase commit.

        Parameters
        ----------
        rows : list of dict
            Rows that :meth:`admit` accepted, in order, unchanged since (the values admit
            encoded are written as it encoded them).
        columns : dict of numpy.ndarray, optional
            More columns of the same rows, one 1-D array each (int, float, bool, object
            arrays of str, or bytes arrays of UTF-8), e.g. bookkeeping that is cheaper to
            collect as arrays than to put in every row dict. No null values.

        Returns
        -------
        range
            The row numbers the rows were committed as.
        """
        if not rows:
            return range(self._n, self._n)
        return _commit.append_values(self, _commit.transpose(self, rows), len(rows), columns)


    def append_values(self, values: dict[str, Any], k: int,
                      columns: dict[str, np.ndarray] | None = None) -> range:
        """:meth:`append` for ``k`` rows given as ``{key: sequence of k values}``.

        The values must have been accepted by :meth:`admit_columns`, or be the
        :meth:`transpose` of rows :meth:`admit` accepted.
        """
        return _commit.append_values(self, values, k, columns)

    def append_from(self, source: Table, lo: int, hi: int) -> range | None:
        """Commit rows [lo, hi) of table ``source`` in bulk, copied as stored.

        The fast way to copy between tables of one schema (``psmpi merge``): no value is
        decoded. Only when both tables have the same columns of the same kinds, dtypes and
        shapes (a str column here may be narrower; it is widened).

        Returns
        -------
        range or None
            The row numbers the rows were committed as; None if the schemas differ (nothing
            is written: copy those rows with :meth:`admit` and :meth:`append`).
        """
        return _commit.append_from(self, source, lo, hi)

    def transpose(self, rows: list[dict]) -> dict[str, Any]:
        """``{key: values of the rows}`` of admitted rows; keys outside the schema hold only None."""
        return _commit.transpose(self, rows)

    # ------------------------------------------------------------------ reading
    def read_column(self, name: str, decode: bool = True) -> np.ndarray:
        """The committed values of column ``name``, raw: nulls hold fill values, str as str
        (``decode=False``: as the UTF-8 bytes array stored, a tenth of the memory)."""
        return _rows.read_column(self, name, decode)

    def read_slice(self, name: str, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Committed rows [lo, hi) of column ``name``, raw, and its null mask (None: no nulls)."""
        return _rows.read_slice(self, name, lo, hi)

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
            null floats and str NaN; array and ragged columns hold one numpy array per row; general
            columns an object column of the values as stored, nulls None.
        """
        return _rows.read(self, rows, columns)

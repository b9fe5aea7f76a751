"""Checking a whole file: :func:`check` reads every map, table, column and null mask chunk
by chunk and reports, per table, what is damaged and which rows are intact
(:class:`CheckReport`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

from ..errors import DamageError, PsmpiError
from ..layout import TABLE_KINDS, lock_path
from .damage import _H5_ERRORS, _merged, _ranges_text, _reason
from .file import open_h5
from .table import Table

if TYPE_CHECKING:
    import h5py


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
            lines.append(f"note: {lock_path(self.path)} exists: if a survey is writing the file, damage "
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
    import h5py
    path = os.fspath(path)
    report = CheckReport(path, being_written=os.path.exists(lock_path(path)))
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

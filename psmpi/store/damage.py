"""Damage: h5py's errors on a damaged file, how they are reported, and torn chunks.

A chunk torn by a writer killed while rewriting it is told from damage by its checksum
(:func:`_torn_chunk`): readers take its committed rows and the next writer rewrites it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import h5py

# h5py's errors on a damaged file: a failed checksum or read is an OSError, a damaged object
# header often a KeyError, a bad name or string a UnicodeDecodeError (a ValueError).
_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError)
_CHECK_HINT = "run `psmpi check {path}` to see what is damaged and which rows are intact"


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
    import h5py
    with h5py.File(f"psmpi-chunk-{uuid.uuid4().hex}.h5", "w", driver="core",
                   backing_store=False) as f:
        ds = f.create_dataset("c", data=rows, chunks=rows.shape, fletcher32=True)
        return ds.id.read_direct_chunk((0,) * rows.ndim)[1]

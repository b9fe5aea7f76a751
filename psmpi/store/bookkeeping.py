"""Who computed what, when: the run and pset ids of every row, and the names of their columns.

Every ``map()`` call is a *run*, with a random ``run_id`` and a ``run_seq`` counting the runs
of that map in the file. Every computed pset gets a ``pset_id`` (a UUID, as psweep's) and a
``pset_seq`` counting the psets of that map over all runs, and its own directory
``<calc_dir>/<pset_id>`` for outputs too big for a table. A resumed pset keeps the ids of
the run that computed it; ``repeat=True`` computes psets again under new ids (same
``pset_hash``).

A pset id is a keyed mix of the pset's index under a random key the run draws (independent
of its run id): known on the driver, vectorised over a batch, and on the worker, without
sending ids back and forth. Their lower 62 bits are a bijection of the index, so the ids of
one run are distinct (for indexes below 2**62); the key makes them look like random
(version 4) UUIDs.

This module also owns the names of the bookkeeping columns that the store keeps per row:
files written before psmpi took psweep's names hold ``_t_start`` and ``_runtime``, read
under today's names (see :data:`LEGACY_NAMES`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from .. import layout

if TYPE_CHECKING:
    import pandas as pd

LEGACY_NAMES = layout.LEGACY_NAMES
TIME_COLUMN = layout.TIME_UTC  # float64 POSIX seconds (UTC) on disk; a UTC datetime when read

_M64 = (1 << 64) - 1
_M62 = (1 << 62) - 1
_GAMMA = 0x9E3779B97F4A7C15  # splitmix64's increment: odd, so i -> i * GAMMA is a bijection
_C1, _C2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_MIX = ((30, _C1), (27, _C2), (31, 0))  # splitmix64's finaliser: x ^= x >> 30; x *= C1; ...
_UUID_VERSION_4 = 0x4000          # in the upper half (the version nibble)
_UUID_VARIANT = 0b10 << 62        # in the lower half (RFC 4122 variant)


def new_run_id() -> str:
    return uuid.uuid4().hex


def new_pset_key() -> tuple[int, int]:
    """The random key of a run's pset ids: two 64-bit ints, independent of its run id."""
    import secrets  # here: once per run, on rank 0; a worker rank needs only pset_id

    return secrets.randbits(64), secrets.randbits(64)


def _mix(x: int, mask: int) -> int:
    """splitmix64's finaliser modulo ``mask + 1`` (a power of two): a bijection there."""
    x ^= x >> 30  # the steps of _MIX, unrolled: a worker may ask for every pset's id
    x = (x * _C1) & mask
    x ^= x >> 27
    x = (x * _C2) & mask
    return x ^ x >> 31


def pset_id(key: tuple[int, int], index: int) -> str:
    """The id of the pset at ``index`` in the run whose pset key is ``key``: a UUID string.

    The same as :meth:`RunStamp.columns` makes on the driver, one pset at a time.
    """
    step = index * _GAMMA
    high = _mix((key[0] + step) & _M64, _M64) & ~0xF000 | _UUID_VERSION_4  # 60 mixed bits
    low = _mix((key[1] + step) & _M62, _M62) | _UUID_VARIANT
    h = f"{high:016x}{low:016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class RunStamp:
    """The bookkeeping columns of one run's rows, made per committed batch."""

    def __init__(self, run_id: str, pset_key: tuple[int, int], run_seq: int, next_pset_seq: int,
                 calc_dir: str):
        self.run_id = run_id
        self.run_seq = run_seq
        self.next_pset_seq = next_pset_seq
        self.key = np.array(pset_key, dtype=np.uint64)
        self.calc_prefix = os.path.join(calc_dir, "").encode("utf-8")

    def columns(self, indexes: np.ndarray) -> dict[str, np.ndarray]:
        """The bookkeeping columns of rows with these pset indexes, as byte-string arrays.

        Vectorised: per-row Python would cost the driver about a microsecond per pset.
        """
        k = len(indexes)
        ids = uuid_strings(self.id_halves(indexes))
        seqs = np.arange(self.next_pset_seq, self.next_pset_seq + k, dtype=np.int64)
        self.next_pset_seq += k
        return {layout.RUN_ID: np.full(k, self.run_id.encode(), dtype="S32"),
                layout.RUN_SEQ: np.full(k, self.run_seq, dtype=np.int64),
                layout.PSET_ID: ids, layout.PSET_SEQ: seqs,
                layout.CALC_DIR: np.char.add(self.calc_prefix, ids)}

    def id_halves(self, indexes: np.ndarray) -> np.ndarray:
        """The pset ids of these indexes as :func:`pset_id` makes them, as (upper, lower)
        64-bit halves, one row per index: both halves mixed at once, in uint64 arithmetic
        (which wraps around modulo 2**64 as the masks there do)."""
        x = np.empty((len(indexes), 2), dtype=np.uint64)
        x[:] = (indexes.astype(np.uint64) * np.uint64(_GAMMA))[:, None]
        x += self.key
        high, low = x[:, 0], x[:, 1]  # views of x
        flat = x.reshape(-1)  # both halves at once: a (2,) mask broadcast is ten times slower
        low &= np.uint64(_M62)
        for shift, multiplier in _MIX:
            flat ^= flat >> np.uint64(shift)
            if multiplier:
                flat *= np.uint64(multiplier)
                low &= np.uint64(_M62)
        high &= np.uint64(_M64 & ~0xF000)
        high |= np.uint64(_UUID_VERSION_4)
        low |= np.uint64(_UUID_VARIANT)
        return x


# Which of the 32 hex digits each character of a canonical UUID string shows (the dashes,
# at _DASHES, are written over).
_DASHES = (8, 13, 18, 23)
_UUID_LAYOUT = np.array([i - sum(i > d for d in _DASHES) for i in range(36)])


def uuid_strings(halves: np.ndarray) -> np.ndarray:
    """UUIDs given as rows of (upper, lower) 64-bit halves, as canonical strings (``S36``)."""
    k = len(halves)
    digits = np.frombuffer(halves.astype(">u8").tobytes().hex().encode(), dtype=np.uint8)
    out = np.ascontiguousarray(digits.reshape(k, 32)[:, _UUID_LAYOUT])
    for column in _DASHES:
        out[:, column] = ord("-")
    return out.view("S36").reshape(k)


# ---------------------------------------------------------------------- names on disk
def current_name(name: str) -> str:
    """A stored column's name as psmpi reads it (an older psmpi's name mapped to today's)."""
    return LEGACY_NAMES.get(name, name)


def stored_names(columns: Iterable[str]) -> dict[str, str]:
    """Today's name -> stored name, of the columns a table keeps under an older psmpi's name."""
    return {LEGACY_NAMES[name]: name for name in columns if name in LEGACY_NAMES}


def stored_name(columns: Iterable[str], name: str) -> str:
    """The name column ``name`` has in a table with these stored ``columns``."""
    return stored_names(columns).get(name, name)


def with_current_names(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with an older psmpi's column names mapped to today's (raw values)."""
    old = [name for name in frame.columns if name in LEGACY_NAMES]
    return frame.rename(columns={name: LEGACY_NAMES[name] for name in old}) if old else frame


def readable(frame: pd.DataFrame) -> pd.DataFrame:
    """Stored rows as :func:`psmpi.read` gives them: today's column names, and
    ``_time_utc`` as UTC datetimes (stored as float POSIX seconds; NaN -> NaT)."""
    import pandas as pd
    frame = with_current_names(frame)
    if TIME_COLUMN not in frame.columns:
        return frame
    return frame.assign(**{TIME_COLUMN: pd.to_datetime(frame[TIME_COLUMN], unit="s", utc=True)})


def posix_seconds(times: pd.Series) -> pd.Series:
    """``_time_utc`` values as float POSIX seconds, whether read as datetimes or raw."""
    import pandas as pd
    if isinstance(times.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(times):
        epoch = pd.Timestamp(0, tz="UTC") if isinstance(times.dtype, pd.DatetimeTZDtype) \
            else pd.Timestamp(0)
        return (times - epoch) / pd.Timedelta(seconds=1)
    return times.astype(float)

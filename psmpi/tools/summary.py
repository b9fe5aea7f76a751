"""What a results file says about its maps, read from committed rows: per-map summaries
(done, failed, crashed, remaining, time span), the failures without a result, and who is
writing the file now. The ``psmpi status`` and ``psmpi failures`` commands print these."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .. import layout
from ..errors import StoreError
from ..store import Table, bookkeeping, maps_in, reading
from ..store.lock import owner_of
from ..watch.stalls import read_running

if TYPE_CHECKING:
    import h5py
    import pandas as pd


def table(f: h5py.File, name: str, kind: str) -> Table | None:
    """Table ``kind`` ("results" or "failures") of map ``name``; None if the map has none."""
    group = f[name]
    return Table(group[kind]) if kind in group else None


def selected_maps(f: h5py.File, wanted: Sequence[str] | None) -> list[str]:
    """``wanted`` (every map of ``f`` if empty), each checked to be a map of ``f``."""
    names = maps_in(f)
    for name in wanted or ():
        if name not in names:
            raise StoreError(f"{f.filename} has no map {name!r}; its maps are {names}")
    return list(wanted) if wanted else names


def unresolved_failures(results: Table | None, failures: Table | None) -> np.ndarray:
    """Rows of ``failures`` whose pset has no result: the latest failed attempt of each pset.

    A pset is its (``_pset_index``, ``_pset_hash``) pair: a failure is resolved when a later
    run committed a result for the same pset.
    """
    import pandas as pd
    if failures is None or failures.n_rows == 0:
        return np.empty(0, dtype=np.int64)
    fail = pd.DataFrame({"i": failures.read_column(layout.PSET_INDEX),
                         "h": failures.read_column(layout.PSET_HASH)})
    fail = fail.drop_duplicates(keep="last")
    if results is not None and results.n_rows:
        done = pd.MultiIndex.from_arrays([results.read_column(layout.PSET_INDEX),
                                          results.read_column(layout.PSET_HASH)])
        fail = fail[~pd.MultiIndex.from_frame(fail).isin(done)]
    return fail.index.to_numpy(dtype=np.int64)


@dataclasses.dataclass
class MapSummary:
    """What a file says about one map.

    Attributes
    ----------
    name : str
        The map.
    done : int
        Committed results.
    failed, crashed : int
        psets whose latest attempt failed (raised, returned a bad value, ...) or crashed,
        and that have no result.
    total : int or None
        How many psets the map was given; None if the file does not record it.
    first_start, last_end : float or None
        POSIX seconds: when the first pset started, when the last one finished.
    """

    name: str
    done: int
    failed: int
    crashed: int
    total: int | None
    first_start: float | None
    last_end: float | None

    @property
    def remaining(self) -> int | None:
        """psets never tried (or running now); None when the total is unknown."""
        if self.total is None:
            return None
        return max(0, self.total - self.done - self.failed - self.crashed)

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "remaining": self.remaining}


def _raw_column(table: Table, name: str) -> np.ndarray:
    """Column ``name`` as stored, also in a table of an older psmpi that named it otherwise."""
    return table.read_column(bookkeeping.stored_name(table.columns, name))


def _time_span(table: Table | None) -> tuple[float | None, float | None]:
    if table is None or table.n_rows == 0:
        return None, None
    start = _raw_column(table, layout.TIME_UTC)  # POSIX seconds
    end = start + np.nan_to_num(_raw_column(table, layout.PSET_RUNTIME))
    if not np.isfinite(start).any():
        return None, None
    return float(np.nanmin(start)), float(np.nanmax(end))


def summarise_map(f: h5py.File, name: str) -> MapSummary:
    """The :class:`MapSummary` of map ``name`` of the open file ``f``."""
    results, failures = table(f, name, "results"), table(f, name, "failures")
    rows = unresolved_failures(results, failures)
    crashed = 0
    if rows.size:
        kinds = failures.read_column(layout.KIND)[rows]
        crashed = int((kinds == "crashed").sum())
    total = f[name].attrs.get(layout.N_PSETS_ATTR)
    spans = [s for s in (_time_span(results), _time_span(failures)) if s[0] is not None]
    return MapSummary(name=name, done=results.n_rows if results else 0,
                      failed=int(rows.size) - crashed, crashed=crashed,
                      total=None if total is None else int(total),
                      first_start=min((s[0] for s in spans), default=None),
                      last_end=max((s[1] for s in spans), default=None))


def status(path: str, maps: Sequence[str] | None = None) -> list[MapSummary]:
    """A summary of every map of a results file, from its committed rows.

    Works while a survey writes the file (what ``psmpi status`` prints).

    Parameters
    ----------
    path : str
        The results file.
    maps : list of str, optional
        Only these maps (default: every map).

    Returns
    -------
    list of MapSummary
        One per map: ``done``, ``failed``, ``crashed``, ``total``, ``remaining``,
        ``first_start``, ``last_end``.

    Examples
    --------
    >>> import psmpi, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "s.h5")
    >>> _ = psmpi.map(lambda p: {"y": p["a"]}, [{"a": 1}, {"a": 2}], name="m",
    ...               backend="serial", out=path, verbose=0)
    >>> [(s.name, s.done, s.failed, s.remaining) for s in psmpi.status(path)]
    [('m', 2, 0, 0)]
    """
    return reading(path, lambda f: [summarise_map(f, n) for n in selected_maps(f, maps)])


def failures(path: str, maps: Sequence[str] | None = None, every: bool = False,
             kind: str | None = None) -> dict[str, pd.DataFrame]:
    """The failed psets of each map: the latest failed attempt of every pset without a result.

    Parameters
    ----------
    path : str
        The results file.
    maps : list of str, optional
        Only these maps (default: every map).
    every : bool
        Every failed attempt instead, also of psets that succeeded later.
    kind : str, optional
        Only failures of this kind (``"exception"``, ``"crashed"``, ...).

    Returns
    -------
    dict of str to pandas.DataFrame
        Map name to its failure rows (today's column names; empty if none).
    """
    import pandas as pd
    def read(f: h5py.File) -> dict[str, pd.DataFrame]:
        out = {}
        for name in selected_maps(f, maps):
            fails = table(f, name, "failures")
            if fails is None or fails.n_rows == 0:
                out[name] = pd.DataFrame()
                continue
            if every:
                rows = np.arange(fails.n_rows)
            else:
                rows = unresolved_failures(table(f, name, "results"), fails)
            out[name] = bookkeeping.readable(fails.read(rows=rows))
        return out

    found = reading(path, read)
    if kind:
        found = {n: df[df[layout.KIND] == kind] if len(df) else df for n, df in found.items()}
    return found


# A number not inside a name (``x2``, ``float64`` keep theirs), and a quoted value: what
# differs between the messages of one bug that ran on many psets.
_NUMBER = re.compile(r"(?<![A-Za-z_\d.])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![A-Za-z_\d])")
_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")


def message_pattern(message: str) -> str:
    """``message`` with its numbers as ``<n>`` and its quoted values as ``'…'``: one pattern
    for the failures of one bug, whatever the parameter values in their messages.

    >>> message_pattern("ValueError: x=3.5 is above 2 for 'run-7'")
    "ValueError: x=<n> is above <n> for '…'"
    >>> message_pattern("KeyError: 'alpha'")
    "KeyError: '…'"
    """
    return _NUMBER.sub("<n>", _QUOTED.sub("'…'", str(message)))


def common_failures(df: pd.DataFrame, n: int = 5) -> pd.Series:
    """The ``n`` most frequent exception messages of failure rows ``df``, with their counts;
    messages that differ only in numbers and quoted values count as one
    (:func:`message_pattern`)."""
    import pandas as pd
    if not len(df):
        return pd.Series(dtype=int)
    return df[layout.EXCEPTION].astype(str).map(message_pattern).value_counts().head(n)


def lock_owner(path: str) -> tuple[int, str] | None:
    """(pid, host) of the process whose lock on ``path`` is live; None if none is."""
    owner = owner_of(path)
    return (owner.pid, owner.host) if owner is not None and owner.state == "live" else None


def running_now(path: str) -> dict | None:
    """What the workers of the survey writing ``path`` hold now (``<path>.running``).

    Only while the writer's lock is live, and only the file that writer wrote: one left by
    a killed run is ignored.
    """
    owner = lock_owner(path)
    return None if owner is None else read_running(path, *owner)


def writer_of(path: str) -> str | None:
    """Who holds the lock of ``path``, in words; None if nobody."""
    owner = owner_of(path)
    if owner is None:
        return None
    if owner.state == "unreadable":
        return f"locked by {owner.lock}, which cannot be read"
    if owner.state == "stale":
        return (f"stale lock {owner.lock}: pid {owner.pid} is dead (the next run or "
                "`psmpi clean` removes it)")
    job = owner.info.get("slurm_job_id")
    return (f"being written by pid {owner.pid} on {owner.host}"
            f"{f' (Slurm job {job})' if job else ''} since {owner.info.get('started')}")

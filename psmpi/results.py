"""What map() returns: the rows, the psets that produced none, progress and statistics."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator

import numpy as np
import pandas as pd


@dataclasses.dataclass
class MapProgress:
    """Counts of one map.

    Attributes
    ----------
    total : int
        psets in this map (after ``limit``), including ones resumed from the file.
    active : int
        psets handed to workers and not back yet.
    finished : int
        psets with a result, including ``resumed``.
    failures : int
        psets that produced no result (exceptions, bad results, crashed workers).
    exceptions : int
        of the failures, those where the worker raised.
    resumed : int
        psets whose result was already in the file and was not computed again.
    stale : int
        rows in the file, from earlier runs of this map, that match no pset of this call
        (the pset list changed). They stay in the file; ``psmpi.read`` returns them.
        Counted when every pset was read (no ``limit``, no stop signal).
    """

    total: int = 0
    active: int = 0
    finished: int = 0
    failures: int = 0
    exceptions: int = 0
    resumed: int = 0
    stale: int = 0


@dataclasses.dataclass
class PerfStats:
    """Performance statistics of one map.

    Attributes
    ----------
    backend : str
    workers : int
        how many groups could run at once.
    wall_seconds : float
        wall-clock time of the map() call.
    computed : int
        psets run by a worker in this call (finished or failed).
    runtimes : numpy.ndarray
        seconds spent in the worker function, one per computed pset.
    """

    backend: str
    workers: int
    wall_seconds: float
    computed: int
    runtimes: np.ndarray

    @property
    def psets_per_second(self) -> float:
        return self.computed / self.wall_seconds if self.wall_seconds > 0 else math.nan

    @property
    def utilisation(self) -> float:
        """Fraction of the workers' time spent inside the worker function."""
        capacity = self.wall_seconds * self.workers
        return float(np.nansum(self.runtimes)) / capacity if capacity > 0 else math.nan

    def percentiles(self) -> dict[str, float]:
        """Worker-function runtime percentiles in seconds."""
        finite = self.runtimes[np.isfinite(self.runtimes)]
        if not len(finite):
            return {}
        names = ("p50", "p90", "p99", "max")
        return dict(zip(names, np.percentile(finite, [50, 90, 99, 100]).tolist()))

    def __str__(self) -> str:
        pct = ", ".join(f"{k} {v:.3g} s" for k, v in self.percentiles().items())
        return (f"{self.computed} psets in {self.wall_seconds:.3g} s on {self.workers} "
                f"{self.backend} workers: {self.psets_per_second:.4g} psets/s, "
                f"utilisation {self.utilisation:.0%}; runtime {pct or 'n/a'}")


def _plain(value: Any) -> Any:
    """numpy scalar -> the equal Python scalar, so psets look like the ones the user built."""
    return value.item() if isinstance(value, np.generic) else value


def _rows_as_dicts(df: pd.DataFrame) -> Iterator[dict]:
    columns = list(df.columns)
    for values in df.itertuples(index=False, name=None):
        yield {c: _plain(v) for c, v in zip(columns, values)}


class Missing:
    """The psets of a map that produced no result, with why.

    ``df`` has the pset columns plus ``_kind`` (exception, bad_result, unpicklable,
    unstorable, crashed), ``_exception`` ("Type: message"), ``_traceback``, ``_rank``,
    ``_host`` and ``_pset_index``. Feed them back with ``psmpi.map(worker, missing.to_psets())``.
    """

    def __init__(self, df: pd.DataFrame):
        self.df = df

    def __len__(self) -> int:
        return len(self.df)

    def __repr__(self) -> str:
        return f"Missing({len(self)} psets)\n{self.df!r}" if len(self) else "Missing(0 psets)"

    def to_df(self) -> pd.DataFrame:
        return self.df

    def iterdicts(self) -> Iterator[dict]:
        return _rows_as_dicts(self.df)

    def to_psets(self) -> list[dict]:
        """The failed psets as plain dicts (bookkeeping columns dropped), ready for map()."""
        keys = [c for c in self.df.columns if not str(c).startswith("_")]
        return list(_rows_as_dicts(self.df[keys]))


class MapResults:
    """The outcome of one :func:`psmpi.map` call.

    Attributes
    ----------
    results : pandas.DataFrame
        one row per pset with a result, in pset order: pset columns, then result columns.
    missing : Missing
        the psets without a result and why.
    progress : MapProgress
    stats : PerfStats
    name : str
        the map's name (its group in the HDF5 file).
    path : str or None
        the HDF5 file, None when results were kept in memory only.
    """

    def __init__(self, name: str, path: str | None, results: pd.DataFrame, missing: Missing,
                 progress: MapProgress, stats: PerfStats):
        self.name = name
        self.path = path
        self.results = results
        self.missing = missing
        self.progress = progress
        self.stats = stats

    def __len__(self) -> int:
        return len(self.results)

    def __repr__(self) -> str:
        return (f"MapResults(name={self.name!r}, {len(self)} rows, {len(self.missing)} missing, "
                f"path={self.path!r})")

    def to_df(self) -> pd.DataFrame:
        return self.results

    def itertuples(self) -> Iterator[tuple]:
        """Rows as namedtuples: ``for r in results.itertuples(): print(r.a, r.y)``."""
        return self.results.itertuples(index=False)

    def iterdicts(self) -> Iterator[dict]:
        """Rows as dicts of plain Python values."""
        return _rows_as_dicts(self.results)

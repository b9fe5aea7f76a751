"""What map() returns: the rows, the psets that produced none, progress and statistics."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from .utils import format_bytes

if TYPE_CHECKING:
    import pandas as pd

    from .missing import Missing


@dataclasses.dataclass
class MapProgress:
    """Counts of one map.

    Attributes
    ----------
    total : int
        psets in this map (after ``limit``), including ones resumed from the file.
    active : int
        psets a worker is running now (handed out and not back yet; with ``resources=``,
        those holding their cores, not those waiting for them).
    queued : int
        psets handed to the backend that wait for resources before they start (the
        ensemble backend); 0 for the other backends, whose workers take psets as they go.
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
    queued: int = 0
    finished: int = 0
    failures: int = 0
    exceptions: int = 0
    resumed: int = 0
    stale: int = 0


TIMING_KINDS = ("wall", "cpu", "off_cpu")


def seconds_text(x: float) -> str:
    """A duration for tables: ``'412 us'``, ``'3.5 ms'``, ``'12.1 s'``; NaN -> ``'n/a'``."""
    if x != x:
        return "n/a"
    if abs(x) < 1e-3:
        return f"{x * 1e6:.0f} us"
    if abs(x) < 1:
        return f"{x * 1e3:.3g} ms"
    return f"{x:.3g} s" if abs(x) < 1000 else f"{x:.0f} s"


def finite_of(values: np.ndarray) -> np.ndarray:
    """The finite ``values``: the array itself when all are (no copy of a big survey's)."""
    finite = np.isfinite(values)
    return values if finite.all() else values[finite]


def percentiles_of(values: np.ndarray) -> dict[str, float]:
    """p50, p90, p99 and max of the finite ``values`` (empty dict if there are none)."""
    finite = finite_of(values)
    if not len(finite):
        return {}
    # percentile() sorts a copy unless it may reorder its input: ours if finite_of() made one
    return dict(zip(("p50", "p90", "p99", "max"),
                    np.percentile(finite, [50, 90, 99, 100],
                                  overwrite_input=finite is not values).tolist()))


def histogram_of(values: np.ndarray, bins: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Counts and bin edges of the finite ``values``: logarithmic bins when they span more
    than a factor of 20 (durations usually do), else linear."""
    finite = finite_of(values)
    if not len(finite):
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    low, high = float(finite.min()), float(finite.max())
    if low > 0 and high / low > 20:
        edges = np.geomspace(low, high, bins + 1)
    else:
        edges = np.linspace(low, high if high > low else low + 1e-9, bins + 1)
    counts, edges = np.histogram(finite, bins=edges)
    return counts, edges


@dataclasses.dataclass
class Timings:
    """Wall-clock and CPU seconds, one entry per pset: of the worker call, or of a section
    timed with :func:`psmpi.timer` (psets that did not run the section have no entry).

    Attributes
    ----------
    wall : numpy.ndarray
        wall-clock seconds.
    cpu : numpy.ndarray
        CPU seconds of the worker process (all its threads) in the same interval; NaN where
        not measured (calls shorter than 1 ms after the first of a group are not).
    """

    wall: np.ndarray
    cpu: np.ndarray

    @property
    def count(self) -> int:
        return len(self.wall)

    @property
    def total(self) -> float:
        """Sum of the wall-clock seconds."""
        return float(np.nansum(self.wall))

    @property
    def off_cpu(self) -> np.ndarray:
        """Seconds not on a CPU (wall - cpu, at least 0): I/O, sleeping, waiting."""
        with np.errstate(invalid="ignore"):
            return np.maximum(self.wall - self.cpu, 0.0)

    def values(self, which: str = "wall") -> np.ndarray:
        """``"wall"``, ``"cpu"`` or ``"off_cpu"`` seconds."""
        if which not in TIMING_KINDS:
            raise ValueError(f"which must be one of {', '.join(TIMING_KINDS)} (got {which!r})")
        return self.off_cpu if which == "off_cpu" else getattr(self, which)

    def percentiles(self, which: str = "wall") -> dict[str, float]:
        """p50, p90, p99 and max in seconds of ``which`` (see :meth:`values`)."""
        return percentiles_of(self.values(which))

    def histogram(self, which: str = "wall", bins: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """Counts and bin edges (seconds) of ``which``, like ``numpy.histogram``."""
        return histogram_of(self.values(which), bins)


USAGE_COLUMNS = ("worker", "rank", "host", "pid", "groups", "psets", "busy", "psmpi", "waiting",
                 "idle", "peak_rss")


def empty_usage() -> pd.DataFrame:
    import pandas as pd
    return pd.DataFrame({c: [] for c in USAGE_COLUMNS})


@dataclasses.dataclass
class PerfStats:
    """Performance statistics of one map, merged over every worker process or rank.

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
    cpu_times : numpy.ndarray
        CPU seconds of each of those calls (NaN: not measured; see :class:`Timings`).
    timers : dict of str to Timings
        the sections timed with ``with psmpi.timer(name):`` in the worker, by name.
    usage : pandas.DataFrame
        one row per worker process (rank under MPI): ``worker``, ``rank``, ``host``,
        ``pid``, ``groups``, ``psets``, then seconds of the map's wall-clock time it spent
        ``busy`` (in the worker function), in ``psmpi`` (hashing, pickling results),
        ``waiting`` between two groups (for the master: its turnaround and the transfer),
        ``idle`` (before its first and after its last group), and ``peak_rss`` (bytes).
    driver_cpu_seconds : float
        CPU seconds of the driver (rank 0) during the map; with the serial backend this
        includes the worker calls.
    driver_peak_rss : int
        peak resident set size of the driver, bytes.
    """

    backend: str
    workers: int
    wall_seconds: float
    computed: int
    runtimes: np.ndarray
    cpu_times: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    timers: dict[str, Timings] = dataclasses.field(default_factory=dict)
    usage: pd.DataFrame = dataclasses.field(default_factory=empty_usage)
    driver_cpu_seconds: float = math.nan
    driver_peak_rss: int = 0

    def __post_init__(self):
        if len(self.cpu_times) != len(self.runtimes):
            self.cpu_times = np.full(len(self.runtimes), math.nan)

    @property
    def psets_per_second(self) -> float:
        return self.computed / self.wall_seconds if self.wall_seconds > 0 else math.nan

    @property
    def utilisation(self) -> float:
        """Fraction of the workers' time spent inside the worker function."""
        capacity = self.wall_seconds * self.workers
        return float(np.nansum(self.runtimes)) / capacity if capacity > 0 else math.nan

    @property
    def per_pset(self) -> Timings:
        """Wall-clock and CPU seconds of every worker call."""
        return Timings(self.runtimes, self.cpu_times)

    @property
    def off_cpu(self) -> np.ndarray:
        """Seconds each worker call spent not on a CPU (NaN: not measured)."""
        return self.per_pset.off_cpu

    @property
    def peak_rss(self) -> int:
        """The largest peak resident set size of any worker process or the driver, bytes."""
        workers = int(self.usage["peak_rss"].max()) if len(self.usage) else 0
        return max(workers, self.driver_peak_rss)

    def percentiles(self, which: str = "wall") -> dict[str, float]:
        """Percentiles of the worker calls' ``"wall"`` (default), ``"cpu"`` or ``"off_cpu"``
        seconds: keys p50, p90, p99, max."""
        return self.per_pset.percentiles(which)

    def histogram(self, which: str = "wall", bins: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """Counts and bin edges of the worker calls' seconds, like ``numpy.histogram``."""
        return self.per_pset.histogram(which, bins)

    def summary(self) -> str:
        """One line: throughput, utilisation, runtime percentiles, memory."""
        pct = ", ".join(f"{k} {seconds_text(v)}" for k, v in self.percentiles().items())
        measured = np.isfinite(self.cpu_times)
        wall = float(np.nansum(self.runtimes[measured]))
        off = f", {np.nansum(self.off_cpu[measured]) / wall:.0%} not on CPU" if wall > 0 else ""
        peak = f"; peak RSS {format_bytes(self.peak_rss)}" if self.peak_rss else ""
        return (f"{self.computed} psets in {self.wall_seconds:.3g} s on {self.workers} "
                f"{self.backend} workers: {self.psets_per_second:.4g} psets/s, "
                f"utilisation {self.utilisation:.0%}; runtime {pct or 'n/a'}{off}{peak}")

    def report(self, level: int = 2, max_workers: int | None = 16) -> str:
        """The statistics as text, as ``vstats`` prints them at the end of a map.

        Parameters
        ----------
        level : int
            1 the summary line; 2 adds percentiles of wall-clock, CPU and not-on-CPU
            seconds per pset, histograms of wall-clock and not-on-CPU seconds, and a
            utilisation table per worker; 3 adds a table of the :func:`psmpi.timer` sections.
        max_workers : int or None
            rows of the utilisation table to show (None: all); ``usage`` has them all.
        """
        parts = [self.summary()] if level >= 1 else []
        if level >= 2:
            parts += [self.timing_table(), self.histogram_text("wall"),
                      self.histogram_text("off_cpu"), self.usage_table(max_workers)]
        if level >= 3:
            parts.append(self.timers_table())
        return "\n".join(p for p in parts if p)

    def __str__(self) -> str:
        return self.summary()

    def timing_table(self) -> str:
        rows = [(kind, self.per_pset.values(kind)) for kind in ("wall", "cpu", "off_cpu")]
        return _timing_rows("per pset", [(LABELS[k], v) for k, v in rows])

    def histogram_text(self, which: str = "wall", bins: int = 8, width: int = 40) -> str:
        counts, edges = self.histogram(which, bins)
        if not len(counts):
            return ""
        lines = [f"histogram of {LABELS[which]} seconds per pset:"]
        top = max(int(counts.max()), 1)
        for count, low, high in zip(counts, edges[:-1], edges[1:]):
            bar = "#" * round(width * count / top)
            lines.append(f"  {seconds_text(low):>9} - {seconds_text(high):<9} {bar:<{width}} "
                         f"{count}")
        return "\n".join(lines)

    def usage_table(self, max_workers: int | None = 16) -> str:
        wall = self.wall_seconds
        lines = [f"{'worker':<12} {'host':<16} {'groups':>7} {'psets':>8} {'busy':>6} "
                 f"{'psmpi':>6} {'waiting':>8} {'idle':>6} {'peak RSS':>9}"]
        shown = self.usage if max_workers is None else self.usage.head(max_workers)
        # records, not itertuples(): that builds a namedtuple class per call (ms)
        for r in shown.to_dict("records"):
            share = [f"{x / wall:>6.1%}" if wall > 0 else "   n/a" for x in
                     (r["busy"], r["psmpi"], r["waiting"], r["idle"])]
            lines.append(f"{r['worker']:<12} {str(r['host'])[:16]:<16} {r['groups']:>7} "
                         f"{r['psets']:>8} {share[0]} {share[1]} {share[2]:>8} {share[3]} "
                         f"{format_bytes(r['peak_rss']):>9}")
        hidden = len(self.usage) - len(shown)
        if hidden:
            lines.append(f"... {hidden} more workers (results.stats.usage has them all)")
        silent = self.workers - len(self.usage)
        if silent > 0 and self.backend == "mpi":
            lines.append(f"{silent} worker rank(s) got no group")
        cpu = self.driver_cpu_seconds
        if cpu == cpu:
            load = f" ({cpu / wall:.0%})" if wall > 0 else ""
            lines.append(f"driver (rank 0): {cpu:.3g} CPU seconds in {wall:.3g} s{load}, "
                         f"peak RSS {format_bytes(self.driver_peak_rss)}")
        return "\n".join(lines)

    def timers_table(self) -> str:
        if not self.timers:
            return "no timed sections (use `with psmpi.timer(name):` in the worker)"
        rows = []
        for name, timings in self.timers.items():
            rows.append((name, timings.wall))
            rows.append((f"{name} not on CPU", timings.off_cpu))
        return _timing_rows("timer", rows)


LABELS = {"wall": "wall-clock", "cpu": "CPU", "off_cpu": "not on CPU"}


def _timing_rows(title: str, rows: list[tuple[str, np.ndarray]]) -> str:
    heading = f"{title} (seconds)"
    width = max(len(heading), *(len(label) for label, _ in rows))
    lines = [f"{heading:<{width}} {'count':>7} {'total':>9} {'mean':>9} "
             f"{'p50':>9} {'p90':>9} {'p99':>9} {'max':>9}"]
    for label, values in rows:
        finite = finite_of(values)
        pct = percentiles_of(finite)
        mean = float(finite.mean()) if len(finite) else math.nan
        cells = [float(finite.sum()), mean] + [pct.get(k, math.nan) for k in
                                               ("p50", "p90", "p99", "max")]
        lines.append(f"{label:<{width}} {len(finite):>7} " +
                     " ".join(f"{seconds_text(c):>9}" for c in cells))
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    """numpy scalar -> the equal Python scalar, so psets look like the ones the user built
    (not datetime64/timedelta64: item() may make them a date or an int)."""
    if isinstance(value, np.generic) and value.dtype.kind not in "mM":
        return value.item()
    return value


def _rows_as_dicts(df: pd.DataFrame) -> Iterator[dict]:
    columns = list(df.columns)
    for values in df.itertuples(index=False, name=None):
        yield {c: _plain(v) for c, v in zip(columns, values)}


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

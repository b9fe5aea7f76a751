"""Merging results files, and removing maps from one: the maps are copied through the
Store/Table API into a new file beside the target, which is then moved into place while
the target's lock is held, so a file is never half-merged (``psmpi merge``, ``psmpi clean
--map``)."""

from __future__ import annotations

import collections
import contextlib
import os
from collections.abc import Callable, Sequence

from .. import layout
from ..errors import StoreError
from ..store import Store, Table, bookkeeping, maps_in, open_h5
from ..store.attempts import AttemptLog
from ..store.lock import release_lock, take_lock
from ..study.post import is_null
from .summary import table

_COPY_CHUNK = 4096


class _Dedup:
    """Which rows of one map to copy so that no pset is stored twice.

    Results: a pset (``_pset_hash``) stored n times in one source and m times in another is
    kept max(n, m) times (identical psets of one run are separate psets). Failures: a failed
    attempt is kept once, and only if no other source has a result for that pset and no
    other source already gave failures for it (so a pset failing in two overlapping inputs
    counts once).
    """

    def __init__(self) -> None:
        self.present: collections.Counter = collections.Counter()  # copies from earlier sources
        self.seen: collections.Counter = collections.Counter()     # copies in this source so far
        self.result_sources: dict[str, set[int]] = collections.defaultdict(set)
        self.failure_source: dict[str, int] = {}
        self.attempts: set[tuple] = set()

    def results(self, rows: list[dict], source: int) -> list[bool]:
        keep = []
        for row in rows:
            h = row[layout.PSET_HASH]
            self.seen[h] += 1
            self.result_sources[h].add(source)
            keep.append(self.seen[h] > self.present[h])
        return keep

    def end_of_source(self) -> None:
        for h, n in self.seen.items():
            self.present[h] = max(self.present[h], n)
        self.seen.clear()

    def failures(self, rows: list[dict], source: int) -> list[bool]:
        keep = []
        for row in rows:
            h = row.get(layout.PSET_HASH)
            attempt = tuple(None if is_null(v) else v for v in (
                h, row.get(layout.PSET_INDEX), row.get(layout.TIME_UTC), row.get(layout.PID),
                row.get(layout.HOST)))
            elsewhere = bool(self.result_sources.get(h, set()) - {source})
            owner = self.failure_source.setdefault(h, source)
            keep.append(not elsewhere and owner == source and attempt not in self.attempts)
            self.attempts.add(attempt)
        return keep


def _rows(table: Table, lo: int, hi: int) -> list[dict]:
    """Committed rows [lo, hi) of ``table`` as dicts without their null values, under
    today's column names (so a merge writes an older psmpi's files with them); pickled values
    as :class:`~psmpi.values.PickleBytes`, stored again as the same pickles."""
    table.unpickle = "keep"
    columns = [(bookkeeping.current_name(name), *table.read_slice(name, lo, hi))
               for name in table.columns]
    rows = []
    for i in range(hi - lo):
        rows.append({name: values[i] for name, values, nulls in columns
                     if nulls is None or not nulls[i]})
    return rows


def _copy_table(source: Table, target: Table, keep_rows: Callable[[list[dict]], list[bool]],
                where: str) -> int:
    copied = 0
    for lo in range(0, source.n_rows, _COPY_CHUNK):
        rows = _rows(source, lo, min(source.n_rows, lo + _COPY_CHUNK))
        kept = [row for row, keep in zip(rows, keep_rows(rows)) if keep]
        for row in kept:
            problem = target.admit(row)
            if problem is not None:
                raise StoreError(f"cannot merge {where}: {problem}. The maps of that name hold "
                                 f"different results; merge them under different names")
        target.append(kept)
        copied += len(kept)
    return copied


def copy_maps(sources: Sequence[str], target: str, skip: Sequence[str] = ()) -> dict[str, int]:
    """Write the maps of ``sources`` (but ``skip``) into the new file ``target``, deduplicated.

    Results of every source are copied before failures, so that a failure can be dropped
    when another source has the pset's result (see :class:`_Dedup`). Uses the Store/Table
    API, so the target is a psmpi file like any other. Returns rows copied per map.
    """
    unique = list({os.path.realpath(s): s for s in sources}.values())  # a file once
    copied: collections.Counter = collections.Counter()
    dedup: dict[str, _Dedup] = collections.defaultdict(_Dedup)
    with Store.open(target) as store:
        for kind in layout.TABLE_KINDS:
            for k, source in enumerate(unique):
                with open_h5(source, "r") as f:
                    for name in maps_in(f):
                        found = table(f, name, kind)
                        if name in skip or found is None:
                            continue
                        d = dedup[name]
                        keep = d.results if kind == "results" else d.failures
                        copied[name] += _copy_table(found, store.table(name, kind),
                                                    lambda rows, keep=keep, k=k: keep(rows, k),
                                                    f"map {name!r} ({kind}) of {source}")
                        if kind == "results":
                            d.end_of_source()
    return dict(copied)


def check_psmpi_file(path: str) -> None:
    """Raise a StoreError unless ``path`` is a psmpi results file that can be opened."""
    with open_h5(path, "r"):
        pass


def _rewrite(final: str, sources: Sequence[str], skip: Sequence[str] = ()) -> dict[str, int]:
    """Build the merged file beside ``final`` and move it into place, holding final's lock."""
    lock = take_lock(final)  # refuses a file a running survey writes
    tmp = layout.merging_path(final, os.getpid())
    try:
        counts = copy_maps(sources, tmp, skip)
        os.replace(tmp, final)
        for name in skip:  # crash counts of a removed map must not blame a future one
            AttemptLog(final, name).save({})
        return counts
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        release_lock(lock)


def merge(sources: Sequence[str], out: str) -> dict[str, int]:
    """Copy every map of ``sources`` into ``out``, added to what ``out`` already holds.

    A pset stored in several inputs is kept once (identical psets of one run stay separate
    rows); only committed rows are copied, so a source may be a file a survey is writing.
    ``out`` is written whole beside itself and moved into place, so it is never
    half-merged; a file a running survey holds is refused.

    Parameters
    ----------
    sources : list of str
        psmpi results files.
    out : str
        The merged file; created if it does not exist.

    Returns
    -------
    dict of str to int
        Rows (results and failures) ``out`` holds per map.

    Raises
    ------
    StoreError
        If a file is not psmpi's, or maps of one name hold results that do not fit
        together (then merge them under different names).
    """
    for path in sources:
        check_psmpi_file(path)
    sources = list(sources)
    if os.path.exists(out):
        check_psmpi_file(out)  # never overwrite a file that is not ours
        sources.insert(0, out)
    return _rewrite(out, sources)


def remove_maps(path: str, names: Sequence[str]) -> dict[str, int]:
    """Rewrite the results file ``path`` without the maps ``names``; rows kept per map."""
    check_psmpi_file(path)
    return _rewrite(path, [path], skip=names)

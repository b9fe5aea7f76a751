"""Merging results files, and removing maps from one: the maps are copied through the
Store/Table API into a new file beside the target, which is then moved into place while
the target's lock is held, so a file is never half-merged (``psmpi merge``, ``psmpi clean
--map``)."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import layout
from ..errors import StoreError
from ..store import Store, Table, bookkeeping, maps_in, open_h5
from ..store.attempts import AttemptLog
from ..store.lock import release_lock, take_lock
from ..study.post import is_null
from .shards import ShardFile, shard_files
from .summary import table

_COPY_CHUNK = 4096
# Bytes of rows copied at a time in bulk (a commit each): fewer, larger writes; the memory
# a merge needs beyond h5py's.
_BULK_BYTES = 64 * 2**20


@dataclasses.dataclass(frozen=True)
class _Counts:
    """How often each pset hash occurs: sorted distinct hashes (bytes) and their counts."""

    hashes: np.ndarray
    counts: np.ndarray

    def of(self, hashes: np.ndarray) -> np.ndarray:
        """The count of each of ``hashes`` (0 if absent)."""
        if not len(self.hashes):
            return np.zeros(len(hashes), np.int64)
        at = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
        return np.where(self.hashes[at] == hashes, self.counts[at], 0)

    def merged(self, other: _Counts) -> _Counts:
        """Both, a hash in both with the larger count."""
        hashes = np.concatenate([self.hashes, other.hashes])
        counts = np.concatenate([self.counts, other.counts])
        order = np.argsort(hashes, kind="stable")
        hashes, counts = hashes[order], counts[order]
        first = np.ones(len(hashes), bool)
        first[1:] = hashes[1:] != hashes[:-1]
        if not len(hashes):
            return self
        return _Counts(hashes[first], np.maximum.reduceat(counts, np.flatnonzero(first)))


def _holds(sorted_hashes: np.ndarray, h: Any) -> bool:
    """Whether pset hash ``h`` (str, from a row) is among ``sorted_hashes`` (bytes)."""
    if not isinstance(h, str) or not len(sorted_hashes):
        return False
    key = np.bytes_(h.encode())
    at = min(int(np.searchsorted(sorted_hashes, key)), len(sorted_hashes) - 1)
    return bool(sorted_hashes[at] == key)


class _Dedup:
    """Which rows of one map to copy so that no pset is stored twice.

    Results: a pset (``_pset_hash``) stored n times in one source and m times in another is
    kept max(n, m) times (identical psets of one run are separate psets). Failures: a failed
    attempt is kept once, and only if no other source has a result for that pset and no
    other source already gave failures for it (so a pset failing in two overlapping inputs
    counts once).
    """

    def __init__(self) -> None:
        # copies of each pset hash from earlier sources: sorted hashes and their counts
        self.present = _Counts(np.empty(0, "S32"), np.empty(0, np.int64))
        self.result_hashes: dict[int, np.ndarray] = {}  # per source: its sorted result hashes
        self.failure_source: dict[str, int] = {}
        self.attempts: set[tuple] = set()

    def results(self, hashes: np.ndarray, source: int) -> np.ndarray:
        """Which result rows of ``source``, with these pset hashes (bytes) in order, to keep:
        the n-th copy of a hash in this source is kept if earlier sources had fewer than n.
        In numpy: psmpi merge copies millions of rows."""
        hashes = np.asarray(hashes, dtype="S32")
        order = np.argsort(hashes, kind="stable")
        ordered = hashes[order]
        first = np.ones(len(hashes), bool)
        first[1:] = ordered[1:] != ordered[:-1]
        starts = np.flatnonzero(first)
        run = np.cumsum(first) - 1
        mine = _Counts(ordered[first], np.diff(np.append(starts, len(hashes))))
        before = self.present.of(mine.hashes)
        keep = np.empty(len(hashes), bool)
        keep[order] = np.arange(len(hashes)) - starts[run] + 1 > before[run]
        self.present = self.present.merged(_Counts(mine.hashes, np.maximum(mine.counts, before)))
        self.result_hashes[source] = mine.hashes
        return keep

    def failures(self, rows: list[dict], source: int) -> list[bool]:
        keep = []
        for row in rows:
            h = row.get(layout.PSET_HASH)
            attempt = tuple(None if is_null(v) else v for v in (
                h, row.get(layout.PSET_INDEX), row.get(layout.TIME_UTC), row.get(layout.PID),
                row.get(layout.HOST)))
            elsewhere = any(_holds(hashes, h) for other, hashes in self.result_hashes.items()
                            if other != source)
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
    """Copy the rows of ``source`` that ``keep_rows`` keeps, row by row (failures)."""
    copied = 0
    for lo in range(0, source.n_rows, _COPY_CHUNK):
        hi = min(source.n_rows, lo + _COPY_CHUNK)
        rows = _rows(source, lo, hi)
        copied += _copy_rows(source, target, lo, hi, where, np.array(keep_rows(rows), bool),
                             rows)
    return copied


def _copy_rows(source: Table, target: Table, lo: int, hi: int, where: str,
               keep: np.ndarray | None = None, rows: list[dict] | None = None) -> int:
    """Copy rows [lo, hi) of ``source`` (those ``keep`` says) through admit and append."""
    rows = _rows(source, lo, hi) if rows is None else rows
    if keep is not None:
        rows = [row for row, k in zip(rows, keep.tolist()) if k]
    for row in rows:
        problem = target.admit(row)
        if problem is not None:
            raise StoreError(f"cannot merge {where}: {problem}. The maps of that name hold "
                             f"different results; merge them under different names")
    target.append(rows)
    return len(rows)


def _copy_kept(source: Table, target: Table, lo: int, keep: np.ndarray, where: str) -> int:
    """Copy the rows [lo, lo + len(keep)) of ``source`` that ``keep`` marks into ``target``.

    Blocks of rows all kept go column by column as stored (:meth:`Table.append_from`);
    others, and blocks where the two tables' columns differ, row by row, which makes
    ``target``'s columns those of the rows (a new table's first row creates them): 1 row,
    then 64, then 4096 at a time until the bulk copy can go on.
    """
    start, end_all, by_rows = lo, lo + len(keep), 1
    block = max(_COPY_CHUNK, int(_BULK_BYTES // max(1.0, source.bytes_per_row())))
    while start < end_all:
        end = min(end_all, start + block)
        if not keep[start - lo:end - lo].any():  # another source holds them all
            start = end
            continue
        whole = bool(keep[start - lo:end - lo].all())
        if whole and target.append_from(source, start, end) is not None:
            start, by_rows = end, 1
            continue
        end = min(end_all, start + (by_rows if whole else _COPY_CHUNK))
        _copy_rows(source, target, start, end, where, keep[start - lo:end - lo])
        start, by_rows = end, min(_COPY_CHUNK, by_rows * 64)
    return int(keep.sum())


def _copy_results(source: Table, target: Table, dedup: _Dedup, k: int, where: str) -> int:
    """Copy the result rows of source ``k`` that no earlier source holds (:class:`_Dedup`)."""
    hashes = source.read_column(bookkeeping.stored_name(source.columns, layout.PSET_HASH),
                                decode=False)
    keep = dedup.results(hashes, k)
    return _copy_kept(source, target, 0, keep, where)


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
                        d, where = dedup[name], f"map {name!r} ({kind}) of {source}"
                        found.unpickle = "keep"
                        if kind == "results":
                            copied[name] += _copy_results(found, store.table(name, kind), d, k,
                                                          where)
                        else:
                            copied[name] += _copy_table(found, store.table(name, kind),
                                                        lambda rows, k=k, d=d: d.failures(rows, k),
                                                        where)
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


# ---------------------------------------------------------------------- shards

def _one_study(path: str, shards: list[ShardFile]) -> list[ShardFile]:
    """``shards``, checked to be shards of one split (one shard count)."""
    if not shards:
        raise StoreError(f"there are no shard files beside {path} (named like "
                         f"{os.path.basename(layout.shard_path(path, 0, 10))})")
    counts = sorted({s.n for s in shards})
    if len(counts) > 1:
        raise StoreError(f"the shard files beside {path} belong to studies split in "
                         f"{' and '.join(map(str, counts))} shards: they are shards of different "
                         f"studies; move the old ones away and merge again")
    return shards


def _fingerprints(shards: list[ShardFile]) -> dict[str, tuple[str, int]]:
    """Per map of the shard files: (study fingerprint, study's pset count), checked to be
    the same in every shard file."""
    seen: dict[str, tuple[str, int, str]] = {}
    for shard in shards:
        with open_h5(shard.path, "r") as f:
            for name in maps_in(f):
                attrs = f[name].attrs
                if layout.STUDY_FINGERPRINT_ATTR not in attrs and not _has_rows(f, name):
                    continue  # a shard killed before its first commit: nothing to merge
                if layout.STUDY_FINGERPRINT_ATTR not in attrs:
                    raise StoreError(f"map {name!r} of {shard.path} was not written as a shard "
                                     f"(it has no study fingerprint); merge it with "
                                     f"`psmpi merge OUT {shard.path}` instead")
                mine = (str(attrs[layout.STUDY_FINGERPRINT_ATTR]),
                        int(attrs.get(layout.STUDY_N_PSETS_ATTR, -1)))
                first = seen.setdefault(name, (*mine, shard.path))
                if first[:2] != mine:
                    raise StoreError(f"map {name!r} of {shard.path} is a shard of a different "
                                     f"study than the one in {first[2]} (other psets, pset count "
                                     f"or shard split): refusing to merge them; move the shard "
                                     f"files of the old study away")
    return {name: value[:2] for name, value in seen.items()}


def _has_rows(f: Any, name: str) -> bool:
    return any(t is not None and t.n_rows for t in (table(f, name, kind)
                                                    for kind in layout.TABLE_KINDS))


def _merged_so_far(f: Any, name: str, fingerprint: str, path: str) -> dict[str, list[int]]:
    """Rows (results, failures) of each shard that ``path`` already holds for map ``name``."""
    if name not in f:
        return {}
    attrs = f[name].attrs
    if layout.MERGED_SHARDS_ATTR not in attrs:
        raise StoreError(f"{path} already has a map {name!r} that was not merged from shards; "
                         f"merge the shards into another file")
    if str(attrs.get(layout.STUDY_FINGERPRINT_ATTR)) != fingerprint:
        raise StoreError(f"{path} holds map {name!r} merged from the shards of a different "
                         f"study (other psets, pset count or shard split): refusing to add these "
                         f"shards; merge them into another file")
    return json.loads(attrs[layout.MERGED_SHARDS_ATTR])


def _merged_before(path: str, studies: dict[str, tuple[str, int]]) -> dict[str, dict]:
    """Per map: the rows of each shard that the study file ``path`` already holds."""
    if not os.path.exists(path):
        return {name: {} for name in studies}
    with open_h5(path, "r") as f:
        return {name: _merged_so_far(f, name, fp, path) for name, (fp, _) in studies.items()}


def _add_shards(store: Store, shards: list[ShardFile], studies: dict[str, tuple[str, int]],
                merged: dict[str, dict], out: str) -> dict[str, int]:
    """Append to ``store`` what each shard holds beyond ``merged`` (updated)."""
    added: collections.Counter = collections.Counter()
    for shard in shards:
        with open_h5(shard.path, "r") as f:
            for name in maps_in(f):
                if name not in studies:  # no rows and no fingerprint: nothing to merge
                    continue
                done = merged[name].setdefault(str(shard.k), [0, 0])
                for i, kind in enumerate(layout.TABLE_KINDS):
                    source = table(f, name, kind)
                    n = source.n_rows if source is not None else 0
                    if n < done[i]:
                        raise StoreError(f"{shard.path} holds {n} {kind} rows of map {name!r} "
                                         f"but {done[i]} were merged into {out} before: the "
                                         f"shard file was replaced or rewritten; merge the "
                                         f"shards into a new file")
                    if n > done[i]:
                        source.unpickle = "keep"
                        added[name] += _copy_kept(source, store.table(name, kind), done[i],
                                                  np.ones(n - done[i], bool),
                                                  f"map {name!r} ({kind}) of {shard.path}")
                        done[i] = n
    for name, (fp, n_psets) in studies.items():
        attrs = {layout.STUDY_FINGERPRINT_ATTR: fp,
                 layout.MERGED_SHARDS_ATTR: json.dumps(merged[name], sort_keys=True)}
        if n_psets >= 0:
            store.note_planned(name, n_psets)
        store.note_map_attrs(name, attrs)
    return dict(added)


def merge_shards(path: str) -> dict[str, int]:
    """Build (or extend) the study file ``path`` from the shard files beside it.

    Each shard's rows are copied once: the file records how many rows of each shard it
    holds, so merging again, after more shards finished or a straggler was resumed, adds
    only the new rows. Columns are copied in bulk as stored (no value is decoded) where the
    shards' columns match. ``path`` is written whole beside itself and moved into place, so
    it is never half-merged; shard files being written give their committed rows.

    Parameters
    ----------
    path : str
        The study's file, e.g. ``study.h5`` for shards ``study.shard-000-of-004.h5`` ...

    Returns
    -------
    dict of str to int
        Rows (results and failures) added per map.

    Raises
    ------
    StoreError
        If there are no shard files, they are shards of different studies (other psets,
        map name or shard count), or ``path`` holds another study's maps.
    """
    path = os.fspath(path)
    shards = _one_study(path, shard_files(path))
    studies = _fingerprints(shards)
    lock = take_lock(path)  # refuses a file a running survey or merge writes
    tmp = layout.merging_path(path, os.getpid())
    try:
        merged = _merged_before(path, studies)
        if os.path.exists(path):
            shutil.copyfile(path, tmp)
        with Store.open(tmp) as store:
            added = _add_shards(store, shards, studies, merged, path)
        os.replace(tmp, path)
        return added
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        release_lock(lock)

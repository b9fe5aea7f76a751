"""Where the psets of a map come from: what a user may pass, checking it, and resume.

Psets given as a list, a tuple, a DataFrame or a :class:`psmpi.params.Space` are checked in
full before anything is computed, and one :class:`~psmpi.errors.PsetError` lists every
problem. A one-shot iterator (a generator) is checked as it is read, so a bad pset stops the
map where it stands; what was computed before it is committed and kept.
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import numpy as np

from .. import params
from ..backends.resources import RESOURCES_KEY, ResourcedPset, resource_problems, split_resources
from ..errors import PsetError
from ..worker.spans import Grid

T = TypeVar("T")

# How many distinct problems one error message lists in full.
MAX_PROBLEM_LINES = 50


class PsetChecker:
    """Collects every problem of a pset stream, pset by pset.

    Values of one key may differ in type from pset to pset: the results file widens an int
    column to float where that is exact and makes a column general where the values have
    no common native kind (see :mod:`psmpi.store`), so every mix reads back as given.
    """

    def __init__(self):
        self.problems: dict[str, list[int]] = collections.defaultdict(list)
        self.resources_seen = False  # some pset carried per-pset ray options

    def check(self, index: int, pset: Any) -> bool:
        if type(pset) is dict and RESOURCES_KEY in pset:
            pset = split_resources(pset)
        problems = params.pset_problems(pset)
        if type(pset) is ResourcedPset:
            self.resources_seen = True
            problems = problems + resource_problems(pset.resources)
        for problem in problems:
            self.problems[problem].append(index)
        return not problems

    def raise_if_any(self, total: int | None) -> None:
        if not self.problems:
            return
        bad = len({i for indexes in self.problems.values() for i in indexes})
        of = f" of {total}" if total is not None else ""
        lines = [f"{bad}{of} psets are invalid; nothing was computed for them:"]
        for problem, indexes in list(self.problems.items())[:MAX_PROBLEM_LINES]:
            lines.append(f"  pset{'s' if len(indexes) > 1 else ''} {compress(indexes)}: {problem}")
        if len(self.problems) > MAX_PROBLEM_LINES:
            lines.append(f"  ... and {len(self.problems) - MAX_PROBLEM_LINES} more problems")
        raise PsetError("\n".join(lines))


def compress(indexes: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
    parts = []
    start = prev = indexes[0]
    for i in indexes[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(parts)


def as_iterable(psets: Any) -> tuple[Iterable, bool]:
    """The psets as something to iterate, and whether it can be iterated twice."""
    # Without pandas imported the psets cannot be a DataFrame: rank 0 then hands out its
    # first groups without paying pandas' import, which its workers would wait for.
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(psets, pd.DataFrame):
        from ..missing import Missing

        if isinstance(psets, Missing):  # results.missing: its psets exactly as they were given
            return psets.to_psets(), True
        return params.as_space(psets), True
    if isinstance(psets, params.Space):
        return params.as_space(psets), True
    if isinstance(psets, (list, tuple)):
        return psets, True
    if isinstance(psets, dict):
        raise PsetError("psets must be a list (or generator) of dicts, got one dict; "
                        "for all combinations of its values use psmpi.params.product(d)")
    if isinstance(psets, (str, bytes)) or not hasattr(psets, "__iter__"):
        raise PsetError(f"psets must be a list, generator, DataFrame or psmpi.params.Space of "
                        f"dicts, got {type(psets).__name__}")
    return psets, False


def checked_psets(psets: Any) -> tuple[Iterator[tuple[int, dict]], int | None]:
    """``(index, pset)`` pairs of valid psets, and how many there are if known."""
    iterable, reiterable = as_iterable(psets)
    if not reiterable:
        return _checked_while_reading(iterable), None
    if isinstance(iterable, params.Space) and _grid_is_valid(iterable.axes):
        return enumerate(iterable), len(iterable)
    if isinstance(iterable, (list, tuple)) and params.plain_psets(iterable, RESOURCES_KEY):
        return enumerate(iterable), len(iterable)  # all valid, found without a loop here
    checker = PsetChecker()
    total = 0
    for index, pset in enumerate(iterable):
        checker.check(index, pset)
        total += 1
    checker.raise_if_any(total)
    if checker.resources_seen:
        return ((i, split_resources(pset)) for i, pset in enumerate(iterable)), total
    return enumerate(iterable), total


def grid_of(psets: Any) -> Grid | None:
    """The :class:`~psmpi.worker.spans.Grid` of psets given as a grid Space, else None.

    For psets :func:`checked_psets` accepted: it checked them (a grid axis by axis).
    Psets with per-pset resources are no grid here: each is split before it is sent.
    """
    if not isinstance(psets, params.Space) or RESOURCES_KEY in psets.keys:
        return None
    return Grid.of(psets)


def _grid_is_valid(axes: dict | None) -> bool:
    """Check a grid axis by axis: every pset of a grid combines values that passed.

    This costs the sum of the axis lengths instead of their product. False also when the
    space is not a grid; the full check then runs and reports every offending pset.
    """
    if axes is None:
        return False
    checker = PsetChecker()
    valid = all(checker.check(0, {key: value}) for key, values in axes.items() for value in values)
    return valid and not checker.resources_seen


def _checked_while_reading(iterable: Iterable) -> Iterator[tuple[int, dict]]:
    checker = PsetChecker()
    for index, pset in enumerate(iterable):
        if not checker.check(index, pset):
            checker.raise_if_any(None)
        yield index, split_resources(pset) if RESOURCES_KEY in pset else pset


class ResumeIndex:
    """Committed rows by pset hash, so a re-run skips what is done.

    Identical psets are separate psets: each stored row is matched to one pset at most
    (matching with multiplicity), the earliest row first. Held as numpy arrays, about 44
    bytes per stored row (a dict of Python strings took 160), and queried a batch at a time.

    >>> index = ResumeIndex(np.array([b"b" * 32, b"a" * 32, b"b" * 32], dtype="S32"))
    >>> index.take(["b" * 32, "c" * 32, "b" * 32, "b" * 32]).tolist()
    [0, -1, 2, -1]
    """

    def __init__(self, hashes: np.ndarray):
        hashes = np.asarray(hashes, dtype="S32")
        self.order = np.argsort(hashes, kind="stable")  # stable: equal hashes keep row order
        self.sorted = hashes[self.order]
        self.taken = np.zeros(len(hashes), dtype=np.int32)  # per first row of a hash: matched

    def __len__(self) -> int:
        return len(self.sorted)

    def take(self, digests: list[str]) -> np.ndarray:
        """For each digest in turn, an unmatched committed row with that hash, or -1."""
        n = len(self.sorted)
        queries = np.array(digests, dtype="S32")
        rows = np.full(len(queries), -1, dtype=np.int64)
        if not n or not len(queries):
            return rows
        first = np.searchsorted(self.sorted, queries)  # leftmost row of each hash
        hit = np.flatnonzero(self.sorted[np.minimum(first, n - 1)] == queries)
        if len(np.unique(first[hit])) == len(hit):  # no hash asked twice: all at once
            at = first[hit] + self.taken[first[hit]]
            ok = (at < n) & (self.sorted[np.minimum(at, n - 1)] == queries[hit])
            rows[hit[ok]] = self.order[at[ok]]
            self.taken[first[hit[ok]]] += 1
            return rows
        for j in hit.tolist():  # identical psets in the batch: one by one, in order
            at = first[j] + self.taken[first[j]]
            if at < n and self.sorted[at] == queries[j]:
                rows[j] = self.order[at]
                self.taken[first[j]] += 1
        return rows


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size``; an error of ``items`` comes after the items before it."""
    items = iter(items)
    while True:
        batch: list = []
        try:
            for item in items:
                batch.append(item)
                if len(batch) == size:
                    break
        except Exception:
            if batch:
                yield batch
            raise
        if not batch:
            return
        yield batch

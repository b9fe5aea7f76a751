"""How many psets go to a worker at once.

Small groups balance load; big groups amortise the per-message cost. With ``group_size``
unset, groups are sized from the pset durations measured so far, aiming at
``TARGET_SECONDS`` of work per group (more with thousands of workers, so that rank 0
keeps up), and shrink towards the end of the survey (guided
self-scheduling) so that no worker is left with a long tail while the others idle.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

from ..worker.spans import Span
from ..worker.task import GroupOutcome
from .costmodel import LearnedOrder

# Work per group: long enough that sending a group (0.1-0.5 ms) costs at most 1 %, short
# enough that psets of skewed durations still spread evenly over the workers.
TARGET_SECONDS = 0.05
# With many workers, groups last long enough that the one process handing them out stays
# at most MASTER_SHARE busy: rank 0 spends ~100 µs per group (GROUP out, DONE back, rows
# stored; 64-128 real MPI ranks, benchmarks/results-mpi.md), so 10,000 workers get groups
# of at least 2 s. Simulated (benchmarks/mpi_scale.py --simulate): without it, 10,000
# workers with 0.1-s psets kept rank 0 saturated at efficiency 0.16.
MASTER_SECONDS_PER_GROUP = 1e-4
MASTER_SHARE = 0.5
# Bounds the memory of one message and of the groups in flight.
MAX_GROUP_SIZE = 5000
# The same for Spans: their message is two ints and their outcome about 100 bytes a pset,
# so groups of trivial psets can reach TARGET_SECONDS (fewer messages, outcomes, commits).
MAX_SPAN_SIZE = 50000
# Near the end, a group is at most remaining / (TAIL_SHARE * workers) psets.
TAIL_SHARE = 2


class Grouper:
    """Cut a stream of ``(index, pset)`` into groups; feed it outcomes via :meth:`observe`."""

    def __init__(self, items: Iterator[tuple[int, dict]] | None, n_workers: int,
                 total: int | None, group_size: int | None,
                 learned: LearnedOrder | None = None,
                 runs: Iterator[tuple[int, int]] | None = None):
        self.items = items
        # psets of a grid (spans.py): groups are Spans cut from these runs of indexes to
        # compute, [start, stop) each, in order; items is None then
        self.runs = runs
        # cost="auto" (costmodel.py): groups of one until its first fit, so that psets are
        # not grouped in list order before any runtime is known; then groups end once their
        # predicted runtime reaches TARGET_SECONDS, since longest-first would otherwise put
        # the longest psets together in groups sized for the mean one.
        self.learned = learned
        self.n_workers = max(1, n_workers)
        self.total = total
        self.fixed = group_size
        self.handed_out = 0
        self.measured_seconds = 0.0
        self.measured_psets = 0

    def observe(self, outcome: GroupOutcome) -> None:
        """Learn from the runtimes of a finished group."""
        seconds, count = outcome.measured()  # crashed psets have no runtime
        self.measured_seconds += seconds
        self.measured_psets += count

    def next_size(self) -> int:
        if self.fixed:
            return self.fixed
        if self.learned is not None and self.learned.learning():
            return 1
        if self.measured_psets < self.n_workers:
            # Too few samples: one short pset must not make the next groups huge (a pset
            # might take hours), so groups grow only once every worker reported one.
            return 1
        largest = MAX_GROUP_SIZE if self.runs is None else MAX_SPAN_SIZE
        mean = self.measured_seconds / self.measured_psets
        size = largest if mean <= 0 else int(self.target_seconds() / mean)
        if self.total is not None:
            remaining = max(0, self.total - self.handed_out)
            size = min(size, math.ceil(remaining / (TAIL_SHARE * self.n_workers)))
        return max(1, min(size, largest))

    def target_seconds(self) -> float:
        """Work per group: TARGET_SECONDS, or more where the workers would saturate rank 0."""
        return max(TARGET_SECONDS, self.n_workers * MASTER_SECONDS_PER_GROUP / MASTER_SHARE)

    def __iter__(self) -> Iterator[list[tuple[int, dict]] | Span]:
        if self.runs is not None:
            yield from self.spans(self.runs)
            return
        items = iter(self.items)
        while True:
            group = self.take(items, self.next_size())
            if not group:
                return
            self.handed_out += len(group)
            yield group

    def spans(self, runs: Iterator[tuple[int, int]]) -> Iterator[Span]:
        """Groups of consecutive indexes; a group never spans two runs."""
        for start, stop in runs:
            while start < stop:
                end = min(stop, start + self.next_size())
                self.handed_out += end - start
                yield Span(start, end)
                start = end

    def take(self, items: Iterator[tuple[int, dict]], size: int) -> list[tuple[int, dict]]:
        """The next group: ``size`` items, or fewer once their predicted seconds reach
        the target (cost="auto" with a trusted model)."""
        if self.learned is None or size == 1:
            return list(itertools.islice(items, size))
        group, seconds = [], 0.0
        for item in items:
            group.append(item)
            seconds += self.learned.last_seconds
            if len(group) >= size or seconds >= self.target_seconds():
                break
        return group

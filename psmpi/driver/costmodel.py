"""``cost="auto"``: a model of pset runtime learned while the map runs, longest-predicted first.

The model (:class:`CostModel`) is ridge-regularised least squares of ``log(runtime)`` on the
numeric values of a pset, on their logs (``log(|x|)``, ``|x|`` raised to the 5th percentile
of the values seen where it is below, so that zeros do not dominate), or on both: runtimes
growing like a power of a value are linear in its log, like an exponential in the value.
Each fit tries the three and keeps the one with the best leave-one-out R² (the simpler one
on a tie): with both, a few long runtimes could tilt the fit into predicting short ones for
the largest values. It is refit each time the number of runtimes seen grew by a quarter,
on at most ``MAX_SAMPLES`` runtimes (a uniform sample of them beyond). A fit costs
~0.1-0.3 ms on rank 0 (after the outcome's worker got its next group).

It is trusted only when it explains the runtimes: its leave-one-out R² (each runtime
predicted by the fit on all the others, in closed form from one fit) must reach
``MIN_R2``. When runtimes do not depend on the values (random), it is not trusted and the
psets keep list order, so the order is no worse than without ``cost=`` (over 300 random
lognormal workloads, simulated: the same mean efficiency within ±0.003).

:class:`LearnedOrder` hands out the pending psets: first a few to explore, namely the ones
holding the largest, then the smallest value of each numeric key (the model then sees the
range, and where runtime grows with a value the longest psets start at once), then ones
spread across the pending psets; then list order until the model is trusted, then the
longest predicted first, re-sorted at every refit. It reads at most ``WINDOW`` psets
ahead of the ones handed out (a generator is never read all at once), so it reorders within
that window; a map's last ``WINDOW`` psets, which decide how evenly the workers finish, are
all sorted together. Memory: ``WINDOW`` psets and their features, plus ``MAX_SAMPLES``
feature rows.

Psets without numeric values, or whose numeric keys differ from the first pset's, get no
prediction: they are handed out at the median predicted runtime (in list order between
themselves, which is list order for a map of such psets).
"""

from __future__ import annotations

import heapq
import math
import numbers
from collections.abc import Iterable, Iterator

import numpy as np

from ..worker.task import GroupOutcome

# Pending psets read ahead of those handed out: the reordering window.
WINDOW = 10_000
# Runtimes needed before the first fit; and a fit needs at least this many per parameter.
MIN_SAMPLES = 12
SAMPLES_PER_PARAMETER = 3
# Runtimes kept for fitting (a uniform sample beyond: reservoir sampling).
MAX_SAMPLES = 2000
# A refit once the runtimes seen grew by this factor.
REFIT_GROWTH = 1.25
# ... and by this factor while the model is trusted (its order changes little by then, and
# every fit delays the outcomes that arrive meanwhile).
REFIT_GROWTH_TRUSTED = 1.5
# Leave-one-out R² the model needs before it reorders anything.
MIN_R2 = 0.5
# Numeric keys used as features, at most (the first ones, in the first pset's key order).
MAX_KEYS = 16
RIDGE = 1e-3
# Runtimes below this are taken as this (the log of 0 is no runtime).
MIN_RUNTIME = 1e-6


def numeric_keys(pset: dict) -> list[str]:
    """The keys of ``pset`` whose values are real numbers (bools excluded), in its order."""
    return [key for key, value in pset.items()
            if isinstance(value, numbers.Real) and not isinstance(value, bool)][:MAX_KEYS]


def features(pset: dict, keys: list[str]) -> np.ndarray | None:
    """The values of ``keys`` in ``pset`` as floats; None unless all are finite numbers."""
    if not keys:
        return None
    values = []
    for key in keys:
        value = pset.get(key) if isinstance(pset, dict) else None
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            return None
        value = float(value)
        if not math.isfinite(value):
            return None
        values.append(value)
    return np.array(values)


class CostModel:
    """Least squares of log runtime on pset values and their logs; see the module docstring."""

    def __init__(self, seed: int = 0):
        self.x: list[np.ndarray] = []
        self.y: list[float] = []
        self.seen = 0
        self.fitted_at = 0       # runtimes seen at the last fit (0: none yet)
        self.due_at = MIN_SAMPLES  # runtimes seen at which the next fit is due
        self.seed = seed
        self.rng: np.random.Generator | None = None  # made once needed (~5 ms: numpy.random)
        self.r2 = -math.inf
        self.coef: np.ndarray | None = None
        self.scale: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.median = 0.0
        self.keep = np.zeros(0, dtype=bool)  # the design columns the fit uses

    @property
    def trusted(self) -> bool:
        """Whether the last fit explains the runtimes well enough to reorder by it."""
        return self.coef is not None and self.r2 >= MIN_R2

    def add(self, x: np.ndarray, runtime: float) -> None:
        """One pset's features and its measured runtime (NaN or inf runtimes are ignored)."""
        if not math.isfinite(runtime) or runtime < 0:
            return
        y = math.log(max(runtime, MIN_RUNTIME))
        self.seen += 1
        if len(self.y) < MAX_SAMPLES:
            self.x.append(x)
            self.y.append(y)
            return
        if self.rng is None:
            self.rng = np.random.default_rng(self.seed)
        slot = int(self.rng.integers(self.seen))
        if slot < MAX_SAMPLES:
            self.x[slot], self.y[slot] = x, y

    def refit_due(self) -> bool:
        return self.seen >= self.due_at

    def fit(self) -> None:
        """Fit on the runtimes kept; set ``r2`` from leave-one-out. Too few runtimes for
        the columns that vary: no fit, and the next attempt once there are enough."""
        x, y = np.array(self.x), np.array(self.y)
        self.median = float(np.median(y))
        eps = log_floor(x)
        design = self.raw_design(x, eps)
        mean, std = design.mean(axis=0), design.std(axis=0)
        keep = std > 1e-12 * (1 + np.abs(mean))  # constant columns say nothing
        self.scale = (eps, mean, np.where(keep, std, 1.0))
        logs = np.arange(len(keep)) >= x.shape[1]
        # A power law (logs only), an exponential (values only), or both; the simpler ones
        # first, since with both, a few long runtimes can tilt the fit into predicting
        # short ones for the largest values.
        designs = [keep & logs, keep & ~logs, keep]
        sizes = [int(columns.sum()) for columns in designs if columns.any()]
        needed = SAMPLES_PER_PARAMETER * (min(sizes) + 1) if sizes else 0
        if sizes and len(y) < needed:
            self.coef, self.r2 = None, -math.inf
            self.due_at = needed  # at most 3 × 17 runtimes (MAX_KEYS)
            return
        self.fitted_at = self.seen
        self.coef, self.r2 = None, -math.inf  # no value varies: nothing to learn yet
        for columns in designs:
            if columns.any() and len(y) >= SAMPLES_PER_PARAMETER * (columns.sum() + 1):
                coef, r2 = ridge_loo(self.standardized(design, columns), y)
                if r2 > self.r2:
                    self.coef, self.r2, self.keep = coef, r2, columns
        growth = REFIT_GROWTH_TRUSTED if self.trusted else REFIT_GROWTH
        self.due_at = max(self.seen + 1, math.ceil(growth * self.seen))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted log runtime of each row of ``x`` (the median one before any fit)."""
        if self.coef is None or self.scale is None:
            return np.full(len(x), self.median)
        design = self.standardized(self.raw_design(x, self.scale[0]), self.keep)
        return design @ self.coef

    @staticmethod
    def raw_design(x: np.ndarray, eps: np.ndarray) -> np.ndarray:
        return np.hstack([x, np.log(np.maximum(np.abs(x), eps))])

    def standardized(self, design: np.ndarray, keep: np.ndarray) -> np.ndarray:
        _, mean, std = self.scale
        design = ((design - mean) / std)[:, keep]
        return np.hstack([np.ones((len(design), 1)), design])


def log_floor(x: np.ndarray) -> np.ndarray:
    """Per column, the smallest |value| whose log is taken as it is: the 5th percentile of
    the nonzero |values| (1 for a column of zeros). Below it, values share its log, so that
    a value of 0 (log -inf) or near it does not dominate the fit.

    numpy.percentile's linear interpolation, for all columns in one sort (a percentile per
    column took ~70 % of a fit)."""
    ordered = np.sort(np.abs(x), axis=0)
    n = len(ordered)
    zeros = np.count_nonzero(ordered == 0, axis=0)
    position = zeros + 0.05 * np.maximum(n - zeros - 1, 0)
    low = np.minimum(np.floor(position).astype(int), n - 1)
    high = np.minimum(low + 1, n - 1)
    columns = np.arange(ordered.shape[1])
    fraction = position - low
    floors = ordered[low, columns] * (1 - fraction) + ordered[high, columns] * fraction
    return np.where(zeros < n, floors, 1.0)


def ridge_loo(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Coefficients minimising |design @ c - y|² + RIDGE·n·|c[1:]|² (the intercept is free),
    and their leave-one-out R²: 1 - (squared error of each y predicted by the fit without
    it) / (variance of y about its mean). The left-out residuals come from the one fit
    (r / (1 - h), h the diagonal of the hat matrix), as the penalty is fixed."""
    n, p = design.shape
    penalty = RIDGE * n * np.eye(p)
    penalty[0, 0] = 0.0
    inverse = np.linalg.inv(design.T @ design + penalty)
    coef = inverse @ (design.T @ y)
    total = float(np.sum((y - y.mean()) ** 2))
    if total <= 0:
        return coef, -math.inf  # all runtimes equal: no order to learn
    leverage = ((design @ inverse) * design).sum(axis=1)
    left_out = (y - design @ coef) / np.maximum(1.0 - leverage, 1e-9)
    return coef, 1.0 - float(np.sum(left_out ** 2)) / total


class LearnedOrder:
    """Iterate ``(index, pset)`` from ``todo`` in the order the cost model suggests.

    Feed it each finished group through :meth:`observe`.
    """

    def __init__(self, todo: Iterable[tuple[int, dict]], n_workers: int,
                 window: int = WINDOW):
        self.source: Iterator[tuple[int, dict]] | None = iter(todo)
        self.window = max(1, window)
        self.explore = max(MIN_SAMPLES, n_workers)  # psets spread over the pending ones
        self.probes: list[int] | None = None  # seqs of the psets to explore first
        self.handed_out = 0
        self.model = CostModel()
        self.keys: list[str] | None = None
        self.seq = 0
        # Heap of [key, seq, index, pset, features]: key is seq (list order) until the
        # model is trusted, then minus the predicted log runtime.
        self.heap: list[list] = []
        self.in_flight: dict[int, np.ndarray] = {}  # features of psets handed out
        # Predicted seconds of the pset handed out last (0.0 unless the model is trusted):
        # the Grouper ends a group once its psets' predictions add up to enough work.
        self.last_seconds = 0.0

    def __iter__(self) -> LearnedOrder:
        return self

    def __next__(self) -> tuple[int, dict]:
        self.fill()
        if not self.heap:
            raise StopIteration
        if self.keys and self.handed_out < self.explore and not self.model.trusted:
            entry = self.take_probe() or self.take_spread()
        else:
            entry = heapq.heappop(self.heap)
        self.handed_out += 1
        key, _, index, pset, x = entry
        self.last_seconds = math.exp(-key) if self.model.trusted else 0.0
        if x is not None:
            self.in_flight[index] = x
        return index, pset

    def learning(self) -> bool:
        """True while psets with numeric values wait for the model's first fit."""
        return bool(self.keys) and self.model.fitted_at == 0

    def observe(self, outcome: GroupOutcome) -> None:
        """Learn the runtimes of a finished group; refit and re-sort when due."""
        if len(outcome.runtimes) != len(outcome.indexes):
            return  # a group that never ran (a set-up failure): nothing measured
        for index, runtime in zip(outcome.indexes, outcome.runtimes):
            x = self.in_flight.pop(index, None)
            if x is not None:
                self.model.add(x, runtime)
        if self.model.refit_due():
            self.model.fit()
            self.rekey()

    def fill(self) -> None:
        """Read psets until ``window`` are pending or the source is exhausted."""
        while self.source is not None and len(self.heap) < self.window:
            item = next(self.source, None)
            if item is None:
                self.source = None
                return
            index, pset = item
            if self.keys is None:
                self.keys = numeric_keys(pset) if isinstance(pset, dict) else []
            x = features(pset, self.keys)
            entry = [self.key(x, self.seq), self.seq, index, pset, x]
            self.seq += 1
            heapq.heappush(self.heap, entry)

    def key(self, x: np.ndarray | None, seq: int) -> float:
        if not self.model.trusted:
            return float(seq)
        if x is None:
            return -self.model.median
        return -float(self.model.predict(x[None, :])[0])

    def rekey(self) -> None:
        """Re-sort the pending psets by the new fit (or back to list order if untrusted)."""
        if not self.heap:
            return
        if self.model.trusted:
            known = [entry for entry in self.heap if entry[4] is not None]
            if known:
                predicted = self.model.predict(np.array([entry[4] for entry in known]))
                for entry, value in zip(known, predicted.tolist()):
                    entry[0] = -value
            for entry in self.heap:
                if entry[4] is None:
                    entry[0] = -self.model.median
        else:
            for entry in self.heap:
                entry[0] = float(entry[1])
        heapq.heapify(self.heap)

    def take_probe(self) -> list | None:
        """The next pending pset holding the largest, then the smallest value of a numeric
        key (None once they are taken): the model sees the range of the values first, and
        where runtime grows with a value the longest psets start at once."""
        if self.probes is None:
            self.probes = self.extremes()
        while self.probes:
            seq = self.probes.pop(0)
            for position, entry in enumerate(self.heap):
                if entry[1] == seq:
                    return self.take_at(position)
        return None

    def extremes(self) -> list[int]:
        """Seqs of the pending psets with the largest value of each numeric key, then of
        those with the smallest; at most half the exploring psets."""
        known = [entry for entry in self.heap if entry[4] is not None]
        if not known:
            return []
        values = np.array([entry[4] for entry in known])
        picks = [known[i][1] for i in values.argmax(axis=0)]
        picks += [known[i][1] for i in values.argmin(axis=0)]
        return list(dict.fromkeys(picks))[:self.explore // 2]

    def take_spread(self) -> list:
        """A pending pset far from those taken before: the golden-ratio sequence over the
        pending ones (in list order while nothing is learned, since the heap is then
        ordered by arrival)."""
        position = int((self.handed_out * 0.6180339887498949) % 1.0 * len(self.heap))
        return self.take_at(position)

    def take_at(self, position: int) -> list:
        """Remove and return the heap's entry at ``position``."""
        return remove_at(self.heap, position)


def remove_at(heap: list, position: int):
    """Remove and return ``heap[position]``, keeping ``heap`` a heap, in O(log n): the last
    entry takes its place and moves up or down. (A heapify instead, O(n) per pset explored,
    took 0.6 s to hand out the first psets to 1,000 workers from a window of 10,000.)"""
    entry = heap[position]
    last = heap.pop()
    if position == len(heap):
        return entry
    while position > 0 and last < heap[(position - 1) // 2]:
        parent = (position - 1) // 2
        heap[position] = heap[parent]
        position = parent
    size = len(heap)
    while 2 * position + 1 < size:
        child = 2 * position + 1
        if child + 1 < size and heap[child + 1] < heap[child]:
            child += 1
        if not heap[child] < last:
            break
        heap[position] = heap[child]
        position = child
    heap[position] = last
    return entry

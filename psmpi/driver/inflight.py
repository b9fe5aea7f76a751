"""The psets handed out and not back yet, by index: a dict that also holds whole spans.

A :class:`~psmpi.worker.spans.Span` enters as one entry, whatever its length, and leaves as
one when its outcome comes back as columns. Only when someone asks for one of its psets (a
failure to store, a stalled worker to report, the crash guard's count at the end) is the
span unfolded into ``index -> pset`` entries, rebuilt from the grid.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Iterable, Iterator
from typing import Any

from ..worker.spans import Grid, Span

_MISSING = object()


class InFlight(dict):
    """``index -> pset`` of the psets in flight; :meth:`add` takes a group of either kind."""

    def __init__(self, grid: Grid | None = None):
        super().__init__()
        self.grid = grid
        self.spans: dict[int, Span] = {}  # start -> span, not unfolded
        self.n_spanned = 0

    def add(self, group: list[tuple[int, dict]] | Span) -> None:
        if type(group) is Span:
            self.spans[group.start] = group
            self.n_spanned += len(group)
        else:
            self.update(group)

    def drop(self, indexes: Iterable[int]) -> None:
        """Forget the psets ``indexes`` of a group that was no span (a loop in C)."""
        collections.deque(map(functools.partial(dict.pop, self), indexes), maxlen=0)

    def pop_span(self, span: tuple[int, int]) -> None:
        """Forget a span that came back whole; it may have been unfolded meanwhile."""
        start, stop = span
        folded = self.spans.pop(start, None)
        if folded is not None:
            self.n_spanned -= len(folded)
            return
        for index in range(start, stop):
            dict.pop(self, index)

    def unfold(self, index: Any = None) -> None:
        """Turn the span holding ``index`` (every span if None) into ``index -> pset`` entries."""
        for start, span in list(self.spans.items()):
            if index is None or span.start <= index < span.stop:
                del self.spans[start]
                self.n_spanned -= len(span)
                self.update(zip(span.indexes(), self.grid.psets(span.start, span.stop)))

    def _unfolded(self, index: Any) -> None:
        if self.spans and not dict.__contains__(self, index) and isinstance(index, int):
            self.unfold(index)

    def __len__(self) -> int:
        return dict.__len__(self) + self.n_spanned

    def __contains__(self, index: Any) -> bool:
        self._unfolded(index)
        return dict.__contains__(self, index)

    def __getitem__(self, index: Any) -> dict:
        self._unfolded(index)
        return dict.__getitem__(self, index)

    def get(self, index: Any, default: Any = None) -> Any:
        self._unfolded(index)
        return dict.get(self, index, default)

    def pop(self, index: Any, default: Any = _MISSING) -> Any:
        self._unfolded(index)
        if default is _MISSING:
            return dict.pop(self, index)
        return dict.pop(self, index, default)

    def __iter__(self) -> Iterator[int]:
        self.unfold()
        return dict.__iter__(self)

    def keys(self) -> Iterable[int]:  # type: ignore[override]
        self.unfold()
        return dict.keys(self)

    def values(self) -> Iterable[dict]:  # type: ignore[override]
        self.unfold()
        return dict.values(self)

    def items(self) -> Iterable[tuple[int, dict]]:  # type: ignore[override]
        self.unfold()
        return dict.items(self)

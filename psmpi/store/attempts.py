"""Poison psets: a durable record of which psets were running when a run died.

A pset that kills the process running it (segfault, ``os._exit``, the out-of-memory killer)
takes a whole MPI job down, and the serial backend's only process with it. (Backends whose
runs survive such a death, like multiprocessing, need none of this.) Without a record,
the next run would compute that pset again and die again, forever. So the driver appends one
line per group to ``<results file>.attempts`` *before* handing the group out, and one when
it came back (written together with the next group's)::

    G <map> <pset indexes as ranges, e.g. 0-99,105>
    R <map> <the same ranges>

A pset sent more often than it came back was running when its run died.

A run that ends in Python (finished, drained, raised) folds its own lines away again, keeping
only groups still in flight when it gave up. A run that was killed cannot, so its lines stay.
The next run folds them into one count per pset::

    A <map> <pset index> <attempts> <pset hash or ->

and treats those psets with suspicion (see :class:`Suspects`): at two attempts (one, if
``max_attempts`` is 2) a pset runs alone, after the rest of the map, so a further death is
blamed on it and not on its neighbours; at ``max_attempts`` it is stored as a ``crashed``
failure and skipped, so a requeue loop always ends. (``max_attempts=1`` skips every pset that
was running at the first death, innocent neighbours included.)

A map goes through this life cycle with a :class:`psmpi.driver.crashguard.CrashGuard`. Only the
driver writes this file, under the results file's lock. Counts are keyed by the
pset's position in the map's pset list; the pset hash, recorded from the second run on,
makes a changed list reset the count instead of blaming the wrong pset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import urllib.parse
from collections.abc import Iterable, Iterator

from .. import params
from ..errors import StoreError
from ..layout import attempts_path

# psets with this many attempts run one at a time, after the rest of the map.
ALONE_FROM = 2


@dataclasses.dataclass
class Attempts:
    """How often a pset was running when its run died, and its hash once known."""

    count: int
    digest: str | None = None


def as_ranges(indexes: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``: groups are mostly runs of consecutive indexes.

    The indexes of a group are distinct, so when max - min + 1 equals their number they
    are exactly one range, whatever their order.
    """
    if type(indexes) is range and indexes.step == 1:  # a span's: no pass over its indexes
        return "" if not indexes else (str(indexes.start) if len(indexes) == 1
                                       else f"{indexes.start}-{indexes.stop - 1}")
    if indexes and max(indexes) - min(indexes) + 1 == len(indexes):
        low, high = min(indexes), max(indexes)
        return str(low) if low == high else f"{low}-{high}"
    parts: list[str] = []
    indexes = sorted(indexes)
    start = prev = None
    for index in indexes:
        if prev is not None and index == prev + 1:
            prev = index
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = index
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(parts)


def from_ranges(text: str) -> list[int]:
    indexes: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        indexes.extend(range(int(first), int(last or first) + 1))
    return indexes


FIELDS = {"A": 3, "G": 1, "R": 1}  # fields after the map name, per kind of line


class AttemptLog:
    """The ``.attempts`` file of one results file, seen from one map."""

    def __init__(self, results_path: str, map_name: str):
        self.results_path = results_path
        self.path = attempts_path(results_path)
        self.map_name = urllib.parse.quote(map_name, safe="")  # no spaces: they split fields
        self.handle = None
        self.pending: list[str] = []  # "returned" lines not written yet

    def load(self) -> dict[int, Attempts]:
        """This map's attempt counts, with the groups of killed runs folded in."""
        counts: dict[int, Attempts] = {}
        for kind, name, fields in self.read():
            if name != self.map_name:
                continue
            if kind == "A":
                index, count, digest = int(fields[0]), int(fields[1]), fields[2]
                counts[index] = Attempts(count, None if digest == "-" else digest)
            else:
                step = 1 if kind == "G" else -1
                for index in from_ranges(fields[0]):
                    counts.setdefault(index, Attempts(0)).count += step
        return {index: a for index, a in counts.items() if a.count > 0}

    def read(self) -> list[tuple[str, str, list[str]]]:
        """Every well-formed line as (kind, map name, fields)."""
        try:
            with open(self.path, encoding="utf-8") as fh:
                # A line without its newline was torn by a kill mid-write: dropped.
                complete = fh.read().split("\n")[:-1]
        except FileNotFoundError:
            return []
        found = []
        for line in complete:
            kind, name, *fields = line.split(" ")
            if FIELDS.get(kind) == len(fields) and all(fields):
                found.append((kind, name, fields))
        return found

    def sent(self, indexes: list[int]) -> None:
        """Record a group handed to a worker; on disk before the worker gets it.

        Raises
        ------
        StoreError
            The file cannot be written (a full disk): the group must not be handed out.
        """
        self.pending.append(f"G {self.map_name} {as_ranges(indexes)}\n")
        try:
            if self.handle is None:
                self.handle = self.open_for_appending()
            # One write per group: groups that came back since the last send ride along.
            # (Lost in a kill before the next send, they only make those psets look in flight.)
            self.handle.write("".join(self.pending))
            self.handle.flush()  # in the page cache: survives the process, not the node
        except OSError as exc:
            self.discard_handle()
            raise self.write_error(self.path, exc) from exc
        self.pending.clear()

    def open_for_appending(self):
        """The file opened to append whole lines: a line torn by a kill or a full disk is
        ended first, so that it does not swallow the next one."""
        torn = _ends_mid_line(self.path)
        handle = open(self.path, "a", encoding="utf-8")
        if torn:
            handle.write("\n")
        return handle

    def discard_handle(self) -> None:
        """Close the append handle, dropping what it could not write."""
        handle, self.handle = self.handle, None
        if handle is not None:
            try:
                handle.close()
            except OSError:  # its buffer could not be flushed either: nothing more to do
                pass

    def write_error(self, path: str, exc: OSError) -> StoreError:
        return StoreError(
            f"cannot write {path} ({exc.strerror or exc}), psmpi's record of the psets running "
            f"for {self.results_path}. Rows committed before are kept in {self.results_path}; "
            f"free disk space (or fix the file system) and run the same command again to "
            f"compute the rest")

    def returned(self, indexes: list[int]) -> None:
        """Record a group back from its worker: whatever kills the run now, not these."""
        self.pending.append(f"R {self.map_name} {as_ranges(indexes)}\n")

    def save(self, counts: dict[int, Attempts]) -> None:
        """Replace this map's lines by ``counts``; keep other maps'; drop an empty file."""
        self.pending.clear()
        self.discard_handle()
        others = [" ".join([kind, name, *fields]) for kind, name, fields in self.read()
                  if name != self.map_name]
        mine = [f"A {self.map_name} {index} {a.count} {a.digest or '-'}"
                for index, a in sorted(counts.items()) if a.count > 0]
        if not others and not mine:
            if os.path.exists(self.path):
                os.unlink(self.path)
            return
        temporary = self.path + ".tmp"
        try:
            with open(temporary, "w", encoding="utf-8") as fh:
                fh.write("".join(line + "\n" for line in others + mine))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:  # the old file stays as it was: its counts are still right
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise self.write_error(temporary, exc) from exc


def _ends_mid_line(path: str) -> bool:
    """Whether the file ``path`` ends with a line missing its newline."""
    try:
        with open(path, "rb") as fh:
            if fh.seek(0, os.SEEK_END) == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except FileNotFoundError:
        return False


class Suspects:
    """Sorts a map's pending psets by how often they were running when a run died.

    :meth:`sort` passes innocent psets (and first-time suspects) on to the map, and holds
    back the psets to run alone (:attr:`alone`) and the ones to skip (:attr:`crashed`).
    :attr:`counts` is what is left to save when the map ends.
    """

    def __init__(self, counts: dict[int, Attempts], max_attempts: int):
        self.counts = counts
        self.max_attempts = max_attempts
        # Alone at least once before being skipped, so that a skipped pset died alone.
        self.alone_from = max(1, min(ALONE_FROM, max_attempts - 1))
        self.alone: list[tuple[int, dict]] = []
        self.crashed: list[tuple[int, dict, int]] = []  # (index, pset, attempts)

    def committed(self, index: int) -> None:
        """The pset's row is in the file: whatever happened before, it is done."""
        self.counts.pop(index, None)

    def hold_back(self, todo: Iterable[tuple[int, dict]]) -> Iterable[tuple[int, dict]]:
        """``todo`` without the suspects, which go to :attr:`alone` (to run one at a time) or
        :attr:`crashed` (given up on); unchanged when there are no suspects."""
        return self._without_suspects(todo) if self.counts else todo

    def _without_suspects(self, todo: Iterable[tuple[int, dict]]) -> Iterator[tuple[int, dict]]:
        for index, pset in todo:
            attempts = self.counts.get(index)
            if attempts is None:
                yield index, pset
                continue
            digest = params.pset_hash(pset)
            if attempts.digest not in (None, digest):  # the pset list changed: not this pset
                del self.counts[index]
                yield index, pset
                continue
            attempts.digest = digest
            if attempts.count >= self.max_attempts:
                self.crashed.append((index, pset, attempts.count))
            elif attempts.count >= self.alone_from:
                self.alone.append((index, pset))
            else:
                yield index, pset

    def alone_in_order(self) -> list[tuple[int, dict]]:
        """The psets to run alone, most attempts first: a poison pset is found soonest."""
        return sorted(self.alone, key=lambda item: (-self.counts[item[0]].count, item[0]))

    def abandoned(self, index: int, pset: dict) -> None:
        """The pset was still running when this run gave up on it: one more attempt."""
        attempts = self.counts.setdefault(index, Attempts(0))
        attempts.digest = attempts.digest or params.pset_hash(pset)
        attempts.count += 1

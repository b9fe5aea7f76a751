"""One study run as many jobs: which shard this process is, and which psets it computes.

A shard is one of ``n`` independent pieces of a map: shard ``k`` computes a fixed share of
the psets into its own file (``layout.shard_path``) and needs no coordination with the
others; ``psmpi merge`` joins the files (:mod:`psmpi.tools.merging`). The share is
deterministic, so a shard run again resumes its own file like any map:

* without ``cost=``: pset ``i`` belongs to shard ``i mod n`` (round robin, so every shard
  gets psets from the whole range, e.g. both cheap and dear corners of a grid);
* with ``cost=``: greedy longest-first into ``n`` bins (the dearest pset first, each to the
  shard with the least cost so far; ties to the lower index), which needs every pset in
  memory once and a cost function that gives the same numbers in every job.

Pset indexes stay the study's: a row of shard ``k`` has the ``_pset_index`` the pset has in
the whole list.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from .. import config, params
from ..errors import ConfigError, PsetError
from ..worker import task

# Psets whose hashes go into a study's fingerprint: the first ones, so that a generator
# needs no second pass; with the length, the map name, the shard count and the split.
FINGERPRINT_PSETS = 64


@dataclasses.dataclass(frozen=True)
class Shard:
    """Shard ``k`` of ``n``, and how to resubmit it when it ran in a Slurm job array.

    ``array_min`` and ``array_step`` give shard k's array index, ``array_min + k *
    array_step``; ``job_script`` is the command that submitted it (the ``job_script``
    option, ``PSMPI_JOB_SCRIPT``, which jobscripts/array.sbatch sets), None if unknown.
    """

    k: int
    n: int
    array_min: int | None = None
    array_step: int = 1
    job_script: str | None = None
    directory: str | None = None

    def resubmit_info(self) -> dict:
        return {"array_min": self.array_min, "array_step": self.array_step,
                "job_script": self.job_script, "directory": self.directory}


def shard_for(setting: Any, environ: Mapping[str, str], job_script: str | None = None
              ) -> Shard | None:
    """The shard this map computes: ``setting`` (the ``shard`` option), else a Slurm job
    array's task; None for the whole study (no setting, not in an array, or one shard).
    ``job_script``: the command that submitted the job (the ``job_script`` option)."""
    if setting is False:
        return None
    if isinstance(setting, str):  # "array:LOW-HIGH[:STEP]": part of that array resubmitted
        low, high, step = config.SHARD_ARRAY.match(setting).groups()
        if "SLURM_ARRAY_TASK_ID" not in environ:
            raise ConfigError(f"shard={setting!r} is for tasks of a Slurm job array, and this "
                              f"process is not one (no SLURM_ARRAY_TASK_ID)")
        step = int(step or 1)
        array = {"SLURM_ARRAY_TASK_ID": environ["SLURM_ARRAY_TASK_ID"],
                 "SLURM_ARRAY_TASK_MIN": low, "SLURM_ARRAY_TASK_MAX": high,
                 "SLURM_ARRAY_TASK_COUNT": str((int(high) - int(low)) // step + 1)}
        shard = _slurm_array_shard({**environ, **array}, job_script)
    elif setting is not None:
        k, n = setting
        shard = Shard(k, n, job_script=job_script)
    else:
        shard = _slurm_array_shard(environ, job_script)
    return None if shard is None or shard.n == 1 else shard


def _slurm_array_shard(environ: Mapping[str, str], job_script: str | None = None
                       ) -> Shard | None:
    """The shard of a Slurm job array's task: its index among the array's indexes.

    Slurm sets SLURM_ARRAY_TASK_ID, _MIN, _MAX and _COUNT; an array of evenly spaced indexes
    (``--array=0-99`` or ``--array=0-99:2``) is a study of COUNT shards. Without _MIN the
    array starts at 0; without _COUNT it has every index from _MIN to _MAX.
    """
    task_id = environ.get("SLURM_ARRAY_TASK_ID")
    if not task_id:
        return None
    try:
        index = int(task_id)
        low = int(environ.get("SLURM_ARRAY_TASK_MIN", 0))
        if "SLURM_ARRAY_TASK_COUNT" in environ:
            count = int(environ["SLURM_ARRAY_TASK_COUNT"])
            high = int(environ.get("SLURM_ARRAY_TASK_MAX", low + count - 1))
        else:
            high = int(environ["SLURM_ARRAY_TASK_MAX"])
            count = high - low + 1
    except (KeyError, ValueError):
        raise ConfigError(f"cannot read this Slurm job array's indexes (SLURM_ARRAY_TASK_ID="
                          f"{task_id!r}); set PSMPI_SHARD=k/n in the job script") from None
    step = (high - low) // (count - 1) if count > 1 else 1
    if not low <= index <= high or count < 1 or (
            count > 1 and (step * (count - 1) != high - low or (index - low) % step)):
        raise ConfigError(f"this Slurm job array's indexes {low}-{high} ({count} tasks) are not "
                          f"evenly spaced, so psmpi cannot tell which shard task {index} is; "
                          f"submit --array=0-{count - 1} or set PSMPI_SHARD=k/n in the job "
                          f"script")
    return Shard((index - low) // step, count, array_min=low, array_step=step,
                 job_script=job_script,
                 directory=environ.get("SLURM_SUBMIT_DIR"))


def fingerprint(name: str, n_shards: int, split: str, length: int | None,
                first_hashes: list[str]) -> str:
    """What every shard of one study shares: a hash of the map name, the number of psets
    and of shards, how they are split, and the hashes of the first psets."""
    text = json.dumps([name, n_shards, split, length, first_hashes])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def select(shard: Shard, stream: Iterator[tuple[int, dict]], length: int | None,
           cost: Callable | str | None, name: str
           ) -> tuple[Iterable[tuple[int, dict]], int | None, str]:
    """Shard ``shard``'s psets of ``stream``, how many there are, and the study fingerprint."""
    head = list(itertools.islice(stream, FINGERPRINT_PSETS))
    hashes = [params.pset_hash(pset) for _, pset in head]
    stream = itertools.chain(head, stream)
    if cost is None or cost == "auto":  # "auto" learns costs only while running
        share = IndexShare(stream, shard)
        count = None if length is None else len(range(shard.k, length, shard.n))
        return share, count, fingerprint(name, shard.n, "index", length, hashes)
    items = list(stream)
    bins = balanced_bins([pset_cost(cost, index, pset) for index, pset in items], shard.n)
    mine = [item for item, b in zip(items, bins) if b == shard.k]
    return iter(mine), len(mine), fingerprint(name, shard.n, "cost", len(items), hashes)


class IndexShare:
    """The psets of ``stream`` whose index is k mod n; ``seen`` counts every pset read, so
    that a generator's length is known once it is exhausted."""

    def __init__(self, stream: Iterator[tuple[int, dict]], shard: Shard):
        self.stream, self.k, self.n = stream, shard.k, shard.n
        self.seen = 0
        self.exhausted = False

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        for index, pset in self.stream:
            self.seen = index + 1
            if index % self.n == self.k:
                yield index, pset
        self.exhausted = True


def pset_cost(cost: Callable, index: int, pset: dict) -> float:
    """``cost(pset)`` as a float; a PsetError naming the pset if it fails or is NaN."""
    try:
        value = float(cost(pset))
    except Exception as exc:
        raise PsetError(f"cost() failed for pset {index} {pset!r}: {task.describe(exc)}; "
                        f"it must return a number for every pset") from exc
    if value != value:
        raise PsetError(f"cost() returned NaN for pset {index} {pset!r}")
    return value


def balanced_bins(costs: list[float], n: int) -> list[int]:
    """The bin (0..n-1) of each item: greedy longest-first, each to the lightest bin.

    >>> balanced_bins([5, 1, 4, 3, 3], 2)
    [0, 1, 1, 1, 0]
    """
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
    loads = [(0.0, b) for b in range(n)]
    bins = [0] * len(costs)
    for i in order:
        load, b = heapq.heappop(loads)
        bins[i] = b
        heapq.heappush(loads, (load + costs[i], b))
    return bins

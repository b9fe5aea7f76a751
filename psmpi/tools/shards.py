"""The shard files of a study run as many jobs, and their state: done, running, missing,
failed or incomplete, what is left overall, and the ``sbatch --array=...`` line that
resubmits the shards that are not complete (``psmpi status``)."""

from __future__ import annotations

import dataclasses
import json
import os
import re

from .. import layout
from ..store import reading
from .summary import MapSummary, selected_maps, summarise_map, writer_of

# What ``psmpi status`` calls a shard.
DONE, RUNNING, MISSING, FAILED, INCOMPLETE = "done", "running", "missing", "failed", "incomplete"


@dataclasses.dataclass(frozen=True)
class ShardFile:
    """One shard file of a study: shard ``k`` of ``n`` at ``path``."""

    k: int
    n: int
    path: str


def shard_files(path: str) -> list[ShardFile]:
    """The shard files beside study file ``path`` (``layout.shard_path``), by shard number."""
    stem, ext = layout.shard_glob_parts(os.fspath(path))
    folder, base = os.path.split(stem)
    pattern = re.compile(re.escape(base) + layout.SHARD_PATTERN + re.escape(ext) + "$")
    found = []
    for entry in os.listdir(folder or "."):
        match = pattern.match(entry)
        if match:
            found.append(ShardFile(int(match[1]), int(match[2]), os.path.join(folder, entry)))
    return sorted(found, key=lambda s: (s.n, s.k))


@dataclasses.dataclass
class ShardState:
    """One shard: its state, its maps' summaries (none if missing) and who writes it."""

    k: int
    n: int
    path: str
    state: str
    maps: list[MapSummary]
    writer: str | None = None
    resubmit: dict | None = None
    study_psets: dict[str, int] = dataclasses.field(default_factory=dict)  # per map, if known

    def as_dict(self) -> dict:
        return {"shard": self.k, "of": self.n, "path": self.path, "state": self.state,
                "writer": self.writer, "maps": [m.as_dict() for m in self.maps]}


def _state(maps: list[MapSummary], writer: str | None) -> str:
    if writer is not None and writer.startswith("being written"):
        return RUNNING
    if not maps or any(m.remaining is None or m.remaining > 0 for m in maps):
        return INCOMPLETE
    return FAILED if any(m.failed or m.crashed for m in maps) else DONE


def _read_shard(shard: ShardFile) -> ShardState:
    def read(f):
        names = selected_maps(f, None)
        resubmit, study = None, {}
        for name in names:
            attrs = f[name].attrs
            if layout.SHARD_RESUBMIT_ATTR in attrs:
                resubmit = json.loads(attrs[layout.SHARD_RESUBMIT_ATTR])
            if int(attrs.get(layout.STUDY_N_PSETS_ATTR, -1)) >= 0:
                study[name] = int(attrs[layout.STUDY_N_PSETS_ATTR])
        return [summarise_map(f, name) for name in names], resubmit, study

    maps, resubmit, study = reading(shard.path, read)
    writer = writer_of(shard.path)
    return ShardState(shard.k, shard.n, shard.path, _state(maps, writer), maps, writer, resubmit,
                      study)


def shards_status(path: str) -> list[ShardState]:
    """The state of every shard of the study whose file is ``path``, missing ones too.

    Parameters
    ----------
    path : str
        The study's file (it need not exist yet); its shards are the files named
        ``layout.shard_path(path, k, n)`` beside it.

    Returns
    -------
    list of ShardState
        One per shard k = 0..n-1 of the largest shard count found: ``state`` is ``done``
        (every pset has a result), ``failed`` (every pset was tried, some failed),
        ``running`` (a survey holds its lock), ``incomplete`` (stopped, died or ran out of
        time before the end) or ``missing`` (no file: never started). Empty if there are
        no shard files.
    """
    files = shard_files(path)
    if not files:
        return []
    n = max(f.n for f in files)
    by_k = {f.k: f for f in files if f.n == n}
    return [_read_shard(by_k[k]) if k in by_k else
            ShardState(k, n, layout.shard_path(path, k, n), MISSING, [])
            for k in range(n)]


def left_overall(shards: list[ShardState]) -> dict[str, dict]:
    """Per map over every shard: psets of the study (None if unknown), done, failed (failed
    or crashed, without a result) and left (the rest: never tried, running, or in shards
    that are missing)."""
    out: dict[str, dict] = {}
    for shard in shards:
        for m in shard.maps:
            entry = out.setdefault(m.name, {"done": 0, "failed": 0, "total": None})
            entry["done"] += m.done
            entry["failed"] += m.failed + m.crashed
            if m.name in shard.study_psets:
                entry["total"] = shard.study_psets[m.name]
    for entry in out.values():
        total = entry["total"]
        entry["left"] = None if total is None else total - entry["done"] - entry["failed"]
    return out


def resubmit_line(shards: list[ShardState]) -> str | None:
    """The command that runs again the shards that are neither done, failed nor running.

    In a Slurm job array: ``sbatch --array=<their indexes> --export=ALL,PSMPI_SHARD=array:
    <the whole array> <job script>`` (PSMPI_SHARD tells the tasks the array they belong to:
    a resubmitted part is an array of its own), the job script as recorded by the shards
    (``PSMPI_JOB_SCRIPT``, which jobscripts/array.sbatch sets) or ``<job script>`` to fill
    in; otherwise the PSMPI_SHARD values to run them with.
    """
    todo = [s for s in shards if s.state in (MISSING, INCOMPLETE)]
    if not todo:
        return None
    info = next((s.resubmit for s in shards if s.resubmit and s.resubmit.get("array_min")
                 is not None), None)
    if info is None:
        return "run them again with " + ", ".join(f"PSMPI_SHARD={s.k}/{s.n}" for s in todo)
    low, step = info["array_min"], info.get("array_step", 1)
    indexes = [low + s.k * step for s in todo]
    array = f"array:{low}-{low + (shards[0].n - 1) * step}" + (f":{step}" if step != 1 else "")
    line = (f"sbatch --array={ranges(indexes)} --export=ALL,PSMPI_SHARD={array} "
            f"{info.get('job_script') or '<job script>'}")
    where = info.get("directory")
    if where and os.path.realpath(where) != os.path.realpath(os.getcwd()):
        line = f"cd {where} && {line}"
    return line


def ranges(indexes: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8' (Slurm's --array syntax)."""
    parts: list[list[int]] = []
    for i in sorted(indexes):
        if parts and parts[-1][1] == i - 1:
            parts[-1][1] = i
        else:
            parts.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in parts)

"""The on-disk layout: every name psmpi writes in a results file and beside it.

Group, dataset and attribute names of the HDF5 results file (see :mod:`psmpi.store` for
what they hold), the bookkeeping columns psmpi adds to every row, and the side files
kept next to ``<out>``. Every other module asks here instead of spelling the strings, so
a name changes in one line.
"""

from __future__ import annotations

import os

# ---------------------------------------------------------------------- the results file
FORMAT = 1                      # the file format; a file of a higher one is refused
FORMAT_ATTR = "psmpi_format"    # attribute of the file's root group
# attributes of a map's group
CREATED_ATTR = "created"        # ISO UTC time the map was first written
VERSION_ATTR = "psmpi_version"  # psmpi that created the map
N_PSETS_ATTR = "n_psets"        # psets the latest run was given, if it knew (``psmpi status``)
# attributes of a map's group in a shard file (one share of a study run as many jobs)
SHARD_ATTR = "shard"            # int64 (k, n): this file is shard k of n
STUDY_FINGERPRINT_ATTR = "study_fingerprint"  # str: the same in every shard of one study
STUDY_N_PSETS_ATTR = "study_n_psets"  # psets of the whole study (-1: unknown)
SHARD_RESUBMIT_ATTR = "resubmit"  # JSON: Slurm array offset, job script, directory
# attribute of a map's group in the file merged from shards: JSON {shard k: [results rows,
# failure rows] merged}, so a later merge adds only what is new
MERGED_SHARDS_ATTR = "merged_shards"
# the tables of a map, one group each
RESULTS, FAILURES = "results", "failures"
TABLE_KINDS = (RESULTS, FAILURES)
# inside a table
N_COMMITTED = "n_committed"     # int64 scalar: rows [0, n_committed) are valid
COLUMNS = "columns"             # one dataset per column, in creation order
HEAPS = "heaps"                 # the bytes of a general or ragged column's values
SHAPES = "shapes"               # int64 (n, ndim): the shape of each value of a ragged column
NULLS = "nulls"                 # optional null masks
STAGING = "staging"             # columns being widened
STAGED_HEAPS = "staging_heaps"  # the new heaps of columns being widened
RETIRED = "retired"             # what a killed commit created, unlinked from the rest by the
                                # next writer (a torn object cannot be deleted); never read
KIND_ATTR = "kind"              # attribute of a column: its kind
DTYPE_ATTR = "dtype"            # attribute of a ragged column: its values' dtype (numpy str)
# attribute of a column and of a null mask: n_committed when it was created (a column's rows
# before it are null). One whose first row is not yet committed holds no committed value:
# readers skip it unread, since a kill during its first commit can leave it torn.
FIRST_ROW_ATTR = "first_row"

# ---------------------------------------------------------------------- bookkeeping columns
# Added by psmpi to every row; a user's keys never start with "_".
PSET_INDEX = "_pset_index"      # the pset's position in the psets of the map() call
PSET_HASH = "_pset_hash"        # params.pset_hash of the pset: what resuming matches
RANK = "_rank"                  # who computed it: worker rank, host, process id
HOST = "_host"
PID = "_pid"
TIME_UTC = "_time_utc"          # when the pset started: float64 POSIX seconds (UTC) on disk,
                                # a UTC datetime when read (psmpi.store.bookkeeping.readable)
PSET_RUNTIME = "_pset_runtime"  # seconds the worker took
RUN_ID = "_run_id"              # the map() call that computed it (psmpi.store.bookkeeping)
RUN_SEQ = "_run_seq"
PSET_ID = "_pset_id"
PSET_SEQ = "_pset_seq"
CALC_DIR = "_calc_dir"
# An earlier psmpi (before psweep's names) stored these columns under other names, with the
# same meaning and type. A table that has them keeps writing them (one column per quantity
# and table); every reader renames them (psmpi.store.bookkeeping).
LEGACY_NAMES = {"_t_start": TIME_UTC, "_runtime": PSET_RUNTIME}
# failures only
KIND = "_kind"                  # how the pset failed ("exception", "timeout", "crashed", ...)
EXCEPTION = "_exception"
TRACEBACK = "_traceback"

# ---------------------------------------------------------------------- side files
# Beside the results file ``<out>``; all of them are named by appending to its path.
LOCK_SUFFIX = ".lock"           # the writer's lock (psmpi.store.lock)
RUNNING_SUFFIX = ".running"     # what the workers hold now (psmpi.watch.stalls)
ATTEMPTS_SUFFIX = ".attempts"   # attempts per pset group (psmpi.store.attempts)
BACKUP_INFIX = ".bak-"          # ``<out>.bak-<UTC time>`` (psmpi.history)
SIMULATE_SUFFIX = ".simulate"   # ``study.simulate.h5``: the copy simulate=True runs on
# not beside <out>: the hidden per-run log ``.psmpi-DATE-TIME-PID.log`` in the working directory
LOG_PREFIX, LOG_SUFFIX = ".psmpi-", ".log"

# Temporary files, renamed into place when whole; those of a dead process are leftovers
# (``psmpi clean``). The names after ``<out>.``: <pid>.tmp (a results file being created),
# merge-<pid>.tmp (psmpi merge), lock-<pid>-<hex>.tmp (a lock in the making).
LEFTOVER_TMP = r"(?:merge-)?(\d+)\.tmp|lock-(\d+)-[0-9a-f]+\.tmp"


# One study run as n jobs: shard k of ``study.h5`` writes ``study.shard-003-of-100.h5``
# (k and n zero-padded to the width of n - 1, at least 3 digits).
SHARD_NAME = "{stem}.shard-{k:0{w}d}-of-{n:0{w}d}{ext}"
SHARD_PATTERN = r"\.shard-(\d+)-of-(\d+)"  # after the stem, before the extension


def shard_path(path: str, k: int, n: int) -> str:
    """The file shard ``k`` of ``n`` writes for the study whose file is ``path``."""
    stem, ext = _split_ext(path)
    return SHARD_NAME.format(stem=stem, k=k, n=n, w=max(3, len(str(n - 1))), ext=ext)


def shard_glob_parts(path: str) -> tuple[str, str]:
    """(stem, extension) of study file ``path``: its shard files are stem + pattern + ext."""
    return _split_ext(path)


def _split_ext(path: str) -> tuple[str, str]:
    stem, ext = os.path.splitext(path)
    return (stem, ext) if ext else (path, "")


def lock_path(path: str) -> str:
    """The lock file of results file ``path``."""
    return path + LOCK_SUFFIX


def running_path(path: str) -> str:
    """The report of what the workers of the survey writing ``path`` hold now."""
    return path + RUNNING_SUFFIX


def attempts_path(path: str) -> str:
    """The attempt counts of results file ``path``."""
    return path + ATTEMPTS_SUFFIX


def creating_path(path: str, pid: int) -> str:
    """Where process ``pid`` writes a new results file ``path`` before renaming it."""
    return f"{path}.{pid}.tmp"


def merging_path(path: str, pid: int) -> str:
    """Where ``psmpi merge`` (process ``pid``) builds the merged ``path``."""
    return f"{path}.merge-{pid}.tmp"


def lock_making_path(lock: str, pid: int, tag: str) -> str:
    """Where process ``pid`` makes lock file ``lock`` before linking it into place."""
    return f"{lock}-{pid}-{tag}.tmp"

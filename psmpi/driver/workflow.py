"""What happens around one map for the study workflows: simulate, backup and git.

``simulate=True`` runs the whole map against a copy of the results file, with a worker that
is never called, so the user sees what a real run would add. ``backup=True`` copies the
results file (and the calc dir) before a run extends it. ``git=True`` checks for a repository
before computing anything, and commits the results file and (when it lies in the same
repository) the study script afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any

from .. import history
from ..errors import StoreError
from ..layout import SIMULATE_SUFFIX, attempts_path, lock_path


def simulated_worker(pset: dict) -> None:
    """Stands in for the worker when simulate=True: nothing is computed, no result columns."""
    return None


def copy_for_simulation(path: str | None) -> str | None:
    """A fresh copy of the results file (and its attempt counts) to simulate on.

    ``study.h5`` -> ``study.simulate.h5``, replacing an earlier simulation's copy.
    """
    if path is None:
        return None
    stem, ext = os.path.splitext(path)
    copy = stem + SIMULATE_SUFFIX + (ext or ".h5")
    for leftover in (copy, attempts_path(copy), lock_path(copy)):
        if os.path.exists(leftover):
            os.unlink(leftover)
    for source, target in ((path, copy), (attempts_path(path), attempts_path(copy))):
        if os.path.exists(source):
            try:
                shutil.copyfile(source, target)
            except OSError as exc:  # a full disk: no half copy to simulate on
                for made in (copy, attempts_path(copy)):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(made)
                raise StoreError(f"cannot copy {source} to {target} for simulate=True "
                                 f"({exc.strerror or exc}); free disk space (or fix the file "
                                 f"system) and run again: {path} is untouched") from exc
    return copy


def study_script() -> str | None:
    """The running script's path, if Python was started with one."""
    script = getattr(sys.modules.get("__main__"), "__file__", None)
    return os.path.abspath(script) if script and os.path.isfile(script) else None


def prepare(settings: Any, path: str | None, worker: Callable) -> tuple[str | None, Callable]:
    """Before a map: the file and worker to use, the backup made, git checked."""
    if settings.simulate:
        return copy_for_simulation(path), simulated_worker
    if settings.git:  # refuse before computing, not after hours of it
        history.git_repository(os.path.dirname(os.path.abspath(path or ".")))
    if settings.backup and path is not None:
        for made in history.backup_results(path, settings.calc_dir):
            if settings.verbose:
                print(f"psmpi: backup {made}", file=sys.stderr, flush=True)
    return path, worker


def record_in_git(settings: Any, path: str | None, map_name: str, run_id: str,
                  summary: str) -> str | None:
    """After a map with git=True: commit the script and the results file; the commit id."""
    if not settings.git or settings.simulate:
        return None
    root = history.git_repository(os.path.dirname(os.path.abspath(path or ".")))
    script = study_script()
    inside = script is not None and os.path.commonpath([root, script]) == root
    paths = [p for p in (script if inside else None, path) if p is not None]
    return history.git_commit(paths, f"psmpi run {run_id}: map {map_name}: {summary}")

"""What psmpi leaves beside a results file, and removing it (``psmpi clean``): the attempt
counts, the copy a ``simulate=True`` run made, temporary files of dead psmpi processes,
backups, and a dead survey's lock. On-disk names are psmpi.layout's."""

from __future__ import annotations

import contextlib
import glob
import os
import re

from .. import layout
from ..errors import StoreError
from ..store.lock import pid_alive, release_lock, take_lock
from .merging import check_psmpi_file


def leftovers(path: str) -> list[str]:
    """Temporary files of psmpi processes that died while creating or merging ``path``."""
    found = []
    for tmp in glob.glob(glob.escape(path) + ".*.tmp"):
        match = re.fullmatch(layout.LEFTOVER_TMP, tmp[len(path) + 1:])
        if match and not pid_alive(int(match.group(1) or match.group(2))):
            found.append(tmp)
            found += [layout.lock_path(tmp)] if os.path.exists(layout.lock_path(tmp)) else []
    return found


def simulation_copy(path: str) -> str | None:
    """The copy a ``simulate=True`` run made of ``path``, if there is one and it is psmpi's."""
    stem, ext = os.path.splitext(path)
    copy = stem + layout.SIMULATE_SUFFIX + (ext or ".h5")
    try:
        check_psmpi_file(copy)
    except StoreError:
        return None
    return copy


def clean_targets(path: str, backups: bool = False) -> list[str]:
    """What :func:`clean` removes: ``path`` and the files psmpi made beside it that exist."""
    simulation = simulation_copy(path)
    files = [path, layout.attempts_path(path)]
    files += [simulation, layout.attempts_path(simulation)] if simulation else []
    found = [f for f in files if os.path.exists(f)] + leftovers(path)
    if backups:
        found += sorted(glob.glob(glob.escape(path) + layout.BACKUP_INFIX + "*"))
    return found


def remove_files(path: str, targets: list[str]) -> None:
    """Remove ``targets`` (from :func:`clean_targets`) holding the locks of ``path`` and of
    its simulation copy: a running survey is refused, a dead one's lock reclaimed and removed."""
    simulation = simulation_copy(path)
    held = [take_lock(p) for p in [path] + ([simulation] if simulation else [])]
    try:
        for target in targets:
            with contextlib.suppress(FileNotFoundError):
                os.remove(target)
    finally:
        for lock_file in held:
            release_lock(lock_file)


def clean(path: str, backups: bool = False) -> list[str]:
    """Delete a results file and what psmpi made beside it, without asking.

    Removes ``path``, its attempt counts, the copy a ``simulate=True`` run made, temporary
    files of dead psmpi processes, the lock of a dead survey, and with ``backups`` the
    backups ``path.bak-*``. Calc directories are never touched.

    Parameters
    ----------
    path : str
        The results file.
    backups : bool
        Also remove its backups.

    Returns
    -------
    list of str
        The files removed (the lock not counted).

    Raises
    ------
    StoreError
        If ``path`` exists and is not a psmpi file, or a running survey holds it.
    """
    if os.path.exists(path):
        check_psmpi_file(path)  # never delete a file psmpi did not write
    targets = clean_targets(path, backups)
    remove_files(path, targets)
    return targets

"""A study's history: timestamped backups of the results, and git commits of a run.

:func:`backup_results` copies ``study.h5`` to ``study.h5.bak-<UTC time>`` (and ``calc/`` to
``calc.bak-<the same time>``) before a run extends them: ``map(backup=True)``.
:func:`git_commit` commits named files (the study script, small result files) with a
message, leaving every other change of the user's work tree and index alone:
``map(git=True)``. Both can also be called by hand.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
from collections.abc import Iterable

from .errors import ConfigError, StoreError, warn
from .layout import BACKUP_INFIX
from .store.lock import release_lock, take_lock

# Keep free after a backup, so the run that follows still has room for its commits
# (psmpi stops writing below this much free space anyway, see store.MIN_FREE_BYTES).
_HEADROOM_BYTES = 16 * 2**20
GIT_MAX_BYTES = 10 * 2**20
"""Files larger than this are left out of :func:`git_commit` (with a warning)."""
_GIT_TIMEOUT = 120  # seconds per git call: a hook or a lock held by another git may block


# ------------------------------------------------------------------------------- backups
def backup_stamp() -> str:
    """The current UTC time as used in backup names, e.g. ``20240501T123005Z``."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def backup_results(path: str | os.PathLike, calc_dir: str | os.PathLike | None = None) -> list[str]:
    """Copy the results file, and the calc dir if it exists, to timestamped backups.

    The copies are ``<path>.bak-<UTC time>`` and ``<calc_dir>.bak-<the same time>``,
    beside the originals (a ``-2``, ``-3``... suffix is added if that name is taken).
    Each is written under a temporary name and renamed when complete, so a backup that
    exists is whole. The results file's lock is held during the copy: a file that another
    process is writing is refused, never copied half-written.

    Call it before opening the results file for writing (``map()`` does, with
    ``backup=True``): this process's own open store holds the lock too.

    Parameters
    ----------
    path : str or os.PathLike
        The results file. Nothing is copied if it does not exist yet.
    calc_dir : str or os.PathLike, optional
        The directory of per-pset output directories; copied if it exists.

    Returns
    -------
    list of str
        The backups made: the results file's first, then the calc dir's; empty if
        neither exists.

    Raises
    ------
    StoreError
        If another process is writing the file, or the disk has no room for the copy
        (nothing is left behind then).
    """
    path = os.fspath(path)
    sources = [p for p in (path, None if calc_dir is None else os.fspath(calc_dir))
               if p is not None and os.path.exists(p)]
    if not sources:
        return []
    suffix = _free_suffix(sources)
    lock = take_lock(path) if os.path.isfile(path) else None
    try:
        made = []
        for src in sources:
            _check_room(src)
            made.append(_copy_whole(src, src + suffix))
        return made
    finally:
        release_lock(lock)


def _free_suffix(sources: list[str]) -> str:
    """``.bak-<stamp>``, with ``-2``, ``-3``... when a backup of this second exists."""
    base = BACKUP_INFIX + backup_stamp()
    for n in range(1, 1000):
        suffix = base if n == 1 else f"{base}-{n}"
        if not any(os.path.lexists(src + suffix) for src in sources):
            return suffix
    raise StoreError(f"999 backups of {sources[0]} in one second: remove some {base}-* files")


def _size(src: str) -> int:
    if os.path.isfile(src):
        return os.path.getsize(src)
    total = 0
    for root, _, files in os.walk(src):
        for name in files:
            file = os.path.join(root, name)
            if not os.path.islink(file):
                total += os.path.getsize(file)
    return total


def _check_room(src: str) -> None:
    directory = os.path.dirname(os.path.abspath(src))
    st = os.statvfs(directory)
    free, needed = st.f_bavail * st.f_frsize, _size(src) + _HEADROOM_BYTES
    if free < needed:
        raise StoreError(f"no room to back up {src}: it needs {needed / 2**20:.0f} MiB "
                         f"(with headroom), {free / 2**20:.0f} MiB are free in {directory}; "
                         "free some space or drop backup=True")


def _copy_whole(src: str, dst: str) -> str:
    """Copy a file or directory tree to ``dst`` via a temporary name in the same directory."""
    tmp = os.path.join(os.path.dirname(dst), f".{os.path.basename(dst)}.tmp-{os.getpid()}")
    _remove(tmp)  # left by an earlier process with this pid that was killed mid-copy
    try:
        if os.path.isdir(src):
            shutil.copytree(src, tmp, symlinks=True)
        else:
            shutil.copy2(src, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())  # the rename must not land before the data
        os.rename(tmp, dst)
    except OSError as exc:
        _remove(tmp)
        raise StoreError(f"cannot back up {src} to {dst}: {exc}") from exc
    return dst


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


# ----------------------------------------------------------------------------------- git
def git_commit(paths: Iterable[str | os.PathLike], message: str, *,
               max_bytes: int = GIT_MAX_BYTES) -> str | None:
    """Commit exactly the named files, with ``message``; return the new commit's id.

    Only these paths are committed: changes the user has staged for other files stay
    staged and uncommitted, other modified files stay untouched. New (untracked) files
    are added. Files ignored by ``.gitignore``, files that do not exist and files larger
    than ``max_bytes`` are left out; the last two with a warning naming them. Commit
    hooks run as for any commit.

    Parameters
    ----------
    paths : iterable of str or os.PathLike
        Files inside one git work tree (directories are refused).
    message : str
        The commit message.
    max_bytes : int
        Larger files are skipped: keep big results out of git (or use git-lfs).

    Returns
    -------
    str or None
        The commit id (40 hex digits), or None when none of the files changed.

    Raises
    ------
    ConfigError
        If git is not installed, the files are not in a git repository, a path is a
        directory or outside the repository, or git refuses the commit (its message
        is included).
    """
    git = _git_program()
    # directories resolved as git resolves its top level, so relative paths come out right
    # when the repository is reached through a symlink; a symlinked file stays itself
    files = [os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(p))),
                          os.path.basename(os.fspath(p))) for p in paths]
    for f in files:
        if os.path.isdir(f):
            raise ConfigError(f"git_commit: {f} is a directory; name the files to commit")
    start = next((os.path.dirname(f) for f in files if os.path.isdir(os.path.dirname(f))),
                 os.getcwd())
    root = git_repository(start)
    files = _committable(git, root, files, max_bytes)
    if not files:
        return None
    rel = [os.path.relpath(f, root) for f in files]
    _git(git, root, "add", "--", *rel)
    if _git(git, root, "diff", "--cached", "--quiet", "--", *rel, check=False).returncode == 0:
        return None  # staged == HEAD for every file: nothing new to record
    # a pathspec makes this an --only commit: the rest of the index is kept as it was
    _git(git, root, "commit", "--quiet", "-m", message, "--", *rel)
    return _git(git, root, "rev-parse", "HEAD").stdout.strip()


def git_repository(path: str | os.PathLike = ".") -> str:
    """The top directory of the git work tree holding ``path`` (a directory).

    Call it before a long run with ``git=True`` so that a missing git or repository is
    reported before anything is computed.

    Raises
    ------
    ConfigError
        If git is not installed or ``path`` is not inside a git work tree.
    """
    start = os.path.abspath(os.fspath(path))
    probe = _git(_git_program(), start, "rev-parse", "--show-toplevel", check=False)
    if probe.returncode != 0:
        raise ConfigError(f"git=True, but {start} is not inside a git repository "
                          f"({probe.stderr.strip()}); run `git init` there or drop git=True")
    return probe.stdout.strip()


def _git_program() -> str:
    git = shutil.which("git")
    if git is None:
        raise ConfigError(f"git=True needs the git program, which is not on PATH "
                          f"({os.environ.get('PATH', '')}); install git or drop git=True")
    return git


def _committable(git: str, root: str, files: list[str], max_bytes: int) -> list[str]:
    """The files to commit: existing, inside ``root``, not ignored, not too large."""
    keep, absent, large = [], [], []
    for f in dict.fromkeys(files):  # de-duplicated, order kept
        if os.path.commonpath([f, root]) != root:
            raise ConfigError(f"git_commit: {f} is outside the git repository {root}; keep "
                              "the study's files in one repository")
        if not os.path.exists(f):
            absent.append(f)
        elif os.path.getsize(f) > max_bytes:
            large.append(f"{f} ({os.path.getsize(f) / 2**20:.1f} MiB)")
        else:
            keep.append(f)
    if absent:
        warn(f"git: not committing {absent}: no such file")
    if large:
        warn(f"git: not committing {large}: larger than {max_bytes / 2**20:.1f} MiB; "
             "track them with git-lfs, or add them to .gitignore to silence this")
    if keep:
        rel = [os.path.relpath(f, root) for f in keep]
        # check-ignore takes plain names on stdin (it refuses --literal-pathspecs)
        found = _git(git, root, "check-ignore", "-z", "--stdin", check=False, literal=False,
                     stdin="\0".join(rel) + "\0").stdout
        ignored = set(found.split("\0"))
        keep = [f for f, r in zip(keep, rel) if r not in ignored]
    return keep


def _git(git: str, cwd: str, *args: str, check: bool = True, literal: bool = True,
         stdin: str | None = None) -> subprocess.CompletedProcess:
    # --literal-pathspecs: a file named "*.h5" means that file, not a glob
    cmd = [git, "--literal-pathspecs", *args] if literal else [git, *args]
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, input=stdin,
                              stdin=None if stdin is not None else subprocess.DEVNULL,
                              timeout=_GIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"`git {' '.join(args[:1])}` in {cwd} did not finish within "
                          f"{_GIT_TIMEOUT} s (a hook waiting, or another git holding the "
                          "index lock?)") from None
    if check and proc.returncode != 0:
        raise ConfigError(f"`git {' '.join(args)}` in {cwd} failed with status "
                          f"{proc.returncode}: {(proc.stderr or proc.stdout).strip()}")
    return proc

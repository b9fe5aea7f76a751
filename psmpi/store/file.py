"""The file's life cycle: creating and opening it, the checks on opening, free space, and
:class:`Store`, the file opened for writing (lock, flush, fsync, close).

A file is created whole under a temporary name and renamed into place, with a version-2
(checksummed) superblock; writers use the HDF5 1.10 object formats. :func:`open_h5` refuses
a file that reaches outside itself (any link that is not a hard link) and lets HDF5's end
of allocated space cover a file a killed writer left (:func:`_cover_the_whole_file`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, DamageError, InternalError, PsmpiError, StoreError
from ..layout import (
    CREATED_ATTR,
    FORMAT,
    FORMAT_ATTR,
    N_PSETS_ATTR,
    RESULTS,
    TABLE_KINDS,
    VERSION_ATTR,
    creating_path,
    lock_path,
)
from . import linking
from .damage import _CHECK_HINT, _H5_ERRORS, _reason
from .lock import release_lock, take_lock, utc_now
from .schema import _check_name
from .table import Table

if TYPE_CHECKING:
    import h5py

# psmpi stops writing when less than this is free on the file's file system: HDF5 2.0
# segfaults inside H5Dwrite when the disk fills (measured), so the only clean way out is to
# stop before. Costs one statvfs per commit.
MIN_FREE_BYTES = 16 * 2**20
# Library version bounds. The file is created with HDF5 1.8's version-2 superblock, which is
# checksummed; its objects are written in the 1.10 formats (object headers version 2 and
# extensible-array chunk indexes), whose metadata HDF5 checksums as well. Not the 1.10
# superblock (version 3): it records "open for writing", and HDF5 then refuses readers while
# a run writes and the file of a killed run (measured with HDF5 2.0 and locking=False).
_CREATE_LIBVER = ("v108", "latest")
_WRITE_LIBVER = ("v110", "latest")


def _nothing() -> None:
    pass


@functools.cache
def _version() -> str:
    try:
        from importlib.metadata import version
        return version("psmpi")
    except Exception:
        return str(getattr(sys.modules.get(__package__ or ""), "__version__", "unknown"))


class Store:
    """An HDF5 results file opened for writing; use :meth:`Store.open`."""

    def __init__(self, f: h5py.File, path: str | None, lock: str | None, fsync_interval: float):
        self._f: h5py.File | None = f
        self.between_columns: Callable[[], None] = _nothing  # see serving_between_columns
        self.path, self._lock, self._fsync_interval = path, lock, fsync_interval
        self._last_fsync = time.monotonic()
        self._tables: dict[tuple[str, str], Table] = {}
        self._broken = False  # a write failed: nothing more is written
        self._max_growth = 0  # bytes the file grew by in its largest commit
        self._size_before = 0

    @classmethod
    def open(cls, path: str | os.PathLike | None, *, fsync_interval: float = 10.0) -> Store:
        """Open (or create) a results file for writing and take its lock.

        Parameters
        ----------
        path : str, os.PathLike or None
            The HDF5 file; None keeps everything in memory (nothing touches the disk).
        fsync_interval : float
            Seconds between ``fsync`` calls after commits (node-crash safety).

        Raises
        ------
        StoreError
            The directory is missing or unwritable, another live process holds the lock,
            or the file is not a psmpi HDF5 file.
        """
        import h5py
        if path is None:
            f = h5py.File(f"psmpi-memory-{uuid.uuid4().hex}.h5", "w", driver="core",
                          backing_store=False, track_order=True, libver=_WRITE_LIBVER)
            f.attrs[FORMAT_ATTR] = FORMAT
            return cls(f, None, None, fsync_interval)
        path = os.fspath(path)
        _check_writable(path)
        _check_free_space(path, MIN_FREE_BYTES)
        lock = take_lock(path)
        try:
            f = open_h5(path, "a")
        except BaseException:
            release_lock(lock)
            raise
        return cls(f, path, lock, fsync_interval)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.path or 'memory'!r})"

    def _file(self) -> h5py.File:
        if self._f is None:
            raise StoreError(f"{self} is closed")
        return self._f

    @contextlib.contextmanager
    def serving_between_columns(self, serve: Callable[[], None]) -> Iterator[None]:
        """Call ``serve`` between the columns of every commit made inside the ``with``
        block: the driver hands out groups meanwhile (a commit of 50,000 rows takes 50-150
        ms, longer than a group of trivial psets). What ``serve`` sees of a table is its
        state before the commit: rows count only at the commit's end."""
        self.between_columns = serve
        try:
            yield
        finally:
            self.between_columns = _nothing

    def table(self, map_name: str, kind: str = RESULTS) -> Table:
        """The table ``kind`` ("results" or "failures") of map ``map_name``, created if missing."""
        import h5py
        problem = _check_name(map_name)
        if problem is not None:
            raise ConfigError(problem + "; choose another name=")
        if kind not in TABLE_KINDS:
            raise InternalError(f"table kind {kind!r} is not one of {TABLE_KINDS}")
        if (map_name, kind) not in self._tables:
            f = self._file()
            try:
                group = f.get(map_name)
                if group is None:  # made whole, then linked (linking.py)
                    group = linking.new_group(f)
                    group.attrs.update({CREATED_ATTR: utc_now(), VERSION_ATTR: _version()})
                    linking.link([(f, map_name, group)])
                    group = f[map_name]
                elif not isinstance(group, h5py.Group):
                    raise StoreError(f"{self.path} has an object {map_name!r} that is not a psmpi map")
                table = linking.require_group(group, kind)
            except (OSError, RuntimeError, KeyError, ValueError) as exc:
                if isinstance(exc, PsmpiError):
                    raise
                raise DamageError(f"{self.path}: map {map_name!r} ({kind}) cannot be opened "
                                  f"({_reason(exc)}): the file is damaged; "
                                  f"{_CHECK_HINT.format(path=self.path)}") from exc
            self._tables[map_name, kind] = Table(table, self)
        return self._tables[map_name, kind]

    def note_planned(self, map_name: str, n_psets: int) -> None:
        """Record how many psets the current run of ``map_name`` has (``psmpi status``).

        Written once per run, before any row, and flushed: an attribute of fixed size
        rewritten in place, not a new object among the commits.
        """
        self.table(map_name)  # the map's group exists from here on
        self._file()[map_name].attrs[N_PSETS_ATTR] = np.int64(n_psets)
        self._file().flush()

    def note_map_attrs(self, map_name: str, attrs: dict) -> None:
        """Set attributes of map ``map_name``'s group (e.g. a shard's), flushed."""
        self.table(map_name)
        self._file()[map_name].attrs.update(attrs)
        self._file().flush()

    def map_names(self) -> list[str]:
        """Names of the maps in the file, in creation order."""
        return maps_in(self._file())

    def flush(self, fsync: bool = False) -> None:
        """Write HDF5's buffers to the OS; with ``fsync`` also to the disk."""
        f = self._file()
        f.flush()
        if fsync and self.path is not None:
            os.fsync(f.id.get_vfd_handle())
            self._last_fsync = time.monotonic()

    def _size(self) -> int:
        return os.fstat(self._f.id.get_vfd_handle()).st_size

    def _ensure_space(self) -> None:
        """Refuse to write when the disk is nearly full: HDF5 would crash, not report it."""
        if self.path is None:
            return
        # Room for the larger of the fixed margin and a few of the largest commits so far.
        needed = max(MIN_FREE_BYTES, 4 * self._max_growth)
        try:
            _check_free_space(self.path, needed)
        except StoreError:
            self._broken = True
            raise
        self._size_before = self._size()

    def _note_growth(self) -> None:
        if self.path is not None:
            self._max_growth = max(self._max_growth, self._size() - self._size_before)

    def _close_file(self) -> None:
        try:
            self._f.close()
        except (OSError, RuntimeError):
            if not self._broken:
                raise

    def _maybe_fsync(self) -> None:
        if self.path is not None and time.monotonic() - self._last_fsync >= self._fsync_interval:
            self.flush(fsync=True)

    def close(self) -> None:
        """Flush, fsync and close the file, then remove the lock file. Idempotent.

        After a failed write, the file is closed without a last flush: the committed rows
        are already on disk, and flushing into a full disk would only fail again.
        """
        if self._f is None:
            return
        try:
            if not self._broken:
                self.flush(fsync=True)
            self._close_file()
        finally:
            self._f, self._tables = None, {}
            release_lock(self._lock)


def _free_bytes(path: str) -> int:
    st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    return st.f_bavail * st.f_frsize


def _check_free_space(path: str, needed: int) -> None:
    free = _free_bytes(path)
    if free < needed:
        raise StoreError(f"only {free / 2**20:.1f} MiB free on the file system of {path}; psmpi "
                         f"stops writing below {needed / 2**20:.0f} MiB (HDF5 crashes when a disk "
                         f"fills during a write). Free disk space or choose another out=, then "
                         f"run the same command again: committed rows are kept")


def _check_writable(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise StoreError(f"cannot create {path}: directory {folder} does not exist; "
                         f"create it first (mkdir -p {folder}) or choose another path")
    if os.path.isdir(path):
        raise StoreError(f"{path} is a directory; give a file path such as {os.path.join(path, 'study.h5')}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StoreError(f"cannot write {path}: directory {folder} is not writable "
                         f"(psmpi also creates {lock_path(path)} there); choose a writable directory")
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(f"cannot write {path}: the file is not writable; fix its permissions "
                         f"or choose another path")


@functools.cache
def _libhdf5() -> Any:
    """The HDF5 library h5py runs on (the very copy loaded in this process), or None."""
    import ctypes

    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "libhdf5" in line and "_hl" not in line}
    except OSError:  # not Linux
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)  # already loaded: the same instance, so h5py's ids are valid
            lib.H5Fget_eoa.argtypes = [ctypes.c_int64, ctypes.POINTER(ctypes.c_uint64)]
            lib.H5Fincrement_filesize.argtypes = [ctypes.c_int64, ctypes.c_uint64]
            return lib
        except (OSError, AttributeError):
            continue
    return None


def _cover_the_whole_file(f: h5py.File) -> bool:
    """After a killed writer: let HDF5's end of allocated space (EOA) cover the whole file.

    A writer killed inside a flush can leave chunks (and the index pointing at them) on disk
    while the superblock still records the EOA from before they were allocated. The next
    writer then gets "addr overflow" when it rewrites such a chunk (measured: a SIGKILL loop
    failed so in about one run of 32 kills in a few). A clean close leaves EOA == end of file;
    a larger file is this case, and ``H5Fincrement_filesize`` (what ``h5clear --increment``
    does) raises the EOA to the end of the file; a reader's handle only in memory. Returns
    True if it had to. Measured: 18 of 128 SIGKILLs of a writer left such a file.
    """
    lib = _libhdf5()
    if lib is None:
        return False
    import ctypes

    eoa = ctypes.c_uint64()
    if lib.H5Fget_eoa(f.id.id, ctypes.byref(eoa)) < 0:
        return False
    eof = os.fstat(f.id.get_vfd_handle()).st_size
    if eof <= eoa.value:
        return False
    if lib.H5Fincrement_filesize(f.id.id, 0) < 0:
        raise StoreError(f"{f.filename} was left by a writer killed in the middle of a flush, "
                         f"and HDF5 refused to take in its last {eof - eoa.value} bytes; "
                         f"run `psmpi check {f.filename}`")
    return True


def _create_empty(path: str) -> None:
    """Make ``path`` an empty results file: written beside it, then renamed into place."""
    import h5py
    tmp = creating_path(path, os.getpid())
    try:
        with h5py.File(tmp, "w", locking=False, track_order=True, libver=_CREATE_LIBVER) as f:
            f.attrs[FORMAT_ATTR] = FORMAT
        os.replace(tmp, path)
    except OSError as exc:  # a disk filled since the free-space check, a lost mount
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise StoreError(f"cannot create {path} ({exc}); free disk space (or fix the file "
                         f"system) and run the same command again") from exc


def open_h5(path: str, mode: str) -> h5py.File:
    """Open ``path`` with h5py (mode "a" creates it if missing or empty, or "r"), checking it
    is a psmpi results file that reaches nothing outside itself; StoreError with the fix if
    not. No lock: :meth:`Store.open` takes it.

    Every link of the file is walked first (about 5 us a link) and any that is not a hard
    link is refused: an external link, or a soft link that may lead to one, would make HDF5
    open another file. Datasets with external storage or a virtual layout are refused where
    psmpi opens them (:class:`Table`), before their data is touched.
    """
    import h5py
    if mode == "r" and not os.path.isfile(path):
        raise StoreError(f"{path} does not exist")
    if mode == "r" and os.path.getsize(path) == 0:
        raise StoreError(f"{path} is empty (0 bytes): no results were written to it yet")
    if mode == "a" and (not os.path.exists(path) or os.path.getsize(path) == 0):
        # Created whole, then renamed: never half-made. An empty file (`touch study.h5`)
        # holds nothing to lose, so it is replaced the same way.
        _create_empty(path)
    # The writer has no raw-data chunk cache: it writes each chunk once, and with HDF5 2.0's
    # default 1 MiB cache the writer's memory grew by the size of everything written
    # (measured: 80 MiB more per 77 MiB of data, freed neither by flush nor by close).
    options = {"rdcc_nbytes": 0, "libver": _WRITE_LIBVER} if mode == "a" else {}
    try:
        f = h5py.File(path, mode, locking=False, **options)
    except OSError as exc:
        raise StoreError(f"{path} is not an HDF5 file (or is damaged) and cannot be opened: {exc}; "
                         f"psmpi writes its results as HDF5, so choose another path") from None
    # Readers too: the space is only taken in memory, so they read what is there.
    _cover_the_whole_file(f)
    try:
        _check_links(f, path)
        try:
            fmt = f.attrs.get(FORMAT_ATTR)
        except _H5_ERRORS as exc:
            raise DamageError(f"{path}: the attributes of the file cannot be read ({_reason(exc)}): "
                              f"the file is damaged") from exc
        if fmt is None or int(fmt) > FORMAT:
            what = ("was written by a newer psmpi" if fmt is not None
                    else "is an HDF5 file but not a psmpi results file")
            raise StoreError(f"{path} {what}; choose another path")
    except BaseException:
        f.close()
        raise
    return f


def _check_links(f: h5py.File, path: str) -> None:
    """Refuse every link that is not a hard link (psmpi writes none); names the first few."""
    import h5py
    found: list[str] = []
    link_kinds = {h5py.h5l.TYPE_SOFT: "a soft link", h5py.h5l.TYPE_EXTERNAL: "an external link"}

    def visit(name: bytes, info: Any) -> None:
        if info.type != h5py.h5l.TYPE_HARD:
            kind = link_kinds.get(info.type, "a user-defined link")
            try:
                target = f.id.links.get_val(name)
                target = (":".join(t.decode("utf-8", "replace") for t in target)
                          if isinstance(target, tuple) else target.decode("utf-8", "replace"))
            except _H5_ERRORS:
                target = "?"
            found.append(f"{name.decode('utf-8', 'replace')!r} is {kind} to {target}")

    try:
        f.id.links.visit(visit, info=True)
    except _H5_ERRORS as exc:
        raise DamageError(f"{path}: the groups of the file cannot be read ({_reason(exc)}): the "
                          f"file is damaged; {_CHECK_HINT.format(path=path)}") from exc
    if found:
        more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
        raise StoreError(f"{path}: {'; '.join(found[:5])}{more}. psmpi reads and writes nothing "
                         f"outside the results file and never makes links: this file was altered; "
                         f"choose another file")


def maps_in(f: h5py.File) -> list[str]:
    """Names of the maps in an open results file, in creation order."""
    import h5py
    try:
        return [name for name, obj in f.items() if isinstance(obj, h5py.Group)]
    except _H5_ERRORS as exc:
        raise DamageError(f"{f.filename}: the list of maps cannot be read ({_reason(exc)}): the "
                          f"file is damaged; {_CHECK_HINT.format(path=f.filename)}") from exc

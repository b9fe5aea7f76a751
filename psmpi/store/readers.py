"""The public readers: :func:`read` a map of a results file, :func:`map_names`, and
:func:`reading`, which opens a file read-only and retries while a writer holds its lock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from ..errors import DamageError, InternalError, PsmpiError, StoreError
from ..layout import FAILURES, RESULTS, lock_path
from .bookkeeping import readable
from .damage import _CHECK_HINT, _H5_ERRORS, _NoColumn, _reason
from .file import maps_in, open_h5
from .table import Table

if TYPE_CHECKING:
    import h5py
    import pandas as pd

T = TypeVar("T")


def map_names(path: str | os.PathLike) -> list[str]:
    """Names of the maps in a results file (opened read-only, without the lock)."""
    with open_h5(os.fspath(path), "r") as f:
        return maps_in(f)


def read(path: str | os.PathLike, name: str | None = None, *, failures: bool = False,
         unpickle: bool = False) -> pd.DataFrame:
    """Read the committed rows of one map of a results file.

    Opens the file read-only without taking the lock, so it works while a run writes it.

    Parameters
    ----------
    path : str or os.PathLike
        The results file.
    name : str, optional
        The map; by default the only map in the file.
    failures : bool
        Read the failed psets instead of the results.
    unpickle : bool
        Unpickle the values stored as pickles (values with no portable encoding). By
        default they are returned as the bytes of their pickle: unpickling a file from
        elsewhere can run any code.

    Returns
    -------
    pandas.DataFrame
        See :meth:`Table.read`; the bookkeeping columns as :func:`psmpi.store.bookkeeping.readable`
        gives them (``_time_utc`` as UTC datetimes, an older psmpi's names mapped to today's).
    """
    path, kind = os.fspath(path), FAILURES if failures else RESULTS
    return readable(reading(path, lambda f: _read_table(f, path, name, kind, unpickle)))


def reading(path: str, read: Callable[[h5py.File], T]) -> T:
    """``read(file)`` on ``path`` opened read-only; every error a PsmpiError.

    While a writer holds the lock, a failure is retried twice 0.2 s apart: a reader may
    catch a chunk or an index in the middle of a write. Otherwise a failure is damage.
    """
    for attempt in range(3):
        retry = attempt < 2 and os.path.exists(lock_path(path))
        try:
            with open_h5(path, "r") as f:
                return read(f)
        except (PsmpiError, _NoColumn) as exc:
            if not (retry and isinstance(exc, DamageError)):
                raise  # not a psmpi file, no such map or column, ...
        except _H5_ERRORS as exc:
            if not retry:
                raise DamageError(f"cannot read {path} ({_reason(exc)}): the file is damaged, or "
                                  f"was being written at that instant (then retry); "
                                  f"{_CHECK_HINT.format(path=path)}") from exc
        time.sleep(0.2)
    raise InternalError("unreachable")


def _read_table(f: h5py.File, path: str, name: str | None, kind: str,
                unpickle: bool = False) -> pd.DataFrame:
    import pandas as pd

    names = maps_in(f)
    if name is None and len(names) != 1:
        raise StoreError(f"{path} holds {len(names)} maps {names}; pass name= to choose one")
    name = names[0] if name is None else name
    if name not in names:
        raise StoreError(f"{path} has no map {name!r}; its maps are {names}")
    if kind not in f[name]:
        return pd.DataFrame()
    table = Table(f[name][kind])
    table.unpickle = unpickle
    return table.read()

"""init() and map(): resolve settings, pick the backend, hand over to the run loop."""

from __future__ import annotations

import atexit
import collections
import contextlib
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from . import config
from .config import launched_by_mpi
from .errors import BackendError, ConfigError

if TYPE_CHECKING:
    from .backends import Backend
    from .results import MapResults


class _Session:
    """What init() set up: its keyword arguments and the running backend."""

    def __init__(self):
        self.init_kwargs: dict[str, Any] = {}
        self.initialised = False
        self.backend: Backend | None = None
        self.backend_key: tuple | None = None
        self.names_used: collections.Counter = collections.Counter()
        self.mpi_started = False  # worker ranks are serving: this process is rank 0
        self.executor: str | None = None  # the name of the psmpi.Executor using the backend

    def close_backend(self) -> None:
        if self.backend is not None:
            backend, self.backend, self.backend_key = self.backend, None, None
            backend.close()


_session = _Session()
atexit.register(_session.close_backend)

# Called after every map() call as observer(name, results, error): results is the MapResults,
# or None when map() raised ``error``. ``psmpi test`` listens here, so it sees every map call
# however the study imported ``map``.
MapObserver = Callable[[str, "MapResults | None", BaseException | None], None]
_observers: list[MapObserver] = []


@contextlib.contextmanager
def observing_maps(observer: MapObserver) -> Iterator[None]:
    """While active, ``observer(name, results, error)`` is called after each ``map()`` call.

    ``results`` is the call's MapResults, or None when ``map()`` raised ``error`` (the
    exception is raised on after the observers ran).
    """
    _observers.append(observer)
    try:
        yield
    finally:
        _observers.remove(observer)


def _tell_observers(name: str, results: MapResults | None, error: BaseException | None) -> None:
    for observer in _observers:
        observer(name, results, error)


def init(backend: str | None = None, **kwargs: Any) -> None:
    """Set up psmpi for this run (optional: ``map()`` calls it on first use).

    Parameters
    ----------
    backend : str, optional
        ``"serial"``, ``"multiprocessing"``, ``"mpi"`` or ``"ray"``. Default: ``"mpi"`` when
        started by an MPI launcher with more than one rank, else ``"multiprocessing"``.
    **kwargs
        Defaults for every later ``map()``: ``verbose``, ``limit``, ``ncores``,
        ``max_tasks_per_child``, ``group_size``, ``out``, ``keep_results``, ... and option
        dicts named after a backend (``multiprocessing={...}``). ``setup=fn``: ``fn(context)``
        (a :class:`psmpi.SetupContext`) runs once in each worker process before its first
        pset, its value is ``system_kwargs["setup"]`` and ``psmpi.context().setup``; a set-up
        that raises stops ``map()`` with :class:`psmpi.SetupError`. ``gpus_per_worker=k``
        gives each worker process of a node its own ``k`` GPUs (``CUDA_VISIBLE_DEVICES`` and
        the AMD/Intel equivalents). ``PSMPI_*`` environment variables override them;
        ``map()`` keywords override them for one map.
    """
    if backend is not None:
        kwargs["backend"] = backend
    config.check_kwargs(kwargs, "init()")
    refuse_if_executor_running("init() was called")
    _session.close_backend()
    _session.init_kwargs = kwargs
    _session.initialised = True
    _session.names_used.clear()
    backend_for(config.resolve({}, kwargs))


def backend_for(settings: config.Settings) -> Backend:
    """The running backend if it matches ``settings``, else a newly started one."""
    # Here, not at the top: the backends bring the task machinery (cloudpickle, hashing),
    # which `import psmpi` need not pay before a map; a worker rank pays it here.
    from .backends import auto_backend_name, backend_class

    ranks = launched_by_mpi()
    # resources=: psets launch MPI applications from this one process (not under mpiexec)
    ensemble = settings.resources is not None and ranks <= 1
    name = settings.backend or ("ensemble" if ensemble else auto_backend_name())
    # Once the MPI backend runs, only rank 0 is here and other backends are safe to use.
    if ranks > 1 and name != "mpi" and not _session.mpi_started:
        raise BackendError(f"this script was started by an MPI launcher with {ranks} ranks but "
                           f"backend={name!r} was asked for: every rank would run the whole "
                           f"survey. Leave backend unset (MPI is chosen under mpiexec) or start "
                           f"the script with plain python")
    options = settings.backend_options(name)
    if settings.resources is not None:
        if name != "ensemble":
            raise ConfigError(f"resources= needs the ensemble backend, not backend={name!r}: "
                              f"leave backend unset and run the script with plain python "
                              f"(not under mpiexec)")
        options["resources"] = settings.resources
    key = (name, settings.ncores, settings.max_tasks_per_child, repr(sorted(options.items())))
    if _session.backend is None or _session.backend_key != key:
        _session.close_backend()
        _session.backend = backend_class(name)(options, settings.ncores,
                                               settings.max_tasks_per_child)
        _session.backend_key = key
        _session.mpi_started = _session.mpi_started or name == "mpi"
    return _session.backend


def default_name(worker: Callable) -> str:
    """The worker's name, numbered from the second map with the same worker in a run.

    Deterministic, so that running the same script again resumes every map.
    """
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", getattr(worker, "__name__", "") or "map").strip("_.")
    base = base or "map"
    _session.names_used[base] += 1
    count = _session.names_used[base]
    return base if count == 1 else f"{base}-{count}"


def map(worker: Callable, psets: Any, **kwargs: Any) -> MapResults:
    """Run ``worker`` on every pset; write results to HDF5 as they arrive; return them.

    Parameters
    ----------
    worker : callable
        ``worker(pset) -> dict | None``, or paramsurvey's
        ``worker(pset, system_kwargs, user_kwargs)``. Returned keys become columns; a
        returned pset key must keep the pset's value (``return {**pset, "y": ...}``).
        An exception or a bad return value fails that pset only (see ``missing``).
    psets : list of dict, generator, DataFrame, psmpi.params.Space or Missing
        The parameter sets. Keys are str; values scalars, numpy scalars and small arrays,
        datetimes, or lists, tuples and dicts of these (see docs/guide/values.md, Psets). A
        DataFrame's ``_`` columns are dropped; the ``missing`` of an earlier map gives
        its psets exactly as they were given.
    **kwargs
        Any setting of ``init()`` for this map only (``setup``, ``gpus_per_worker``, ...),
        plus ``name`` (the map's group in the file; default: the worker's name) and
        ``user_kwargs``.

    Returns
    -------
    MapResults
        ``.results`` (DataFrame, pset order), ``.missing``, ``.progress``, ``.stats``.

    Raises
    ------
    SetupError
        The ``setup=`` function raised on a worker (rank, host and its traceback in the
        message); what was committed before is kept.
    ConfigError
        A bad setting, or fewer GPUs on a node than ``gpus_per_worker`` × its workers.

    Examples
    --------
    >>> import psmpi
    >>> def worker(pset):
    ...     return {"y": pset["a"] * pset["b"]}
    >>> res = psmpi.map(worker, psmpi.params.product({"a": [1, 2]}, {"b": [10, 20]}),
    ...                 backend="serial", out=None, verbose=0)
    >>> res.results["y"].tolist()
    [10, 20, 20, 40]
    """
    try:
        results = _map(worker, psets, kwargs)
    except Exception as exc:
        _tell_observers(kwargs.get("name") or getattr(worker, "__name__", "map"), None, exc)
        raise
    _tell_observers(results.name, results, None)
    return results


def refuse_if_executor_running(what: str) -> None:
    """One user of the backend at a time: an Executor's driver thread owns it until shutdown."""
    if _session.executor is not None:
        raise BackendError(f"{what} while psmpi.Executor {_session.executor!r} is running: it "
                           f"owns the backend until its shutdown() (or the end of its with "
                           f"block); shut it down first")


def _map(worker: Callable, psets: Any, kwargs: dict[str, Any]) -> MapResults:
    config.check_kwargs(kwargs, "map()")
    refuse_if_executor_running("map() was called")
    if not _session.initialised:
        init()
    settings = config.resolve(kwargs, _session.init_kwargs)
    backend = backend_for(settings)
    name = settings.name or default_name(worker)
    # Here, not at the top: on a worker rank backend_for() never returns (the rank serves
    # groups), and the driver with its results file is rank 0's alone.
    from .driver.run import run_map

    return run_map(worker, psets, settings, backend, name)

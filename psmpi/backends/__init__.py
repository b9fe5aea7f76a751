"""The backends: how groups of psets reach workers and their outcomes come back.

``base``: the interface every backend implements, its shared helpers and option checks;
``pool``: the skeleton of the backends that submit groups to a pool; ``serial``,
``multiprocessing``, ``ray`` and ``mpi``: one file each; ``resources``: per-pset ray
options, checked without ray. This module is the registry: name -> class, imported on
first use so that ``import psmpi`` never imports mpi4py or ray.

May import the foundations, :mod:`psmpi.worker` (the task they run) and :mod:`psmpi.store`
(the lock's process checks); never the driver, the tools or the CLI: a backend never
touches the results file.
"""

from __future__ import annotations

import importlib
import importlib.util

from ..config import launched_by_mpi
from ..errors import BackendError, ConfigError
from .base import Backend, Group

__all__ = ["Backend", "Group", "backend_class", "auto_backend_name", "launched_by_mpi"]

_REGISTRY = {
    "serial": ("psmpi.backends.serial", "SerialBackend"),
    "multiprocessing": ("psmpi.backends.multiprocessing", "MultiprocessingBackend"),
    "mpi": ("psmpi.backends.mpi", "MPIBackend"),
    "ray": ("psmpi.backends.ray", "RayBackend"),
    "ensemble": ("psmpi.backends.ensemble", "EnsembleBackend"),
}

_INSTALL_HINT = {
    "mpi": "pip install 'psmpi[mpi]' (mpi4py and the mpich wheel), or build mpi4py against "
           "your cluster's MPI",
    "ray": "pip install 'psmpi[ray]'",
}

def auto_backend_name() -> str:
    """mpi under an MPI launch with more than one rank, else multiprocessing."""
    return "mpi" if launched_by_mpi() > 1 else "multiprocessing"


def backend_class(name: str) -> type[Backend]:
    """Import and return the backend class called ``name``."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(_REGISTRY)}")
    module_name, class_name = _REGISTRY[name]
    if importlib.util.find_spec(module_name) is None:
        known = ", ".join(n for n, (m, _) in _REGISTRY.items() if importlib.util.find_spec(m))
        raise BackendError(f"backend {name!r} is not part of this version of psmpi yet; "
                           f"use one of: {known}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = _INSTALL_HINT.get(name, "")
        raise BackendError(f"backend {name!r} cannot be imported ({exc}); install it with: "
                           f"{hint}") from exc
    cls = getattr(module, class_name)
    if not cls.available():
        raise BackendError(f"backend {name!r} is not available here; {_INSTALL_HINT.get(name, '')}")
    return cls

"""psmpi: parameter surveys from a laptop to an MPI allocation, with durable HDF5 results."""

from . import params
from .api import init, map
from .errors import (BackendError, ConfigError, InternalError, PsetError, PsmpiError,
                     StoreError)
from .results import MapProgress, MapResults, Missing, PerfStats
from .store import read

__version__ = "0.1.0"

__all__ = [
    "init", "map", "read", "params",
    "MapResults", "MapProgress", "Missing", "PerfStats",
    "PsmpiError", "ConfigError", "PsetError", "StoreError", "BackendError", "InternalError",
    "__version__",
]

"""psmpi: parameter surveys from a laptop to an MPI allocation, with durable HDF5 results."""

from . import history, params, utils
from .api import init, map
from .bookkeeping import PsetContext, context
from .cleaning import clean
from .command import CommandError, run_command
from .errors import BackendError, ConfigError, InternalError, PsetError, PsmpiError, StoreError
from .merging import merge
from .post import filter_rows, missing_psets, print_table
from .results import MapProgress, MapResults, Missing, PerfStats, Timings
from .store import read
from .summary import MapSummary, status
from .templates import prep_batch
from .timers import timer

__version__ = "0.1.0"

__all__ = [
    # running a survey
    "init", "map", "params", "context", "PsetContext", "timer", "utils",
    "MapResults", "MapProgress", "Missing", "PerfStats", "Timings",
    # study workflows: batch templates, post-processing, programs per pset
    "run_command", "CommandError", "filter_rows", "print_table", "missing_psets",
    "prep_batch", "history",
    # results files, as the `psmpi` command handles them
    "read", "status", "MapSummary", "merge", "clean",
    # errors
    "PsmpiError", "ConfigError", "PsetError", "StoreError", "BackendError", "InternalError",
    "__version__",
]

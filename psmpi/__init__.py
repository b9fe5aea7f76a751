"""psmpi: parameter surveys from a laptop to an MPI allocation, with durable HDF5 results."""

from . import params, utils
from .api import init, map
from .bookkeeping import PsetContext, context
from .errors import (BackendError, ConfigError, InternalError, PsetError, PsmpiError,
                     StoreError)
from .results import MapProgress, MapResults, Missing, PerfStats, Timings
from .store import read
from .timers import timer

__version__ = "0.1.0"

__all__ = [
    "init", "map", "read", "params", "context", "PsetContext",
    "MapResults", "MapProgress", "Missing", "PerfStats", "Timings", "timer", "utils",
    "PsmpiError", "ConfigError", "PsetError", "StoreError", "BackendError", "InternalError",
    "__version__",
]

# Study workflows (issue 7): batch templates, post-processing, programs per pset
from . import history
from .command import CommandError, run_command
from .post import filter_rows, missing_psets, print_table
from .templates import prep_batch

__all__ += ["run_command", "CommandError", "filter_rows", "print_table", "missing_psets",
            "prep_batch", "history"]

# Results files as the `psmpi` command handles them (issue 14): the command is a shell over these
from .cleaning import clean
from .merging import merge
from .summary import MapSummary, status

__all__ += ["status", "MapSummary", "merge", "clean"]

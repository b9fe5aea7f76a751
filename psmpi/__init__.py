"""psmpi: parameter surveys from a laptop to an MPI allocation, with durable HDF5 results.

This module only re-exports. The package, from the bottom up (each layer imports only
from the layers below it; ``tests/test_imports.py`` checks)::

    foundations   errors, layout, values, utils, stopping, params, config, results, missing
    store/        the results file: tables, lock, attempt log, bookkeeping ids
    worker/       what runs on a worker: task, context(), timers
    backends/     how groups reach workers: serial, multiprocessing, ray, mpi
    watch/        what a running survey tells: progress, log, Carbon, statistics, stalls
    study/        helpers for study scripts: templates, run_command, post-processing
    history       backups and git commits of a study
    tools/        status, failures, merge, clean, report over results files
    driver/       one map: the orchestration loop, psets, groups, crash guard, recording
    api           init() and map()
    executor      psmpi.Executor: submit psets as results arrive (adaptive surveys)
    cli/          the psmpi command
"""

from typing import TYPE_CHECKING

from . import history, params, utils
from .api import init, map
from .errors import (
    BackendError,
    ConfigError,
    InternalError,
    PsetError,
    PsetFailed,
    PsmpiError,
    SetupError,
    StoreError,
)
from .executor import Executor, ExecutorStopped
from .results import MapProgress, MapResults, PerfStats, Timings
from .store import read
from .study.command import CommandError, run_command
from .study.mpirun import run_mpi
from .study.post import filter_rows, missing_psets, print_table
from .study.templates import prep_batch
from .tools.cleaning import clean
from .tools.merging import merge, merge_shards
from .tools.summary import MapSummary, failures, status
from .worker.context import PsetContext, context
from .worker.setup import SetupContext
from .worker.timers import timer

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ below
    from .missing import Missing

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``psmpi.Missing`` on first use (PEP 562): the class derives from pandas.DataFrame, and
    ``import psmpi`` must not import pandas (every MPI rank imports psmpi; workers never need
    pandas). Every other name above imports neither pandas nor h5py."""
    if name == "Missing":
        from .missing import Missing

        return Missing
    raise AttributeError(f"module 'psmpi' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "Missing"})  # tab completion offers the lazy name too


__all__ = [
    # running a survey
    "init", "map", "Executor", "ExecutorStopped", "params", "context", "PsetContext", "SetupContext",
    "timer", "utils",
    "MapResults", "MapProgress", "Missing", "PerfStats", "Timings",
    # study workflows: batch templates, post-processing, programs per pset
    "run_command", "run_mpi", "CommandError", "filter_rows", "print_table", "missing_psets",
    "prep_batch", "history",
    # results files, as the `psmpi` command handles them
    "read", "status", "MapSummary", "failures", "merge", "merge_shards", "clean",
    # errors
    "PsmpiError", "ConfigError", "PsetError", "StoreError", "BackendError", "InternalError",
    "SetupError", "PsetFailed", "__version__",
]

"""psmpi: parameter surveys from a laptop to an MPI allocation, with durable HDF5 results.

This module only re-exports; the names of the upper layers (history, the tools, the study
helpers, the Executor, reading a file, a map's results) are imported on first use (``_LAZY`` below), the
backends at the first ``init()`` or ``map()``, the driver at the first ``map()`` (on rank 0
alone): ``import psmpi``, which every MPI rank runs, loads none of them. The package, from
the bottom up (each layer imports only from the layers below it; ``tests/test_imports.py``
checks)::

    foundations   errors, layout, values, utils, stopping, params, config, results, missing,
                  lazy
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

from . import params, utils
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
from .lazy import lazy_names
from .worker.context import PsetContext, context
from .worker.setup import SetupContext
from .worker.timers import timer

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ below
    from . import history
    from .executor import Executor, ExecutorStopped
    from .missing import Missing
    from .results import MapProgress, MapResults, PerfStats, Timings
    from .store import read
    from .study.command import CommandError, run_command
    from .study.mpirun import run_mpi
    from .study.post import filter_rows, missing_psets, print_table
    from .study.templates import prep_batch
    from .tools.cleaning import clean
    from .tools.merging import merge, merge_shards
    from .tools.summary import MapSummary, failures, status

__version__ = "0.1.0"

# The public names imported on first use (PEP 562), and the module of each. Every MPI rank
# imports psmpi, and a worker rank needs only init/map and what a pset sees (context, timer,
# params): on thousands of ranks each module more is a storm of file-system lookups (and,
# without .pyc files, a compile). So the study helpers, history, the tools over results
# files, the Executor, reading a file and the classes of a map's results load when a name is
# first used. Missing derives from pandas.DataFrame: ``import psmpi`` must not import pandas
# (nor h5py).
_LAZY = {
    "history": ".history",
    "Executor": ".executor", "ExecutorStopped": ".executor",
    "Missing": ".missing",
    "MapProgress": ".results", "MapResults": ".results", "PerfStats": ".results",
    "Timings": ".results",
    "read": ".store",
    "CommandError": ".study.command", "run_command": ".study.command",
    "run_mpi": ".study.mpirun",
    "filter_rows": ".study.post", "missing_psets": ".study.post", "print_table": ".study.post",
    "prep_batch": ".study.templates",
    "clean": ".tools.cleaning",
    "merge": ".tools.merging", "merge_shards": ".tools.merging",
    "MapSummary": ".tools.summary", "failures": ".tools.summary", "status": ".tools.summary",
}
__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


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

"""Every setting of psmpi, resolved in one place.

Precedence, highest first::

    PSMPI_<NAME> environment variable  >  PARAMSURVEY_<NAME>  >  map(<name>=...)
        >  init(<name>=...)  >  default

The environment wins so that a user can shrink or debug a run without editing the script,
e.g. ``PSMPI_LIMIT=1 PSMPI_VERBOSE=3 python study.py``. The settings paramsurvey reads from
its environment (:data:`PARAMSURVEY_ALIASES`) also come from its ``PARAMSURVEY_<NAME>``
variables, whose values mean the same in psmpi, so paramsurvey scripts and job files work.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from . import params
from .errors import ConfigError

# Backends whose option dicts (``multiprocessing={...}``) are accepted by init() and map().
BACKEND_NAMES = ("serial", "multiprocessing", "mpi", "ray", "ensemble")

# The default output file is derived from the script name; this marks "not given".
AUTO = "auto"


def _parse_int(text: str) -> int:
    return int(text)


def _parse_optional_int(text: str) -> int | None:
    return None if text.strip().lower() in ("", "none", "auto", "0") else int(text)


def _parse_optional_float(text: str) -> float | None:
    return None if text.strip().lower() in ("", "none") else float(text)


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _parse_out(text: str) -> str | None:
    return None if text.strip().lower() in ("", "none") else text


def _parse_str(text: str) -> str:
    return text


def _parse_shard(text: str) -> tuple[int, int] | bool | None:
    """``PSMPI_SHARD``: "k/n" (shard k of n, k from 0), "array:LOW-HIGH[:STEP]" (a task of
    the Slurm job array LOW-HIGH, when part of it is resubmitted), "off" (no sharding, not
    even in a Slurm job array), "" or "auto" (a Slurm job array's, else none)."""
    value = text.strip().lower()
    if value in ("", "auto", "none"):
        return None
    if value in ("off", "no", "false", "0"):
        return False
    if value.startswith("array:"):
        return value
    k, sep, n = value.partition("/")
    if not sep:
        raise ValueError(text)
    return int(k), int(n)


SHARD_ARRAY = re.compile(r"array:(\d+)-(\d+)(?::(\d+))?$")


def _check_shard(value: Any) -> str | None:
    if value is None or value is False:
        return None
    if isinstance(value, str) and SHARD_ARRAY.match(value):
        return None
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(map(_is_int, value)) \
            and value[1] >= 1 and 0 <= value[0] < value[1]:
        return None
    return ("must be (k, n) with 0 <= k < n (shard k of n), 'array:LOW-HIGH[:STEP]' (a task "
            "of that Slurm job array), False (no sharding) or None (a Slurm job array's task, "
            "else no sharding)")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_in(low: int, high: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not _is_int(value) or not low <= value <= high:
            upper = "" if high == math.inf else f" and <= {high}"
            return f"must be an int >= {low}{upper}"
        return None
    return check


def _optional(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    def check_optional(value: Any) -> str | None:
        if value is None:
            return None
        message = check(value)
        return None if message is None else message + " or None"
    return check_optional


def _check_ncores(value: Any) -> str | None:
    if value is not None and (not _is_int(value) or value == 0):
        return "must be a non-zero int (negative: leave that many cores free) or None (all cores)"
    return None


def _check_positive_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        return "must be a number > 0"
    return None


def _check_backend(value: Any) -> str | None:
    if value is not None and value not in BACKEND_NAMES:
        return f"must be one of {', '.join(BACKEND_NAMES)} or None (automatic)"
    return None


def _check_name(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or "/" in value or "\0" in value \
            or value in (".", "..") or len(value) > 255:
        return "must be a non-empty str of at most 255 characters without '/' or NUL"
    if not params.utf8_encodable(value):
        return ("is a str that UTF-8 cannot encode (a lone surrogate, as left by "
                "errors='surrogateescape'); choose a name of plain characters, e.g. "
                "name.encode('utf-8', 'replace').decode()")
    return None


def _check_out(value: Any) -> str | None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        return "must be a path (str or os.PathLike) or None (results in memory only)"
    return None


def _check_bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be True or False"


def _check_dict(value: Any) -> str | None:
    return None if value is None or isinstance(value, dict) else "must be a dict or None"


def _check_optional_str(value: Any) -> str | None:
    return None if value is None or (isinstance(value, str) and value) else \
        "must be a non-empty str or None"


def _check_str(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "must be a non-empty str"


def _check_resources(value: Any) -> str | None:
    if value is None or isinstance(value, dict) or callable(value):
        return None
    return "must be a dict like {'ranks': 4} or a function of the pset returning one"


def _check_callable(value: Any) -> str | None:
    return None if value is None or callable(value) else "must be a callable or None"


def _check_cost(value: Any) -> str | None:
    if value is None or callable(value) or value == "auto":
        return None
    return "must be a callable cost(pset) -> float, \"auto\" or None"


# Settings paramsurvey documents as PARAMSURVEY_<NAME> variables. Their values mean the same
# in psmpi (psmpi accepts more: backends serial and mpi, group_size=auto), so they are read
# as they are.
PARAMSURVEY_ALIASES = frozenset({"backend", "verbose", "vstats", "limit", "ncores",
                                 "max_tasks_per_child", "group_size"})


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting: its default, how to parse its PSMPI_* variable, how to check it."""

    name: str
    default: Any
    check: Callable[[Any], str | None]
    parse_env: Callable[[str], Any] | None
    doc: str

    @property
    def env_var(self) -> str | None:
        return None if self.parse_env is None else "PSMPI_" + self.name.upper()

    @property
    def env_vars(self) -> tuple[str, ...]:
        """The environment variables of this setting, the one that wins first."""
        if self.parse_env is None:
            return ()
        if self.name in PARAMSURVEY_ALIASES:
            return self.env_var, "PARAMSURVEY_" + self.name.upper()
        return (self.env_var,)


OPTIONS: dict[str, Option] = {o.name: o for o in [
    Option("backend", None, _check_backend, _parse_str,
           "serial, multiprocessing, mpi or ray; None picks mpi under mpiexec, else multiprocessing"),
    Option("verbose", 1, _int_in(0, 3), _parse_int,
           "0 silent, 1 a progress line every 30 s, 2 every second, 3 every event"),
    Option("vstats", 1, _int_in(0, 3), _parse_int,
           "how much of the performance statistics to print at the end of a map (0-3)"),
    Option("limit", 0, _int_in(0, math.inf), _parse_int,
           "compute at most this many new psets per map (0: all)"),
    Option("ncores", None, _check_ncores, _parse_optional_int,
           "worker processes for multiprocessing; negative leaves that many cores free"),
    Option("max_tasks_per_child", None, _optional(_int_in(1, math.inf)), _parse_optional_int,
           "restart a multiprocessing worker after this many groups (memory leaks)"),
    Option("group_size", None, _optional(_int_in(1, math.inf)), _parse_optional_int,
           "psets per group sent to a worker; None chooses it from measured durations"),
    Option("name", None, _check_name, _parse_str,
           "the map's name: its group in the HDF5 file; default from the worker's name"),
    Option("out", AUTO, _check_out, _parse_out,
           "results file; default <script>.h5 in the working directory; None: memory only"),
    Option("keep_results", True, _check_bool, _parse_bool,
           "return the rows in MapResults (False: only write them to the file)"),
    Option("fsync_interval", 10.0, _check_positive_number, float,
           "seconds between fsyncs of the results file (bounds loss on a node crash)"),
    Option("drain_seconds", 20.0, _check_positive_number, float,
           "on SIGTERM/SIGUSR1/SIGINT, wait this long for running groups before exiting"),
    Option("commit_rows", 10_000, _int_in(1, math.inf), _parse_int,
           "commit buffered rows to the file once this many have arrived (or 64 MiB of "
           "results that are not plain scalars)"),
    Option("commit_seconds", 1.0, _check_positive_number, float,
           "or once the oldest buffered row is this old"),
    Option("user_kwargs", None, _check_dict, None,
           "passed as the third argument to worker(pset, system_kwargs, user_kwargs)"),
    Option("cost", None, _check_cost, _parse_str,
           "cost(pset) -> float: expected cost, most expensive psets are sent first; "
           "\"auto\": learned from the runtimes while the map runs"),
    Option("resources", None, _check_resources, None,
           "per pset MPI ranks/cores/GPUs (a dict or a function of the pset): each pset "
           "launches an MPI application (psmpi.run_mpi) on cores reserved for it"),
    Option("max_attempts", 3, _int_in(1, math.inf), _parse_int,
           "a pset whose worker process died this many times is marked crashed and skipped"),
    Option("logfile", True, _check_bool, _parse_bool,
           "write the hidden per-run log .psmpi-DATE-TIME-PID.log in the working directory"),
    Option("carbon_server", None, _check_optional_str, _parse_out,
           "host of a Carbon/Graphite server to push progress to (None: no push)"),
    Option("carbon_port", 2004, _int_in(1, 65535), _parse_int,
           "port of the Carbon pickle listener"),
    Option("carbon_prefix", "psmpi", _check_str, _parse_str,
           "prefix of the Carbon metric names"),
    Option("simulate", False, _check_bool, _parse_bool,
           "dry run: run the machinery on a copy of the results file, never call the worker"),
    Option("backup", False, _check_bool, _parse_bool,
           "copy the results file (and calc dir) to a timestamped backup before extending it"),
    Option("git", False, _check_bool, _parse_bool,
           "git-commit the results file (and the study script) after the map, with the run id"),
    Option("repeat", False, _check_bool, _parse_bool,
           "compute every pset again as a new repeat instead of resuming finished ones"),
    Option("calc_dir", "calc", _check_str, _parse_str,
           "directory of per-pset output directories calc/<pset_id>/"),
    Option("timeout", None, _optional(_check_positive_number), _parse_optional_float,
           "seconds a pset may run; multiprocessing and ray kill its worker and store it as "
           "a timeout failure, MPI reports it (mpi={'abort_on_timeout': True} aborts)"),
    Option("setup", None, _check_callable, None,
           "setup(context) runs once per worker process before its first pset; its return "
           "value is system_kwargs['setup'] and psmpi.context().setup"),
    Option("gpus_per_worker", None, _optional(_int_in(1, math.inf)), _parse_optional_int,
           "GPUs given to each worker process of a node (sets CUDA_VISIBLE_DEVICES and the "
           "AMD/Intel equivalents); the node's devices: PSMPI_NODE_GPUS, Slurm or nvidia-smi"),
    Option("shard", None, _check_shard, _parse_shard,
           "(k, n): compute only shard k of n of the psets into its own file beside out "
           "(psmpi merge joins them); None: a Slurm job array's task, else all psets"),
    Option("job_script", None, _check_optional_str, _parse_out,
           "the command that submitted this job (a shard records it; psmpi status prints "
           "it to resubmit the shards that are not complete)"),
] + [Option(b, None, _check_dict, None, f"options for the {b} backend only")
     for b in BACKEND_NAMES]}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The resolved settings of one map() call (or of init())."""

    backend: str | None
    verbose: int
    vstats: int
    limit: int
    ncores: int | None
    max_tasks_per_child: int | None
    group_size: int | None
    name: str | None
    out: Any
    keep_results: bool
    fsync_interval: float
    drain_seconds: float
    commit_rows: int
    commit_seconds: float
    user_kwargs: dict | None
    cost: Callable | str | None  # "auto": learned while the map runs
    resources: dict | Callable | None
    max_attempts: int
    logfile: bool
    carbon_server: str | None
    carbon_port: int
    carbon_prefix: str
    simulate: bool
    backup: bool
    git: bool
    repeat: bool
    calc_dir: str
    timeout: float | None
    setup: Callable | None
    gpus_per_worker: int | None
    shard: tuple[int, int] | str | bool | None
    job_script: str | None
    serial: dict | None
    multiprocessing: dict | None
    mpi: dict | None
    ray: dict | None
    ensemble: dict | None

    def backend_options(self, backend: str) -> dict:
        """The option dict given for ``backend`` (empty if none)."""
        return dict(getattr(self, backend) or {})


def check_kwargs(kwargs: Mapping[str, Any], where: str) -> None:
    """Refuse unknown keyword arguments and values of the wrong type, naming the argument."""
    for key, value in kwargs.items():
        if key not in OPTIONS:
            import difflib  # here: only a mistyped argument needs it

            close = difflib.get_close_matches(key, list(OPTIONS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where} got an unknown keyword argument {key!r}{hint} "
                              f"(known: {', '.join(sorted(OPTIONS))})")
        message = OPTIONS[key].check(value)
        if message:
            raise ConfigError(f"{where}: {key} {message} (got {value!r})")


def env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings given as PSMPI_* (or paramsurvey's PARAMSURVEY_*) environment variables,
    parsed and checked."""
    values = {}
    for option in OPTIONS.values():
        var = next((name for name in option.env_vars if name in environ), None)
        if var is None:
            continue
        try:
            value = option.parse_env(environ[var])
        except ValueError:
            raise ConfigError(f"environment variable {var}={environ[var]!r} cannot be read: "
                              f"{option.name} {option.check(object()) or 'is invalid'}") from None
        message = option.check(value)
        if message:
            raise ConfigError(f"environment variable {var}: {option.name} {message} "
                              f"(got {environ[var]!r})")
        values[option.name] = value
    return values


def resolve(map_kwargs: Mapping[str, Any], init_kwargs: Mapping[str, Any],
            environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve every setting: environment (PSMPI_* > PARAMSURVEY_*) > map() keyword >
    init() keyword > default."""
    environ = os.environ if environ is None else environ
    values = {name: option.default for name, option in OPTIONS.items()}
    values.update(init_kwargs)
    values.update(map_kwargs)
    values.update(env_values(environ))
    return Settings(**values)


# Variables the common MPI launchers set in every rank's environment (MPICH/Hydra, PMIx,
# Open MPI, Slurm's srun with an MPI plugin). Reading them avoids importing mpi4py.
_MPI_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


def launched_by_mpi() -> int:
    """The number of ranks if this process was started by an MPI launcher, else 0."""
    for var in _MPI_SIZE_VARS:
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 0

"""Worker set-up (``setup=``) and GPUs (``gpus_per_worker=``), once per worker process.

Before a worker process runs its first pset of a map, :class:`~psmpi.worker.task.Task` calls
:func:`prepare`: it gives the process its own GPUs (``CUDA_VISIBLE_DEVICES`` and the AMD and
Intel equivalents) and then calls the user's ``setup(context)``. The result, or the set-up's
failure, is cached per process and per map (the task's run id), so later groups of the same
map reuse it and a failing set-up is not run again in that process.

Which GPUs: the node's devices (:func:`node_gpus`) are cut into consecutive blocks of
``gpus_per_worker``; a worker process takes the block of its *slot*, its number among the
worker processes of its node (the multiprocessing backend's stable worker slot, the MPI
backend's rank among the worker ranks of the node, 0 elsewhere). Each backend sets
:data:`SLOT` and :data:`LOCAL_RANK` in its worker processes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

# Set by the backend in each worker process: its number among the workers of its node (for
# its GPUs) and its node-local rank (for SetupContext). None: 0, a single worker.
SLOT: int | None = None
LOCAL_RANK: int | None = None

# The variables that restrict which devices a process sees: NVIDIA, AMD (HIP and ROCr),
# Intel (Level Zero).
VISIBLE_DEVICES_VARS = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
                        "ZE_AFFINITY_MASK")
# Where the node's devices are found, first match wins (after PSMPI_NODE_GPUS).
DETECTION_VARS = ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS",
                  "GPU_DEVICE_ORDINAL")
NODE_GPUS_VAR = "PSMPI_NODE_GPUS"


@dataclasses.dataclass(frozen=True)
class SetupContext:
    """What ``setup(context)`` is told about the worker process it prepares.

    Attributes
    ----------
    rank : int
        The worker's rank as in ``system_kwargs["rank"]`` (MPI: its rank; else 0).
    local_rank : int
        Its number among the worker processes of its node (MPI: its node-local rank;
        multiprocessing: its worker slot 0..n-1; serial: 0).
    host : str
        The host it runs on.
    gpus : tuple of str
        The device ids it was given with ``gpus_per_worker`` (empty without).
    backend : str
        ``serial``, ``multiprocessing``, ``mpi`` or ``ray``.
    """

    rank: int
    local_rank: int
    host: str
    gpus: tuple[str, ...]
    backend: str


def parse_devices(text: str) -> tuple[str, ...]:
    """``"0,1, 2"`` -> ``("0", "1", "2")``; Slurm's ranges ``"0-3"`` are expanded."""
    devices: list[str] = []
    for item in text.replace(" ", "").split(","):
        if not item:
            continue
        low, dash, high = item.partition("-")
        if dash and low.isdigit() and high.isdigit():
            devices.extend(str(i) for i in range(int(low), int(high) + 1))
        else:
            devices.append(item)
    return tuple(devices)


def nvidia_smi_devices() -> tuple[str, ...]:
    """Device indexes from ``nvidia-smi -L`` (one ``GPU i: ...`` line each); none without it."""
    import shutil  # here: every rank imports this module, few ever ask nvidia-smi
    import subprocess

    program = shutil.which("nvidia-smi")
    if program is None:
        return ()
    try:
        listing = subprocess.run([program, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ()
    count = sum(line.startswith("GPU ") for line in listing.stdout.splitlines())
    return tuple(str(i) for i in range(count))


_detected: tuple[str, ...] | None = None


def node_gpus(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The device ids of this node that psmpi shares out among its worker processes.

    ``PSMPI_NODE_GPUS`` (comma-separated ids) if set, else the first of
    ``CUDA_VISIBLE_DEVICES``, ``SLURM_STEP_GPUS``, ``SLURM_JOB_GPUS`` and
    ``GPU_DEVICE_ORDINAL`` that is set, else what ``nvidia-smi -L`` lists. Detected once per
    process (a serial run sets ``CUDA_VISIBLE_DEVICES`` in this very process afterwards).
    """
    global _detected
    if environ is not None:
        return _detect(environ)
    if NODE_GPUS_VAR in os.environ:  # read every time: tests and users may change it
        return parse_devices(os.environ[NODE_GPUS_VAR])
    if _detected is None:
        _detected = _detect(os.environ)
    return _detected


def _detect(environ: Mapping[str, str]) -> tuple[str, ...]:
    if NODE_GPUS_VAR in environ:
        return parse_devices(environ[NODE_GPUS_VAR])
    for var in DETECTION_VARS:
        if environ.get(var, "").strip():
            return parse_devices(environ[var])
    return nvidia_smi_devices()


def check_enough_gpus(gpus_per_worker: int | None, workers: int, devices: tuple[str, ...],
                      where: str) -> None:
    """ConfigError unless ``devices`` holds ``gpus_per_worker`` for each of ``workers``."""
    if not gpus_per_worker or len(devices) >= workers * gpus_per_worker:
        return
    found = f"{len(devices)} ({','.join(devices)})" if devices else "0"
    raise ConfigError(
        f"gpus_per_worker={gpus_per_worker} for {workers} worker process(es) {where} needs "
        f"{workers * gpus_per_worker} GPUs, but {found} were found (from {NODE_GPUS_VAR}, "
        f"CUDA_VISIBLE_DEVICES, SLURM_STEP_GPUS/SLURM_JOB_GPUS or nvidia-smi). Lower "
        f"gpus_per_worker, run fewer workers per node (ncores=, or fewer MPI ranks per node), "
        f"or give the node's devices as {NODE_GPUS_VAR}=0,1,...")


def worker_gpus(gpus_per_worker: int | None, slot: int | None) -> tuple[str, ...]:
    """The devices of the worker in ``slot`` (None: 0) of this node; () without GPUs."""
    if not gpus_per_worker:
        return ()
    slot = slot or 0
    devices = node_gpus()
    mine = devices[slot * gpus_per_worker:(slot + 1) * gpus_per_worker]
    if len(mine) < gpus_per_worker:
        check_enough_gpus(gpus_per_worker, slot + 1, devices, "on this node")
    return mine


def make_visible(gpus: tuple[str, ...]) -> None:
    """Restrict this process to ``gpus``: set every vendor's visible-devices variable."""
    value = ",".join(gpus)
    for var in VISIBLE_DEVICES_VARS:
        os.environ[var] = value


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` did in this process for one map."""

    value: Any = None                       # setup()'s return value
    error: tuple[str, str] | None = None    # ("Type: message", traceback) if it failed
    gpus: tuple[str, ...] = ()


_prepared: dict[str, Prepared] = {}  # run id -> what prepare() did for that map here


def prepared(run_id: str) -> Prepared | None:
    """What :func:`prepare` did in this process for the map ``run_id``, if it ran."""
    return _prepared.get(run_id)


def remember(run_id: str, done: Prepared) -> Prepared:
    if len(_prepared) > 16:  # a loop of many maps must not keep every set-up value alive
        _prepared.clear()
    _prepared[run_id] = done
    return done

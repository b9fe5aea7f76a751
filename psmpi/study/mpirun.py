"""Launch an MPI program for one pset on exactly the hosts, cores and GPUs reserved for it.

::

    def worker(pset):
        return psmpi.run_mpi(["./simulate", "--a", "{a}"], pset)

    psmpi.map(worker, psets, resources={"ranks": 4})

``psmpi.map(..., resources=...)`` reserves the pset's ranks, cores and GPUs (see
:mod:`psmpi.backends.scheduling`) and hands the reservation to the worker through
``psmpi.context().reservation``; :func:`run_mpi` turns it into a launcher's command line:
Slurm's ``srun --exact`` with the node list, MPICH's ``mpiexec -hosts h:n,...``, Open MPI's
``mpiexec --host h:n,...``, or a user's template. The rest follows :func:`run_command`.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError, PsetError
from ..worker import launches
from ..worker.context import context
from .command import MAX_OUTPUT, CommandError, _shorten, format_args

LAUNCHERS = ("srun", "mpich", "openmpi")
# Variables that restrict a program to its GPUs (NVIDIA, AMD, Intel).
GPU_VARIABLES = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
                 "ZE_AFFINITY_MASK")


def find_mpiexec() -> str:
    """The ``mpiexec`` beside this Python (the mpich wheel's), else the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = beside if os.access(beside, os.X_OK) else shutil.which("mpiexec")
    if found is None:
        raise CommandError("run_mpi: no mpiexec beside Python nor on PATH; install an MPI "
                           "(pip install mpich) or pass launcher='...' as a template")
    return found


@functools.cache
def mpi_flavour(mpiexec: str) -> str:
    """``openmpi`` or ``mpich``, from what ``mpiexec --version`` says."""
    try:
        said = subprocess.run([mpiexec, "--version"], capture_output=True, text=True,
                              timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        said = ""
    return "openmpi" if "Open MPI" in said or "OpenRTE" in said else "mpich"


def gpu_env(gpus: Sequence[str]) -> dict[str, str]:
    """The variables that give a program exactly ``gpus`` (empty: no GPU reserved)."""
    return {name: ",".join(gpus) for name in GPU_VARIABLES} if gpus else {}


def launch_command(argv: list[str], reservation: Any, launcher: str,
                   mpiexec: str = "mpiexec", step_name: str | None = None) -> list[str]:
    """The command line that starts ``argv`` on ``reservation`` (a Placement).

    ``launcher``: ``srun``, ``mpich``, ``openmpi``, or a template with ``{ranks}``,
    ``{hosts}`` (``h1,h2``), ``{host_ranks}`` (``h1:2,h2:1``), ``{nodes}``,
    ``{cores_per_rank}``, ``{cpus}`` (the pinned core ids, ``0,1``; empty if not pinned)
    and ``{cmd}`` (the program and its arguments; appended if absent).

    Pinned (``reservation.cpus``, this machine's cores): MPICH binds rank ``i`` to its
    cores with ``-bind-to user:``; the other launchers' ranks inherit the launcher's
    affinity (run_mpi sets it), Open MPI's with ``--bind-to none``.

    Under srun, ranks on several nodes go where they were reserved through
    ``--distribution=arbitrary`` and the file :func:`srun_hostfile` (in ``SLURM_HOSTFILE``);
    whole-node psets run without ``--exact``, so that the step has every CPU of its nodes;
    ``step_name`` names the job step (``--job-name``), so that it can be found and cancelled.

    >>> from psmpi.backends.scheduling import Placement
    >>> here = Placement((("n1", 2, ()), ("n2", 1, ())), cores_per_rank=2)
    >>> shlex.join(launch_command(["app", "x"], here, "srun", step_name="psmpi-1"))
    'srun --exact --nodes=2 --ntasks=3 --cpus-per-task=2 --distribution=arbitrary --job-name=psmpi-1 app x'
    >>> shlex.join(launch_command(["app"], here, "mpich"))
    'mpiexec -n 3 -hosts n1:2,n2:1 app'
    >>> shlex.join(launch_command(["app"], here, "openmpi"))
    'mpiexec -n 3 --host n1:2,n2:1 --bind-to none app'
    >>> shlex.join(launch_command(["app"], here, "mympirun -np {ranks} --on {hosts} {cmd} --end"))
    'mympirun -np 3 --on n1,n2 app --end'
    >>> pinned = Placement((("localhost", 2, ()),), cores_per_rank=2, cpus=(4, 5, 6, 7))
    >>> shlex.join(launch_command(["app"], pinned, "mpich"))
    'mpiexec -n 2 -hosts localhost:2 -bind-to user:4+5,6+7 app'
    """
    hosts = [name for name, _, _ in reservation.hosts]
    host_ranks = ",".join(f"{name}:{ranks}" for name, ranks, _ in reservation.hosts)
    ranks = reservation.ranks
    gpus_per_rank = len(reservation.gpus) // ranks if ranks else 0
    if launcher == "srun":
        # --exact: the step gets only its cores, so steps side by side share a node; a
        # whole-node pset's step holds all of its nodes instead.
        exact = [] if reservation.whole_nodes else ["--exact"]
        cmd = ["srun", *exact, f"--nodes={len(hosts)}", f"--ntasks={ranks}",
               f"--cpus-per-task={reservation.cores_per_rank}"]
        if len(hosts) > 1:  # block or cyclic would ignore how many ranks each node holds;
            cmd.append("--distribution=arbitrary")  # its hosts file names the nodes
        else:
            cmd.append(f"--nodelist={hosts[0]}")
        if gpus_per_rank:
            cmd.append(f"--gpus-per-task={gpus_per_rank}")
        if step_name:
            cmd.append(f"--job-name={step_name}")
        return cmd + argv
    if launcher == "mpich":
        return [mpiexec, "-n", str(ranks), "-hosts", host_ranks, *mpich_binding(reservation),
                *argv]
    if launcher == "openmpi":
        return [mpiexec, "-n", str(ranks), "--host", host_ranks, "--bind-to", "none", *argv]
    if "{" not in launcher:
        raise ConfigError(f"run_mpi: launcher={launcher!r} is none of {', '.join(LAUNCHERS)} "
                          f"and no template (with {{ranks}}, {{hosts}}, {{cmd}}, ...)")
    values = {"ranks": ranks, "hosts": ",".join(hosts), "host_ranks": host_ranks,
              "nodes": len(hosts), "cores_per_rank": reservation.cores_per_rank,
              "cpus": ",".join(map(str, reservation.cpus))}
    out: list[str] = []
    for word in shlex.split(launcher):
        if word == "{cmd}":
            out += argv
        else:
            try:
                out.append(word.format(**values))
            except KeyError as exc:
                raise ConfigError(f"run_mpi: the launcher template {launcher!r} uses "
                                  f"{{{exc.args[0]}}}; it knows {', '.join(values)} and "
                                  f"cmd") from None
    return out if "{cmd}" in shlex.split(launcher) else out + argv


def srun_hostfile(reservation: Any) -> str:
    """The ``SLURM_HOSTFILE`` of ``--distribution=arbitrary``: a node per rank, in order.

    >>> from psmpi.backends.scheduling import Placement
    >>> srun_hostfile(Placement((("n1", 1, ()), ("n2", 2, ())), cores_per_rank=1))
    'n1\\nn2\\nn2\\n'
    """
    return "".join(f"{name}\n" * ranks for name, ranks, _ in reservation.hosts)


def srun_env(reservation: Any, run_dir: str) -> dict[str, str | None]:
    """The variables an srun launch sets (``None``: removes) on top of the job's.

    ``SLURM_HOSTFILE``: the reserved node of each rank (a file in ``run_dir``) when the pset
    spans nodes; else removed, since srun obeys one inherited from the job before any
    ``--distribution``. ``SLURM_NTASKS_PER_NODE`` of the job is removed: the launch sets
    its own task count (srun would warn that it cannot honour the job's).
    """
    extra: dict[str, str | None] = {"SLURM_HOSTFILE": None, "SLURM_NTASKS_PER_NODE": None}
    if len(reservation.hosts) > 1:
        path = os.path.join(run_dir, "psmpi-hostfile")
        with open(path, "w") as file:
            file.write(srun_hostfile(reservation))
        extra["SLURM_HOSTFILE"] = os.path.abspath(path)
    return extra


def mpich_binding(reservation: Any) -> list[str]:
    """Hydra's ``-bind-to user:a+b,c+d``: rank ``i`` on the ``i``-th cores_per_rank of the
    pinned cores; [] when not pinned."""
    cpus, per_rank = reservation.cpus, reservation.cores_per_rank
    if not cpus:
        return []
    ranks = ["+".join(map(str, cpus[i:i + per_rank])) for i in range(0, len(cpus), per_rank)]
    return ["-bind-to", "user:" + ",".join(ranks)]


def default_launcher(reservation: Any) -> str:
    """``srun`` if the allocation is a Slurm job's, else the flavour of the MPI's mpiexec;
    ``PSMPI_LAUNCHER`` overrides."""
    chosen = os.environ.get("PSMPI_LAUNCHER", "").strip()
    if chosen:
        return chosen
    if reservation.slurm:
        return "srun"
    return mpi_flavour(find_mpiexec())


def _check_found(program: str, run_dir: str, env: Mapping[str, str]) -> None:
    """CommandError if ``program`` is no executable (as Popen would say)."""
    found = (os.access(os.path.join(run_dir, program), os.X_OK) if os.sep in program
             else shutil.which(program, path=env.get("PATH")) is not None)
    if not found:
        raise CommandError(f"run_mpi: cannot start {program!r}: no such executable "
                           f"(PATH={env.get('PATH', '')!r}, run directory {run_dir})")


def _tail(path: str, limit: int | None) -> str:
    with open(path, errors="replace") as file:
        return _shorten(file.read(), limit)


def run_mpi(args: str | Sequence[Any], pset: Mapping[str, Any] | None = None, *,
            timeout: float | None = None, cwd: str | os.PathLike | None = None,
            check: bool = True, env: Mapping[str, str] | None = None,
            launcher: str | None = None, reservation: Any = None,
            max_output: int | None = MAX_OUTPUT) -> dict:
    """Run an MPI program for a pset on the ranks, cores and GPUs reserved for it.

    Parameters
    ----------
    args : list or str
        The program and its arguments, filled in from the pset as in :func:`run_command`.
    pset : dict, optional
        The values for the placeholders.
    timeout : float, optional
        Seconds; then the launcher's whole process group is stopped (SIGTERM, SIGKILL 5 s
        later), which ends every rank (mpiexec and srun take their ranks with them).
    cwd : str or os.PathLike, optional
        The run directory (formatted from the pset; created). Default: this pset's
        ``psmpi.context().calc_dir``. stdout and stderr go to ``stdout.txt`` and
        ``stderr.txt`` in it.
    check : bool
        True: a non-zero exit or a timeout raises :class:`CommandError` (the pset fails).
    env : dict, optional
        Variables added for the program. The reserved GPUs are set in
        ``CUDA_VISIBLE_DEVICES``, ``HIP_VISIBLE_DEVICES``, ``ROCR_VISIBLE_DEVICES`` and
        ``ZE_AFFINITY_MASK`` (under mpiexec; srun binds GPUs itself).
    launcher : str, optional
        ``srun``, ``mpich``, ``openmpi`` or a template (see :func:`launch_command`);
        default: ``PSMPI_LAUNCHER``, else srun under Slurm, else the mpiexec found.
    reservation : Placement, optional
        Default: ``psmpi.context().reservation``, set by ``psmpi.map(..., resources=...)``.
    max_output : int or None
        Characters of the end of stdout and stderr kept in the returned dict.

    Returns
    -------
    dict
        ``returncode``, ``stdout``, ``stderr`` (tails), ``runtime``, ``timed_out``,
        ``command`` (the launch line), ``ranks``, ``hosts``, ``cpus`` (the pinned core ids,
        ``0,1``; empty if not pinned) and ``run_dir``.
    """
    pset = {} if pset is None else pset
    here = None
    if reservation is None or cwd is None:
        try:
            here = context()
        except RuntimeError:
            here = None
    if reservation is None:
        reservation = here.reservation if here is not None else None
    if reservation is None:
        raise PsetError("run_mpi: no cores are reserved for this pset; call it from a worker "
                        "of psmpi.map(..., resources={'ranks': N}) (or pass reservation=)")
    if cwd is None and here is None:
        raise PsetError("run_mpi: outside psmpi.map there is no run directory; pass cwd=")
    run_dir = os.fspath(cwd).format_map(pset) if cwd is not None else here.calc_dir
    os.makedirs(run_dir, exist_ok=True)
    launcher = launcher or default_launcher(reservation)
    mpiexec = find_mpiexec() if launcher in ("mpich", "openmpi") else "mpiexec"
    step = f"psmpi-{uuid.uuid4().hex[:12]}" if launcher == "srun" else None
    command = launch_command(format_args(args, pset), reservation, launcher, mpiexec, step)
    gpus = gpu_env(reservation.gpus) if step is None else {}  # srun binds GPUs itself
    mark = launches.new_mark()  # ends the application if the driver is killed
    full_env = {**os.environ, **gpus, **{k: str(v) for k, v in (env or {}).items()},
                launches.launchguard.VARIABLE: mark}
    if step is not None:
        for name, value in srun_env(reservation, run_dir).items():
            if value is None:
                full_env.pop(name, None)
            else:
                full_env[name] = value
    out_path, err_path = os.path.join(run_dir, "stdout.txt"), os.path.join(run_dir, "stderr.txt")
    t0 = time.monotonic()
    prefix, how = launches.how_to_start(reservation.cpus)
    if prefix:  # started through setpriv: a missing program would be its exit status 127
        _check_found(command[0], run_dir, full_env)
    with open(out_path, "w") as out, open(err_path, "w") as err:
        try:
            proc = subprocess.Popen(prefix + command, cwd=run_dir, env=full_env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err, **how)
        except OSError as exc:
            raise CommandError(f"run_mpi: cannot start {command[0]!r}: {exc}") from None
    launches.register(proc, mark, step)
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        launches.stop([proc])
    except BaseException:  # interrupted (a drain, the driver stopping): end every rank
        launches.stop([proc])
        raise
    finally:
        launches.unregister(proc)
    result = {"returncode": proc.returncode, "stdout": _tail(out_path, max_output),
              "stderr": _tail(err_path, max_output), "runtime": time.monotonic() - t0,
              "timed_out": timed_out, "command": shlex.join(command),
              "ranks": reservation.ranks, "hosts": ",".join(h for h, _, _ in reservation.hosts),
              "cpus": ",".join(map(str, reservation.cpus)), "run_dir": run_dir}
    if check and (timed_out or proc.returncode != 0):
        what = (f"did not finish within {timeout} s and was killed" if timed_out
                else f"exited with status {proc.returncode}")
        tail = _shorten(result["stderr"].strip() or result["stdout"].strip(), 1000)
        raise CommandError(f"{result['command']} {what}" + (f": {tail}" if tail else ""),
                           proc.returncode, result["stdout"], result["stderr"])
    return result

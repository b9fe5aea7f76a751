"""The MPI backend, through real launches: scripts under ``mpiexec -n K`` with a timeout.

Every launch has a deadline, so a deadlock fails the test instead of hanging the run.
Running 4 ranks on 2 cores is intended (oversubscription is fine): MPICH's Hydra needs no
flag, and idle psmpi ranks sleep. Covered: the contract suite (tests/contract.py: worker
exceptions, unpicklable and unloadable results, multi-stage, empty, 1,000 psets, ...) at
K = 1, 2, 4 and under plain python; auto-selection, code after init() on rank 0 only, results
equal to serial, a greedy loop of 50 maps, more ranks than psets (mpi_scripts/study.py);
aborts instead of hangs (uncaught.py, worker_fault.py); signals drain (long_study.py).
CPU use of idle ranks is measured, not tested: mpi_scripts/idle_cpu.py.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPTS = os.path.join(HERE, "mpi_scripts")
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or not os.path.exists(MPIEXEC),
    reason="needs mpi4py and the mpiexec of the mpich wheel next to the Python executable")

# Variables of an enclosing MPI launch or a user's PSMPI_* settings must not leak into ours.
_LEAKY_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPI_LOCALNRANKS", "PSMPI_")


def launcher_is_open_mpi() -> bool:
    """Whether the mpiexec beside the Python executable is Open MPI's (CI runs these tests
    against MPICH's wheel and against Debian's Open MPI)."""
    if not os.path.exists(MPIEXEC):
        return False
    done = subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True, timeout=30)
    return "Open MPI" in done.stdout + done.stderr or "OpenRTE" in done.stdout + done.stderr


OPEN_MPI = launcher_is_open_mpi()


def clean_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY_PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, HERE, env.get("PYTHONPATH")]))
    env["PSMPI_LOGFILE"] = "0"  # these runs start in the repository: no hidden logs there
    env.update(extra or {})
    return env


def start(ranks: int | None, script: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    """Start ``script`` under ``mpiexec -n ranks`` (plain python when ranks is None)."""
    launcher = [] if ranks is None else [MPIEXEC, "-n", str(ranks)]
    return subprocess.Popen([*launcher, sys.executable, script, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env(env), cwd=ROOT, start_new_session=True)


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (Hydra starts ranks in sessions of their own)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(child) for child in f.read().split()]
    except OSError:
        children = []
    return [pid] + [p for child in children for p in descendants(child)]


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    """Wait for ``proc``; on timeout kill it and every rank it started, and fail."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in descendants(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out, err = proc.communicate()
        pytest.fail(f"no exit within {timeout} s (deadlock?)\nstdout:\n{out[-3000:]}\n"
                    f"stderr:\n{err[-3000:]}")
    return proc.returncode, out, err


def launch(ranks: int | None, script: str, *args: str, timeout: float = 60,
           env: dict | None = None) -> tuple[int, str, str, float]:
    started = time.monotonic()
    code, out, err = finish(start(ranks, script, *args, env=env), timeout)
    return code, out, err, time.monotonic() - started


def read_rows(path: str, name: str) -> int:
    code = f"import psmpi; print(len(psmpi.read({path!r}, name={name!r})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=clean_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.parametrize("ranks", [1, 2, 4])
def test_contract_under_mpiexec(ranks):
    code, out, err, _ = launch(ranks, os.path.join(HERE, "run_contract.py"), "mpi", timeout=90)
    assert code == 0, f"{out}\n{err}"
    assert f"({ranks} rank(s)):" in out and " 0 failed" in out, out
    if ranks == 1:
        assert "single MPI process" in err  # in process, with a warning


# The contract checks of every value kind psmpi stores (issue 13's "through mpiexec -n 3").
VALUE_CHECKS = ["types_round_trip", "rich_values_round_trip", "unencodable_result_keys_fail_their_pset",
                "rich_psets_round_trip", "resume_of_rich_psets_computes_only_the_missing"]


def test_every_value_kind_round_trips_under_mpiexec_n3():
    code, out, err, _ = launch(3, os.path.join(HERE, "run_contract.py"), "mpi", *VALUE_CHECKS,
                               timeout=90)
    assert code == 0, f"{out}\n{err}"
    assert "(3 rank(s)):" in out and f"{len(VALUE_CHECKS)} passed, 0 failed" in out, out


def test_contract_with_plain_python_and_backend_mpi():
    """backend="mpi" without a launcher: one process, so in process with a warning."""
    code, out, err, _ = launch(None, os.path.join(HERE, "run_contract.py"), "mpi")
    assert code == 0, f"{out}\n{err}"
    assert " 0 failed" in out and "single MPI process" in err


def test_study_auto_selected_and_code_after_init_on_rank0_only(tmp_path):
    """1,000 psets equal to serial, greedy loop of 50 maps, fewer psets than ranks, empty."""
    code, out, err, _ = launch(4, os.path.join(SCRIPTS, "study.py"), tmp_path, timeout=90)
    assert code == 0, f"{out}\n{err}"
    assert "study ok" in out
    assert (tmp_path / "ranks.txt").read_text().split() == ["0"]


@pytest.mark.crash
def test_uncaught_exception_on_rank0_aborts_the_job(tmp_path):
    """Workers are busy with 60-s psets; the job must still end at once, file intact."""
    out_file = str(tmp_path / "study.h5")
    code, out, err, wall = launch(4, os.path.join(SCRIPTS, "uncaught.py"), out_file)
    assert code != 0 and "first map committed" in out, f"{out}\n{err}"
    assert "boom in the user's pset generator" in err and "aborting all 4 ranks" in err, err
    assert wall < 20, f"took {wall:.1f} s"  # startup on 2 cores + abort, far below 60 s
    assert read_rows(out_file, "first") == 20


@pytest.mark.crash
def test_internal_error_on_a_worker_aborts_the_job(tmp_path):
    code, out, err, wall = launch(4, os.path.join(SCRIPTS, "worker_fault.py"),
                                  tmp_path / "study.h5",
                                  env={"PSMPI_TEST_FAULT": "worker-internal:2"})
    assert code != 0 and "map finished" not in out, f"{out}\n{err}"
    assert "worker service loop on MPI rank 2 of 4" in err, err
    assert "fault injected by PSMPI_TEST_FAULT" in err, err
    assert wall < 20, f"took {wall:.1f} s"


@pytest.mark.crash
def test_sys_exit_in_a_worker_function_aborts_the_job(tmp_path):
    code, out, err, wall = launch(4, os.path.join(SCRIPTS, "worker_fault.py"),
                                  tmp_path / "study.h5", "sys-exit")
    assert code != 0 and "map finished" not in out, f"{out}\n{err}"
    assert "the worker function called sys.exit() on MPI rank" in err, err
    assert wall < 20, f"took {wall:.1f} s"


@pytest.mark.parametrize("signum,nap,abandoned", [
    (signal.SIGTERM, 1.0, False),   # the naps in flight end within the drain: all kept
    (signal.SIGUSR1, 1.0, False),
    (signal.SIGINT, 30.0, True),    # they outlast the 1-s drain: abandoned, job aborted
], ids=["SIGTERM-drained", "SIGUSR1-drained", "SIGINT-abandoned"])
@pytest.mark.crash
def test_signal_to_mpiexec_drains_and_exits_75(tmp_path, signum, nap, abandoned):
    out_file = str(tmp_path / "study.h5")
    drain_seconds = 1.0 if abandoned else 20.0
    proc = start(3, os.path.join(SCRIPTS, "long_study.py"), out_file, nap, drain_seconds)
    deadline = time.monotonic() + 30
    while proc.stdout.readline().strip() != "running":  # the survey is under way
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
    time.sleep(0.3)
    signalled = time.monotonic()
    proc.send_signal(signum)
    code, out, err = finish(proc, timeout=30)
    took = time.monotonic() - signalled
    if OPEN_MPI and signum != signal.SIGUSR1:
        # Open MPI's mpirun forwards SIGUSR1 but turns SIGTERM and SIGINT into a kill of
        # the job (SIGTERM to every rank, SIGKILL soon after): no drain, and what was
        # committed stays (docs/getting-started.md says so).
        assert code != 0 and "finished" not in out and took < 15, f"{code}\n{out}\n{err}"
        assert read_rows(out_file, "long") >= 0  # the file opens and reads
        return
    assert code == 75 and "finished" not in out, f"{code}\n{out}\n{err}"
    assert f"stopped by {signal.Signals(signum).name}" in err, err
    assert took < (4 if abandoned else 5), f"ended {took:.1f} s after the signal"
    assert ("still run groups nobody will collect" in err) == abandoned, err
    rows = read_rows(out_file, "long")
    assert (rows == 0) if abandoned else (rows >= 2)  # drained naps are committed


def test_missing_mpi4py_names_the_install_command():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "import psmpi\n"
            "try:\n    psmpi.init(backend='mpi')\n"
            "except psmpi.BackendError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=clean_env(), timeout=60)
    assert "pip install 'psmpi[mpi]'" in done.stdout, done.stdout + done.stderr


def test_unknown_and_bad_options_are_config_errors():
    from psmpi.backends.mpi import MPIBackend
    from psmpi.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['bogus'\]"):
        MPIBackend({"bogus": 1})
    with pytest.raises(ConfigError, match="in_flight"):
        MPIBackend({"in_flight": 3})
    with pytest.raises(ConfigError, match="poll_max"):
        MPIBackend({"poll_max": 5})


class _FakeComm:
    """Records what the master sends, in process (no MPI); nothing ever arrives."""

    ANY_SOURCE = ANY_TAG = -1

    def __init__(self):
        self.sent = []

    def isend(self, message, dest, tag):
        self.sent.append((dest, message))
        return None

    def Improbe(self, source, tag, status):
        return None


def _fake_master(workers: int):
    from psmpi.backends.mpi import Master
    master = Master.__new__(Master)  # skip MPI: only the bookkeeping is under test
    master.setup(workers + 1)
    master.comm = master.world = master.MPI = _FakeComm()
    master.status = None
    return master


@pytest.mark.parametrize("in_flight,first_wave", [(2, 4), (None, 2), (1, 2)])
def test_task_blob_goes_once_per_worker_and_idle_workers_come_first(in_flight, first_wave):
    from psmpi.backends.mpi import Job
    from psmpi.worker.task import Task

    master = _fake_master(2)
    groups = iter([[(i, {"a": i})] for i in range(10)])
    job = Job(1, Task(lambda p: {"y": 1}, "m", "mpi"), groups)
    settings = {"in_flight": in_flight}
    master.refill(job, settings)
    assert [dest for dest, _ in master.comm.sent] == [1, 2, 1, 2][:first_wave]
    master.free_slot(1)  # rank 1 returned a group
    master.refill(job, settings)
    sent = master.comm.sent
    assert sent[-1][0] == 1 and len(sent) == first_wave + 1
    blobs = [(dest, msg[2][1] is not None) for dest, msg in sent]
    assert [dest for dest, has_blob in blobs if has_blob] == [1, 2]  # once per worker
    assert [msg[2][2][0][0] for _, msg in sent] == list(range(len(sent)))  # list order


@pytest.mark.parametrize("ranks", [2, 4])
def test_outcomes_sent_in_blocks_as_over_2_gib_arrive_whole(tmp_path, ranks):
    """An outcome too large for an MPI-3 int count goes as 1-MiB blocks (here every one)."""
    out = str(tmp_path / "blocks.h5")
    code, out_text, err, _ = launch(ranks, os.path.join(SCRIPTS, "blocks.py"), out, timeout=120)
    assert code == 0, f"{out_text}\n{err}"
    assert "blocks ok" in out_text


def test_tend_refills_workers_from_inside_a_commit_only_while_a_run_is_on():
    """Backend.tend (called between the columns of a commit) hands the next group to a
    worker that freed up meanwhile; outside a run it does nothing."""
    from psmpi.backends.mpi import Job
    from psmpi.worker.task import Task

    master = _fake_master(2)
    settings = {"in_flight": 1}
    master.tend(settings)  # no run: nothing to hand out
    assert master.comm.sent == []
    job = Job(1, Task(lambda p: {"y": 1}, "m", "mpi"), iter([[(i, {"a": i})] for i in range(5)]))
    master.job = job
    master.refill(job, settings)
    assert [dest for dest, _ in master.comm.sent] == [1, 2]
    master.free_slot(2)  # rank 2's outcome came in while the driver commits
    master.tend(settings)
    assert [dest for dest, _ in master.comm.sent] == [1, 2, 2]
    master.job = None
    master.free_slot(1)
    master.tend(settings)
    assert len(master.comm.sent) == 3


def test_an_idle_worker_stays_alert_then_backs_off_to_poll_max():
    """A worker's first ALERT_SECONDS without a group poll at most ALERT_POLL_MAX apart (the
    next map reaches it at once); later sleeps grow to the cap as before."""
    from psmpi.backends.mpi import ALERT_POLL_MAX, POLL_MAX, Backoff

    def sleeps(alert: float) -> list[float]:
        slept: list[float] = []
        backoff = Backoff(spin=0.0, alert=alert)
        for _ in range(200):
            backoff.sleep(POLL_MAX, slept.append)
        return slept

    alert = sleeps(3600.0)
    assert max(alert) == ALERT_POLL_MAX < POLL_MAX
    assert max(sleeps(0.0)) == POLL_MAX

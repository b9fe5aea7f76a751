"""Kill a study at random instants; run it again until done.

Multiprocessing and serial studies are killed whole (driver and workers). MPI studies under
``mpiexec -n 4`` are killed three ways in turn: the whole job, rank 0 alone, one worker rank
alone (MPICH then takes the job down). After every kill nothing is left running, the file
opens, every committed row is exact, and no pset committed before a run is computed by it.
"""

import importlib.util
import os
import pathlib
import random
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

import psmpi

# Crash, drain and kill handling: CI runs these on the oldest and the newest Python too.
pytestmark = pytest.mark.crash

SCRIPT = pathlib.Path(__file__).parent / "scripts" / "kill_study.py"
N_PSETS = 10000
# PSMPI_TEST_KILLS: fewer kills, for CI's extra runs on other Python versions
KILLS = int(os.environ.get("PSMPI_TEST_KILLS", "20"))
MPIEXEC = pathlib.Path(sys.executable).parent / "mpiexec"


# Seconds per pset in a killed run: 20 runs of at most 1.5 s on 3 workers compute at most
# 20 * 1.5 * 3 / 0.012 = 7,500 of the 10,000 psets, however fast the machine.
SLEEP_KILLED = 0.012


def start(path, backend, run, calls, token, sleep=SLEEP_KILLED):
    env = dict(os.environ, KILL_RUN=str(run), KILL_CALLS=str(calls), KILL_TOKEN=token,
               KILL_SLEEP=str(sleep))
    cmd = [sys.executable, str(SCRIPT), str(path), backend]
    if backend == "mpi":
        cmd = [str(MPIEXEC), "-n", "4"] + cmd
    return subprocess.Popen(cmd, env=env, start_new_session=True, stderr=subprocess.PIPE,
                            text=True)


def study_processes(token):
    """{pid: MPI rank or -1} of every process of this test's study still alive."""
    found = {}
    for entry in pathlib.Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"KILL_TOKEN={token}".encode() in environ:
            ranks = [int(e[9:]) for e in environ if e.startswith(b"PMI_RANK=")]
            found[int(entry.name)] = ranks[0] if ranks else -1
    return found


def kill(proc, backend, token, how):
    """SIGKILL the study ``how`` (job, rank0 or worker); fail if anything is left running."""
    ranks = {rank: pid for pid, rank in study_processes(token).items() if rank >= 0}
    if how == "job" or backend != "mpi" or not ranks:
        os.killpg(proc.pid, signal.SIGKILL)
        for pid in ranks.values():  # Hydra starts ranks in sessions of their own
            os.kill(pid, signal.SIGKILL)
    elif how == "rank0" and 0 in ranks:
        os.kill(ranks[0], signal.SIGKILL)
    else:
        os.kill(ranks[max(ranks)], signal.SIGKILL)
    try:
        proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"the study hung after a {how} kill") from None
    # ray's own processes (raylet, gcs, its reaper) notice a killed driver within seconds,
    # but on a loaded machine not always within ten
    deadline = time.monotonic() + (30 if backend == "ray" else 10)
    while study_processes(token) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = study_processes(token)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left running after a {how} kill: {left}"


def wait_for_commit(path, before, proc, timeout=60.0):
    """Wait until this run has committed rows (or has ended): a kill then surely lands on
    a file with rows of this run. (Workers return a group only when all of it is done, so
    psets computed are not yet psets committed.)"""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        assert time.monotonic() < deadline, f"the study committed nothing for {timeout} s"
        df = committed(path)  # None also when caught mid-write: look again
        if df is not None and len(df) > len(before):
            return
        time.sleep(0.05)


def committed(path):
    if not path.exists():
        return None
    try:
        df = psmpi.read(path, name="kill")
    except psmpi.StoreError:
        return None  # killed before the map's table existed
    return df if len(df) else None  # killed before the first commit


def check_exact(df):
    """Every committed row is exactly what the worker returned for its pset, once."""
    assert not df["a"].duplicated().any()
    for row in df.to_dict("records"):
        a = row["a"]
        assert row["opts"] == {"n": a % 5, "tags": ["x"] * (a % 3)}, row  # psets as given
        assert row["corner"] == (a % 2, float(a)) and type(row["corner"]) is tuple, row
        want = STUDY.expected(a)
        assert row["y"] == want["y"] and row["label"] == want["label"], row
        assert row["traj"].dtype == np.float32 and np.array_equal(row["traj"], want["traj"]), row
        assert row["info"] == want["info"] and type(row["info"]["pair"]) is tuple, row
        assert (row["maybe"] != row["maybe"]) if want["maybe"] is None else (
            row["maybe"] == want["maybe"]), row
        assert row["mixed"] == want["mixed"] and type(row["mixed"]) is type(want["mixed"]), row


def load_study():
    """The study script as a module (its study runs only as __main__), for expected()."""
    spec = importlib.util.spec_from_file_location("kill_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STUDY = load_study()


def calls_by_run(calls):
    seen = {}
    for line in calls.read_text().split("\n"):
        if line:
            run, index = map(int, line.split())
            seen.setdefault(index, set()).add(run)
    return seen


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["multiprocessing", "serial", "mpi"],
                         ids=["multiprocessing", "serial", "mpiexec-n4"])
def test_killed_study_resumes_without_loss_or_recompute(tmp_path, backend):
    rng = random.Random(int(os.environ.get("PSMPI_KILL_SEED", "0")) or None)
    path, calls, token = tmp_path / "kill.h5", tmp_path / "calls", uuid.uuid4().hex
    calls.write_text("")
    committed_before = {}  # run number -> pset indexes committed before that run started
    kills = 0
    for run in range(KILLS):
        df = committed(path)
        committed_before[run] = set() if df is None else set(df["a"])
        proc = start(path, backend, run, calls, token)
        if run % 4 == 3:  # kill mid-survey however slow the start-up: rows must get committed
            wait_for_commit(path, committed_before[run], proc)
            time.sleep(rng.uniform(0.0, 0.1))
        else:
            time.sleep(rng.uniform(0.3, 1.5))  # start-up is ~0.6 s: some kills land in it
        if proc.poll() == 0:
            break  # the survey completed before the kill: the final run below has nothing to do
        assert proc.poll() is None, f"run {run} failed on its own:\n{proc.communicate()[1]}"
        kill(proc, backend, token, ["job", "rank0", "worker"][run % 3])
        kills += 1
        df = committed(path)
        if df is not None:
            check_exact(df)
    assert kills == KILLS, f"the survey completed after {kills} kills: make it longer"
    final = KILLS
    df = committed(path)
    committed_before[final] = set() if df is None else set(df["a"])
    proc = start(path, backend, final, calls, token, sleep=0.0)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    df = committed(path)
    check_exact(df)
    assert sorted(df["a"]) == list(range(N_PSETS))
    assert len(committed_before[final]) > 0, "no kill left committed rows: test too short"
    for index, runs in calls_by_run(calls).items():
        for run in runs:
            assert index not in committed_before[run], (
                f"pset {index} was committed before run {run} and computed again")
    assert np.isin(np.arange(N_PSETS), df["_pset_index"]).all()

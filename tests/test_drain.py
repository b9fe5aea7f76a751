"""A stop signal drains: running groups finish and are committed, then exit status 75."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

import psmpi
from psmpi.stopping import EXIT_INCOMPLETE

# Crash, drain and kill handling: CI runs these on the oldest and the newest Python too.
pytestmark = pytest.mark.crash

SCRIPT = pathlib.Path(__file__).parent / "scripts" / "drain_study.py"


def start(path, backend, sleep, calls, **env):
    env = dict(os.environ, DRAIN_CALLS=str(calls), **env)
    return subprocess.Popen([sys.executable, str(SCRIPT), str(path), backend, str(sleep)],
                            env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_calls(calls, n, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if calls.exists() and len(calls.read_text().split()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} psets finished in {timeout} s")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["multiprocessing", "serial"])
@pytest.mark.parametrize("signum,to_group", [(signal.SIGTERM, True), (signal.SIGINT, True),
                                              (signal.SIGUSR1, False)])
def test_signal_drains_commits_and_exits_75(tmp_path, backend, signum, to_group):
    path, calls = tmp_path / "d.h5", tmp_path / "calls"
    proc = start(path, backend, 0.3, calls)
    wait_for_calls(calls, 3)
    sent = time.monotonic()
    (os.killpg if to_group else os.kill)(proc.pid, signum)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_INCOMPLETE, err
    assert time.monotonic() - sent < 5
    assert f"stopped by {signal.Signals(signum).name}" in err and "Run the same command" in err
    finished = {int(i) for i in calls.read_text().split()}
    stored = set(psmpi.read(path, name="drain")["_pset_index"])
    assert finished <= stored, f"finished but lost: {finished - stored}"
    assert len(stored) < 40
    # the same command again completes exactly the rest
    proc = start(path, backend, 0.01, calls)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "complete 40" in out
    assert sorted(psmpi.read(path, name="drain")["a"]) == list(range(40))


@pytest.mark.timeout(60)
def test_drain_period_runs_out_and_abandons_running_psets(tmp_path):
    path, calls = tmp_path / "d.h5", tmp_path / "calls"
    proc = start(path, "multiprocessing", 0.0, calls)  # warm-up run: all done quickly
    proc.communicate(timeout=30)
    path.unlink()
    proc = start(path, "multiprocessing", 20.0, calls, PSMPI_DRAIN_SECONDS="1")
    time.sleep(2.0)
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_INCOMPLETE, err
    assert time.monotonic() - sent < 6
    assert "4 psets in flight were abandoned" in err  # 2 workers x 2 groups of 1


@pytest.mark.timeout(60)
def test_second_signal_stops_at_once(tmp_path):
    path, calls = tmp_path / "d.h5", tmp_path / "calls"
    proc = start(path, "serial", 3.0, calls)
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGINT)
    time.sleep(0.3)
    sent = time.monotonic()
    os.kill(proc.pid, signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode != 0 and time.monotonic() - sent < 5
    assert psmpi.read(path, name="drain") is not None  # the file still opens


def lines(path: pathlib.Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie not yet reaped by its parent counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.timeout(180)
@pytest.mark.parametrize("signum,to_group", [(signal.SIGINT, True), (signal.SIGTERM, False)],
                         ids=["ctrl-c", "sigterm"])
def test_second_signal_stops_multiprocessing_at_once_keeping_committed_rows(tmp_path, signum,
                                                                            to_group):
    """Ctrl-C twice (or SIGTERM twice) with long psets running and queued: exit in seconds.

    The pool used to finish every running and queued group first (20 s each here), then drop
    what they computed.
    """
    path, calls, starts = tmp_path / "d.h5", tmp_path / "calls", tmp_path / "starts"
    proc = start(path, "multiprocessing", 0.01, calls, PSMPI_LIMIT="10")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    proc = start(path, "multiprocessing", 20.0, calls, DRAIN_STARTS=str(starts))
    deadline = time.monotonic() + 60
    while len(lines(starts)) < 2:  # both workers compute; two more groups wait in the queue
        assert time.monotonic() < deadline and proc.poll() is None, "the survey did not start"
        time.sleep(0.05)
    send = os.killpg if to_group else os.kill
    send(proc.pid, signum)
    time.sleep(0.5)
    sent = time.monotonic()
    send(proc.pid, signum)
    _, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - sent
    assert proc.returncode not in (0, EXIT_INCOMPLETE), err
    assert elapsed < 5, f"the second {signal.Signals(signum).name} took {elapsed:.1f} s"
    assert "KeyboardInterrupt" in err and "second stop signal" in err, err
    workers = [int(pid) for pid in lines(starts)]
    deadline = time.monotonic() + 5
    while not all(map(gone, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(map(gone, workers)), "worker processes outlived the driver"
    stored = psmpi.read(path, name="drain")
    assert sorted(stored["a"]) == list(range(10)), "the committed rows changed"
    # the same command resumes: the 30 psets left, none of the 10 again
    proc = start(path, "multiprocessing", 0.01, calls)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "complete 40" in out
    stored = psmpi.read(path, name="drain")
    assert sorted(stored["a"]) == list(range(40))
    assert sorted(map(int, lines(calls))) == list(range(40)), "a pset was computed twice"

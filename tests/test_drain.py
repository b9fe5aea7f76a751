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

"""Stalled workers and timeouts (psmpi.watch.stalls, the MPI backend's ledger and abort_on_timeout).

In process: the driver's Watch (threshold, one warning per worker and level, the line when a
worker gives its psets back, the ``.running`` file and its failures) and ``psmpi status``
reading that file only while its writer's lock is live. Under ``mpiexec -n 2`` and ``-n 4``
(tests/mpi_scripts/stall_study.py, every launch with a timeout): a SIGSTOPped worker rank is
named with its host and pset in the progress output, the run log and ``psmpi status``, and
the map completes after SIGCONT; ``timeout=`` reports and completes; with
``abort_on_timeout`` the job aborts with status 75, the rows committed before are intact and
the rerun resumes; a pset that times out on every run ends as a ``timeout`` failure after
``max_attempts`` runs.
"""

from __future__ import annotations

import array
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from test_mpi import MPIEXEC, clean_env, descendants, read_rows

from psmpi.backends.base import Held
from psmpi.cli.status import running_text
from psmpi.tools import summary
from psmpi.watch import stalls

HERE = os.path.dirname(os.path.abspath(__file__))
STUDY = os.path.join(HERE, "mpi_scripts", "stall_study.py")

needs_mpi = pytest.mark.skipif(
    not os.path.exists(MPIEXEC), reason="needs the mpiexec of the mpich wheel")


# -- the driver's Watch, in process ---------------------------------------------------------

class FakeBackend:
    def __init__(self):
        self.holding: list[Held] = []

    def held(self):
        return list(self.holding)


class FakeReporter:
    def __init__(self):
        self.lines: list[str] = []
        self.stalled = 0

    def warn(self, text):
        self.lines.append(text)


def watch(tmp_path, monkeypatch, timeout=None, floor="5", runtimes=()):
    monkeypatch.setenv(stalls.STALL_ENV, floor)
    backend, reporter = FakeBackend(), FakeReporter()
    w = stalls.Watch(backend, reporter, array.array("d", runtimes), {7: {"i": 7}, 8: {"i": 8}},
                     timeout, str(tmp_path / "s.h5"), "m")
    return w, backend, reporter


def test_a_stalled_worker_is_reported_once_then_when_it_gives_back(tmp_path, monkeypatch):
    w, backend, reporter = watch(tmp_path, monkeypatch)
    backend.holding = [Held("rank 2", "node7", (7,), 4.0)]
    w.check(100.0)
    assert reporter.lines == [] and reporter.stalled == 0  # below the 5-s floor
    backend.holding = [Held("rank 2", "node7", (7,), 6.0), Held("rank 1", "node1", (8,), 1.0)]
    w.check(101.0)
    w.check(102.0)  # still stalled: no second line
    assert len(reporter.lines) == 1 and reporter.stalled == 1
    line = reporter.lines[0]
    assert "rank 2 on node7 has held pset 7 for 6.0 s: stalled" in line and "{'i': 7}" in line
    backend.holding = [Held("rank 1", "node1", (8,), 2.0)]
    w.check(103.0)
    assert reporter.lines[1] == "rank 2 on node7 gave back pset 7, held for 6.0 s or more"
    assert reporter.stalled == 0


def test_threshold_follows_the_median_runtime_and_group_size(tmp_path, monkeypatch):
    w, _, _ = watch(tmp_path, monkeypatch, floor="1", runtimes=[0.5] * 10 + [float("nan")])
    assert w.threshold(Held("rank 1", "h", (7,), 0), w.typical_seconds()) == 5.0  # 10 x 0.5
    assert w.threshold(Held("rank 1", "h", (7, 8), 0), w.typical_seconds()) == 10.0
    bare, _, _ = watch(tmp_path, monkeypatch)
    assert bare.typical_seconds() is None and bare.threshold(Held("r", "h", (1,), 0), None) == 5
    monkeypatch.delenv(stalls.STALL_ENV)
    assert stalls.stall_floor() == stalls.STALL_FLOOR_SECONDS == 60.0


def test_past_timeout_is_reported_even_below_the_stall_threshold(tmp_path, monkeypatch):
    w, backend, reporter = watch(tmp_path, monkeypatch, timeout=2.0, floor="100")
    backend.holding = [Held("rank 3", "n3", (7,), 1.5)]
    w.check(10.0)
    assert reporter.lines == []
    backend.holding = [Held("rank 3", "n3", (7,), 2.5)]
    w.check(11.0)
    w.check(12.0)
    assert len(reporter.lines) == 1 and "past timeout=2 s per pset" in reporter.lines[0]
    # a group of two psets has two timeouts' worth of time
    backend.holding = [Held("rank 3", "n3", (7, 8), 3.0)]
    w.check(13.0)
    assert len(reporter.lines) == 2 and "gave back pset 7" in reporter.lines[1]


def test_stalled_then_past_timeout_gives_two_lines(tmp_path, monkeypatch):
    w, backend, reporter = watch(tmp_path, monkeypatch, timeout=10.0, floor="1")
    for seconds in (2.0, 3.0, 11.0, 12.0):
        backend.holding = [Held("rank 1", "h", (7,), seconds)]
        w.check(seconds)
    assert [("stalled" in x, "past timeout" in x) for x in reporter.lines] == \
        [(True, False), (False, True)]


def test_running_file_is_written_atomically_and_removed(tmp_path, monkeypatch):
    running = tmp_path / "s.h5.running"
    running.write_text("{}")  # left by a killed run: the new map (holding the lock) drops it
    w, backend, _ = watch(tmp_path, monkeypatch)
    backend.holding = [Held("rank 1", "h", (8,), 1.0)]
    w.check(w.started + 1)
    assert not running.exists()  # nothing stalled, and not yet WRITE_SECONDS: no file
    w.check(w.started + stalls.WRITE_SECONDS + 1)
    document = json.loads(running.read_text())
    assert document["pid"] == os.getpid() and document["busy"] == 1
    assert document["holders"][0]["indexes"] == [8] and document["holders"][0]["state"] == "fine"
    backend.holding = [Held("rank 2", "h", (7,), 9.0)]
    w.check(w.started + stalls.WRITE_SECONDS + 2)  # a new stall is written at once
    assert json.loads(running.read_text())["holders"][0]["state"] == "stalled"
    assert glob.glob(str(tmp_path / "*.tmp")) == []
    w.close()
    assert not running.exists()


def test_a_running_file_that_cannot_be_written_never_stops_the_map(tmp_path, monkeypatch):
    w, backend, reporter = watch(tmp_path, monkeypatch)
    w.running_path = str(tmp_path / "no" / "such" / "dir" / "s.h5.running")
    backend.holding = [Held("rank 2", "h", (7,), 9.0)]
    w.check(1.0)
    assert any("cannot write" in line for line in reporter.lines)
    assert w.running_path is None
    w.check(2.0)  # and it does not try again
    w.close()


def test_a_held_that_raises_never_stops_the_map(tmp_path, monkeypatch):
    w, backend, reporter = watch(tmp_path, monkeypatch)
    backend.held = lambda: 1 / 0
    w.poll(w.next_check)
    assert "cannot tell what the workers hold" in reporter.lines[0]
    w.poll(time.monotonic() + 1e6)  # no more checks
    assert len(reporter.lines) == 1


def write_lock(path: str, pid: int, host: str) -> None:
    with open(path + ".lock", "w") as fh:
        json.dump({"pid": pid, "host": host, "started": "now"}, fh)


def test_status_shows_the_running_file_only_while_its_writer_is_live(tmp_path, monkeypatch):
    path = str(tmp_path / "s.h5")
    document = {"map": "m", "pid": os.getpid(), "host": socket.gethostname(),
                "updated": "2026-01-01T00:00:00+00:00", "updated_unix": time.time(),
                "busy": 1, "stalled": 1, "holders": [
                    {"worker": "rank 2", "host": "node7", "indexes": [7], "psets": ["{'i': 7}"],
                     "seconds": 75.0, "since": "2026-01-01T00:00:00+00:00", "threshold": 60,
                     "state": "stalled"}]}
    (tmp_path / "s.h5.running").write_text(json.dumps(document))
    assert summary.running_now(path) is None  # no lock: no survey, whatever the file says
    write_lock(path, os.getpid(), socket.gethostname())
    assert summary.running_now(path)["holders"][0]["worker"] == "rank 2"
    text = running_text(summary.running_now(path))
    assert "rank 2" in text and "node7" in text and "stalled" in text and "{'i': 7}" in text
    write_lock(path, 2**23, socket.gethostname())  # above pid_max: dead, a stale lock
    assert summary.running_now(path) is None
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:  # a live writer, but the file is from another process (a killed earlier run)
        write_lock(path, other.pid, socket.gethostname())
        assert summary.running_now(path) is None
    finally:
        other.kill()
        other.wait(timeout=10)


# -- the MPI backend's ledger, in process (no MPI) -----------------------------------------

def test_mpi_ledger_holds_the_running_group_and_starts_the_queued_one_on_return():
    from test_mpi import _fake_master

    from psmpi.backends.mpi import Job
    from psmpi.worker.task import Task

    master = _fake_master(2)
    master.hosts[1] = "node1"
    job = Job(1, Task(lambda p: {"y": 1}, "m", "mpi"), iter([[(i, {"a": i})] for i in range(4)]))
    master.run_id = 1
    master.refill(job, {"in_flight": 2})  # ranks 1, 2, then each a queued second group
    held = {h.worker: h for h in master.held()}
    assert held["rank 1"].indexes == (0,) and held["rank 1"].host == "node1"
    assert held["rank 2"].indexes == (1,) and held["rank 2"].host == "unknown host"
    time.sleep(0.05)
    master.free_slot(1)  # rank 1 returned group 0: its queued group 2 runs from now
    held = {h.worker: h for h in master.held()}
    assert held["rank 1"].indexes == (2,) and held["rank 1"].seconds < 0.04
    assert held["rank 2"].seconds >= 0.05
    assert [rank for rank, _, _ in master.past_timeout(0.01, time.monotonic())] == [2]


def test_abort_on_timeout_must_be_a_bool():
    from psmpi.backends.mpi import checked_options
    from psmpi.errors import ConfigError

    assert checked_options({"abort_on_timeout": True})["abort_on_timeout"] is True
    with pytest.raises(ConfigError, match="abort_on_timeout"):
        checked_options({"abort_on_timeout": 1})
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['abort_on_timout'\]"):
        checked_options({"abort_on_timout": True})


# -- under mpiexec ----------------------------------------------------------------------------

class Launch:
    """stall_study.py under mpiexec in ``directory``; stderr collected line by line."""

    def __init__(self, ranks: int, directory, *args: str, env: dict | None = None):
        self.out = str(directory / "s.h5")
        env = {"PSMPI_LOGFILE": "1", **(env or {})}
        self.proc = subprocess.Popen([MPIEXEC, "-n", str(ranks), sys.executable, STUDY,
                                      self.out, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=clean_env(env),
                                     cwd=directory, start_new_session=True)
        self.err: list[str] = []
        self.reader = threading.Thread(target=self.read_stderr, daemon=True)
        self.reader.start()

    def read_stderr(self):
        for line in self.proc.stderr:
            self.err.append(line)

    def stderr(self) -> str:
        return "".join(self.err)

    def wait_for(self, found, seconds: float, what: str):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = found()
            if value:
                return value
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.kill()
        pytest.fail(f"no {what} within {seconds} s\nstderr:\n{self.stderr()[-3000:]}")

    def kill(self):
        for pid in descendants(self.proc.pid):
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def finish(self, seconds: float) -> tuple[int, str, str]:
        try:
            out = self.proc.stdout.read() if self.proc.wait(timeout=seconds) is not None else ""
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait(timeout=30)
            pytest.fail(f"no exit within {seconds} s\nstderr:\n{self.stderr()[-3000:]}")
        self.reader.join(timeout=10)
        return self.proc.returncode, out, self.stderr()


def psmpi_status(path: str, *options: str) -> str:
    done = subprocess.run([sys.executable, "-m", "psmpi", "status", path, *options],
                          capture_output=True, text=True, env=clean_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def run_log(directory) -> str:
    (log,) = glob.glob(str(directory / ".psmpi-*.log"))
    with open(log) as fh:
        return fh.read()


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 4])
def test_a_sigstopped_rank_is_named_in_progress_log_and_status(tmp_path, ranks):
    run = Launch(ranks, tmp_path, "stop", env={stalls.STALL_ENV: "2"})
    marker = tmp_path / "s.h5.stopped"
    rank, pid, host = run.wait_for(lambda: marker.exists() and marker.read_text().split(),
                                   90, "stopped worker")
    try:
        named = f"rank {rank} on {host} has held pset 3 for"
        run.wait_for(lambda: named in run.stderr(), 30, "stall warning")
        assert "stalled" in run.stderr()
        status = psmpi_status(run.out)
        assert "stalled" in status, status
        row = next(line for line in status.splitlines() if line.startswith(f"rank {rank} "))
        assert host in row and " 3 " in row, status
        running = json.loads(psmpi_status(run.out, "--json"))["running"]
        (holder,) = [h for h in running["holders"] if h["state"] == "stalled"]
        assert (holder["worker"], holder["host"], holder["indexes"]) == \
            (f"rank {rank}", host, [3])
        assert holder["seconds"] >= 2
    finally:
        os.kill(int(pid), signal.SIGCONT)
    code, out, err = run.finish(60)
    assert code == 0 and "map finished" in out, err
    assert f"rank {rank} on {host} gave back pset 3" in err, err
    assert read_rows(run.out, "naps") == 12
    log = run_log(tmp_path)
    assert named in log and "gave back pset 3" in log
    assert not (tmp_path / "s.h5.running").exists()
    assert "running" not in psmpi_status(run.out)


@needs_mpi
def test_timeout_under_mpi_reports_and_completes(tmp_path):
    run = Launch(2, tmp_path, "slow", env={"PSMPI_TIMEOUT": "1"})
    code, out, err = run.finish(90)
    assert code == 0 and "map finished" in out, err
    assert "rank 1 on" in err and "has held pset 3 for" in err, err
    assert "past timeout=1 s per pset" in err
    assert err.count("past timeout") == 1  # once per pset
    assert read_rows(run.out, "naps") == 12  # the result still counts: MPI only reports
    assert "past timeout=1 s per pset" in run_log(tmp_path)


def failures(path: str) -> list[tuple[int, str, str]]:
    """(index, kind, message) of every failure row, in the order stored."""
    code = (f"import psmpi; f = psmpi.read({path!r}, name='naps', failures=True); "
            "print(list(zip(f['_pset_index'].tolist(), f['_kind'], f['_exception'])))"
            )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=clean_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    return eval(done.stdout)


@needs_mpi
def test_abort_on_timeout_aborts_keeps_committed_rows_and_the_rerun_resumes(tmp_path):
    started = time.monotonic()
    run = Launch(4, tmp_path, "hang", "1", env={"PSMPI_TIMEOUT": "1"})
    code, out, err = run.finish(90)
    took = time.monotonic() - started
    assert code == 75 and "map finished" not in out, err
    assert "past timeout=1 s per pset: pset 3 on rank" in err, err
    assert took < 45, f"took {took:.0f} s"  # the pset would hang 600 s
    done = read_rows(run.out, "naps")
    assert 1 <= done <= 11
    ((index, kind, message),) = failures(run.out)
    assert (index, kind) == (3, "timeout") and "ran past timeout=1.0 s per pset" in message
    assert "ran past timeout" in run_log(tmp_path)
    rerun = Launch(4, tmp_path, "fast", "1", env={"PSMPI_TIMEOUT": "1"})
    code, out, err = rerun.finish(90)
    assert code == 0 and "map finished" in out, err
    assert f"{done} resumed" in err, err
    assert read_rows(run.out, "naps") == 12


@needs_mpi
def test_a_pset_that_always_times_out_ends_as_a_timeout_failure(tmp_path):
    """A requeue loop: max_attempts=2 aborted runs, then one that skips the pset."""
    env = {"PSMPI_TIMEOUT": "1", "PSMPI_MAX_ATTEMPTS": "2"}
    codes = []
    for _ in range(4):
        code, out, err = Launch(2, tmp_path, "hang", "1", env=env).finish(90)
        codes.append(code)
        if code != 75:
            break
    assert codes == [75, 75, 0], err
    assert read_rows(str(tmp_path / "s.h5"), "naps") == 11
    stored = failures(str(tmp_path / "s.h5"))
    assert [(index, kind) for index, kind, _ in stored] == [(3, "timeout")] * 3
    assert "ran past timeout=1.0 s and the run was aborted 2 times, so it is skipped" \
        in stored[-1][2]
    assert not os.path.exists(tmp_path / "s.h5.running")

"""What only the multiprocessing backend does: dead workers, process recycling, cores."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

import psmpi
from psmpi import api
from psmpi.backends.base import available_cores, resolve_ncores
from psmpi.backends.multiprocessing import START_METHODS, MultiprocessingBackend
from psmpi.worker.task import Task

# Crash and kill handling: CI runs these on the oldest and the newest Python too.
pytestmark = pytest.mark.crash


def die_on_3(pset):
    if pset["a"] == 3:
        os._exit(7)
    return {"y": pset["a"]}


def kill_self_on_5(pset):
    if pset["a"] == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return {"y": pset["a"]}


def pid_worker(pset):
    return {"pid": os.getpid()}


@pytest.mark.parametrize("worker,bad", [(die_on_3, 3), (kill_self_on_5, 5)])
@pytest.mark.parametrize("group_size", [1, 4, None])
def test_a_pset_that_kills_its_worker_fails_alone(tmp_path, worker, bad, group_size):
    res = psmpi.map(worker, [{"a": a} for a in range(12)], backend="multiprocessing",
                    ncores=2, group_size=group_size, out=str(tmp_path / "c.h5"), verbose=0)
    assert res.results["a"].tolist() == [a for a in range(12) if a != bad]
    assert res.missing.df["a"].tolist() == [bad]
    assert res.missing.df["_kind"].tolist() == ["crashed"]
    assert "died" in res.missing.df["_exception"].iloc[0]
    # the pool was rebuilt: a later map works
    again = psmpi.map(pid_worker, [{"a": 1}], backend="multiprocessing", ncores=2, out=None,
                      verbose=0)
    assert len(again) == 1


def exit_on_3(pset):
    if pset["a"] == 3:
        sys.exit(4)
    return {"y": pset["a"]}


@pytest.mark.parametrize("group_size", [1, 4, None])
def test_sys_exit_in_the_worker_fails_its_pset_alone_and_the_survey_goes_on(tmp_path,
                                                                            group_size):
    res = psmpi.map(exit_on_3, [{"a": a} for a in range(12)], backend="multiprocessing",
                    ncores=2, group_size=group_size, out=str(tmp_path / "x.h5"), verbose=0)
    assert res.results["a"].tolist() == [a for a in range(12) if a != 3]
    assert res.missing.df["a"].tolist() == [3]
    assert res.missing.df["_kind"].tolist() == ["crashed"]
    assert "called sys.exit(4)" in res.missing.df["_exception"].iloc[0]


class Escape(BaseException):
    """Gets past the worker's ``except Exception``, as KeyboardInterrupt would."""


def escape_on_2(pset):
    if pset["a"] == 2:
        raise Escape("out of the worker")
    return {"y": pset["a"]}


def test_a_base_exception_in_the_worker_fails_its_group_as_on_ray(tmp_path):
    res = psmpi.map(escape_on_2, [{"a": a} for a in range(6)], backend="multiprocessing",
                    ncores=2, group_size=1, out=str(tmp_path / "e.h5"), verbose=0)
    assert res.results["a"].tolist() == [0, 1, 3, 4, 5]
    assert res.missing.df["_kind"].tolist() == ["exception"]
    assert "Escape: out of the worker" in res.missing.df["_exception"].iloc[0]


def sleep_long_unless_first(pset):
    """Pset 0 sleeps long and logs when it finished; pset 1 kills its process meanwhile."""
    if pset["a"] == 1:
        time.sleep(1.0)
        os._exit(9)
    if pset["a"] == 0:
        time.sleep(pset["sleep"])
        with open(pset["log"], "a") as f:
            f.write("finished\n")
    return {"y": pset["a"]}


@pytest.mark.timeout(120)
def test_a_dead_worker_kills_the_pool_and_never_waits_for_the_others(tmp_path):
    """When the pool breaks, its other workers are killed at once, not joined.

    They ignore SIGTERM (a drain must not kill them), so on Python >= 3.12, whose broken pool
    terminates and joins them, joining hung forever; before, it waited for their groups,
    which are re-run anyway.
    """
    log = tmp_path / "finished"
    psets = [{"a": a, "sleep": 6.0, "log": str(log)} for a in range(2)]
    started = time.monotonic()
    res = psmpi.map(sleep_long_unless_first, psets, backend="multiprocessing", ncores=2,
                    group_size=1, out=None, verbose=0)
    assert res.results["a"].tolist() == [0] and res.missing.df["a"].tolist() == [1]
    assert log.read_text().split() == ["finished"], "pset 0 ran to its end in the broken pool"
    assert time.monotonic() - started < 60


def sleep_and_note_pid(pset):
    with open(pset["log"], "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(pset["sleep"])
    return {"y": pset["a"]}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = pathlib.Path(f"/proc/{pid}/stat")
    return not status.exists() or status.read_text().split()[2] != "Z"


def wait_for_lines(path: pathlib.Path, n: int, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = path.read_text().split() if path.exists() else []
        if len(lines) >= n:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} lines in {path} after {timeout} s")


def test_closing_the_run_with_groups_in_flight_kills_their_workers(tmp_path):
    """A run left early (Ctrl-C, an error on the driver) does not wait for its groups."""
    log = tmp_path / "pids"
    backend = MultiprocessingBackend({}, ncores=2)
    task = Task(sleep_and_note_pid, "left", "multiprocessing")
    psets = iter([[(a, {"a": a, "sleep": 60.0, "log": str(log)})] for a in range(4)])
    try:
        outcomes = backend.run(task, psets)
        assert next(outcomes) is None  # a heartbeat: the groups run
        pids = wait_for_lines(log, 2)
        started = time.monotonic()
        outcomes.close()
        assert time.monotonic() - started < 10
        assert not any(alive(int(pid)) for pid in pids)
    finally:
        backend.close()
    assert time.monotonic() - started < 10


def test_an_error_on_the_driver_leaves_no_group_running(tmp_path, monkeypatch):
    """The driver fails while groups run: they are killed, not waited for at exit."""
    from psmpi.driver import run as psmpi_run

    def fail(self):
        raise RuntimeError("the driver failed")

    log = tmp_path / "pids"
    monkeypatch.setattr(psmpi_run.RowWriter, "due", fail)  # on the driver, between outcomes
    psets = [{"a": a, "sleep": 60.0, "log": str(log)} for a in range(4)]
    try:
        with pytest.raises(RuntimeError, match="the driver failed"):
            psmpi.map(sleep_and_note_pid, psets, backend="multiprocessing", ncores=2,
                      group_size=1, out=str(tmp_path / "d.h5"), verbose=0)
        started = time.monotonic()
        api._session.close_backend()
        assert time.monotonic() - started < 10
        assert not any(alive(int(pid)) for pid in log.read_text().split())
    finally:
        api._session.close_backend()


def test_max_tasks_per_child_recycles_processes(tmp_path):
    psets = [{"a": a} for a in range(8)]
    kwargs = dict(backend="multiprocessing", ncores=1, group_size=1, max_tasks_per_child=2,
                  out=None, verbose=0)
    if sys.version_info < (3, 11):  # ProcessPoolExecutor cannot before 3.11: say so first
        with pytest.raises(psmpi.ConfigError, match="Python >= 3.11"):
            psmpi.map(pid_worker, psets, **kwargs)
        return
    res = psmpi.map(pid_worker, psets, **kwargs)
    assert len(set(res.results["pid"])) >= 4


def test_ncores():
    total = available_cores()
    assert resolve_ncores(None) == total
    assert resolve_ncores(-1) == max(1, total - 1)
    assert resolve_ncores(-1000) == 1
    assert resolve_ncores(3) == 3


def test_group_refused_by_a_pool_that_just_broke_is_run_later():
    """The pool may learn of a dead worker before our futures do: submit() then raises."""
    backend = MultiprocessingBackend({}, ncores=1)
    task = Task(die_on_3, "race", "multiprocessing")

    def groups():
        yield [(3, {"a": 3})]
        deadline = time.monotonic() + 10
        while not backend.executor._broken and time.monotonic() < deadline:
            time.sleep(0.01)  # now the next submit() meets a broken pool
        yield [(4, {"a": 4})]
        yield [(5, {"a": 5})]

    try:
        outcomes = [o for o in backend.run(task, groups()) if o is not None]
    finally:
        backend.close()
    crashed = [o.indexes for o in outcomes if o.errors]
    fine = sorted(i for o in outcomes if not o.errors for i in o.indexes)
    assert crashed == [[3]] and fine == [4, 5]


KILLED_DRIVER = """
import os, sys, time
import psmpi

def nap(pset):
    time.sleep(pset["seconds"])
    return {"pid": os.getpid()}

if __name__ == "__main__":
    print(os.getpid(), flush=True)
    psmpi.map(nap, [{"i": i, "seconds": 60} for i in range(4)], backend="multiprocessing",
              ncores=2, out="killed.h5", multiprocessing={"start_method": sys.argv[1]},
              verbose=0, logfile=False)
"""


@pytest.mark.parametrize("method", [m for m in ("fork", "forkserver", "spawn")
                                    if m in START_METHODS])
def test_workers_of_a_driver_killed_outright_end(tmp_path, method):
    """SIGKILL of the driver alone (not its process group): its workers, which ignore
    SIGTERM and wait on a queue that never ends, notice and exit."""
    (tmp_path / "study.py").write_text(KILLED_DRIVER)
    token = f"{os.getpid()}-{method}-{time.monotonic_ns()}"
    env = {**os.environ, "KILL_TOKEN": token}
    proc = subprocess.Popen([sys.executable, "study.py", method], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        driver = int(proc.stdout.readline())
        deadline = time.monotonic() + 60
        while len(tokened(token) - {driver}) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = tokened(token) - {driver}
        assert len(workers) >= 2, "the pool never started"
        time.sleep(1.0)  # the workers are inside their 60-s psets
        os.kill(driver, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while tokened(token) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not tokened(token), "processes outlived their killed driver"
    finally:
        for pid in tokened(token):
            os.kill(pid, signal.SIGKILL)
        proc.kill()


def tokened(token: str) -> set[int]:
    """Pids of every live process whose environment has KILL_TOKEN=token."""
    found = set()
    for entry in pathlib.Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError, IndexError):
            continue
        if f"KILL_TOKEN={token}".encode() in environ and state != "Z":
            found.add(int(entry.name))
    return found


def _die_holding(lock) -> None:
    lock.acquire()
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_killed_holding_the_slot_lock_does_not_hang_the_next_pool(tmp_path):
    """A worker SIGKILLed inside its initializer (a broken pool's workers are killed, a
    replacement may be starting) dies holding the lock of the slot rows: discarding the
    pool and the next pool's workers must not wait on it forever."""
    backend = MultiprocessingBackend({}, ncores=2)
    try:
        backend.pool()
        holder = backend.context.Process(target=_die_holding, args=(backend.beacons.lock,))
        holder.start()
        holder.join(30)
        assert holder.exitcode == -signal.SIGKILL
        assert not backend.beacons.lock.acquire(timeout=0.2)  # the lock is orphaned
        started = time.monotonic()
        backend.discard_pool(kill=True)
        task = Task(pid_worker, "after", "multiprocessing")
        outcomes = [o for o in backend.run(task, iter([[(0, {"a": 0})], [(1, {"a": 1})]]))
                    if o is not None]
        assert len(outcomes) == 2 and time.monotonic() - started < 60
    finally:
        backend.close()

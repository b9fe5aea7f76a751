"""One writer per results file under any race (psmpi issue #12, item 1).

Many processes are started together against a stale lock (a lock file naming a dead pid on
this host). The processes are started once and kept: each waits on its stdin for the next
trial, so every trial releases all of them within microseconds of each other (Python's
start-up would spread them over seconds). Each holder marks its tenure with an O_EXCL file:
a second simultaneous holder finds the marker. End to end, ``psmpi.map`` runs of different
map names race the same way; each must end in success or a StoreError naming a live holder,
and every map that reported success must have all its rows in the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

import psmpi
import psmpi.tools.cleaning
import psmpi.tools.summary
from psmpi.errors import StoreError
from psmpi.store import Store
from psmpi.store import lock as lockmod

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 120

TAKER = textwrap.dedent("""
    import json, os, sys, time
    from psmpi.errors import StoreError
    from psmpi.store.lock import release_lock, take_lock
    if len(sys.argv) > 1:  # a file system without hard links
        def link(*args):
            raise PermissionError(1, "Operation not permitted")
        os.link = link
    print("ready", flush=True)
    for line in sys.stdin:
        path, hold = line.split()
        try:
            lock = take_lock(path)
        except StoreError as exc:
            print(json.dumps({"pid": os.getpid(), "error": str(exc)}), flush=True)
            continue
        t0 = time.monotonic()
        try:
            os.close(os.open(path + ".holder", os.O_WRONLY | os.O_CREAT | os.O_EXCL))
            overlap = False
        except FileExistsError:
            overlap = True
        time.sleep(float(hold))
        if not overlap:
            os.remove(path + ".holder")
        t1 = time.monotonic()
        release_lock(lock)
        print(json.dumps({"pid": os.getpid(), "held": [t0, t1], "overlap": overlap}), flush=True)
""")

MAPPER = textwrap.dedent("""
    import json, os, sys, time, warnings
    import psmpi
    from psmpi.errors import StoreError
    warnings.simplefilter("ignore")
    def work(pset):
        time.sleep(0.005)  # the maps overlap in time
        return {"y": pset["i"] * 10}
    print("ready", flush=True)
    for line in sys.stdin:
        path, name, n = line.split()
        try:
            psmpi.map(work, [{"i": i} for i in range(int(n))], out=path, name=name,
                      backend="serial", verbose=0)
            print(json.dumps({"pid": os.getpid(), "name": name, "ok": True}), flush=True)
        except StoreError as exc:
            print(json.dumps({"pid": os.getpid(), "name": name, "error": str(exc)}), flush=True)
        except Exception as exc:
            print(json.dumps({"pid": os.getpid(), "name": name, "other": repr(exc)}), flush=True)
""")


def env() -> dict:
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                PSMPI_LOGFILE="0")


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped) on this host."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=TIMEOUT)
    return proc.pid


def write_stale_lock(path, pid: int) -> None:
    with open(f"{path}.lock", "w") as fh:
        json.dump({"host": socket.gethostname(), "pid": pid, "slurm_job_id": None,
                   "started": "2024-01-01T00:00:00+00:00"}, fh)


class Crowd:
    """``n`` Python processes running ``script``, each doing one attempt per line it reads."""

    def __init__(self, script: str, n: int, cwd, log, *args: str):
        self.procs = [subprocess.Popen([sys.executable, "-c", script, *args], cwd=cwd, env=env(),
                                       text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=log)
                      for _ in range(n)]
        for proc in self.procs:
            assert proc.stdout.readline().strip() == "ready"
        self.pids = {proc.pid for proc in self.procs}

    def go(self, lines: list[str]) -> list[dict]:
        """Release every process with its line at once; their reports."""
        for proc, line in zip(self.procs, lines):
            proc.stdin.write(line + "\n")
        for proc in self.procs:  # flushed in a second pass: the writes above only buffer
            proc.stdin.flush()
        return [json.loads(proc.stdout.readline()) for proc in self.procs]

    def close(self) -> None:
        for proc in self.procs:
            proc.stdin.close()
            proc.wait(timeout=TIMEOUT)


@pytest.fixture
def crowd(tmp_path):
    made = []
    log = open(tmp_path / "stderr.log", "w")

    def start(script: str, n: int, *args: str) -> Crowd:
        made.append(Crowd(script, n, tmp_path, log, *args))
        return made[-1]

    yield start
    for c in made:
        c.close()
    log.close()


def holder_named(message: str, pids: set[int]) -> bool:
    """A StoreError names a live holder: one of the racing processes, never the dead pid."""
    return any(f"being written by pid {pid} on host" in message for pid in pids)


def assert_one_writer_at_a_time(reports: list[dict]) -> None:
    held = sorted(r["held"] for r in reports if "held" in r)
    overlaps = sum(bool(r.get("overlap")) for r in reports)
    assert not overlaps, f"{overlaps + 1} processes held the lock at once"
    for (_, end), (start, _) in zip(held, held[1:]):
        assert start >= end, f"two processes held the lock at once: {held}"


@pytest.mark.parametrize("links", ["hard links", "no hard links"])
def test_many_processes_against_a_stale_lock_take_it_one_at_a_time(tmp_path, crowd, links):
    racers = crowd(TAKER, 8, *(["nolink"] if links == "no hard links" else []))
    dead = dead_pid()
    for trial in range(25):
        path = tmp_path / f"t{trial}.h5"
        write_stale_lock(path, dead)
        reports = racers.go([f"{path} 0.1"] * len(racers.procs))
        assert_one_writer_at_a_time(reports)
        assert any("held" in r for r in reports), f"trial {trial}: nobody reclaimed the lock"
        for r in reports:
            if "error" in r:
                assert holder_named(r["error"], racers.pids), f"trial {trial}: {r['error']}"
        assert not os.path.exists(f"{path}.lock"), "the last holder left its lock behind"
    assert sorted(os.listdir(tmp_path)) == ["stderr.log"], "temporary lock files were left"


def test_maps_started_together_against_a_stale_lock_lose_nothing(tmp_path, crowd):
    racers = crowd(MAPPER, 6)
    dead = dead_pid()
    n = 30
    for trial in range(40):
        path = tmp_path / f"m{trial}.h5"
        write_stale_lock(path, dead)
        names = [f"map{k}" for k in range(len(racers.procs))]
        reports = racers.go([f"{path} {name} {n}" for name in names])
        assert not [r for r in reports if "other" in r], reports
        winners = [r["name"] for r in reports if r.get("ok")]
        assert winners, f"trial {trial}: no map succeeded: {reports}"
        for name in winners:
            lost = f"trial {trial}: map {name} reported success but the file lost rows: {reports}"
            try:
                df = psmpi.read(path, name)
            except StoreError as exc:
                pytest.fail(f"{lost}; {exc}")
            assert sorted(df["y"].tolist()) == [10 * i for i in range(n)], lost
        for r in reports:
            if "error" in r:
                assert holder_named(r["error"], racers.pids), f"trial {trial}: {r['error']}"
        assert not os.path.exists(f"{path}.lock")


# ------------------------------------------------------------------ the lock's parts
PROBE = textwrap.dedent("""
    import errno, fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("granted")
    except OSError as exc:
        print("refused" if exc.errno in (errno.EACCES, errno.EAGAIN) else exc)
""")


def record_lock_from_outside(lock) -> str:
    """Whether another process could take the record lock of ``lock`` now."""
    return subprocess.run([sys.executable, "-c", PROBE, str(lock)], capture_output=True,
                          text=True, timeout=TIMEOUT, check=True).stdout.strip()


HOLDER = textwrap.dedent("""
    import os, sys, time
    from psmpi.store.lock import take_lock
    take_lock(sys.argv[1])
    if len(sys.argv) > 2 and os.fork() == 0:  # a forked worker outliving its master
        time.sleep(120)
        os._exit(0)
    print("held", flush=True)
    time.sleep(120)
""")


def start_holder(path, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), *extra], env=env(),
                            text=True, stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=TIMEOUT)


def test_a_live_holder_is_not_reclaimed_even_if_its_lock_names_a_dead_pid(tmp_path, monkeypatch):
    path = tmp_path / "held.h5"
    holder = start_holder(path)
    try:
        write_stale_lock(path, dead_pid())  # rewritten in place: the holder keeps its record lock
        monkeypatch.setattr(lockmod, "PATIENCE", 1.0)
        with pytest.raises(StoreError, match="a live process holds it although pid"):
            lockmod.take_lock(str(path))
        assert os.path.exists(f"{path}.lock")
    finally:
        stop(holder)


def test_a_forked_worker_does_not_keep_a_dead_masters_lock(tmp_path):
    path = tmp_path / "forked.h5"
    holder = start_holder(path, "fork")
    os.kill(holder.pid, signal.SIGKILL)  # the master dies; its forked child sleeps on
    holder.wait(timeout=TIMEOUT)
    try:
        with pytest.warns(UserWarning, match=f"dead pid {holder.pid}"):
            lock = lockmod.take_lock(str(path))
        assert lockmod.read_owner(lock)["pid"] == os.getpid()
        lockmod.release_lock(lock)
    finally:
        stop(holder)


def test_a_second_store_of_the_same_file_in_one_process_keeps_the_first_lock(tmp_path):
    path = tmp_path / "one.h5"
    (tmp_path / "alias").symlink_to(tmp_path)
    with Store.open(path):
        for other in (tmp_path / "alias" / "one.h5", os.path.relpath(path)):
            with pytest.raises(StoreError, match=f"being written by pid {os.getpid()}"):
                Store.open(other)
        assert f"pid {os.getpid()}" in psmpi.tools.summary.writer_of(str(path))
        assert record_lock_from_outside(f"{path}.lock") == "refused"
    assert not os.path.exists(f"{path}.lock")


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path):
    path = tmp_path / "swapped.h5"
    lock = lockmod.take_lock(str(path))
    os.unlink(lock)  # removed by hand, and another process took the file since
    with open(lock, "w") as fh:
        json.dump({"host": "node-2", "pid": 7, "slurm_job_id": None, "started": "now"}, fh)
    lockmod.release_lock(lock)
    assert json.loads(open(lock).read())["host"] == "node-2"


def test_a_lock_seen_before_its_content_is_not_called_unreadable(tmp_path):
    path = tmp_path / "young.h5"
    open(f"{path}.lock", "w").close()  # created, its writer about to write the JSON
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        timer = threading.Timer(0.3, write_stale_lock, (path, holder.pid))
        timer.start()
        with pytest.raises(StoreError, match=f"being written by pid {holder.pid} on host"):
            lockmod.take_lock(str(path))
        timer.join()
    finally:
        holder.kill()
        holder.wait(timeout=TIMEOUT)


def refuse(errno_: int):
    def fail(*args, **kwargs):
        raise OSError(errno_, os.strerror(errno_))
    return fail


@pytest.mark.parametrize("missing", ["record locks", "hard links"])
def test_file_systems_without_record_locks_or_hard_links(tmp_path, monkeypatch, missing):
    if missing == "record locks":
        monkeypatch.setattr(lockmod.fcntl, "lockf", refuse(errno.ENOLCK))
    else:
        monkeypatch.setattr(lockmod.os, "link", refuse(errno.EPERM))
    path = tmp_path / "plain.h5"
    write_stale_lock(path, dead_pid())
    with pytest.warns(UserWarning, match="reclaiming"):
        lock = lockmod.take_lock(str(path))
    with open(lock) as fh:
        assert json.load(fh)["pid"] == os.getpid()
    with pytest.raises(StoreError, match=f"being written by pid {os.getpid()}"):
        lockmod.take_lock(str(path))
    lockmod.release_lock(lock)
    assert os.listdir(tmp_path) == []


def test_clean_finds_the_temporary_lock_of_a_dead_process(tmp_path):
    path = tmp_path / "s.h5"
    leftover = tmp_path / f"s.h5.lock-{dead_pid()}-0123abcd.tmp"
    leftover.write_text("{}")
    mine = tmp_path / f"s.h5.lock-{os.getpid()}-0123abcd.tmp"
    mine.write_text("{}")
    assert psmpi.tools.cleaning.leftovers(str(path)) == [str(leftover)]


def test_the_stale_lock_warning_shows_the_users_line_not_psmpis(tmp_path):
    path = tmp_path / "study.h5"
    write_stale_lock(path, dead_pid())
    script = tmp_path / "study.py"
    script.write_text("import psmpi\n"
                      "psmpi.map(lambda p: {'y': 1}, [{'a': 1}], out='study.h5', name='m',\n"
                      "          backend='serial', verbose=0)\n")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=TIMEOUT, env=env())
    assert proc.returncode == 0, proc.stderr
    warning = [line for line in proc.stderr.splitlines() if "reclaiming the lock" in line]
    assert warning and warning[0].startswith(f"{script}:2: UserWarning"), proc.stderr
    assert "psmpi/" not in proc.stderr.replace(str(tmp_path), ""), proc.stderr

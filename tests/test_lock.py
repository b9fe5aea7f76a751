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

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import psmpi
from psmpi import lock as lockmod
from psmpi.errors import StoreError
from psmpi.store import Store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 120

TAKER = textwrap.dedent("""
    import json, os, sys, time
    from psmpi.errors import StoreError
    from psmpi.lock import release_lock, take_lock
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

    def __init__(self, script: str, n: int, cwd, log):
        self.procs = [subprocess.Popen([sys.executable, "-c", script], cwd=cwd, env=env(),
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

    def start(script: str, n: int) -> Crowd:
        made.append(Crowd(script, n, tmp_path, log))
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


def test_many_processes_against_a_stale_lock_take_it_one_at_a_time(tmp_path, crowd):
    racers = crowd(TAKER, 8)
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

"""Take-back in the MPI backend: a group queued behind a long one goes to a worker that runs
dry (rank 0 sends TAKE, the worker answers GIVEN if it had not started it, else DONE).

Launched under ``mpiexec -n 4`` with timeouts (the helpers of tests/test_mpi.py); the kill
test SIGKILLs the job at random instants as tests/test_resume_kill.py does.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid

import pytest
from test_mpi import MPIEXEC, SCRIPTS, clean_env, launch, pytestmark  # noqa: F401  (skip without mpi4py)
from test_resume_kill import kill

import psmpi

LONG = 4.0
MAPS, PSETS = 40, 8  # as in mpi_scripts/takeback_kill.py


def test_group_queued_behind_a_long_pset_is_taken_back(tmp_path):
    out = str(tmp_path / "takeback.h5")
    code, stdout, err, _ = launch(4, os.path.join(SCRIPTS, "takeback_study.py"), out, LONG,
                                  timeout=120)
    assert code == 0, f"{stdout}\n{err}"
    df = psmpi.read(out, name="takeback")
    assert sorted(df["i"]) == list(range(30))  # every pset stored exactly once
    ranks = dict(zip(df["i"], df["_rank"]))
    long_rank = ranks[0]
    # Pset 3 (and any short one) queued behind pset 0 was computed elsewhere.
    assert [i for i, rank in ranks.items() if i and rank == long_rank] == [], ranks
    makespan = float(stdout.split("makespan ")[1].split()[0])
    # Without take-back pset 3 starts after pset 0: 1.5 × LONG.
    assert LONG <= makespan < LONG + 1.2, stdout


def committed(path) -> set[tuple[int, int]]:
    """(map, pset) of every row committed in the file so far."""
    done = set()
    if not path.exists():
        return done
    for m in range(MAPS):
        try:
            df = psmpi.read(path, name=f"m{m}")
        except psmpi.StoreError:  # this map's table does not exist yet
            continue
        if not len(df):  # killed before its first commit
            continue
        assert not df["i"].duplicated().any(), f"map {m}: a pset stored twice"
        done.update((m, i) for i in df["i"])
    return done


def wait_for_commit(path, before: set, proc, timeout: float = 60.0) -> None:
    """Wait until this run has committed rows (or has ended): a kill then lands mid-survey
    however slow the start-up."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and len(committed(path)) <= len(before):
        assert time.monotonic() < deadline, f"the study committed nothing for {timeout} s"
        time.sleep(0.05)


@pytest.mark.crash
@pytest.mark.timeout(300)
def test_take_back_under_kills_loses_and_doubles_nothing(tmp_path):
    rng = random.Random(int(os.environ.get("PSMPI_KILL_SEED", "0")) or None)
    path, calls, token = tmp_path / "kill.h5", tmp_path / "calls", uuid.uuid4().hex
    calls.write_text("")
    script = os.path.join(SCRIPTS, "takeback_kill.py")
    committed_before, kills, kills_done = {}, 6, 0
    for run in range(kills + 1):
        committed_before[run] = committed(path)
        proc = subprocess.Popen([MPIEXEC, "-n", "4", sys.executable, script, str(path),
                                 str(calls), str(run)], env=clean_env({"KILL_TOKEN": token}),
                                start_new_session=True, stderr=subprocess.PIPE, text=True)
        if run == kills:  # the last run completes the survey
            _, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err
            break
        wait_for_commit(path, committed_before[run], proc)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() == 0:
            break  # the survey completed before its kill
        kills_done += 1
        kill(proc, "mpi", token, "job")
    assert committed(path) == {(m, i) for m in range(MAPS) for i in range(PSETS)}
    assert kills_done >= 3, f"the survey completed after {kills_done} kills: make it longer"
    seen: dict[tuple[int, int, int], int] = {}
    for line in calls.read_text().split("\n"):
        if line:
            run, m, i = map(int, line.split())
            seen[run, m, i] = seen.get((run, m, i), 0) + 1
            assert (m, i) not in committed_before[run], (
                f"pset {i} of map {m} was committed before run {run} and computed again")
    doubled = {key: n for key, n in seen.items() if n > 1}
    assert not doubled, f"(run, map, pset) computed more than once in one run: {doubled}"
    # The kills landed on take-backs: in most maps pset 3 ran elsewhere than pset 0.
    moved = 0
    for m in range(MAPS):
        ranks = dict(zip(*(psmpi.read(path, name=f"m{m}")[c] for c in ("i", "_rank"))))
        moved += ranks[3] != ranks[0]
    assert moved >= MAPS // 2, f"pset 3 ran beside pset 0 in only {moved} of {MAPS} maps"

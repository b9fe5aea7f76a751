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


# -- rank 0's ledger through a take-back, in process (no MPI) ------------------------------

def _sent_kinds(master) -> list[tuple[int, str, int]]:
    """(rank, kind, send id) of each message the master sent."""
    return [(dest, msg[0], msg[2] if msg[0] == "take" else msg[2][3])
            for dest, msg in master.comm.sent]


def _two_busy_workers_with_queued_groups(n_groups, listens=(True, True)):
    from test_mpi import _fake_master

    from psmpi.backends.mpi import Job
    from psmpi.worker.task import Task

    master = _fake_master(2)
    master.listens = [False, *listens]  # has a listener thread, as each worker's HELLO said
    master.run_id = 1
    job = Job(1, Task(lambda p: {"y": 1}, "m", "mpi"),
              iter([[(i, {"a": i})] for i in range(n_groups)]))
    master.refill(job, {"in_flight": 2})  # groups 0, 1 run on ranks 1, 2; 2, 3 queued
    return master, job


def test_an_idle_worker_gets_the_group_given_back_and_the_ledger_stays_exact():
    master, job = _two_busy_workers_with_queued_groups(4, listens=(False, False))
    master.listens[1:] = [True, True]  # their HELLO came after their first groups
    assert [(d, k) for d, k, _ in _sent_kinds(master)] == [(1, "group"), (2, "group")] * 2
    master.done(2, 1, (2, _Outcome()), job)  # rank 2 returned group 1; queued group 3 runs
    master.refill(job, {"in_flight": 2})  # nothing left to hand out: rank 2 gets no second
    master.done(2, 1, (4, _Outcome()), job)  # rank 2 returned group 3 and is idle
    master.refill(job, {"in_flight": 2})
    # rank 1 still runs group 0 with group 2 (send #3) queued behind it: asked back
    assert _sent_kinds(master)[-1] == (1, "take", 3) and job.taking == 1
    master.refill(job, {"in_flight": 2})  # asked once only
    assert len(master.comm.sent) == 5
    master.given_back(1, 1, 3, job)
    assert job.taking == 0 and [group for _, group in job.taken] == [[(2, {"a": 2})]]
    assert [entry[3] for entry in master.holding[1]] == [1] and master.inflight[1] == 1
    master.refill(job, {"in_flight": 2})  # the idle rank 2 gets group 2, rank 1 nothing
    assert _sent_kinds(master)[-1] == (2, "group", 5) and not job.taken
    assert job.outstanding == 2  # groups 0 and 2: still owed to the driver


def test_a_group_asked_back_too_late_comes_back_done():
    from psmpi.errors import InternalError

    master, job = _two_busy_workers_with_queued_groups(4)
    master.done(2, 1, (2, _Outcome()), job)
    master.done(2, 1, (4, _Outcome()), job)  # rank 2 idle; rank 1 runs group 0 (send #1),
    # group 2 (send #3) queued
    master.refill(job, {"in_flight": 2})
    assert _sent_kinds(master)[-1] == (1, "take", 3) and job.taking == 1
    outcome = _Outcome()
    with pytest.raises(InternalError, match="returned group #3"):
        master.done(1, 1, (3, outcome), job)  # group 0 must come back first
    master.done(1, 1, (1, outcome), job)  # group 0 came back; rank 1 then started group 2
    assert [entry[3] for entry in master.holding[1]] == [3] and job.taking == 1
    with pytest.raises(InternalError, match="did not ask back"):
        master.given_back(1, 1, 1, job)  # a group nobody asked back
    master.done(1, 1, (3, outcome), job)  # the TAKE found group 2 started: its DONE answers
    assert job.taking == 0 and job.outstanding == 0 and not job.taken
    assert not any(master.inflight) and not any(master.holding) and not master.queued
    assert list(master.idle) == [2, 1]


def test_groups_given_back_are_resent_in_the_order_they_were_pulled():
    # Three busy workers, each with a group queued, the map all out: as workers run dry
    # their queued groups are asked back, and the one pulled first goes out first.
    from test_mpi import _fake_master

    from psmpi.backends.mpi import Job
    from psmpi.worker.task import Task

    master = _fake_master(3)
    master.listens = [True] * 4
    master.run_id = 1
    job = Job(1, Task(lambda p: {"y": 1}, "m", "mpi"),
              iter([[(i, {"a": i})] for i in range(6)]))
    master.refill(job, {"in_flight": 2})  # groups 0-2 run on ranks 1-3; 3-5 queued
    master.done(1, 1, (1, _Outcome()), job)  # rank 1 returned group 0; group 3 runs
    master.refill(job, {"in_flight": 2})  # no 7th group: the map is all out, nobody idle
    assert job.exhausted and "take" not in [k for _, k, _ in _sent_kinds(master)]
    master.done(1, 1, (4, _Outcome()), job)  # rank 1 returned group 3 and is idle
    master.refill(job, {"in_flight": 2})
    # one group asked back for the one idle worker: from rank 2, whose group ran longest
    assert [(d, i) for d, k, i in _sent_kinds(master) if k == "take"] == [(2, 5)]
    assert job.taking == 1
    master.ask_back(job, 3, master.holding[3][1])  # say rank 3's was asked back too (#6)
    master.given_back(3, 1, 6, job)  # group 5 (send #6) comes back first, then group 4
    master.given_back(2, 1, 5, job)
    master.refill(job, {"in_flight": 2})  # rank 1, idle, gets group 4: pulled before 5
    assert _sent_kinds(master)[-1] == (1, "group", 7)
    assert master.comm.sent[-1][1][2][2] == [(4, {"a": 4})]
    assert [group for _, group in job.taken] == [[(5, {"a": 5})]]


def test_the_group_queued_behind_a_straggler_is_taken_back_and_the_straggler_gets_no_other():
    import time

    from test_mpi import _fake_master

    from psmpi.backends import mpi
    from psmpi.backends.mpi import Job
    from psmpi.worker.task import Task

    master = _fake_master(2)
    master.listens = [True] * 3  # every worker has a listener thread (their HELLO said)
    master.run_id = 1
    job = Job(1, Task(lambda p: {"y": 1}, "m", "mpi"),
              iter([[(i, {"a": i})] for i in range(10)]))
    job.returned, job.pset_seconds = 10, 0.05  # psets take 0.05 s; groups hold one
    master.refill(job, {"in_flight": 2})  # groups 0, 1 run on ranks 1, 2; 2, 3 queued
    limit = max(mpi.STRAGGLER_MIN_SECONDS, mpi.STRAGGLER_FACTOR * 0.05)
    now = time.monotonic()
    master.holding[1][0][2] = now - limit / 2  # rank 1: not yet a straggler
    master.holding[2][0][2] = now - limit * 1.5  # rank 2: one
    master.next_straggler_check = 0.0
    master.refill(job, {"in_flight": 2})
    assert _sent_kinds(master)[4:] == [(2, "take", 4)] and job.taking == 1
    master.done(1, 1, (1, _Outcome()), job)  # rank 1 returned group 0; group 2 runs
    master.given_back(2, 1, 4, job)  # group 3 comes back from the straggler
    master.refill(job, {"in_flight": 2})
    # no idle worker: group 3 waits for one; rank 2, a straggler, gets no second group
    assert len(master.comm.sent) == 5 and [g for _, g in job.taken] == [[(3, {"a": 3})]]
    master.done(1, 1, (3, _Outcome()), job)  # rank 1 idle
    master.refill(job, {"in_flight": 2})
    assert master.comm.sent[5][0] == 1 and master.comm.sent[5][1][2][2] == [(3, {"a": 3})]
    assert 2 not in [dest for dest, _ in master.comm.sent[5:]]


def test_no_group_is_asked_back_from_a_worker_without_a_listener_thread():
    # It would give its queued group back only as it starts it (no MPI_THREAD_MULTIPLE).
    master, job = _two_busy_workers_with_queued_groups(4, listens=(False, True))
    master.done(2, 1, (2, _Outcome()), job)
    master.refill(job, {"in_flight": 2})  # the map is all out; rank 2 holds no queued group
    master.done(2, 1, (4, _Outcome()), job)  # rank 2 idle
    master.refill(job, {"in_flight": 2})
    assert "take" not in [kind for _, kind, _ in _sent_kinds(master)] and job.taking == 0


class _Outcome:
    def measured(self):
        return 0.1, 1

"""Poison psets: a pset that kills the process running it does not loop a requeue forever.

The study (scripts/poison_study.py) is started again and again, like a job that requeues
itself, until it exits 0. Under MPI and serial the poison pset takes the whole run down each
time, so psmpi must count attempts across runs (``<file>.attempts``), run it alone once it is
a repeat suspect, and skip it as ``crashed`` after ``max_attempts``. Its innocent neighbours
must all end with results. On multiprocessing the pool isolates it within one run.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import psmpi
from psmpi.store.attempts import AttemptLog, as_ranges, from_ranges

# Crash handling of every backend: CI runs these on the oldest and the newest Python too.
pytestmark = pytest.mark.crash

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "scripts", "poison_study.py")
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
N_PSETS, POISON = 40, 7


def launch(backend: str, out: str, calls: str, max_attempts: int) -> subprocess.CompletedProcess:
    """One run; ``backend`` may end in ``+sys-exit``: the poison pset calls sys.exit(3)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "PMIX_", "HYDRA_", "OMPI_", "PSMPI_"))}
    backend, _, how = backend.partition("+")
    env.update(POISON_CALLS=calls, PSMPI_MAX_ATTEMPTS=str(max_attempts), POISON_HOW=how)
    ranks = {"mpiexec-n2": 2, "mpiexec-n4": 4}.get(backend)
    command = [sys.executable, SCRIPT, out, "mpi" if ranks else backend]
    if ranks:
        command = [MPIEXEC, "-n", str(ranks), *command]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120,
                          cwd=os.path.dirname(out))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend, max_attempts", [
    ("serial", 1), ("serial", 3), ("multiprocessing", 3),
    ("mpiexec-n2", 2), ("mpiexec-n2", 3), ("mpiexec-n4", 3),
    # sys.exit() in the worker function is the death of its process, as a segfault is
    ("serial+sys-exit", 3), ("multiprocessing+sys-exit", 3), ("mpiexec-n2+sys-exit", 3)])
def test_requeue_loop_ends_and_only_the_poison_pset_is_skipped(tmp_path, backend, max_attempts):
    if backend.startswith("mpiexec") and not os.path.exists(MPIEXEC):
        pytest.skip("needs the mpiexec of the mpich wheel")
    out, calls = str(tmp_path / "poison.h5"), str(tmp_path / "calls")
    runs = []
    while not runs or runs[-1].returncode != 0:
        assert len(runs) <= max_attempts + 1, (
            f"run {len(runs)} still dies; the requeue loop does not end:\n{runs[-1].stderr[-3000:]}")
        runs.append(launch(backend, out, calls, max_attempts))
    if backend.startswith("multiprocessing"):
        assert len(runs) == 1, "multiprocessing must isolate the crash within one run"
    else:
        assert len(runs) == max_attempts + 1, [r.returncode for r in runs]
    results = psmpi.read(out, name="poison")
    failures = psmpi.read(out, name="poison", failures=True)
    assert len(set(results["_pset_hash"])) == len(results), "a pset was stored twice"
    assert set(failures["_kind"]) == {"crashed"}
    assert sorted(set(results["a"]) | set(failures["a"])) == list(range(N_PSETS))
    if max_attempts == 1:  # no second chance: the poison's whole group is skipped with it
        assert POISON in set(failures["a"]) and len(set(failures["a"])) < 10
        return
    assert f"missing [{POISON}] ['crashed']" in runs[-1].stdout, runs[-1].stdout
    assert set(failures["a"]) == {POISON}
    with open(calls) as f:
        computed = [int(line) for line in f.read().split()]
    if backend.startswith("multiprocessing+"):
        assert "called sys.exit(3)" in failures["_exception"].iloc[0]
    elif backend.startswith("serial+"):  # the worker ran in the script: it exits as asked
        assert [r.returncode for r in runs[:-1]] == [3] * max_attempts
    elif backend.endswith("+sys-exit"):
        assert "called sys.exit()" in runs[0].stderr, runs[0].stderr
    if not backend.startswith("multiprocessing"):  # (the pool re-runs a crashed group's psets)
        # The poison pset ran once per dying run, and never once it was skipped.
        assert computed.count(POISON) == max_attempts
        assert os.path.exists(out + ".attempts"), "the skipped pset's count must be kept"
    else:  # the run survives the death: nothing to count across runs
        assert not os.path.exists(out + ".attempts")


def test_a_changed_pset_list_resets_the_count(tmp_path):
    log = AttemptLog(str(tmp_path / "f.h5"), "my map")
    log.sent([3, 4, 5])
    log.sent([9])
    log.save({})  # a run that ended in Python folds its own groups away ...
    assert log.load() == {}
    log.sent([3, 4, 5])  # ... a killed one does not
    log.handle.close()
    log.handle = None
    counts = log.load()
    assert {i: a.count for i, a in counts.items()} == {3: 1, 4: 1, 5: 1}
    from psmpi.store.attempts import Suspects
    suspects = Suspects(counts, max_attempts=3)
    counts[3].digest = "not the hash of the pset now at index 3"
    counts[4].count = 2
    todo = [(3, {"a": 1}), (4, {"a": 2}), (5, {"a": 3}), (6, {"a": 4})]
    assert [i for i, _ in suspects.hold_back(todo)] == [3, 5, 6]
    assert 3 not in suspects.counts  # reset: a different pset sits at index 3 now
    assert [i for i, _ in suspects.alone] == [4]


def test_ranges_round_trip_and_torn_lines_are_ignored(tmp_path):
    assert as_ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert from_ranges("0-2,5,7-8") == [0, 1, 2, 5, 7, 8]
    log = AttemptLog(str(tmp_path / "f.h5"), "m")
    with open(log.path, "w") as f:
        f.write("A other 1 2 -\nG m 0-3\nG m 2-")  # the last line was torn by a kill
    assert {i: a.count for i, a in log.load().items()} == {0: 1, 1: 1, 2: 1, 3: 1}
    log.save({})
    with open(log.path) as f:
        assert f.read() == "A other 1 2 -\n"

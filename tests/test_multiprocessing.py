"""What only the multiprocessing backend does: dead workers, process recycling, cores."""

import os
import signal

import pytest

import psmpi
from psmpi.backends.multiprocessing import available_cores, resolve_ncores


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


def test_max_tasks_per_child_recycles_processes(tmp_path):
    res = psmpi.map(pid_worker, [{"a": a} for a in range(8)], backend="multiprocessing",
                    ncores=1, group_size=1, max_tasks_per_child=2, out=None, verbose=0)
    assert len(set(res.results["pid"])) >= 4


def test_ncores():
    total = available_cores()
    assert resolve_ncores(None) == total
    assert resolve_ncores(-1) == max(1, total - 1)
    assert resolve_ncores(-1000) == 1
    assert resolve_ncores(3) == 3


def test_group_refused_by_a_pool_that_just_broke_is_run_later():
    """The pool may learn of a dead worker before our futures do: submit() then raises."""
    import time

    from psmpi.backends.multiprocessing import MultiprocessingBackend
    from psmpi.task import Task

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

"""Multiprocessing: who holds which pset for how long, and timeout= killing a worker."""

import os
import signal
import time

import pytest

import psmpi
from psmpi.backends.multiprocessing import MultiprocessingBackend
from psmpi.worker.task import Task

pytestmark = pytest.mark.crash  # kills worker processes: runs on every Python in CI


def slow_on_3(pset):
    if pset["a"] == 3:
        time.sleep(60)
    return {"y": pset["a"]}


def stop_self_on_2(pset):
    if pset["a"] == 2:
        os.kill(os.getpid(), signal.SIGSTOP)  # a stopped process runs no handler, no thread
    return {"y": pset["a"]}


def sleep_a(pset):
    time.sleep(pset["a"])
    return {"y": pset["a"]}


def test_a_pset_past_its_timeout_is_a_timeout_failure_and_the_rest_completes(tmp_path):
    t0 = time.monotonic()
    res = psmpi.map(slow_on_3, [{"a": a} for a in range(10)], backend="multiprocessing",
                    ncores=2, group_size=3, timeout=1.5, out=str(tmp_path / "t.h5"), verbose=0)
    assert time.monotonic() - t0 < 30
    assert sorted(res.results["a"].tolist()) == [a for a in range(10) if a != 3]
    assert res.missing.df["a"].tolist() == [3]
    assert res.missing.df["_kind"].tolist() == ["timeout"]
    assert "timeout=1.5" in res.missing.df["_exception"].iloc[0]
    # stored once each, and a rerun computes nothing new but retries the timed-out pset
    stored = psmpi.read(str(tmp_path / "t.h5"))
    assert sorted(stored["a"].tolist()) == sorted(res.results["a"].tolist())


def test_a_stopped_worker_is_killed_at_its_timeout(tmp_path):
    res = psmpi.map(stop_self_on_2, [{"a": a} for a in range(6)], backend="multiprocessing",
                    ncores=2, group_size=1, timeout=1.0, out=None, verbose=0)
    assert sorted(res.results["a"].tolist()) == [0, 1, 3, 4, 5]
    assert res.missing.df["_kind"].tolist() == ["timeout"]


def test_without_timeout_nothing_is_killed(tmp_path):
    res = psmpi.map(sleep_a, [{"a": 0.5}, {"a": 0.6}], backend="multiprocessing", ncores=2,
                    out=None, verbose=0)
    assert len(res.results) == 2 and len(res.missing) == 0


def test_held_names_the_process_pset_and_a_growing_time():
    backend = MultiprocessingBackend({}, ncores=2)
    task = Task(sleep_a, "m", "multiprocessing")
    outcomes = backend.run(task, iter([[(0, {"a": 0.0})], [(7, {"a": 2.5})]]))
    seen = []
    try:
        for outcome in outcomes:
            if outcome is None:
                seen.append(backend.held())
            if len(seen) >= 6:
                break
    finally:
        outcomes.close()
        backend.abandon()
    last = seen[-1]
    assert [h.indexes for h in last] == [(7,)]
    assert last[0].worker.startswith("process ") and last[0].host
    holders = [h[0].seconds for h in seen if h]
    assert holders == sorted(holders) and holders[-1] > 0.5

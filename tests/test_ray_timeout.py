"""Stalled ray workers: timeout= kills a pset that runs too long, held() says who holds what.

Shares the one local ray of this pytest process (psmpi starts it once), as tests/test_ray.py.
Workers stop themselves or sleep in C, where Python code (time.sleep's signal checks, the
watchdog thread for SIGSTOP) cannot help them.
"""

import ctypes
import os
import pathlib
import signal
import socket
import time

import pytest

import psmpi
from psmpi.backends.ray import RayBackend
from psmpi.worker.task import Task


def run(tmp_path, worker, psets, **kwargs):
    return psmpi.map(worker, psets, backend="ray", verbose=0, out=str(tmp_path / "ray.h5"),
                     **kwargs)


def log_call(pset):
    with open(pset["log"], "a") as f:
        f.write(f"{pset['a']}\n")


def calls(tmp_path):
    return sorted(map(int, (tmp_path / "calls").read_text().split()))


def sleep_long_on_5(pset):
    if pset["a"] == 5:
        time.sleep(60)  # time.sleep is interruptible: the driver kills it anyway
    time.sleep(0.05)
    log_call(pset)
    return {"y": pset["a"]}


@pytest.mark.timeout(120)
def test_a_pset_past_the_timeout_fails_as_timeout_and_its_group_runs_again(tmp_path):
    log = str(tmp_path / "calls")
    started = time.monotonic()
    res = run(tmp_path, sleep_long_on_5, [{"a": a, "log": log} for a in range(12)],
              group_size=4, timeout=2, name="slow")
    assert time.monotonic() - started < 40  # killed, not waited for
    assert res.results["a"].tolist() == [a for a in range(12) if a != 5]
    assert res.missing.df["a"].tolist() == [5]
    assert res.missing.df["_kind"].tolist() == ["timeout"]
    message = res.missing.df["_exception"].iloc[0]
    assert "ran longer than timeout=2 s" in message and "raise timeout=" in message
    # Stored once each; pset 4 finished before 5 hung, so it ran again with 6 and 7.
    assert sorted(psmpi.read(res.path, name="slow")["a"]) == res.results["a"].tolist()
    assert calls(tmp_path) == sorted(res.results["a"].tolist() + [4])


def sleep_in_c_on_2(pset):
    if pset["a"] == 2:
        ctypes.CDLL(None).sleep(60)  # C: no Python signal handler runs in it
    return {"y": pset["a"]}


@pytest.mark.timeout(120)
def test_a_pset_sleeping_in_c_is_killed_and_stored_as_timeout(tmp_path):
    res = run(tmp_path, sleep_in_c_on_2, [{"a": a} for a in range(6)], group_size=3,
              timeout=1.5)
    assert res.results["a"].tolist() == [0, 1, 3, 4, 5]
    assert res.missing.df["_kind"].tolist() == ["timeout"]
    assert res.missing.df["a"].tolist() == [2]


def stop_on_1(pset):
    if pset["a"] == 1:
        os.kill(os.getpid(), signal.SIGSTOP)  # its watchdog thread stops too
    return {"y": pset["a"]}


@pytest.mark.timeout(180)
def test_a_stopped_worker_is_killed_and_its_pset_stored_as_timeout(tmp_path):
    # Stopped in a group of three, it cannot say which pset it is on: the group runs again
    # one pset per task, and pset 1 alone is caught.
    res = run(tmp_path, stop_on_1, [{"a": a} for a in range(6)], group_size=3, timeout=2)
    assert res.results["a"].tolist() == [0, 2, 3, 4, 5]
    assert res.missing.df["_kind"].tolist() == ["timeout"]
    assert res.missing.df["a"].tolist() == [1]
    assert sorted(psmpi.read(res.path)["a"]) == [0, 2, 3, 4, 5]


def stop_on_3(pset):
    if pset["a"] == 3:
        pathlib.Path(pset["pid"]).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGSTOP)
    return {"y": pset["a"]}


@pytest.mark.timeout(120)
def test_held_names_the_pset_of_a_stopped_worker_and_a_growing_time(tmp_path):
    marker = tmp_path / "pid"
    backend = RayBackend({})
    task = Task(stop_on_3, "held", "ray")  # no timeout: it is reported, never killed
    seen, indexes, resumed = [], [], False
    for outcome in backend.run(task, ([(a, {"a": a, "pid": str(marker)})] for a in range(8))):
        if outcome is not None:
            indexes += outcome.indexes
            continue
        held = [h for h in backend.held() if 3 in h.indexes]
        if held:
            seen.append(held[0])
        if not resumed and len(seen) >= 2 and seen[-1].seconds > seen[0].seconds + 2:
            os.kill(int(marker.read_text()), signal.SIGCONT)
            resumed = True
    assert sorted(indexes) == list(range(8))
    pid = int(marker.read_text())
    assert {(h.worker, h.host, h.indexes) for h in seen} == {
        (f"ray worker {pid}", socket.gethostname(), (3,))}
    assert seen[-1].seconds > seen[0].seconds + 2
    assert backend.held() == []  # nothing runs after the map


def test_reports_read_late_never_make_a_pset_look_older():
    from psmpi.backends.ray import Track
    track = Track(None, [(7, {}), (8, {}), (9, {})], None, 0, 1)
    track.hear(100.0, "node", 42, None, 0.0, 0.0)           # announced at 100
    track.hear(103.0, "node", 42, 8, 1.0, 2.5)              # on pset 8 since 102, read at 103
    track.hear(105.0, "node", 42, 8, 2.0, 4.5)              # the same, read late: 102 is kept
    assert (track.started, track.index, track.since) == (100.0, 8, 102.0)
    assert track.holding(silent=False) == ([8], 102.0)
    # Silent, it may have gone on to pset 9 since it last spoke.
    assert track.holding(silent=True) == ([8, 9], 102.0)
    track.hear(106.0, "node", 42, 9, 0.5, 5.5)              # pset 9 since 105.5
    assert track.holding(silent=False) == ([9], 105.5)
    track.hear(110.0, "other", 43, 7, 0.5, 0.5)              # ray ran it again elsewhere
    assert (track.host, track.pid, track.started, track.holding(False)) == (
        "other", 43, 109.5, ([7], 109.5))


def test_if_its_reports_actor_cannot_start_maps_run_unwatched_with_a_warning(
        tmp_path, monkeypatch):
    from psmpi.backends import ray as psmpi_ray
    monkeypatch.setattr(psmpi_ray._Runtime, "monitor", None)
    monkeypatch.setattr(psmpi_ray, "Monitor", None)  # ray.remote(None) raises
    with pytest.warns(UserWarning, match="timeout= is not enforced"):
        backend = RayBackend({})
    outcomes = list(backend.run(Task(lambda p: {"y": p["a"]}, "unwatched", "ray"),
                                ([(a, {"a": a})] for a in range(4))))
    assert sorted(i for o in outcomes if o is not None for i in o.indexes) == [0, 1, 2, 3]
    assert backend.held() == []


def die_once_after_a_while(pset):
    time.sleep(pset["sleep"])
    marker = pathlib.Path(pset["marker"])
    if pset["sleep"] and not marker.exists():
        marker.write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)
    return {"y": pset["a"]}


@pytest.mark.timeout(120)
def test_the_rerun_of_a_dead_worker_is_timed_from_its_own_start(tmp_path):
    marker = str(tmp_path / "m")
    # Quick groups first: the next group does not announce itself, nor does ray's rerun.
    run(tmp_path, die_once_after_a_while, [{"a": a, "sleep": 0, "marker": marker}
                                           for a in range(4)], name="quick")
    # The first run reports pset 0 and dies; both runs together take longer than the
    # timeout, each alone does not.
    res = run(tmp_path, die_once_after_a_while, [{"a": 0, "sleep": 2.2, "marker": marker}],
              timeout=3, name="dies")
    assert res.results["y"].tolist() == [0] and len(res.missing) == 0

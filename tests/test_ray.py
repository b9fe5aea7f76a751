"""What only the ray backend does: options, per-pset resources, dead workers, a killed driver.

The behaviour contract runs on ray in tests/test_contract.py. The in-process tests here share
one local ray per pytest process (psmpi starts it once and never shuts it down); the
subprocess tests start a ray of their own.
"""

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

import psmpi
from psmpi.backends import ray as psmpi_ray
from psmpi.errors import BackendError, ConfigError, PsetError
from psmpi.stopping import EXIT_INCOMPLETE


def run(tmp_path, worker, psets, **kwargs):
    kwargs.setdefault("out", str(tmp_path / "ray.h5"))
    return psmpi.map(worker, psets, backend="ray", verbose=0, **kwargs)


def assigned_cpus(pset):
    import ray
    return {"cpus": ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)}


def test_per_pset_resources_become_task_options_not_columns(tmp_path):
    psets = [{"a": 0}, {"a": 1, "ray": {"num_cpus": 2, "name": "two-cpus"}},
             {"a": 2}, {"a": 3, "ray": {"num_cores": 2}}]
    res = run(tmp_path, assigned_cpus, psets, name="res")
    assert res.results["cpus"].tolist() == [1.0, 2.0, 1.0, 2.0]
    assert list(res.results.columns) == ["a", "cpus"]
    assert "ray" not in psmpi.read(res.path, name="res").columns
    # Resources are not parameters: other ones (or none) on a re-run still match the rows.
    again = run(tmp_path, assigned_cpus, [{"a": a} for a in range(4)], name="res")
    assert again.progress.resumed == 4 and again.stats.computed == 0
    # Other backends ignore them.
    serial = psmpi.map(lambda p: {"y": p["a"]}, psets, backend="serial", out=None, verbose=0)
    assert list(serial.results.columns) == ["a", "y"]


def count_calls(pset):
    with open(pset["log"], "a") as f:
        f.write(f"{pset['a']}\n")
    return {"y": pset["a"]}


def test_bad_pset_resources_are_refused_before_anything_runs(tmp_path):
    log = str(tmp_path / "calls")
    psets = [{"a": 0, "log": log}, {"a": 1, "log": log, "ray": {"num_gpu": 1}},
             {"a": 2, "log": log, "ray": {"memory": -5}},
             {"a": 3, "log": log, "ray": {"num_cpus": 1, "num_cores": 1}}]
    with pytest.raises(PsetError) as err:
        run(tmp_path, count_calls, psets)
    message = str(err.value)
    assert "pset 1: per-pset ray option 'num_gpu' is unknown" in message
    assert "pset 2: per-pset ray option 'memory' must be bytes > 0" in message
    assert "pset 3: per-pset ray options num_cpus and num_cores are the same" in message
    assert not os.path.exists(log)


@pytest.mark.parametrize("options,expected", [
    ({"num_gpuz": 1}, "Invalid option keyword num_gpuz"),
    ({"num_gpus": "one"}, "num_gpus"),
    ({"num_cpus": -1}, "cannot be negative"),
    ({"num_returns": 2}, "psmpi sets ['num_returns'] itself"),
    ({"max_retries": -1}, "must be an int >= 0"),
    ({"max_retries": "3"}, "ray={'max_retries': ...} must be an int >= 0"),
    ({"init": "x"}, "ray={'init': ...} must be a dict"),
    ({"num_cpus": 1, "num_cores": 1}, "num_cpus and num_cores are the same option"),
    ({"address": 6379}, "must be a non-empty str"),
    ({"init": {"address": "auto"}}, "without 'address'"),
    ({"num_gpus": 1}, "num_gpus=1 but this local ray has 0 GPU"),
    ({"init": {"num_cpus": 7}}, "ray is already running in this process"),
])
def test_bad_ray_options_are_config_errors_before_anything_runs(tmp_path, options, expected):
    psmpi.map(lambda p: None, [{"a": 0}], backend="ray", out=None, verbose=0)  # ray is up
    log = str(tmp_path / "calls")
    with pytest.raises(ConfigError) as err:
        run(tmp_path, count_calls, [{"a": 0, "log": log}], ray=options)
    assert expected in str(err.value)
    assert not os.path.exists(log)


def test_a_pset_too_big_for_the_local_ray_is_an_error_naming_it(tmp_path):
    psets = [{"a": a} for a in range(3)] + [{"a": 3, "ray": {"num_cpus": 64}}]
    with pytest.raises(ConfigError, match="pset 3 asks for num_cpus=64 but this local ray has"):
        run(tmp_path, lambda p: {"y": 1}, psets)


def test_backend_chosen_by_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PSMPI_BACKEND", "ray")
    res = psmpi.map(lambda p: {"pid": os.getpid()}, [{"a": 1}], backend="serial", out=None,
                    verbose=0)
    assert res.stats.backend == "ray" and res.results["pid"].iloc[0] != os.getpid()


class Escape(BaseException):
    """Not an Exception: gets past psmpi's handler in the worker, as a bug in psmpi would."""


def raise_on_2_and_4(pset):
    count_calls(pset)
    if pset["a"] == 2:
        raise ValueError("bad pset")
    if pset["a"] == 4:
        raise Escape("out of the worker")
    return {"y": pset["a"]}


def test_exceptions_are_failures_and_never_retried(tmp_path):
    log = tmp_path / "calls"
    psets = [{"a": a, "log": str(log)} for a in range(6)]
    res = run(tmp_path, raise_on_2_and_4, psets, group_size=1)
    assert res.results["a"].tolist() == [0, 1, 3, 5]
    assert res.missing.df["_kind"].tolist() == ["exception", "exception"]
    assert res.missing.df["_exception"].tolist() == [
        "ValueError: bad pset", "on the ray worker: Escape: out of the worker"]
    assert sorted(map(int, log.read_text().split())) == list(range(6))  # each ran once


def die_on_3(pset):
    if pset["a"] == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return {"y": pset["a"]}


@pytest.mark.crash
@pytest.mark.timeout(120)
def test_a_pset_that_kills_its_worker_fails_alone(tmp_path):
    res = run(tmp_path, die_on_3, [{"a": a} for a in range(8)], group_size=4,
              ray={"max_retries": 1})
    assert res.results["a"].tolist() == [0, 1, 2, 4, 5, 6, 7]
    assert res.missing.df["a"].tolist() == [3]
    assert res.missing.df["_kind"].tolist() == ["crashed"]
    assert "ray ran it 4 times (2 in its group, 2 alone)" in res.missing.df["_exception"].iloc[0]


def exit_on_3(pset):
    if pset["a"] == 3:
        sys.exit(4)
    return {"y": pset["a"]}


@pytest.mark.crash
@pytest.mark.timeout(120)
def test_sys_exit_in_the_worker_is_a_dead_worker_as_everywhere(tmp_path):
    """sys.exit() ends the ray worker process: retried like any dead worker, then crashed."""
    res = run(tmp_path, exit_on_3, [{"a": a} for a in range(6)], group_size=2,
              ray={"max_retries": 0})
    assert res.results["a"].tolist() == [0, 1, 2, 4, 5]
    assert res.missing.df["a"].tolist() == [3]
    assert res.missing.df["_kind"].tolist() == ["crashed"]


def sleep_unless_marked(pset):
    """The first run of pset 3 waits to be killed from outside; its rerun goes through."""
    marker = pathlib.Path(pset["marker"])
    if pset["a"] == 3 and not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(60)
    time.sleep(0.05)
    return {"y": pset["a"], "pid": os.getpid()}


@pytest.mark.crash
@pytest.mark.timeout(120)
def test_a_worker_killed_mid_survey_is_retried_and_nothing_is_lost(tmp_path):
    marker = tmp_path / "victim"

    def kill_the_victim():
        deadline = time.monotonic() + 60
        while not marker.exists() or not marker.read_text():
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        os.kill(int(marker.read_text()), signal.SIGKILL)

    killer = threading.Thread(target=kill_the_victim)
    killer.start()
    psets = [{"a": a, "marker": str(marker)} for a in range(20)]
    started = time.monotonic()
    res = run(tmp_path, sleep_unless_marked, psets, name="victim")
    killer.join()
    assert time.monotonic() - started < 30  # the sleeper was killed, not waited for
    assert res.results["a"].tolist() == list(range(20)) and len(res.missing) == 0
    stored = psmpi.read(res.path, name="victim")
    assert sorted(stored["a"]) == list(range(20))  # each pset exactly once
    assert res.results["pid"].iloc[3] != int(marker.read_text())  # done by another worker


def test_tasks_in_flight_follow_the_cluster_size(monkeypatch):
    from psmpi.backends.pool import IN_FLIGHT_PER_WORKER as IN_FLIGHT_PER_SLOT
    from psmpi.backends.ray import RayBackend
    from psmpi.worker.task import Task

    backend = RayBackend({})
    assert backend.n_workers == 2  # the local ray of 2 CPUs
    assert RayBackend({"num_cpus": 2}).n_workers == 1
    task = Task(lambda p: time.sleep(0.02), "grow", "ray")
    cpus = {"CPU": 2.0}
    monkeypatch.setattr(backend.ray, "cluster_resources", lambda: dict(cpus))
    monkeypatch.setattr(psmpi_ray, "CAPACITY_SECONDS", 0.0)
    seen = []
    for _outcome in backend.run(task, ([(i, {"i": i})] for i in range(200))):
        seen.append(len(backend.pending))
        if len(seen) == 30:
            cpus["CPU"] = 8.0  # nodes joined: queue more (ray just holds them until then)
        elif len(seen) == 80:
            cpus["CPU"] = 1.0  # nodes left
    assert max(seen[:30]) == IN_FLIGHT_PER_SLOT * 2
    assert max(seen[30:80]) == IN_FLIGHT_PER_SLOT * 8
    assert max(seen[-40:]) <= IN_FLIGHT_PER_SLOT * 1


def pid_worker(pset):
    return {"pid": os.getpid()}


@pytest.mark.timeout(120)
def test_max_tasks_per_child_restarts_ray_workers(tmp_path):
    res = run(tmp_path, pid_worker, [{"a": a} for a in range(6)], group_size=1,
              max_tasks_per_child=2, out=None)
    assert len(set(res.results["pid"])) >= 3


WITHOUT_RAY = textwrap.dedent("""
    import sys
    sys.modules["ray"] = None  # as if ray were not installed
    import psmpi
    res = psmpi.map(lambda p: {"y": p["a"]}, [{"a": 1}, {"a": 2, "ray": {"num_gpus": 1}}],
                    backend="multiprocessing", ncores=1, out=None, verbose=0)
    assert res.results["y"].tolist() == [1, 2]
    try:
        psmpi.init(backend="ray")
    except psmpi.BackendError as exc:
        print("refused:", exc)
""")


@pytest.mark.timeout(60)
def test_without_ray_everything_else_works_and_ray_is_refused_with_the_fix(tmp_path):
    out = subprocess.run([sys.executable, "-c", WITHOUT_RAY], capture_output=True, text=True,
                         timeout=50, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "pip install 'psmpi[ray]'" in out.stdout
    # and with ray installed, psmpi does not import it unless asked to
    out = subprocess.run([sys.executable, "-c", "import sys, psmpi; psmpi.map(lambda p: None, "
                          "[{'a': 1, 'ray': {'num_gpus': 1}}], backend='serial', out=None, "
                          "verbose=0); print('ray' in sys.modules)"],
                         capture_output=True, text=True, timeout=50, cwd=tmp_path)
    assert out.stdout.strip() == "False", out.stderr


def test_backend_not_installed_error_names_the_command(monkeypatch):
    monkeypatch.setattr(psmpi_ray, "available_ray", lambda: False)
    try:
        with pytest.raises(BackendError, match=r"pip install 'psmpi\[ray\]'"):
            psmpi.init(backend="ray")
    finally:
        psmpi.init()  # later tests must not inherit backend="ray" as the default


def test_a_ray_started_outside_psmpi_is_used_and_left_running(monkeypatch):
    import ray
    psmpi.map(lambda p: None, [{"a": 0}], backend="ray", out=None, verbose=0)  # ray is up
    # What psmpi knows of a ray that the user started with ray.init(): nothing.
    monkeypatch.setattr(psmpi_ray._Runtime, "connected_with", None)
    monkeypatch.setattr(psmpi_ray._Runtime, "local", False)
    res = psmpi.map(lambda p: {"y": p["a"]}, [{"a": 1}], backend="ray", ncores=1, out=None,
                    verbose=0)
    assert len(res) == 1 and res.stats.workers == 2  # its size, not ncores
    with pytest.raises(ConfigError, match="initialised outside psmpi"):
        psmpi.map(lambda p: None, [{"a": 1}], backend="ray", ray={"address": "auto"}, out=None)
    psmpi.init()  # closes the ray backend, and leaves no backend default; ray stays up
    assert ray.is_initialized()


STUDY = textwrap.dedent("""
    import os, sys, time
    import psmpi

    def worker(pset):
        time.sleep(float(os.environ["STUDY_SLEEP"]))
        with open(os.environ["STUDY_CALLS"], "a") as f:  # just before returning: finished
            f.write(f"{os.environ['STUDY_RUN']} {pset['a']}\\n")
        return {"y": pset["a"] * 3}

    res = psmpi.map(worker, [{"a": a} for a in range(200)], backend="ray", ncores=2,
                    out=sys.argv[1], name="study", commit_seconds=0.05, verbose=0)
    print("complete", len(res))
""")


def study_pids(token, run="*", helpers=True):
    """Live processes of run ``run`` of this test's study, found by the token in their
    environment: the driver and the ray processes it started, which inherit it."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        runs = [e.split(b"-")[-1] for e in environ
                if e.startswith(f"STUDY_TOKEN={token}-".encode())]
        if runs and run in ("*", int(runs[0])) and (helpers or b"Agent" not in cmdline):
            found.append(int(entry.name))
    return found


def wait_for_no(pids_of, seconds):
    deadline = time.monotonic() + seconds
    while pids_of() and time.monotonic() < deadline:
        time.sleep(0.1)
    return pids_of()


def stored(path):
    try:
        return psmpi.read(path, name="study")
    except Exception:  # not created yet
        return None


def computed_by(calls, run):
    return [int(a) for r, a in map(str.split, calls.read_text().splitlines()) if r == str(run)]


@pytest.mark.crash
@pytest.mark.timeout(150)
def test_a_stopped_or_killed_driver_leaves_a_file_the_next_run_completes(tmp_path):
    script, path, calls = tmp_path / "study.py", tmp_path / "study.h5", tmp_path / "calls"
    script.write_text(STUDY)
    token = uuid.uuid4().hex

    def start(run, sleep):
        env = dict(os.environ, STUDY_CALLS=str(calls), STUDY_TOKEN=f"{token}-{run}",
                   STUDY_RUN=str(run), STUDY_SLEEP=str(sleep))
        return subprocess.Popen([sys.executable, str(script), str(path)], cwd=tmp_path, env=env,
                                start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def wait_until(condition, proc):
        deadline = time.monotonic() + 60
        while not condition() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the study ended before it could be stopped"

    try:
        # Ctrl-C in a terminal (ray's own processes get it too): drain, commit, exit 75.
        proc = start(1, 0.3)
        wait_until(lambda: calls.exists() and len(calls.read_text().split()) >= 6, proc)
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == EXIT_INCOMPLETE, err
        assert time.monotonic() - sent < 5
        first = stored(path)
        assert set(computed_by(calls, 1)) <= set(first["a"]), "finished but not committed"
        assert len(first) < 200
        # SIGKILL of the driver alone: the local ray it started goes down with it.
        proc = start(2, 0.02)
        wait_until(lambda: len(stored(path)) >= len(first) + 20, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        assert not wait_for_no(lambda: study_pids(token, 2, helpers=False), 20)
        second = stored(path)
        assert len(second) < 200
        # The same command again completes exactly the rest, and leaves nothing running.
        proc = start(3, 0.0)
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0 and "complete 200" in out, err
        assert not wait_for_no(lambda: study_pids(token, 3), 20)
    finally:
        for pid in study_pids(token):  # ray's helpers of the killed run linger for a minute
            os.kill(pid, signal.SIGKILL)
    final = stored(path)
    assert sorted(final["a"]) == list(range(200)) and (final["y"] == final["a"] * 3).all()
    assert not set(computed_by(calls, 2)) & set(first["a"]), "computed twice"
    assert not set(computed_by(calls, 3)) & set(second["a"]), "computed twice"

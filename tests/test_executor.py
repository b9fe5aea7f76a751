"""psmpi.Executor: futures of committed rows, resume from the file, no barrier, kills.

The adaptive study tests/scripts/adaptive_kill.py is SIGKILLed at random moments and run
again until it completes, on every backend: it must end with the answer of an uninterrupted
run, with no pset computed again after it was committed, and every result the study acted
on must be in the file after each kill.
"""

import collections
import concurrent.futures as cf
import os
import pathlib
import random
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from test_mpi import OPEN_MPI
from test_resume_kill import kill, study_processes

import psmpi

HERE = pathlib.Path(__file__).parent
ROOT = HERE.parent
SCRIPT = HERE / "scripts" / "adaptive_kill.py"
MPIEXEC = pathlib.Path(sys.executable).parent / "mpiexec"


def square(pset):
    if pset["x"] == 3:
        raise ValueError("three is refused")
    return {"y": pset["x"] ** 2}


def slow(pset):
    time.sleep(pset["seconds"])
    return {"pid": os.getpid()}


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_futures_as_completed_wait_map_and_failures(tmp_path, backend):
    path = tmp_path / "ex.h5"
    with psmpi.Executor(out=path, name="sq", backend=backend, ncores=2, verbose=0) as ex:
        futures = [ex.submit(square, {"x": x}) for x in range(6)]
        done = {}
        for future in cf.as_completed(futures, timeout=60):
            if future.exception() is None:
                done[future.result()["x"]] = future.result()
        assert cf.wait(futures, timeout=60).not_done == set()
        assert list(ex.map(square, [{"x": 10}, {"x": 11}])) == [{"x": 10, "y": 100},
                                                                {"x": 11, "y": 121}]
        with pytest.raises(psmpi.PsetFailed) as info:
            futures[3].result()
    assert done == {x: {"x": x, "y": x * x} for x in (0, 1, 2, 4, 5)}
    failed = info.value
    assert failed.pset == {"x": 3} and failed.kind == "exception"
    assert "three is refused" in failed.message and "ValueError" in failed.remote_traceback
    assert sorted(psmpi.read(path, name="sq")["x"]) == [0, 1, 2, 4, 5, 10, 11]  # committed
    assert len(psmpi.read(path, name="sq", failures=True)) == 1


def test_a_rerun_replays_from_the_file_with_multiplicity(tmp_path):
    path = tmp_path / "ex.h5"
    with psmpi.Executor(out=path, name="m", backend="serial", verbose=0) as ex:
        first = [ex.submit(slow, {"seconds": 0.0}) for _ in range(2)]
    pids = [f.result()["pid"] for f in first]
    with psmpi.Executor(out=path, name="m", backend="multiprocessing", ncores=1,
                        verbose=0) as ex:
        again = [ex.submit(slow, {"seconds": 0.0}) for _ in range(3)]
        assert [f.done() for f in again] == [True, True, False]  # from the file, at once
    assert [f.result()["pid"] for f in again[:2]] == pids  # the stored rows, not recomputed
    assert again[2].result()["pid"] != os.getpid()
    assert len(psmpi.read(path, name="m")) == 3


def test_a_free_worker_takes_new_work_while_another_is_busy(tmp_path):
    """No barrier: a short pset submitted while a long one runs finishes long before it."""
    with psmpi.Executor(out=tmp_path / "b.h5", backend="multiprocessing", ncores=2,
                        verbose=0) as ex:
        long = ex.submit(slow, {"seconds": 3.0})
        time.sleep(0.5)
        started = time.monotonic()
        short = ex.submit(slow, {"seconds": 0.01})
        short.result(timeout=10)
        took = time.monotonic() - started
        assert not long.done()
    assert took < 1.0, took


def test_each_result_is_committed_before_the_backend_waits_for_more(tmp_path):
    """One pset at a time on serial: each result is committed (and its future resolves) as
    soon as it is computed, not after the backend's idle wait for submissions (0.2 s)."""
    with psmpi.Executor(out=tmp_path / "s.h5", backend="serial", verbose=0) as ex:
        ex.submit(square, {"x": 10}).result(timeout=10)  # the run and its tables exist
        started = time.monotonic()
        rows = [ex.submit(square, {"x": x}).result(timeout=10) for x in range(11, 16)]
        took = time.monotonic() - started
    assert [row["y"] for row in rows] == [x * x for x in range(11, 16)]
    assert took < 0.5, took  # 5 x 0.2 s if each commit waited for the idle wait


def test_one_worker_per_executor_and_no_submit_after_shutdown(tmp_path):
    ex = psmpi.Executor(out=None, backend="serial", verbose=0)
    ex.submit(square, {"x": 1})
    with pytest.raises(psmpi.ConfigError, match="one worker"):
        ex.submit(slow, {"seconds": 0})
    with pytest.raises(psmpi.PsetError):
        ex.submit(square, {1: "not a str key"})
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, {"x": 2})


def test_no_map_or_second_executor_while_an_executor_owns_the_backend(tmp_path):
    with psmpi.Executor(out=tmp_path / "a.h5", backend="serial", verbose=0) as ex:
        ex.submit(square, {"x": 1}).result()
        with pytest.raises(psmpi.BackendError, match="shut it down first"):
            psmpi.map(square, [{"x": 2}], out=None, backend="serial", verbose=0)
        with pytest.raises(psmpi.BackendError, match="shut it down first"):
            psmpi.Executor(out=None, backend="serial", verbose=0)
    res = psmpi.map(square, [{"x": 2}], out=None, backend="serial", verbose=0)
    assert res.results["y"].tolist() == [4]


def test_the_driver_thread_is_idle_while_nothing_is_submitted(tmp_path):
    """Waiting for submissions costs no busy loop: the process's CPU stays near zero."""
    with psmpi.Executor(out=None, backend="multiprocessing", ncores=1, verbose=0) as ex:
        ex.submit(square, {"x": 1}).result(timeout=60)
        cpu = time.process_time()
        time.sleep(1.0)
        assert time.process_time() - cpu < 0.1


# -- the adaptive study, killed and resumed


def start(path, backend, run, calls, seen, token, sleep, ranks=None, **extra):
    env = dict(os.environ, KILL_RUN=str(run), KILL_CALLS=str(calls), KILL_SEEN=str(seen),
               KILL_TOKEN=token, KILL_SLEEP=str(sleep), PYTHONPATH=str(ROOT), **extra)
    cmd = [sys.executable, str(SCRIPT), str(path), backend]
    if ranks:
        cmd = [str(MPIEXEC), "-n", str(ranks)] + cmd
    return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_new_rows(path, rows_before: int, proc, timeout: float = 90.0) -> None:
    """Until this run has committed rows of its own (or has ended)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and sum(stored_xs(path).values()) <= rows_before:
        assert time.monotonic() < deadline, f"the study committed nothing in {timeout} s"
        time.sleep(0.2)


def stored_xs(path):
    """x -> how many result rows of the study the file holds (reading in a subprocess)."""
    if not path.exists():
        return collections.Counter()
    code = ("import sys, psmpi\ntry:\n    df = psmpi.read(sys.argv[1], name='adaptive')\n"
            "except psmpi.StoreError:\n    sys.exit(0)\n"
            "print('\\n'.join(repr(x) for x in df.get('x', [])))")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return collections.Counter(float(line) for line in done.stdout.split())


def read_calls(calls):
    by_run = collections.defaultdict(collections.Counter)
    for line in calls.read_text().split("\n"):
        if line:
            run, x = line.split()
            by_run[int(run)][float(x)] += 1
    return by_run


def uninterrupted(tmp_path, backend, ranks=None):
    """The answer and the calls per x of a run that nobody kills."""
    calls, seen = tmp_path / "ref-calls", tmp_path / "ref-seen"
    calls.write_text("")
    proc = start(tmp_path / "ref.h5", backend, 0, calls, seen, uuid.uuid4().hex, 0.0, ranks)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    return out.split("answer ")[1].strip(), read_calls(calls)[0]


@pytest.mark.timeout(400)
@pytest.mark.parametrize("backend, ranks", [("multiprocessing", None), ("serial", None),
                                            ("mpi", 1), ("mpi", 2), ("mpi", 4)],
                         ids=["multiprocessing", "serial", "mpiexec-n1", "mpiexec-n2",
                              "mpiexec-n4"])
def test_killed_adaptive_study_resumes_with_the_same_answer(tmp_path, backend, ranks):
    kill_and_rerun_until_complete(tmp_path, backend, ranks, runs=8, early=(0.8, 2.0))


@pytest.mark.timeout(400)
def test_killed_adaptive_study_resumes_with_the_same_answer_on_ray(tmp_path):
    """As on the other backends, with fewer kills: ray takes seconds to start. The early
    kills land anywhere from ray's start-up to the first commits."""
    kill_and_rerun_until_complete(tmp_path, "ray", None, runs=4, early=(0.5, 8.0))


def kill_and_rerun_until_complete(tmp_path, backend, ranks, runs, early):
    """SIGKILL the adaptive study ``runs`` times at random moments (every other run only
    once it has committed rows of its own, the others ``early`` seconds after the start),
    then run it to the end: the answer and the rows are those of an uninterrupted run, no
    run computed a pset committed before it, and every result acted on was committed."""
    answer, submitted = uninterrupted(tmp_path, backend, ranks)
    rng = random.Random(int(os.environ.get("PSMPI_KILL_SEED", "0")) or None)
    path, calls, seen = tmp_path / "a.h5", tmp_path / "calls", tmp_path / "seen"
    calls.write_text("")
    seen.write_text("")
    token = uuid.uuid4().hex
    before = {}  # run -> stored rows per x when it started
    kills = 0
    for run in range(runs):
        before[run] = stored_xs(path)
        proc = start(path, backend, run, calls, seen, token, 0.06, ranks)  # slow enough for 3 kills anywhere
        if run % 2:  # however slow the start-up (a loaded machine): kill once rows are in
            wait_for_new_rows(path, sum(before[run].values()), proc)
            time.sleep(rng.uniform(0.0, 0.3))
        else:
            time.sleep(rng.uniform(*early))
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read()
            break
        kill(proc, "mpi" if ranks else backend, token, "job")
        kills += 1
        stored = stored_xs(path)
        acted_on = collections.Counter(float(x) for x in seen.read_text().split())
        for x in acted_on:  # every result the study acted on was committed first
            assert stored[x] >= 1, f"the study acted on x={x} but its row is not in the file"
    assert kills >= 3, f"the study completed after {kills} kills: make it longer"
    final = len(before)
    before[final] = stored_xs(path)
    assert sum(before[final].values()) > 0, "no kill left committed rows: test too short"
    proc = start(path, backend, final, calls, seen, token, 0.0, ranks)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert out.split("answer ")[1].strip() == answer
    assert stored_xs(path) == stored_xs(tmp_path / "ref.h5")  # no row twice, none missing
    for run, counts in read_calls(calls).items():
        for x, n in counts.items():  # what a run computed was not committed before it
            assert n <= submitted[x] - before[run][x], (run, x, n, submitted[x], before[run][x])
    assert_all_ended(token)


def assert_all_ended(token, seconds: float = 30.0):
    """Every process of the study ends soon after it (ray's stop after the driver exits)."""
    deadline = time.monotonic() + seconds
    while study_processes(token) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not study_processes(token), f"still running {seconds:.0f} s after the study ended"


POISON_STUDY = """
import os, sys, psmpi

def worker(pset):
    if pset["x"] == 3:
        os._exit(3)  # kills the process running it: with serial, the whole run
    return {"y": pset["x"] * 2}

if __name__ == "__main__":
    psmpi.init(backend=sys.argv[1], verbose=0)
    with psmpi.Executor(out="poison.h5", name="p") as ex:
        for future in [ex.submit(worker, {"x": x}) for x in range(6)]:
            try:
                print("row", future.result())
            except psmpi.PsetFailed as exc:
                print("failed", exc.pset, exc.kind)
"""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend, ranks", [("serial", None), ("mpi", 3)],
                         ids=["serial", "mpiexec-n3"])
def test_a_pset_that_kills_the_run_is_given_up_after_max_attempts(tmp_path, backend, ranks):
    (tmp_path / "poison.py").write_text(POISON_STUDY)
    command = [sys.executable, "poison.py", backend]
    if ranks:
        command = [str(MPIEXEC), "-n", str(ranks)] + command
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    codes = []
    for _ in range(6):
        proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                              timeout=120, env=env)
        codes.append(proc.returncode)
        if proc.returncode == 0:
            break
    assert codes[-1] == 0 and len(codes) <= 4, codes  # runs alone once, then given up
    assert "failed {'x': 3} crashed" in proc.stdout, proc.stdout
    assert proc.stdout.count("row ") == 5
    assert sorted(psmpi.read(tmp_path / "poison.h5", name="p")["x"]) == [0, 1, 2, 4, 5]


@pytest.mark.timeout(200)
@pytest.mark.parametrize("backend, ranks", [("multiprocessing", None), ("mpi", 3)],
                         ids=["multiprocessing", "mpiexec-n3"])
def test_sigterm_drains_exits_75_and_a_rerun_finishes(tmp_path, backend, ranks):
    path, calls, seen = tmp_path / "a.h5", tmp_path / "calls", tmp_path / "seen"
    calls.write_text("")
    token = uuid.uuid4().hex
    proc = start(path, backend, 0, calls, seen, token, 0.02, ranks)
    deadline = time.monotonic() + 60  # signal once workers compute (they ignore it by then)
    while not calls.read_text() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    # Open MPI's mpirun kills the job on SIGTERM; it forwards SIGUSR1, Slurm's warning.
    signum = signal.SIGUSR1 if ranks and OPEN_MPI else signal.SIGTERM
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert f"stopped by {signum.name}" in err and "answer" not in out
    drained = stored_xs(path)
    assert sum(drained.values()) > 0
    proc = start(path, backend, 1, calls, seen, token, 0.0, ranks)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert sum(n for x, n in read_calls(calls)[1].items()) < 300
    assert not study_processes(token)


# -- the examples, killed and resumed


@pytest.mark.timeout(300)
@pytest.mark.parametrize("example", ["adaptive_peak", "optimiser_loop"])
def test_example_killed_and_rerun_ends_as_an_uninterrupted_run(tmp_path, example):
    script = ROOT / "examples" / f"{example}.py"
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def run(cwd, kill_after=None):
        cwd.mkdir(exist_ok=True)
        proc = subprocess.Popen([sys.executable, str(script)], cwd=cwd, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        if kill_after is not None:
            time.sleep(kill_after)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate(timeout=30)
                return None
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        return out

    reference = run(tmp_path / "ref")
    rng = random.Random()
    killed = tmp_path / "killed"
    for _ in range(3):
        out = run(killed, kill_after=rng.uniform(0.7, 1.5))
    out = run(killed)
    assert out == reference
    h5 = f"{example}.h5"
    ref_rows = psmpi.read(tmp_path / "ref" / h5)
    rows = psmpi.read(killed / h5)
    user = [c for c in ref_rows.columns if not c.startswith("_")]
    assert (rows[user].sort_values(user).reset_index(drop=True)
            .equals(ref_rows[user].sort_values(user).reset_index(drop=True)))


def test_the_driver_waits_on_its_queue_not_in_a_loop():
    # Imported here: the wake-up path the backends use when the Executor has nothing queued.
    from psmpi.executor import Submissions
    from psmpi.stopping import StopRequest
    source = Submissions(2, None, StopRequest(), {}, {})
    woke = []
    waiter = threading.Thread(target=lambda: (source.wait_for_work(10.0), woke.append(1)))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.1)
    source.close()
    waiter.join(5)
    assert woke and time.monotonic() - started < 2.0


def scaled(pset, system_kwargs, user_kwargs):
    return {"y": pset["x"] * system_kwargs["setup"]["scale"],
            "same": psmpi.context().setup is system_kwargs["setup"]}


def give_scale(context):
    return {"scale": 10}


def broken_setup(context):
    raise OSError("the model file is missing")


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_the_executor_runs_the_set_up_and_stops_on_a_raising_one(tmp_path, backend):
    with psmpi.Executor(out=tmp_path / "ex.h5", name="s", backend=backend, ncores=2,
                        setup=give_scale, verbose=0) as ex:
        rows = [f.result(timeout=60) for f in [ex.submit(scaled, {"x": x}) for x in range(4)]]
    assert [r["y"] for r in rows] == [0, 10, 20, 30] and all(r["same"] for r in rows)
    ex = psmpi.Executor(out=tmp_path / "ex.h5", name="b", backend=backend, ncores=2,
                        setup=broken_setup, verbose=0)
    future = ex.submit(scaled, {"x": 1})
    with pytest.raises(psmpi.SetupError, match="the model file is missing"):
        future.result(timeout=60)
    with pytest.raises(psmpi.SetupError):
        ex.shutdown()

"""Ensembles of MPI applications on this machine: psets asking 1, 2 and 3 ranks of an
allocation of 4 cores (PSMPI_HOSTS=localhost:4), launched by run_mpi with the mpich wheel's
mpiexec; and the exact command lines built for srun, MPICH and Open MPI."""

import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

import pytest

import psmpi
from psmpi.backends import allocation
from psmpi.backends.scheduling import Placement, Request, Scheduler
from psmpi.study.mpirun import gpu_env, launch_command, srun_env, srun_hostfile

APP = str(Path(__file__).parent / "scripts" / "mpi_app.py")
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
needs_mpich = pytest.mark.skipif(not os.access(MPIEXEC, os.X_OK),
                                 reason="needs the mpich wheel's mpiexec beside Python")


def app_worker(pset):
    here = psmpi.context()
    out = os.path.join(here.calc_dir, "app.json")
    t0 = time.time()
    done = psmpi.run_mpi([sys.executable, APP, out, "{seconds}"], pset, timeout=60)
    t1 = time.time()
    with open(out) as file:
        app = json.load(file)
    return {"size": app["size"], "t0": t0, "t1": t1, "app_start": app["start"],
            "app_end": app["end"], "reserved": here.reservation.ranks,
            "cpus": list(here.reservation.cpus), "affinity": app["affinity"],
            "rank_affinity": json.dumps(app["ranks"]), "returncode": done["returncode"]}


def max_in_use(rows, start="t0", end="t1"):
    """The most ranks in use at any instant, from the intervals [start, end] of the rows
    (by default those each pset held its cores)."""
    events = sorted([(row[start], row["ranks"]) for row in rows]
                    + [(row[end], -row["ranks"]) for row in rows], key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, change in events:
        now += change
        most = max(most, now)
    return most


@needs_mpich
def test_applications_run_with_their_ranks_within_the_allocation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PSMPI_HOSTS", "localhost:4")
    monkeypatch.setenv("PSMPI_LAUNCHER", "mpich")
    psets = [{"ranks": ranks, "seconds": 0.5, "k": k} for k in range(3) for ranks in (1, 2, 3)]
    results = psmpi.map(app_worker, psets, resources=lambda pset: {"ranks": pset["ranks"]},
                        out="ens.h5", calc_dir=str(tmp_path / "runs"), verbose=0, vstats=0,
                        logfile=False)
    assert not len(results.missing), results.missing
    rows = results.results.to_dict("records")
    assert len(rows) == len(psets)
    for row in rows:
        assert row["size"] == row["ranks"] == row["reserved"]
        assert row["returncode"] == 0
        assert row["t0"] <= row["app_start"] <= row["app_end"] <= row["t1"]
        assert row["affinity"]  # recorded; 4 faked cores on this machine are not pinned
        assert len(json.loads(row["rank_affinity"])) == row["ranks"]
        assert list(row["cpus"]) == []
    assert max_in_use(rows) <= 4
    assert max_in_use(rows, "app_start", "app_end") <= 4  # as the applications saw it
    assert max_in_use(rows) >= 3  # psets did run side by side
    # a pset's run directory holds its output files
    run_dirs = list((tmp_path / "runs").iterdir())
    assert len(run_dirs) == len(psets)
    assert all((d / "stdout.txt").exists() and (d / "stderr.txt").exists() for d in run_dirs)
    # resume: the same map again launches nothing and returns every row
    again = psmpi.map(not_called, psets, resources=lambda pset: {"ranks": pset["ranks"]},
                      out="ens.h5", name="app_worker", calc_dir=str(tmp_path / "runs"),
                      verbose=0, vstats=0, logfile=False)
    assert len(again.results) == len(psets) and not len(again.missing)


@needs_mpich
@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs CPU affinity")
def test_on_this_machines_cores_concurrent_applications_get_disjoint_cores(tmp_path,
                                                                          monkeypatch):
    """The allocation is this machine: each application is pinned to its reserved cores,
    each rank to its own (MPICH's -bind-to user:), and applications running at the same
    time share no core."""
    monkeypatch.chdir(tmp_path)
    for name in ("PSMPI_HOSTS", "SLURM_JOB_NODELIST", "PSMPI_LAUNCHER"):
        monkeypatch.delenv(name, raising=False)
    cores = sorted(os.sched_getaffinity(0))
    sizes = [r for r in (1, 2, 3) if r <= len(cores)]
    psets = [{"ranks": ranks, "seconds": 0.8, "k": k} for k in range(3) for ranks in sizes]
    psets += [{"ranks": 1, "seconds": 0.8, "k": 9 + k} for k in range(len(cores))]  # side by side
    results = psmpi.map(app_worker, psets, resources=lambda pset: {"ranks": pset["ranks"]},
                        out=None, calc_dir=str(tmp_path / "runs"), verbose=0, vstats=0,
                        logfile=False)
    assert not len(results.missing), results.missing
    rows = results.results.to_dict("records")
    for row in rows:
        assert row["size"] == row["ranks"]
        assert len(row["cpus"]) == row["ranks"] and set(row["cpus"]) <= set(cores)
        assert row["affinity"] == sorted(row["cpus"])  # the application ran on its cores
        per_rank = json.loads(row["rank_affinity"])
        assert all(len(one) == 1 for one in per_rank)  # a core per rank
        assert len({one[0] for one in per_rank}) == row["ranks"]  # and a different one each
    assert max_in_use(rows, "app_start", "app_end") <= len(cores)
    overlapping = [(a, b) for i, a in enumerate(rows) for b in rows[i + 1:]
                   if a["app_start"] < b["app_end"] and b["app_start"] < a["app_end"]]
    if len(cores) >= 2:
        assert overlapping  # the 1-rank psets ran side by side
    for a, b in overlapping:
        assert not set(a["affinity"]) & set(b["affinity"]), (a, b)


def test_bind_true_refuses_an_allocation_that_is_not_this_machines_cores(monkeypatch):
    monkeypatch.setenv("PSMPI_HOSTS", "node1:4,node2:4")
    with pytest.raises(psmpi.ConfigError, match=r"'bind': True.*node1: 4 cores.*drop bind"):
        psmpi.map(lambda p: p, [{"a": 1}], resources={"ranks": 1}, ensemble={"bind": True},
                  out=None, verbose=0, vstats=0, logfile=False)


def not_called(pset):
    raise AssertionError("a done pset ran again")


def test_a_pset_larger_than_the_allocation_is_refused_before_compute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PSMPI_HOSTS", "localhost:4")
    ran = tmp_path / "ran"

    def worker(pset):
        ran.write_text("x")
        return {"x": 1}

    with pytest.raises(psmpi.ConfigError, match=r"pset 1 \{'ranks': 5\} asks for 5 rank.*"
                                                r"localhost: 4 cores.*PSMPI_HOSTS"):
        psmpi.map(worker, [{"ranks": 1}, {"ranks": 5}], resources=lambda p: {"ranks": p["ranks"]},
                  out=None, verbose=0, vstats=0, logfile=False)
    assert not ran.exists()


def test_a_failing_application_is_a_failed_pset_and_the_rest_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PSMPI_HOSTS", "localhost:2")

    def worker(pset):
        return psmpi.run_mpi([sys.executable, "-c", "import sys; sys.exit({code})"], pset,
                             launcher="{cmd}")

    results = psmpi.map(worker, [{"code": 0}, {"code": 3}], resources={"ranks": 1}, out=None,
                        calc_dir=str(tmp_path / "runs"), verbose=0, vstats=0, logfile=False)
    assert results.results["returncode"].tolist() == [0]
    assert len(results.missing) == 1 and "exited with status 3" in str(
        results.missing.to_dict("records")[0])


def test_resources_need_the_ensemble_backend():
    with pytest.raises(psmpi.ConfigError, match="resources= needs the ensemble backend"):
        psmpi.map(lambda p: p, [{"a": 1}], resources={"ranks": 1}, backend="serial", out=None,
                  verbose=0, vstats=0, logfile=False)


def test_run_mpi_outside_an_ensemble_says_what_to_do():
    with pytest.raises(psmpi.PsetError, match="resources="):
        psmpi.run_mpi(["true"], {}, cwd=".")


TWO_HOSTS = Placement((("n01", 2, ("0", "1")), ("n02", 1, ("0",))), cores_per_rank=4)
ONE_HOST = Placement((("node7", 3, ()),), cores_per_rank=1)
WHOLE_NODES = Placement((("n01", 2, ("0", "1")), ("n02", 2, ("0", "1"))), cores_per_rank=8,
                        whole_nodes=True)


@pytest.mark.parametrize("placement, launcher, expected", [
    (ONE_HOST, "srun",
     "srun --exact --nodes=1 --ntasks=3 --cpus-per-task=1 --nodelist=node7 "
     "--job-name=psmpi-7 ./app --a 1"),
    (TWO_HOSTS, "srun",  # the ranks of each node: SLURM_HOSTFILE (see below)
     "srun --exact --nodes=2 --ntasks=3 --cpus-per-task=4 --distribution=arbitrary "
     "--gpus-per-task=1 --job-name=psmpi-7 ./app --a 1"),
    (WHOLE_NODES, "srun",  # no --exact: the step holds every CPU of its nodes
     "srun --nodes=2 --ntasks=4 --cpus-per-task=8 --distribution=arbitrary "
     "--gpus-per-task=1 --job-name=psmpi-7 ./app --a 1"),
    (WHOLE_NODES, "mpich", "/bin/mpiexec -n 4 -hosts n01:2,n02:2 ./app --a 1"),
    (WHOLE_NODES, "openmpi", "/bin/mpiexec -n 4 --host n01:2,n02:2 --bind-to none ./app --a 1"),
    (ONE_HOST, "mpich", "/bin/mpiexec -n 3 -hosts node7:3 ./app --a 1"),
    (TWO_HOSTS, "mpich", "/bin/mpiexec -n 3 -hosts n01:2,n02:1 ./app --a 1"),
    (TWO_HOSTS, "openmpi", "/bin/mpiexec -n 3 --host n01:2,n02:1 --bind-to none ./app --a 1"),
    (TWO_HOSTS, "aprun -n {ranks} -d {cores_per_rank} -L {hosts} {cmd}",
     "aprun -n 3 -d 4 -L n01,n02 ./app --a 1"),
])
def test_golden_command_lines(placement, launcher, expected):
    argv = launch_command(["./app", "--a", "1"], placement, launcher, mpiexec="/bin/mpiexec",
                          step_name="psmpi-7")
    assert shlex.join(argv) == expected


def test_srun_places_each_rank_on_its_reserved_node(tmp_path):
    """Over several nodes srun takes the node of each rank from SLURM_HOSTFILE (written to
    the run directory); a launch on one node drops one the job may have set."""
    assert srun_hostfile(TWO_HOSTS) == "n01\nn01\nn02\n"
    extra = srun_env(TWO_HOSTS, str(tmp_path))
    assert extra == {"SLURM_HOSTFILE": str(tmp_path / "psmpi-hostfile"),
                     "SLURM_NTASKS_PER_NODE": None}
    assert (tmp_path / "psmpi-hostfile").read_text() == "n01\nn01\nn02\n"
    assert srun_env(ONE_HOST, str(tmp_path)) == {"SLURM_HOSTFILE": None,
                                                 "SLURM_NTASKS_PER_NODE": None}


def test_scheduler_to_command_lines_on_fake_nodes():
    """From a fake Slurm node list to the srun lines: a pset over two nodes, one on two whole
    nodes with GPUs, and a one-rank pset back-filling a node."""
    alloc = allocation.detect({"SLURM_JOB_NODELIST": "gpu[01-03]",
                               "SLURM_JOB_CPUS_PER_NODE": "4(x3)", "SLURM_JOB_GPUS": "0,1"})
    scheduler = Scheduler(alloc)
    scheduler.add("spread", Request(6))
    scheduler.add("whole", Request(2, gpus_per_rank=1, nodes=1))
    scheduler.add("small", Request(1))
    lines = {key: shlex.join(launch_command(["app"], placement, "srun", step_name=key))
             for key, placement in scheduler.start()}
    assert lines == {
        "spread": "srun --exact --nodes=2 --ntasks=6 --cpus-per-task=1 "
                  "--distribution=arbitrary --job-name=spread app",
        "whole": "srun --nodes=1 --ntasks=2 --cpus-per-task=1 --nodelist=gpu03 "
                 "--gpus-per-task=1 --job-name=whole app",
        "small": "srun --exact --nodes=1 --ntasks=1 --cpus-per-task=1 --nodelist=gpu02 "
                 "--job-name=small app"}
    assert srun_hostfile(scheduler.running["spread"]) == "gpu01\n" * 4 + "gpu02\n" * 2


def test_gpus_reach_the_application_by_every_vendor_variable():
    assert gpu_env(("2", "3")) == {"CUDA_VISIBLE_DEVICES": "2,3", "HIP_VISIBLE_DEVICES": "2,3",
                                   "ROCR_VISIBLE_DEVICES": "2,3", "ZE_AFFINITY_MASK": "2,3"}
    assert gpu_env(()) == {}


def test_a_timeout_ends_the_whole_launch(tmp_path):
    """The launcher and the program it started (here a shell and its sleeping child) stop."""
    marker = tmp_path / "child.pid"
    t0 = time.monotonic()
    with pytest.raises(psmpi.CommandError, match="did not finish within 0.5 s"):
        psmpi.run_mpi(["sh", "-c", f"sleep 30 & echo $! > {marker}; wait"], {}, timeout=0.5,
                      cwd=str(tmp_path), reservation=ONE_HOST, launcher="{cmd}")
    assert time.monotonic() - t0 < 10
    child = int(marker.read_text())
    for _ in range(50):
        if not os.path.exists(f"/proc/{child}") or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the launched program's child outlived the timeout")


def test_gpu_psets_get_distinct_devices(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PSMPI_HOSTS", "localhost:4")
    monkeypatch.setenv("PSMPI_NODE_GPUS", "2")

    def worker(pset):
        done = psmpi.run_mpi([sys.executable, "-c", "import os, time; time.sleep(0.3); "
                              "print(os.environ['CUDA_VISIBLE_DEVICES'], time.time())"],
                             pset, launcher="{cmd}")
        device, at = done["stdout"].split()
        return {"device": device, "at": float(at)}

    results = psmpi.map(worker, [{"k": k} for k in range(4)],
                        resources={"ranks": 1, "gpus_per_rank": 1}, out=None,
                        calc_dir=str(tmp_path / "runs"), verbose=0, vstats=0, logfile=False)
    rows = results.results
    assert sorted(rows["device"]) == ["0", "0", "1", "1"]


def test_a_drain_starts_nothing_more_stops_the_applications_and_resume_ends_it(tmp_path):
    import signal
    import subprocess

    from psmpi.stopping import EXIT_INCOMPLETE
    script = Path(__file__).parent / "scripts" / "ensemble_drain.py"
    pids = tmp_path / "pids"
    env = dict(os.environ, PSMPI_HOSTS="localhost:2", APP_PIDS=str(pids),
               PYTHONPATH=str(Path(__file__).parent.parent))
    proc = subprocess.Popen([sys.executable, str(script), "s.h5", "30"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while not (pids.exists() and len(pids.read_text().split()) == 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_INCOMPLETE, out
    started = [int(pid) for pid in pids.read_text().split()]
    assert len(started) == 2, out  # nothing started after the signal, though pset 0 ended
    assert psmpi.read(str(tmp_path / "s.h5"))["a"].tolist() == [0]  # done in the drain: kept
    for pid in started:  # the application still running at the end of the drain was stopped
        assert not os.path.exists(f"/proc/{pid}") or " Z " in Path(f"/proc/{pid}/stat").read_text()
    again = subprocess.run([sys.executable, str(script), "s.h5", "0"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert "complete 6" in again.stdout, again.stdout + again.stderr
    assert len(pids.read_text().split()) == 2 + 5


def test_with_cost_the_dearest_start_first_and_small_psets_fill_in(tmp_path, monkeypatch):
    """On one 2-core host: costs put the 2-rank pset first; the 1-rank psets pair up after."""
    monkeypatch.setenv("PSMPI_HOSTS", "localhost:2")

    def worker(pset):
        start = time.time()
        time.sleep(0.5)
        return {"start": start, "end": time.time()}

    psets = [{"ranks": 1, "c": 1}, {"ranks": 1, "c": 2}, {"ranks": 2, "c": 9}]
    results = psmpi.map(worker, psets, resources=lambda p: {"ranks": p["ranks"]},
                        cost=lambda p: p["c"], out=None, verbose=0, vstats=0, logfile=False)
    rows = results.results.sort_values("start").to_dict("records")
    assert [row["c"] for row in rows][0] == 9
    big = rows[0]
    assert all(row["start"] >= big["end"] for row in rows[1:])  # never more than 2 cores
    assert rows[2]["start"] < rows[1]["end"]  # the two small ones side by side


def processes_with(marker: str) -> list[str]:
    """The command lines of live (not zombie) processes that have ``marker`` in argv."""
    found = []
    for name in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError, IndexError):
            continue
        if marker in argv and state != "Z":
            found.append(f"{name}: {argv}")
    return found


@needs_mpich
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc")
def test_a_killed_driver_leaves_no_application_and_a_rerun_finishes_each_pset_once(tmp_path):
    """SIGKILL of the driver mid-run ends mpiexec, its ranks and a rank's child in a session
    of its own; the rerun computes the rest, and no pset completes twice."""
    import signal
    import subprocess
    import uuid

    script = Path(__file__).parent / "scripts" / "ensemble_kill.py"
    log, marker = tmp_path / "apps.log", f"psmpi-kill-test-{uuid.uuid4().hex}"
    env = dict(os.environ, PSMPI_HOSTS="localhost:4", APP_LOG=str(log),
               PYTHONPATH=str(Path(__file__).parent.parent))
    proc = subprocess.Popen([sys.executable, str(script), "s.h5", "300", marker], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        # psets 0 and 1 done (committed within 0.1 s), 2, 3 and 4 running with 4 ranks
        while not (log.exists() and {"done 0", "done 1"} <= set(log.read_text().splitlines())
                   and len(processes_with(marker)) >= 4 + 2):  # 4 ranks, 2 escaped children
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        deadline = time.monotonic() + 20
        while processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = processes_with(marker)
        assert not left, left
    finally:
        for line in processes_with(marker):  # never leave them running, even on failure
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
    again = subprocess.run([sys.executable, str(script), "s.h5", "0.2", marker], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=120)
    assert "complete 6 [0, 1, 2, 3, 4, 5]" in again.stdout, again.stdout + again.stderr
    done = [line for line in log.read_text().splitlines() if line.startswith("done")]
    assert sorted(done) == [f"done {a}" for a in range(6)]  # each pset completed once
    assert not processes_with(marker)


def test_progress_counts_running_psets_as_active_and_waiting_ones_as_queued(tmp_path,
                                                                            monkeypatch, capsys):
    """Every pset is read up front, but only those holding cores count as active."""
    monkeypatch.setenv("PSMPI_HOSTS", "localhost:2")

    def worker(pset):
        time.sleep(0.3)
        return {"x": 1}

    psmpi.map(worker, [{"k": k} for k in range(6)], resources={"ranks": 1}, out=None,
              verbose=3, vstats=0, logfile=False)
    lines = [line for line in capsys.readouterr().err.splitlines() if " finished, " in line]
    counts = [re.search(r"(\d+)/6 finished, (\d+) active(?:, (\d+) queued)?", line).groups()
              for line in lines]
    seen = [(int(done), int(active), int(queued or 0)) for done, active, queued in counts]
    assert all(active <= 2 for _, active, _ in seen), lines
    assert all(done + active + queued <= 6 for done, active, queued in seen), lines
    assert (0, 2, 4) in seen, lines  # all read, two running, four waiting for cores
    assert seen[-1] == (6, 0, 0), lines


def test_a_missing_program_is_a_clear_error(tmp_path):
    with pytest.raises(psmpi.CommandError, match="cannot start 'no-such-program-16'"):
        psmpi.run_mpi(["no-such-program-16", "x"], {}, cwd=str(tmp_path), reservation=ONE_HOST,
                      launcher="{cmd}")


def test_a_launcher_starts_without_python_in_the_child_unless_needed(monkeypatch):
    """A preexec_fn makes Python fork the whole driver: only for pinning, or when the
    driver ignores a signal the application must get back."""
    import signal

    from psmpi.worker import launches

    prefix, how = launches.how_to_start()
    assert "preexec_fn" not in how and how["start_new_session"]
    if launches.setpriv():
        assert prefix == [launches.setpriv(), "--pdeathsig", "TERM", "--"]
    _, how = launches.how_to_start((0,))
    assert callable(how["preexec_fn"])
    monkeypatch.setattr(signal, "getsignal", lambda sig: signal.SIG_IGN)
    prefix, how = launches.how_to_start()
    assert prefix == [] and callable(how["preexec_fn"])

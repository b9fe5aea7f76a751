"""The hidden run log: one per run, what it holds, safe when runs share a directory."""

import glob
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

import psmpi
from psmpi import api
from psmpi.watch import logfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")


def square(pset):
    return {"y": pset["a"] ** 2}


def fail_on_odd(pset):
    if pset["a"] % 2:
        raise ValueError(f"odd a={pset['a']}")
    return {"y": pset["a"]}


@pytest.fixture(autouse=True)
def in_tmp_with_logs(tmp_path, monkeypatch):
    """Logs on (tests/conftest.py turns them off for the rest of the suite), in tmp_path."""
    monkeypatch.delenv("PSMPI_LOGFILE", raising=False)
    monkeypatch.chdir(tmp_path)
    logfile.close_run_log()
    api.init(backend="serial", verbose=0)
    yield
    logfile.close_run_log()
    api._session.close_backend()
    api._session.initialised = False


def logs(directory=".") -> list[str]:
    return sorted(glob.glob(os.path.join(directory, ".psmpi-*.log")))


def test_one_log_per_run_with_header_maps_failures_and_statistics(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("MY_API_TOKEN", "secret")  # not a variable of interest: never logged
    assert logs() == []  # nothing before the first map
    psmpi.map(square, [{"a": a} for a in range(3)], out=None, vstats=0)
    psmpi.map(fail_on_odd, [{"a": a} for a in range(4)], out="s.h5")
    assert len(logs()) == 1  # the second map writes into the same log
    path = logs()[0]
    assert os.path.basename(path).startswith(".psmpi-") and f"-{os.getpid()}" in path
    logfile.close_run_log()
    text = open(path).read()
    for expected in ["psmpi run log", "started ", f"(pid {os.getpid()})", "command ",
                     f"directory    {os.getcwd()}", "python       3.", "numpy ", "h5py ",
                     "HDF5 ", "backend      serial, 1 worker", "SLURM_JOB_ID=4242",
                     "OMP_NUM_THREADS=3",
                     "[square] map started: backend serial (1 workers), 3 psets, results in "
                     "memory; settings: ",
                     "[square] done: 3/3 finished", "[fail_on_odd] map started",
                     "[fail_on_odd] pset 1 failed (exception) on ", "pset: {'a': 1}",
                     "ValueError: odd a=3", "Traceback (most recent call last)",
                     "[fail_on_odd] done: 2/4 finished, 0 active, 2 failed (2 exceptions)",
                     "statistics:", "per pset (seconds)", "driver memory: rss ",
                     "run ended ", "2 maps; 2 psets failed (tracebacks above)"]:
        assert expected in text, (expected, text)
    assert "secret" not in text
    # every entry starts with a timestamp; continuation lines are indented
    assert all(line.startswith(("20", "    ")) for line in text.splitlines()), text


def test_the_user_is_told_where_the_tracebacks_are(capsys):
    psmpi.map(fail_on_odd, [{"a": a} for a in range(3)], out=None, verbose=1, vstats=0)
    err = capsys.readouterr().err
    path = os.path.abspath(logs()[0])
    assert f"1 psets failed: see results.missing (or `psmpi.read(..., failures=True)`); " \
           f"tracebacks in {path}" in err


def test_logfile_false_or_psmpi_logfile_0_writes_no_log(monkeypatch):
    psmpi.map(square, [{"a": 1}], out=None, logfile=False)
    assert logs() == []
    monkeypatch.setenv("PSMPI_LOGFILE", "0")
    psmpi.map(square, [{"a": 1}], out=None)
    assert logs() == []


def test_an_exception_that_ends_a_map_is_logged():
    with pytest.raises(psmpi.PsetError):
        psmpi.map(square, [{"a": 1}, {"a": 2}], out=None, cost=lambda p: 1 / (p["a"] - 2))
    logfile.close_run_log()
    text = open(logs()[0]).read()
    assert "[square] map ended by PsetError: cost() failed for pset 1" in text, text
    assert "ZeroDivisionError" in text


def test_names_never_clash_in_one_directory():
    first, second = logfile.RunLog.create(), logfile.RunLog.create()
    try:
        assert first.path != second.path and len(logs()) == 2  # same second, same pid
    finally:
        first.close()
        second.close()


def test_concurrent_runs_in_one_directory_each_get_their_own_log(tmp_path):
    script = tmp_path / "study.py"
    script.write_text(textwrap.dedent("""
        import psmpi
        res = psmpi.map(lambda p: {"y": p["a"]}, [{"a": a} for a in range(50)],
                        backend="serial", out=None, verbose=0)
        assert len(res) == 50
    """))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSMPI_")}
    procs = [subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path)
             for _ in range(4)]
    pids = {proc.pid for proc in procs}
    assert all(proc.wait(timeout=120) == 0 for proc in procs)
    found = logs()
    assert len(found) == 4
    headers = [open(path).read() for path in found]
    assert {int(h.split("(pid ")[1].split(")")[0]) for h in headers} == pids
    assert all("[lambda] done: 50/50 finished" in h and "run ended" in h for h in headers)


def test_a_log_that_cannot_be_created_warns_once_and_the_survey_goes_on(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    os.chdir(gone)
    gone.rmdir()  # the working directory no longer exists: no file can be created in it
    with pytest.warns(RuntimeWarning, match="cannot create the run log") as caught:
        first = psmpi.map(square, [{"a": 1}], out=None)
        second = psmpi.map(square, [{"a": 2}], out=None)
    assert len(first) == len(second) == 1
    assert len([w for w in caught if "run log" in str(w.message)]) == 1
    os.chdir(tmp_path)


def test_a_log_that_cannot_be_written_warns_once_and_the_survey_goes_on():
    psmpi.map(square, [{"a": 1}], out=None)
    log = logfile.current()
    log.file.close()  # as if the disk went away under the open file
    with pytest.warns(RuntimeWarning, match="cannot write the run log") as caught:
        res = psmpi.map(fail_on_odd, [{"a": a} for a in range(4)], out=None)
    assert len(res) == 2 and len(res.missing) == 2
    assert len(caught) == 1


@pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None or not os.path.exists(MPIEXEC),
                    reason="needs mpi4py and the mpiexec of the mpich wheel")
def test_under_mpi_only_rank_0_writes_one_log(tmp_path):
    script = tmp_path / "study.py"
    script.write_text(textwrap.dedent("""
        import psmpi
        psmpi.init()
        psmpi.map(lambda p: {"y": p["a"]}, [{"a": a} for a in range(40)], out=None,
                  verbose=0, group_size=1)
        psmpi.map(lambda p: 1 / 0, [{"a": 1}], out=None, verbose=0)
    """))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PSMPI_", "PMI_", "PMIX_", "OMPI_", "HYDRA_"))}
    env["PYTHONPATH"] = ROOT
    done = subprocess.run([MPIEXEC, "-n", "3", sys.executable, str(script)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = logs()
    assert len(found) == 1, found
    text = open(found[0]).read()
    assert "backend      mpi, 3 MPI ranks (2 workers)" in text
    assert "mpi4py " in text and ("MPICH" in text or "Open MPI" in text)  # the library's line
    assert "PMI_SIZE=3" in text or "OMPI_COMM_WORLD_SIZE=3" in text  # Hydra's or mpirun's
    assert "rank 1 " in text and "rank 2 " in text  # the per-rank statistics
    assert "pset 0 failed (exception) on " in text and "ZeroDivisionError" in text
    assert "run ended" in text and "2 maps; 1 psets failed" in text

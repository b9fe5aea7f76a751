"""Worker set-up (setup=) and GPUs (gpus_per_worker=) on every backend.

Each case runs tests/scripts/setup_study.py in a fresh process (plain python, or under
``mpiexec -n K`` with a deadline, as in tests/test_mpi.py): the set-up appends a line to a
file named after its process id, so the test counts set-up runs per process, and rank 0
prints the rows (or the error map() raised) as JSON. No GPU here: ``PSMPI_NODE_GPUS`` gives
the node's devices.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
from test_mpi import MPIEXEC, clean_env, launch

import psmpi
from psmpi import config
from psmpi.errors import ConfigError
from psmpi.worker import setup as worker_setup

HERE = os.path.dirname(os.path.abspath(__file__))
STUDY = os.path.join(HERE, "scripts", "setup_study.py")
HAS_MPI = importlib.util.find_spec("mpi4py") is not None and os.path.exists(MPIEXEC)
HAS_RAY = importlib.util.find_spec("ray") is not None
needs_mpi = pytest.mark.skipif(not HAS_MPI, reason="needs mpi4py and mpiexec")

# Backends that run in one script (plain python), as in tests/test_contract.py.
BACKENDS = ["serial", "multiprocessing",
            pytest.param("ray", marks=pytest.mark.skipif(not HAS_RAY, reason="needs ray"))]


def survey(tmp_path, backend: str, ranks: int | None = None, env: dict | None = None,
           timeout: float = 120, **options) -> tuple[int, dict | None, str, list[dict]]:
    """Run the study; (exit status, rank 0's JSON, stderr, every set-up call's record)."""
    setups = tmp_path / "setups"
    setups.mkdir(exist_ok=True)
    if backend == "multiprocessing":
        options.setdefault("ncores", 2)
    if backend == "ray":
        options.setdefault("ncores", 2)
    args = [backend, str(tmp_path / "out.h5"), str(setups), json.dumps(options)]
    if ranks is None:
        import subprocess
        done = subprocess.run([sys.executable, STUDY, *args], capture_output=True, text=True,
                              env=clean_env(env), timeout=timeout, cwd=str(tmp_path))
        code, out, err = done.returncode, done.stdout, done.stderr
    else:
        code, out, err, _ = launch(ranks, STUDY, *args, timeout=timeout, env=env)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    report = json.loads(lines[-1]) if lines else None
    records = [json.loads(line) for path in sorted(setups.iterdir())
               for line in path.read_text().splitlines()]
    return code, report, err, records


def check_once_per_process(report: dict, records: list[dict], backend: str) -> None:
    """Each process ran the set-up once, before its psets, and its value reached them."""
    pids = [record["pid"] for record in records]
    assert len(pids) == len(set(pids)), records  # once per process
    rows = report["rows"]
    assert rows and all(row["setup_pid"] == row["pid"] for row in rows), rows
    assert {row["pid"] for row in rows} <= set(pids)  # every computing process set up
    assert all(row["same"] for row in rows)  # context().setup is system_kwargs["setup"]
    assert all(record["backend"] == backend for record in records)


@pytest.mark.parametrize("backend", BACKENDS)
def test_setup_runs_once_per_worker_process(backend, tmp_path):
    code, report, err, records = survey(tmp_path, backend)
    assert code == 0, err
    assert len(report["rows"]) == 12 and report["failed"] == 0
    check_once_per_process(report, records, backend)
    if backend == "serial":
        assert len(records) == 1 and records[0]["rank"] == 0 and records[0]["local_rank"] == 0
    if backend == "multiprocessing":
        assert {record["local_rank"] for record in records} <= {0, 1}


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_a_raising_setup_stops_the_map_and_keeps_what_was_committed(backend, tmp_path):
    code, report, err, records = survey(tmp_path, backend, fail=True, prefill=3)
    assert code == 0, err
    assert "ValueError: the model file is missing" in report["setup_error"]
    assert "failing_setup" in report["setup_error"] and "setup_study.py" in report["remote_traceback"]
    # No retry storm: each process tried the failing set-up at most once, though it was
    # handed several groups (group_size=1, 12 psets).
    pids = [record["pid"] for record in records if record["function"] == "failing_setup"]
    assert report["pid"] in pids and len(pids) == len(set(pids))
    assert len(pids) <= (2 if backend == "multiprocessing" else 1)
    summary = psmpi.status(str(tmp_path / "out.h5"))[0]
    assert (summary.done, summary.failed, summary.crashed) == (3, 0, 0)  # nothing lost or failed


def test_setup_runs_again_in_each_new_process(tmp_path):
    code, report, err, records = survey(tmp_path, "multiprocessing", max_tasks_per_child=1, n=6)
    assert code == 0, err
    check_once_per_process(report, records, "multiprocessing")
    assert len({row["pid"] for row in report["rows"]}) == 6  # a new process per group
    assert len(records) >= 6
    # each replacement took a freed slot, never one beyond the 2 workers
    assert {record["local_rank"] for record in records} <= {0, 1}


def test_setup_and_gpus_run_again_after_a_worker_is_killed(tmp_path):
    code, report, err, records = survey(tmp_path, "multiprocessing", crash=4, gpus_per_worker=2,
                                        env={"PSMPI_NODE_GPUS": "0,1,2,3"})
    assert code == 0, err
    assert report["failed"] == 1 and len(report["rows"]) == 11
    check_once_per_process(report, records, "multiprocessing")
    assert len(records) > 2  # the pool was rebuilt: its new processes set up again
    # A new process takes a freed slot and its devices, never a slot beyond the workers.
    for record in records:
        assert record["local_rank"] in (0, 1)
        assert record["gpus"] == [["0", "1"], ["2", "3"]][record["local_rank"]]


def test_each_multiprocessing_worker_gets_its_own_gpus(tmp_path):
    code, report, err, records = survey(tmp_path, "multiprocessing", gpus_per_worker=2,
                                        env={"PSMPI_NODE_GPUS": "0,1,2,3"})
    assert code == 0, err
    by_pid = {}
    for row in report["rows"]:
        by_pid.setdefault(row["pid"], set()).add(row["cuda"])
        assert row["others"] == ";".join([row["cuda"]] * 3)  # HIP, ROCR, ZE alike
    assert sorted(cuda for seen in by_pid.values() for cuda in seen) == ["0,1", "2,3"]
    for record in records:  # set before the set-up ran
        assert record["env"]["CUDA_VISIBLE_DEVICES"] == ",".join(record["gpus"])
        assert record["env"]["ZE_AFFINITY_MASK"] == ",".join(record["gpus"])


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_too_few_gpus_is_a_config_error_before_any_compute(backend, tmp_path):
    code, report, err, records = survey(tmp_path, backend, gpus_per_worker=3,
                                        env={"PSMPI_NODE_GPUS": "0,1" if backend == "serial"
                                             else "0,1,2,3"})
    assert code == 0, err
    message = report["config_error"]
    assert "gpus_per_worker=3" in message and "PSMPI_NODE_GPUS" in message
    assert ("needs 6 GPUs" if backend == "multiprocessing" else "needs 3 GPUs") in message
    assert records == [] and not (tmp_path / "out.h5").exists()  # raised before the file opened


def test_gpus_on_ray_point_to_num_gpus(tmp_path):
    if not HAS_RAY:
        pytest.skip("needs ray")
    from psmpi.backends.ray import RayBackend
    with pytest.raises(ConfigError, match="num_gpus"):
        RayBackend.check_gpus(object.__new__(RayBackend), 1)


# --- MPI -------------------------------------------------------------------------------

@needs_mpi
@pytest.mark.parametrize("ranks", [1, 2, 4])
def test_setup_under_mpiexec(ranks, tmp_path):
    code, report, err, records = survey(tmp_path, "mpi", ranks=ranks)
    assert code == 0, err
    check_once_per_process(report, records, "mpi")
    workers = max(1, ranks - 1)
    assert len(records) <= workers
    if ranks > 1:  # one node: the node-local rank is the rank
        assert all(record["local_rank"] == record["rank"] > 0 for record in records)


@needs_mpi
def test_a_raising_setup_under_mpiexec_is_an_error_not_a_hang(tmp_path):
    code, report, err, records = survey(tmp_path, "mpi", ranks=3, fail=True, prefill=3)
    assert code == 0, err
    assert "ValueError: the model file is missing" in report["setup_error"]
    assert report["rank"] in (1, 2) and "setup_study.py" in report["remote_traceback"]
    assert psmpi.status(str(tmp_path / "out.h5"))[0].done == 3


@needs_mpi
def test_an_uncaught_setup_error_aborts_the_mpi_job_with_the_message(tmp_path):
    code, report, err, records = survey(tmp_path, "mpi", ranks=3, fail=True, uncaught=True,
                                        timeout=60)
    assert code != 0
    assert "SetupError" in err and "the model file is missing" in err


@needs_mpi
def test_mpi_worker_ranks_get_gpus_by_local_rank(tmp_path):
    # gpus_per_worker from the environment: the Option table reads PSMPI_GPUS_PER_WORKER
    code, report, err, records = survey(
        tmp_path, "mpi", ranks=3,
        env={"PSMPI_NODE_GPUS": "0,1,2,3", "PSMPI_GPUS_PER_WORKER": "2"})
    assert code == 0, err
    assert {record["rank"]: tuple(record["gpus"]) for record in records} == \
        {1: ("0", "1"), 2: ("2", "3")}  # rank 0 computes nothing: no devices for it
    for row in report["rows"]:
        assert row["cuda"] in ("0,1", "2,3") and row["others"] == ";".join([row["cuda"]] * 3)


@needs_mpi
def test_too_few_gpus_under_mpiexec_is_a_config_error_before_any_compute(tmp_path):
    code, report, err, records = survey(tmp_path, "mpi", ranks=4, gpus_per_worker=2,
                                        env={"PSMPI_NODE_GPUS": "0,1,2,3"})
    assert code == 0, err
    assert "3 worker process(es)" in report["config_error"] and "needs 6 GPUs" in \
        report["config_error"]
    assert records == []


# --- the pieces --------------------------------------------------------------------------

def test_gpus_per_worker_is_a_setting():
    option = config.OPTIONS["gpus_per_worker"]
    assert option.env_var == "PSMPI_GPUS_PER_WORKER"
    settings = config.resolve({"gpus_per_worker": 1}, {"gpus_per_worker": 3},
                              {"PSMPI_GPUS_PER_WORKER": "2"})
    assert settings.gpus_per_worker == 2
    with pytest.raises(ConfigError, match="gpus_per_worker"):
        config.check_kwargs({"gpus_per_worker": 0}, "init()")
    with pytest.raises(ConfigError, match="setup"):
        config.check_kwargs({"setup": "not callable"}, "map()")


@pytest.mark.parametrize("environ, expected", [
    ({"PSMPI_NODE_GPUS": "0,1,2,3", "CUDA_VISIBLE_DEVICES": "5"}, ("0", "1", "2", "3")),
    ({"CUDA_VISIBLE_DEVICES": "2,3", "SLURM_JOB_GPUS": "0,1,2,3"}, ("2", "3")),
    ({"SLURM_STEP_GPUS": "4-6", "SLURM_JOB_GPUS": "0"}, ("4", "5", "6")),
    ({"SLURM_JOB_GPUS": "0,1"}, ("0", "1")),
    ({"GPU_DEVICE_ORDINAL": "1"}, ("1",)),
    ({"PATH": ""}, ()),  # no nvidia-smi on an empty PATH
])
def test_node_gpus_are_found_where_the_launcher_puts_them(environ, expected, monkeypatch):
    monkeypatch.setenv("PATH", environ.get("PATH", os.environ["PATH"]))
    if "PATH" not in environ:
        assert worker_setup.node_gpus(environ) == expected
    else:
        assert worker_setup.node_gpus({}) == expected


def test_setup_context_is_public_and_frozen():
    context = psmpi.SetupContext(1, 0, "host", ("0",), "mpi")
    with pytest.raises(AttributeError):
        context.rank = 2


def test_the_docs_example_runs(tmp_path):
    import re
    import subprocess
    section = (Path(HERE).parent / "docs" / "guide" / "setup.md").read_text()
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "example.py").write_text(code)
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True,
                          text=True, env=clean_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "[10, 20]" in done.stdout


def _raising_setup(context):
    raise AssertionError("a dry run must not run the set-up")


def test_a_dry_run_runs_no_setup(tmp_path):
    results = psmpi.map(lambda pset: {"y": 1}, [{"a": 1}, {"a": 2}], backend="serial",
                        out=str(tmp_path / "dry.h5"), simulate=True, setup=_raising_setup,
                        verbose=0, vstats=0, logfile=False)
    assert results.progress.finished == 2 and not results.missing


_CALLS: list = []


def _counting_setup(context):
    _CALLS.append(context)
    return len(_CALLS)


def _seen(pset, system_kwargs, user_kwargs):
    return {"seen": system_kwargs["setup"], "ctx": psmpi.context().setup}


def test_serial_setup_in_process_once_per_map():
    _CALLS.clear()
    for _ in range(2):
        results = psmpi.map(_seen, [{"a": i} for i in range(5)], backend="serial", out=None,
                            setup=_counting_setup, group_size=1, verbose=0, vstats=0,
                            logfile=False)
        assert results.results["seen"].tolist() == [len(_CALLS)] * 5
        assert results.results["ctx"].tolist() == [len(_CALLS)] * 5
    assert len(_CALLS) == 2
    assert _CALLS[0] == psmpi.SetupContext(0, 0, _CALLS[0].host, (), "serial")

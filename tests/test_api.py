"""init()/map() behaviour outside the per-backend contract."""

import functools
import subprocess
import sys

import numpy as np
import pytest

import psmpi


def square(pset):
    return {"y": pset["a"] ** 2}


def int_then_float(pset):
    a = pset["a"]
    return {"y": a if a < 5 else a + 0.5, **({"late": "new"} if a >= 8 else {})}


pytestmark = pytest.mark.usefixtures("serial_session")


def test_import_psmpi_imports_neither_mpi4py_nor_ray():
    code = "import sys, psmpi; print(sorted(m for m in ('mpi4py', 'ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_environment_overrides_map_kwargs(monkeypatch):
    monkeypatch.setenv("PSMPI_LIMIT", "2")
    res = psmpi.map(square, [{"a": a} for a in range(6)], out=None, limit=5)
    assert res.results["a"].tolist() == [0, 1]


def test_map_kwargs_override_init():
    psmpi.init(backend="serial", verbose=0, limit=1)
    assert len(psmpi.map(square, [{"a": a} for a in range(4)], out=None)) == 1
    assert len(psmpi.map(square, [{"a": a} for a in range(4)], out=None, limit=3)) == 3


def test_default_names_number_repeated_workers(tmp_path):
    out = str(tmp_path / "n.h5")
    first = psmpi.map(square, [{"a": 1}], out=out)
    second = psmpi.map(square, [{"a": 2}], out=out)
    third = psmpi.map(lambda p: {"z": 1}, [{"a": 2}], out=out)
    assert (first.name, second.name, third.name) == ("square", "square-2", "lambda")
    assert sorted(psmpi.store.map_names(out)) == ["lambda", "square", "square-2"]


def test_init_again_restarts_names_so_a_rerun_resumes(tmp_path):
    out = str(tmp_path / "r.h5")
    psmpi.map(square, [{"a": 1}], out=out)
    psmpi.init(backend="serial", verbose=0)
    again = psmpi.map(square, [{"a": 1}], out=out)
    assert again.name == "square" and again.progress.resumed == 1


def test_other_backends_option_dicts_are_ignored():
    res = psmpi.map(square, [{"a": 3}], out=None, ray={"num_gpus": 1}, mpi={"anything": 1})
    assert res.results["y"].tolist() == [9]


def test_unknown_multiprocessing_option_is_an_error():
    with pytest.raises(psmpi.ConfigError, match="start_methd"):
        psmpi.map(square, [{"a": 3}], out=None, backend="multiprocessing",
                  multiprocessing={"start_methd": "fork"})


def test_widening_and_new_column_mid_run(tmp_path):
    res = psmpi.map(int_then_float, [{"a": a} for a in range(10)], out=str(tmp_path / "w.h5"),
                    commit_rows=2, group_size=1)
    assert res.results["y"].dtype == np.float64
    assert res.results["y"].tolist() == [0, 1, 2, 3, 4, 5.5, 6.5, 7.5, 8.5, 9.5]
    assert res.results["late"].isna().sum() == 8 and res.results["late"].iloc[9] == "new"


def test_verbose_levels(capsys):
    psmpi.map(square, [{"a": 1}], out=None, verbose=0)
    assert capsys.readouterr().err == ""
    psmpi.map(square, [{"a": 1}], out=None, verbose=1)
    assert "done: 1/1 finished" in capsys.readouterr().err
    psmpi.map(lambda p: 1 / 0, [{"a": 1}], out=None, verbose=3)
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and "1 psets failed" in err


def test_stats_are_measured():
    res = psmpi.map(square, [{"a": a} for a in range(50)], out=None)
    assert res.stats.computed == 50 and len(res.stats.runtimes) == 50
    assert res.stats.wall_seconds > 0 and res.stats.psets_per_second > 0
    assert set(res.stats.percentiles()) == {"p50", "p90", "p99", "max"}
    assert "50 psets in" in str(res.stats)


def test_cost_sends_most_expensive_first():
    res = psmpi.map(lambda p: {"t": __import__("time").perf_counter()},
                    [{"a": a} for a in range(6)], out=None, group_size=1,
                    cost=lambda p: [1, 5, 3, 9, 0, 2][p["a"]])
    order = res.results.sort_values("t")["a"].tolist()
    assert order == [3, 1, 2, 5, 0, 4]
    assert res.results["a"].tolist() == list(range(6))  # rows still in pset order


def test_cost_failure_names_the_pset():
    with pytest.raises(psmpi.PsetError, match=r"cost\(\) failed for pset 1 .*KeyError"):
        psmpi.map(square, [{"a": 0}, {"a": 1}], out=None, cost=lambda p: {0: 1.0}[p["a"]])


def test_non_mpi_backend_under_mpiexec_is_refused(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "4")
    with pytest.raises(psmpi.BackendError, match="every rank would run the whole survey"):
        psmpi.map(square, [{"a": 1}], out=None, backend="multiprocessing")


def test_context_outside_a_worker_says_where_it_works():
    with pytest.raises(RuntimeError, match="only available inside a worker function"):
        psmpi.context()


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_worker_tracebacks_name_the_file_and_line_of_the_worker(backend):
    fail = lambda pset: 1 / pset["a"]  # noqa: E731  (shipped by value, like a script's)
    res = psmpi.map(fail, [{"a": 0}], backend=backend, out=None, verbose=0, logfile=False)
    text = res.missing.df["_traceback"].iloc[0]
    assert f'File "{__file__}"' in text and "1 / pset[\"a\"]" in text, text


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_tracebacks_name_the_file_for_methods_partials_and_callable_objects(backend):
    class Local:  # defined here, so shipped by value like a class of a study script
        def run(self, pset):
            return {"y": 1 / pset["a"]}

        def __call__(self, pset):
            return {"y": 1 / pset["a"]}

    def divide(pset, by):
        return {"y": by / pset["a"]}

    for worker in (Local().run, Local(), functools.partial(divide, by=2)):
        res = psmpi.map(worker, [{"a": 0}], backend=backend, out=None, verbose=0, logfile=False,
                        name="local")
        text = res.missing.df["_traceback"].iloc[0]
        assert f'File "{__file__}"' in text and "/ pset[\"a\"]" in text, (worker, text)

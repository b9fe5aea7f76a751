"""Start-up: ``import psmpi`` and psmpi's worker processes never import pandas or h5py.

Every MPI rank imports psmpi, and on thousands of ranks each module is a storm of file-system
lookups, so only the driver (rank 0, which writes the results file) imports pandas and h5py,
inside the functions that need them. Checked in fresh interpreters: after ``import psmpi``,
after importing every module a worker may reach, and inside worker processes of the
multiprocessing (spawn and forkserver: forked workers share the driver's modules), MPI and ray
backends while a map writes its file. The import time is measured by
benchmarks/mpi_startup.py (a timing is no test on a shared machine).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest
from test_mpi import MPIEXEC, clean_env, launch

HERE = pathlib.Path(__file__).resolve().parent
SCRIPT = HERE / "scripts" / "worker_imports.py"
HEAVY = ["h5py", "pandas"]  # what a worker must not pay for; the driver imports them
HAS_MPI = importlib.util.find_spec("mpi4py") is not None and os.path.exists(MPIEXEC)


def heavy_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code``."""
    return loaded_after(code, HEAVY)


def test_import_psmpi_imports_neither_pandas_nor_h5py():
    assert heavy_after("import psmpi") == []
    assert heavy_after("import psmpi.store, psmpi.results, psmpi.api") == []


def test_the_probe_sees_an_import():
    assert heavy_after("import psmpi, h5py") == ["h5py"]
    assert heavy_after("import psmpi.missing") == ["pandas"]


def test_every_module_a_worker_may_reach_imports_neither():
    """All of psmpi but the command line and the DataFrame subclass Missing: the backends
    (mpi, ray), the worker, the store (a worker hashes psets with store.bookkeeping) and
    the driver, tools and study modules a user's script may import at the top."""
    root = HERE.parent / "psmpi"
    names = sorted(".".join(("psmpi", *p.relative_to(root).with_suffix("").parts))
                   .removesuffix(".__init__") for p in root.rglob("*.py"))
    names = [n for n in names if not n.startswith(("psmpi.cli", "psmpi.__main__", "psmpi.missing"))]
    assert len(names) > 60 and "psmpi.backends.mpi" in names and "psmpi.store.file" in names
    assert heavy_after(f"import importlib\nfor name in {names!r}:\n"
                       f"    importlib.import_module(name)") == []


def test_every_public_name_resolves_and_missing_brings_pandas():
    """``psmpi.Missing`` (a DataFrame subclass) is looked up on first use (module __getattr__)."""
    code = ("import psmpi\n"
            "assert [n for n in psmpi.__all__ if getattr(psmpi, n, None) is None] == []\n"
            "assert set(psmpi.__all__) <= set(dir(psmpi))\n"
            "import pandas\n"
            "assert issubclass(psmpi.Missing, pandas.DataFrame)\n"
            "from psmpi import Missing\n"
            "assert Missing is psmpi.Missing\n"
            "try:\n"
            "    psmpi.no_such_name\n"
            "except AttributeError as exc:\n"
            "    assert 'no_such_name' in str(exc)\n"
            "else:\n"
            "    raise SystemExit('no AttributeError')\n")
    assert heavy_after(code) == ["pandas"]


# What `import psmpi` leaves for first use (``_LAZY`` of psmpi/__init__.py and of
# psmpi/store): a worker rank needs none of it, and every rank imports psmpi.
FIRST_USE = ["psmpi.history", "psmpi.executor", "psmpi.driver", "psmpi.tools", "psmpi.study",
             "psmpi.watch", "psmpi.cli", "psmpi.store.file", "psmpi.store.table",
             "psmpi.store.checking", "psmpi.store.damage", "psmpi.store.readers",
             "psmpi.store.lock", "psmpi.results", "subprocess", "concurrent.futures", "difflib"]


def loaded_after(code: str, prefixes: list[str]) -> list[str]:
    """The modules of ``prefixes`` (a module or a package) a fresh interpreter holds after
    running ``code``."""
    probe = (f"{code}\nimport sys\nprint(sorted({{p for p in {prefixes!r} for m in sys.modules "
             f"if m == p or m.startswith(p + '.')}}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=clean_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"'))


def test_import_psmpi_leaves_the_driver_tools_and_helpers_for_first_use():
    assert loaded_after("import psmpi", FIRST_USE) == []
    # the backends and the task machinery come with the first map (a worker rank's too)
    assert loaded_after("import psmpi", ["psmpi.backends", "psmpi.worker.task",
                                         "cloudpickle"]) == []
    # what a worker rank imports: psmpi, its backend and the task machinery
    assert loaded_after("import psmpi, psmpi.backends.mpi, psmpi.worker.task, psmpi.store."
                        "bookkeeping", FIRST_USE) == []


def test_the_first_use_probe_sees_a_first_use():
    assert {"psmpi.tools", "psmpi.store.table", "psmpi.store.lock"} <= set(
        loaded_after("import psmpi\npsmpi.merge", FIRST_USE))
    assert "psmpi.driver" in loaded_after("import psmpi.api\npsmpi.api.map(abs, [], out=None, "
                                          "backend='serial', verbose=0)", FIRST_USE)


def test_every_public_name_imports_on_first_use_as_its_module_defines_it():
    """``from psmpi import X`` for each name of ``__all__`` in one fresh interpreter; the
    lazy ones are the objects of their modules, and so are psmpi.store's."""
    code = """\
import importlib, psmpi
for name in psmpi.__all__:
    exec(f"from psmpi import {name}")
assert set(psmpi._LAZY) <= set(psmpi.__all__), set(psmpi._LAZY) - set(psmpi.__all__)
for name, where in psmpi._LAZY.items():
    module = importlib.import_module(where, "psmpi")
    own = module if module.__name__ == "psmpi." + name else getattr(module, name)
    assert getattr(psmpi, name) is own, name
import psmpi.history
assert psmpi.history is importlib.import_module("psmpi.history")
import psmpi.store as store
assert set(store.__all__) <= set(dir(store))
for name, where in store._LAZY.items():
    assert getattr(store, name) is getattr(importlib.import_module(where, "psmpi.store"), name)
assert [n for n in store.__all__ if getattr(store, n, None) is None] == []
try:
    store.no_such_name
except AttributeError as exc:
    assert "psmpi.store" in str(exc) and "no_such_name" in str(exc)
else:
    raise SystemExit("no AttributeError")
"""
    assert heavy_after(code) == ["pandas"]  # Missing is a DataFrame


def run_script(tmp_path: pathlib.Path, backend: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, str(SCRIPT), backend, str(tmp_path / "out.h5"),
                           *args], capture_output=True, text=True, env=clean_env(),
                          timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_report(report: dict, workers: int | None = None) -> None:
    assert report["before_import"] == report["after_import"] == []
    assert report["rows"] == 60
    # the driver wrote the file and built the DataFrame: the probe does see the imports
    assert set(HEAVY) <= set(report["driver"])
    assert {"psmpi.driver", "psmpi.store.table"} <= set(report["driver"])
    assert report["workers"], report
    if workers is not None:
        assert len(report["workers"]) == workers, report
    for who, modules in report["workers"].items():
        # neither pandas/h5py nor psmpi's driver, tables, tools or study helpers (ray's own
        # workers do import pyarrow)
        unwanted = [m for m in modules if m in HEAVY or m.startswith("psmpi.")]
        assert unwanted == [], f"worker {who} imported {modules}"


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_multiprocessing_workers_import_neither(tmp_path, start_method):
    check_report(run_script(tmp_path, "multiprocessing", start_method))


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray")
def test_ray_workers_import_neither(tmp_path):
    check_report(run_script(tmp_path, "ray"))


@pytest.mark.skipif(not HAS_MPI, reason="needs mpi4py and mpiexec")
@pytest.mark.parametrize("ranks", [2, 4])
def test_mpi_worker_ranks_import_neither(tmp_path, ranks):
    """Every worker rank computes psets (60 of 20 ms, one per group) and holds neither."""
    code, out, err, _ = launch(ranks, str(SCRIPT), "mpi", str(tmp_path / "out.h5"),
                               timeout=120)
    assert code == 0, f"{out}\n{err}"
    report = json.loads(out.strip().splitlines()[-1])
    check_report(report, workers=ranks - 1)
    assert sorted(report["workers"], key=int) == [str(r) for r in range(1, ranks)]

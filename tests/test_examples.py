"""Every example runs, in a fresh directory, as a user would run it."""

import pathlib
import subprocess
import sys

import pytest

EXAMPLES = sorted((pathlib.Path(__file__).parent.parent / "examples").glob("*.py"))


def run_example(path, cwd, env=None):
    return subprocess.run([sys.executable, str(path)], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_and_writes_its_file(path, tmp_path):
    proc = run_example(path, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / (path.stem + ".h5")).exists()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_unchanged_under_mpiexec(path, tmp_path):
    mpiexec = pathlib.Path(sys.executable).parent / "mpiexec"
    proc = subprocess.run([str(mpiexec), "-n", "3", sys.executable, str(path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / (path.stem + ".h5")).exists()


def test_quickstart_second_run_resumes_everything(tmp_path):
    path = [p for p in EXAMPLES if p.stem == "quickstart"][0]
    assert run_example(path, tmp_path).returncode == 0
    proc = run_example(path, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "5 resumed" in proc.stderr
    assert "stored: 5 rows" in proc.stdout

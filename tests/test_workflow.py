"""simulate=, backup= and git= around a map (psmpi/driver/workflow.py)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import textwrap

import pytest

import psmpi


def double(pset):
    return {"y": 2 * pset["a"]}


def never_called(pset):
    raise AssertionError("simulate=True must not call the worker")


def run(tmp_path, psets, worker=double, **kwargs):
    return psmpi.map(worker, psets, backend="serial", out=str(tmp_path / "study.h5"),
                     name="m", verbose=0, logfile=False, **kwargs)


def test_simulate_runs_on_a_copy_and_never_calls_the_worker(tmp_path):
    run(tmp_path, [{"a": a} for a in range(3)])
    before = os.path.getmtime(tmp_path / "study.h5")
    sim = run(tmp_path, [{"a": a} for a in range(5)], worker=never_called, simulate=True)
    assert sim.path == str(tmp_path / "study.simulate.h5")
    assert sim.progress.resumed == 3 and sim.stats.computed == 2 and len(sim.missing) == 0
    assert sim.results["a"].tolist() == [0, 1, 2, 3, 4]
    assert len(psmpi.read(tmp_path / "study.h5", name="m")) == 3  # the real file untouched
    assert os.path.getmtime(tmp_path / "study.h5") == before
    # a second simulation starts again from the real file, not from the last simulation
    again = run(tmp_path, [{"a": a} for a in range(4)], worker=never_called, simulate=True)
    assert again.progress.resumed == 3 and again.stats.computed == 1


def test_backup_copies_the_file_before_a_run_extends_it(tmp_path):
    calc = tmp_path / "calc"
    run(tmp_path, [{"a": 1}], backup=True, calc_dir=str(calc))  # nothing to back up yet
    assert not glob.glob(str(tmp_path / "study.h5.bak-*"))
    calc.mkdir()
    (calc / "kept.txt").write_text("x")
    run(tmp_path, [{"a": 1}, {"a": 2}], backup=True, calc_dir=str(calc))
    (backup,) = glob.glob(str(tmp_path / "study.h5.bak-*"))
    assert psmpi.read(backup, name="m")["a"].tolist() == [1]  # as it was before the run
    (calc_backup,) = glob.glob(str(tmp_path / "calc.bak-*"))
    assert open(os.path.join(calc_backup, "kept.txt")).read() == "x"
    assert len(psmpi.read(tmp_path / "study.h5", name="m")) == 2


def test_git_outside_a_repository_is_refused_before_computing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    with pytest.raises(psmpi.ConfigError, match="not inside a git repository"):
        run(tmp_path, [{"a": 1}], worker=never_called, git=True)


def test_git_commits_the_script_and_results_with_the_run_id(tmp_path):
    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True,
                              text=True).stdout
    git("init", "-q")
    git("config", "user.email", "t@example.org")
    git("config", "user.name", "t")
    (tmp_path / "other.txt").write_text("staged by the user, not part of the run")
    git("add", "other.txt")
    (tmp_path / "study.py").write_text(textwrap.dedent("""
        import psmpi
        def worker(pset):
            return {"y": pset["a"]}
        res = psmpi.map(worker, [{"a": 1}, {"a": 2}], backend="serial", out="study.h5",
                        git=True, verbose=0, logfile=False)
        print(psmpi.read("study.h5")["_run_id"].iloc[0])
    """))
    done = subprocess.run([sys.executable, "study.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[-1]
    assert f"psmpi run {run_id}: map worker: 2 finished, 0 failed" in git("log", "-1", "--format=%s")
    assert sorted(git("show", "--name-only", "--format=", "HEAD").split()) == ["study.h5", "study.py"]
    assert "other.txt" in git("diff", "--cached", "--name-only")  # the user's staging is kept

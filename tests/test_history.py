"""Backups of the results (and calc dir), and git commits of named files in a real repo."""

import json
import os
import re
import shutil
import socket
import subprocess

import pytest

import psmpi
from psmpi import ConfigError, StoreError, history
from psmpi.history import backup_results, git_commit


def square(pset):
    return {"y": pset["a"] ** 2}


@pytest.fixture
def study(tmp_path):
    path = tmp_path / "study.h5"
    psmpi.map(square, [{"a": a} for a in range(5)], out=path, backend="serial", verbose=0,
              logfile=False)
    return path


def leftovers(directory):
    return [n for n in os.listdir(directory) if ".tmp-" in n or n.endswith(".lock")]


# ------------------------------------------------------------------------------- backups
def test_nothing_to_back_up(tmp_path):
    assert backup_results(tmp_path / "study.h5", tmp_path / "calc") == []
    assert os.listdir(tmp_path) == []


def test_backup_is_an_exact_timestamped_copy(study, tmp_path):
    made = backup_results(study)
    assert len(made) == 1
    assert re.fullmatch(re.escape(str(study)) + r"\.bak-\d{8}T\d{6}Z", made[0])
    with open(study, "rb") as a, open(made[0], "rb") as b:
        assert a.read() == b.read()
    assert psmpi.read(made[0]).equals(psmpi.read(study))
    assert leftovers(tmp_path) == []  # lock released, no temporary copy left


def test_calc_dir_is_copied_with_the_same_stamp(study, tmp_path):
    calc = tmp_path / "calc"
    (calc / "abc").mkdir(parents=True)
    (calc / "abc" / "out.txt").write_text("data")
    os.symlink("abc/out.txt", calc / "link")
    made = backup_results(study, calc)
    assert made[1] == str(calc) + made[0][len(str(study)):]
    assert (tmp_path / made[1] / "abc" / "out.txt").read_text() == "data"
    assert os.readlink(os.path.join(made[1], "link")) == "abc/out.txt"


def test_calc_dir_alone_is_backed_up(tmp_path):
    (tmp_path / "calc").mkdir()
    (tmp_path / "calc" / "f").write_text("x")
    made = backup_results(tmp_path / "study.h5", tmp_path / "calc")
    assert len(made) == 1 and made[0].startswith(str(tmp_path / "calc.bak-"))


def test_backups_in_the_same_second_get_distinct_names(study, tmp_path, monkeypatch):
    monkeypatch.setattr(history, "backup_stamp", lambda: "20240101T000000Z")
    names = [backup_results(study)[0] for _ in range(3)]
    assert [os.path.basename(n) for n in names] == [
        "study.h5.bak-20240101T000000Z", "study.h5.bak-20240101T000000Z-2",
        "study.h5.bak-20240101T000000Z-3"]


def test_file_held_by_a_live_writer_is_not_copied(study, tmp_path):
    lock = str(study) + ".lock"
    with open(lock, "w") as fh:  # this test's own process: alive
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": None,
                   "started": "now"}, fh)
    with pytest.raises(StoreError, match=f"being written by pid {os.getpid()}"):
        backup_results(study)
    assert sorted(os.listdir(tmp_path)) == ["study.h5", "study.h5.lock"]


def test_no_room_for_the_copy_is_refused_before_copying(study, tmp_path, monkeypatch):
    real = os.statvfs

    class Full:
        def __init__(self, path):
            self.f_frsize, self.f_bavail = real(path).f_frsize, 10

    monkeypatch.setattr(history.os, "statvfs", Full)
    with pytest.raises(StoreError, match="no room to back up .*study.h5.*MiB are free"):
        backup_results(study)
    assert os.listdir(tmp_path) == ["study.h5"]


def test_failed_copy_leaves_nothing_behind(study, tmp_path, monkeypatch):
    def broken_copy(src, dst):
        with open(dst, "wb") as fh:
            fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(history.shutil, "copy2", broken_copy)
    with pytest.raises(StoreError, match="cannot back up .*No space left on device"):
        backup_results(study)
    assert os.listdir(tmp_path) == ["study.h5"]


# ----------------------------------------------------------------------------------- git
@pytest.fixture
def git_env(tmp_path, monkeypatch):
    """No user or system git config, and no repository above tmp_path."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    return tmp_path


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True,
                          timeout=60).stdout


@pytest.fixture
def repo(git_env):
    repo = git_env / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.name", "psmpi test")
    git(repo, "config", "user.email", "test@example.org")
    (repo / "tracked.txt").write_text("v1\n")
    git(repo, "add", "tracked.txt")
    git(repo, "commit", "-q", "-m", "start")
    return repo


def committed_files(repo, commit="HEAD"):
    return sorted(git(repo, "show", "--name-only", "--format=", commit).split())


def test_commit_names_only_the_given_files(repo):
    (repo / "study.py").write_text("print('hi')\n")
    (repo / "notes.txt").write_text("not mine\n")
    commit = git_commit([repo / "study.py"], "psmpi: study: run_id=42")
    assert re.fullmatch(r"[0-9a-f]{40}", commit)
    assert commit == git(repo, "rev-parse", "HEAD").strip()
    assert committed_files(repo) == ["study.py"]
    assert git(repo, "log", "-1", "--format=%s").strip() == "psmpi: study: run_id=42"
    assert "?? notes.txt" in git(repo, "status", "--porcelain")


def test_other_staged_and_unstaged_changes_are_left_alone(repo):
    (repo / "staged.txt").write_text("staged by the user\n")
    git(repo, "add", "staged.txt")
    (repo / "tracked.txt").write_text("v2, not staged\n")
    (repo / "study.py").write_text("x = 1\n")
    git_commit([str(repo / "study.py")], "run")
    assert committed_files(repo) == ["study.py"]
    status = sorted(git(repo, "status", "--porcelain").splitlines(), key=lambda s: s[3:])
    assert status == ["A  staged.txt", " M tracked.txt"]


def test_large_files_are_skipped_with_a_warning(repo):
    (repo / "big.h5").write_bytes(b"x" * 2000)
    (repo / "small.json").write_text("{}")
    with pytest.warns(UserWarning, match=r"not committing .*big.h5 \(0.0 MiB\).*larger than"):
        git_commit([repo / "big.h5", repo / "small.json"], "run", max_bytes=1000)
    assert committed_files(repo) == ["small.json"]


def test_unchanged_files_commit_nothing(repo):
    head = git(repo, "rev-parse", "HEAD")
    assert git_commit([repo / "tracked.txt"], "run") is None
    assert git(repo, "rev-parse", "HEAD") == head


def test_ignored_and_absent_files_are_left_out(repo):
    (repo / ".gitignore").write_text("calc/\n")
    (repo / "calc").mkdir()
    (repo / "calc" / "out.txt").write_text("ignored")
    (repo / "study.py").write_text("x = 2\n")
    with pytest.warns(UserWarning, match="not committing .*gone.txt.*no such file"):
        git_commit([repo / "calc" / "out.txt", repo / "gone.txt", repo / "study.py"], "run")
    assert committed_files(repo) == ["study.py"]


def test_file_names_are_literal_not_globs(repo):
    (repo / "*.py").write_text("odd name\n")
    (repo / "other.py").write_text("not this\n")
    git_commit([repo / "*.py"], "run")
    assert committed_files(repo) == ["*.py"]


def test_works_from_another_working_directory_and_first_commit(git_env, monkeypatch):
    repo = git_env / "fresh"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.name", "t")
    git(repo, "config", "user.email", "t@example.org")
    (repo / "study.py").write_text("x\n")
    monkeypatch.chdir(git_env)
    assert git_commit([os.path.join("fresh", "study.py")], "first") is not None
    assert committed_files(repo) == ["study.py"]


def test_repository_reached_through_a_symlink(repo, git_env, monkeypatch):
    os.symlink(repo, git_env / "link")
    (repo / "study.py").write_text("x\n")
    monkeypatch.chdir(git_env / "link")
    assert git_commit(["study.py", git_env / "link" / "tracked.txt"], "run") is not None
    assert committed_files(repo) == ["study.py"]


def test_not_a_repository_is_refused_clearly(git_env):
    (git_env / "study.py").write_text("x\n")
    with pytest.raises(ConfigError, match=r"git=True, but .* is not inside a git repository.*git init"):
        git_commit([git_env / "study.py"], "run")


def test_git_repository_finds_the_top_or_refuses(repo, git_env):
    (repo / "sub").mkdir()
    assert history.git_repository(repo / "sub") == str(repo)
    with pytest.raises(ConfigError, match="is not inside a git repository"):
        history.git_repository(git_env)


def test_missing_git_is_refused_clearly(repo, monkeypatch):
    monkeypatch.setenv("PATH", str(repo / "no-bin"))
    with pytest.raises(ConfigError, match="needs the git program, which is not on PATH"):
        git_commit([repo / "tracked.txt"], "run")
    with pytest.raises(ConfigError, match="needs the git program"):
        history.git_repository(repo)


def test_directories_and_outside_paths_are_refused(repo, git_env):
    with pytest.raises(ConfigError, match="is a directory"):
        git_commit([repo], "run")
    (git_env / "outside.txt").write_text("x")
    with pytest.raises(ConfigError, match="outside the git repository"):
        git_commit([repo / "tracked.txt", git_env / "outside.txt"], "run")


def test_a_failing_hook_is_reported(repo):
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'hook says no' >&2\nexit 1\n")
    hook.chmod(0o755)
    (repo / "study.py").write_text("x\n")
    with pytest.raises(ConfigError, match="git commit .* failed with status 1: hook says no"):
        git_commit([repo / "study.py"], "run")


def test_git_is_on_this_machine():
    assert shutil.which("git"), "the git tests need git"

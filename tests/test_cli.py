"""The `psmpi` command, run as users run it (`python -m psmpi` and the `psmpi` entry point),
on files written by real psmpi.map runs."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import pandas as pd
import pytest

import psmpi

ENTRY_POINT = str(pathlib.Path(sys.executable).parent / "psmpi")
TIMEOUT = 120

STUDY = textwrap.dedent("""
    import os, sys
    import numpy as np
    import psmpi

    def square(pset):
        return {"y": pset["a"] ** 2, "label": f"n{pset['a']}", "v": np.arange(3) * pset["a"]}

    def divide(pset):
        if pset["a"] == 2 and not os.environ.get("FIXED"):
            raise ZeroDivisionError("a is 2")
        return {"q": 10 / (pset["a"] + 1)}

    psmpi.init(backend="serial", verbose=0)
    out = sys.argv[1] if len(sys.argv) > 1 else "study.h5"
    psmpi.map(square, [{"a": a} for a in range(5)], out=out)
    psmpi.map(divide, [{"a": a} for a in range(4)], out=out)
""")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSMPI_")}
    env.update(extra)
    return env


def psmpi_cmd(*args, cwd, entry_point=False, stdin=subprocess.DEVNULL, env=None):
    command = [ENTRY_POINT] if entry_point else [sys.executable, "-m", "psmpi"]
    return subprocess.run(command + [str(a) for a in args], cwd=cwd, capture_output=True,
                          text=True, timeout=TIMEOUT, stdin=stdin, env=env or clean_env())


def run_study(directory, out="study.h5", script=STUDY, **env):
    path = pathlib.Path(directory) / "study.py"
    path.write_text(script)
    proc = subprocess.run([sys.executable, str(path), out], cwd=directory, capture_output=True,
                          text=True, timeout=TIMEOUT, env=clean_env(**env))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return pathlib.Path(directory) / out


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return run_study(tmp_path_factory.mktemp("study"))


@pytest.fixture
def study(made, tmp_path):
    """A private copy of a file with two maps: square (5 rows) and divide (3 rows, 1 failure)."""
    shutil.copy(made, tmp_path / "study.h5")
    (tmp_path / "study.py").write_text(STUDY)
    return tmp_path / "study.h5"


def status_json(path, cwd):
    proc = psmpi_cmd("status", "--json", path, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return {m["name"]: m for m in json.loads(proc.stdout)["maps"]}, json.loads(proc.stdout)


# ---------------------------------------------------------------------- usage
@pytest.mark.parametrize("entry_point", [False, True], ids=["python-m", "entry-point"])
def test_help_lists_every_command_and_usage_errors_exit_2(tmp_path, entry_point):
    proc = psmpi_cmd("--help", cwd=tmp_path, entry_point=entry_point)
    assert proc.returncode == 0
    for command in ("status", "show", "failures", "export", "report", "test", "clean", "merge"):
        assert command in proc.stdout
    assert "exit status" in proc.stdout
    assert psmpi_cmd(cwd=tmp_path, entry_point=entry_point).returncode == 2
    assert psmpi_cmd("frobnicate", cwd=tmp_path, entry_point=entry_point).returncode == 2
    proc = psmpi_cmd("status", cwd=tmp_path, entry_point=entry_point)
    assert proc.returncode == 2 and "FILE" in proc.stderr
    proc = psmpi_cmd("--version", cwd=tmp_path, entry_point=entry_point)
    assert proc.returncode == 0 and psmpi.__version__ in proc.stdout


def test_subcommand_help(tmp_path):
    proc = psmpi_cmd("show", "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "--where" in proc.stdout


def test_missing_and_foreign_files_are_clear_errors(tmp_path):
    proc = psmpi_cmd("status", "nope.h5", cwd=tmp_path)
    assert proc.returncode == 2 and "nope.h5 does not exist" in proc.stderr
    (tmp_path / "text.h5").write_text("hello")
    proc = psmpi_cmd("show", "text.h5", cwd=tmp_path)
    assert proc.returncode == 2 and "not an HDF5 file" in proc.stderr
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = [1, 2]
    proc = psmpi_cmd("failures", "plain.h5", cwd=tmp_path)
    assert proc.returncode == 2 and "not a psmpi results file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_map_is_a_usage_error(study):
    proc = psmpi_cmd("status", study, "--map", "nope", cwd=study.parent)
    assert proc.returncode == 2 and "no map 'nope'" in proc.stderr and "square" in proc.stderr


# ---------------------------------------------------------------------- status
def test_status_counts_per_map(study):
    maps, whole = status_json(study, study.parent)
    assert list(maps) == ["square", "divide"]
    assert (maps["square"]["done"], maps["square"]["failed"]) == (5, 0)
    assert (maps["divide"]["done"], maps["divide"]["failed"], maps["divide"]["crashed"]) == (3, 1, 0)
    # map() records the length of its pset list: total and remaining are known
    assert (maps["divide"]["total"], maps["divide"]["remaining"]) == (4, 0)
    assert whole["writer"] is None
    proc = psmpi_cmd("status", study, cwd=study.parent, entry_point=True)
    assert proc.returncode == 0
    line = next(line for line in proc.stdout.splitlines() if line.startswith("divide"))
    assert line.split()[:6] == ["divide", "4", "3", "1", "0", "0"]
    assert "no survey is writing it" in proc.stdout


def test_status_uses_the_recorded_total_and_says_when_there_is_none(study):
    with h5py.File(study, "a") as f:
        f["divide"].attrs["n_psets"] = 10  # as if the last run had 10 psets
        del f["square"].attrs["n_psets"]   # as if its psets came from a generator
    maps, _ = status_json(study, study.parent)
    assert (maps["divide"]["total"], maps["divide"]["remaining"]) == (10, 6)
    assert maps["square"]["total"] is None and maps["square"]["remaining"] is None


def test_a_failure_fixed_by_a_rerun_is_no_longer_counted(study):
    run_study(study.parent, FIXED="1")
    maps, _ = status_json(study, study.parent)
    assert (maps["divide"]["done"], maps["divide"]["failed"]) == (4, 0)
    assert psmpi_cmd("failures", study, cwd=study.parent).returncode == 0
    proc = psmpi_cmd("failures", "--all", study, cwd=study.parent)
    assert "1 failed attempt" in proc.stdout and "ZeroDivisionError" in proc.stdout


CRASHING = textwrap.dedent("""
    import os
    import psmpi

    def work(pset):
        if pset["a"] == 3:
            os._exit(9)  # the process dies: no exception, no traceback
        return {"y": pset["a"]}

    psmpi.map(work, [{"a": a} for a in range(6)], backend="multiprocessing", ncores=2,
              out="crash.h5", verbose=0)
""")


@pytest.mark.crash
def test_a_pset_that_kills_its_process_counts_as_crashed(tmp_path):
    run_study(tmp_path, "crash.h5", CRASHING)
    maps, _ = status_json("crash.h5", tmp_path)
    assert (maps["work"]["done"], maps["work"]["failed"], maps["work"]["crashed"]) == (5, 0, 1)
    proc = psmpi_cmd("failures", "crash.h5", "--kind", "crashed", cwd=tmp_path)
    assert proc.returncode == 1 and "pset 3 (crashed)" in proc.stdout
    assert psmpi_cmd("report", "crash.h5", cwd=tmp_path).returncode == 0


SLOW = textwrap.dedent("""
    import time
    import psmpi

    def slow(pset):
        time.sleep(0.05)
        return {"y": pset["a"]}

    psmpi.map(slow, [{"a": a} for a in range(400)], backend="serial", out="slow.h5",
              verbose=0, commit_seconds=0.05)
""")


def rows_committed(path) -> int:
    """Rows of the file's only map; 0 before the file or the map exists."""
    try:
        return len(psmpi.read(path))
    except (FileNotFoundError, psmpi.StoreError):
        return 0


def test_status_works_while_a_survey_writes_the_file(tmp_path):
    (tmp_path / "slow.py").write_text(SLOW)
    writer = subprocess.Popen([sys.executable, "slow.py"], cwd=tmp_path, env=clean_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not rows_committed(tmp_path / "slow.h5"):
            assert time.monotonic() < deadline and writer.poll() is None, "the survey did not start"
            time.sleep(0.1)
        seen = []
        for _ in range(3):
            maps, whole = status_json("slow.h5", tmp_path)
            seen.append(maps["slow"]["done"])
            assert f"pid {writer.pid}" in whole["writer"]
            time.sleep(0.3)
        assert seen == sorted(seen) and seen[-1] > seen[0] > 0
        assert seen[-1] < 400, "the survey finished before status was tested; slow it down"
        assert psmpi_cmd("report", "slow.h5", cwd=tmp_path).returncode == 0
    finally:
        writer.send_signal(signal.SIGTERM)
        _, stderr = writer.communicate(timeout=60)
    assert writer.returncode == 75, stderr
    maps, whole = status_json("slow.h5", tmp_path)
    assert whole["writer"] is None
    assert maps["slow"]["done"] == len(psmpi.read(tmp_path / "slow.h5"))


# ---------------------------------------------------------------------- show, failures, export
def test_show_filters_and_selects_columns(study):
    proc = psmpi_cmd("show", study, "-m", "square", "-w", "a>=3", "-c", "a,y,label", cwd=study.parent)
    assert proc.returncode == 0, proc.stderr
    table = [line.split() for line in proc.stdout.splitlines()[1:] if line.strip()]
    assert table == [["a", "y", "label"], ["3", "9", "n3"], ["4", "16", "n4"]]
    proc = psmpi_cmd("show", study, "-m", "square", "-w", "label~^n[12]$", "-s", "y", cwd=study.parent)
    assert "2 of 5 rows" in proc.stdout
    proc = psmpi_cmd("show", study, "-w", "nope=1", cwd=study.parent)
    assert proc.returncode == 2 and "no column 'nope'" in proc.stderr
    proc = psmpi_cmd("show", study, "-w", "a>x", cwd=study.parent)
    assert proc.returncode == 2 and "not one" in proc.stderr


def test_show_bookkeeping_and_failures_table(study):
    proc = psmpi_cmd("show", study, "-m", "square", "-a", "-n", "2", cwd=study.parent)
    assert "_host" in proc.stdout and "_pset_runtime" in proc.stdout and "first 2 shown" in proc.stdout
    proc = psmpi_cmd("show", study, "-m", "divide", "--failures", cwd=study.parent)
    assert proc.returncode == 0 and "ZeroDivisionError: a is 2" in proc.stdout
    assert "map 'divide' (failures): 1 failed attempt" in proc.stdout  # attempts, not psets


def test_failures_prints_tracebacks_and_exits_1(study):
    proc = psmpi_cmd("failures", study, cwd=study.parent, entry_point=True)
    assert proc.returncode == 1
    assert "map 'divide': 1 failed pset without a result (exception: 1)" in proc.stdout
    assert "ZeroDivisionError: a is 2" in proc.stdout and "Traceback (most recent call last)" in proc.stdout
    assert "pset: {'a': 2}" in proc.stdout
    proc = psmpi_cmd("failures", study, "--short", cwd=study.parent)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout
    assert psmpi_cmd("failures", study, "-m", "square", cwd=study.parent).returncode == 0
    assert psmpi_cmd("failures", study, "--kind", "crashed", cwd=study.parent).returncode == 0


def test_export_csv_and_parquet_round_trip(study, tmp_path):
    expected = psmpi.read(study, "square")
    proc = psmpi_cmd("export", study, "--csv", "out.csv", cwd=tmp_path)
    assert proc.returncode == 2 and "--map" in proc.stderr  # two maps: which one?
    proc = psmpi_cmd("export", study, "-m", "square", "--csv", "out.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    csv = pd.read_csv(tmp_path / "out.csv")
    assert csv["y"].tolist() == expected["y"].tolist()
    assert [json.loads(v) for v in csv["v"]] == [v.tolist() for v in expected["v"]]
    assert "_pset_hash" in csv.columns
    proc = psmpi_cmd("export", study, "-m", "square", "--parquet", "out.parquet",
                     "--no-bookkeeping", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    parquet = pd.read_parquet(tmp_path / "out.parquet")
    assert list(parquet.columns) == ["a", "y", "label", "v"]
    assert [list(v) for v in parquet["v"]] == [v.tolist() for v in expected["v"]]
    proc = psmpi_cmd("export", study, "-m", "divide", "--failures", "--csv", "-", cwd=tmp_path)
    assert proc.returncode == 0 and "ZeroDivisionError" in proc.stdout


# ---------------------------------------------------------------------- test
GOOD_AND_BAD = textwrap.dedent("""
    import psmpi

    def good(pset):
        return {"y": pset["a"] + 1}

    def bad(pset):
        return {"y": 1 / (pset["a"] - pset["a"])}

    first = psmpi.map(good, [{"a": a} for a in range(50)])
    assert len(first.results) == 1, "psmpi test computes one pset per map"
    psmpi.map(bad, [{"a": a} for a in range(50)], out="never.h5")
""")


def test_test_command_reports_pass_and_fail_per_map(tmp_path):
    (tmp_path / "study.py").write_text(GOOD_AND_BAD)
    proc = psmpi_cmd("test", "study.py", cwd=tmp_path, entry_point=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "PASS  good: 1 pset computed" in proc.stdout
    assert "FAIL  bad: pset 0 {'a': 0}: exception: ZeroDivisionError" in proc.stdout
    assert "1 of 2 maps passed" in proc.stdout
    assert "PSMPI_LIMIT=1" in proc.stderr and "PSMPI_BACKEND=serial" in proc.stderr
    assert not list(tmp_path.glob("*.h5")), "psmpi test must not write results files"


def test_test_command_passes_a_good_study_and_fails_a_broken_script(tmp_path, made):
    (tmp_path / "study.py").write_text(STUDY.replace('and not os.environ.get("FIXED")', "and False"))
    proc = psmpi_cmd("test", "study.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 of 2 maps passed" in proc.stdout
    (tmp_path / "broken.py").write_text("import psmpi\nraise RuntimeError('oops')\n")
    proc = psmpi_cmd("test", "broken.py", cwd=tmp_path)
    assert proc.returncode == 1 and "RuntimeError: oops" in proc.stdout
    proc = psmpi_cmd("test", "missing.py", cwd=tmp_path)
    assert proc.returncode == 2 and "missing.py does not exist" in proc.stderr


def test_test_command_sees_a_map_imported_by_name(tmp_path):
    """psmpi test observes map() itself: a map bound under any name, from any module, is tested."""
    (tmp_path / "study.py").write_text(textwrap.dedent("""
        from psmpi import map
        from psmpi.api import map as survey

        def bad(pset):
            raise ValueError("never works")

        map(bad, [{"a": a} for a in range(5)], out="never.h5")
        survey(bad, "not psets", name="broken")
    """))
    proc = psmpi_cmd("test", "study.py", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL  bad: pset 0 {'a': 0}: exception: ValueError: never works" in proc.stdout
    assert "FAIL  broken: map() raised before computing:" in proc.stdout
    assert "0 of 2 maps passed" in proc.stdout
    assert not list(tmp_path.glob("*.h5")), "psmpi test must not write results files"


# ---------------------------------------------------------------------- merge
def make(directory, name, psets, fail_seven=True):
    """A results file of map 'work' (y = 2a) over ``psets``; a == 7 fails if ``fail_seven``."""
    script = textwrap.dedent(f"""
        import psmpi
        def work(pset):
            if pset["a"] == 7 and {fail_seven!r}:
                raise ValueError("seven")
            return {{"y": pset["a"] * 2}}
        psmpi.map(work, {psets!r}, backend="serial", out={name!r}, verbose=0)
    """)
    (directory / "part.py").write_text(script)
    proc = subprocess.run([sys.executable, "part.py"], cwd=directory, capture_output=True,
                          text=True, timeout=TIMEOUT, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    return directory / name


def test_merge_keeps_each_pset_once(tmp_path, study):
    make(tmp_path, "a.h5", [{"a": a} for a in range(0, 10)])
    make(tmp_path, "b.h5", [{"a": a} for a in range(5, 15)])
    proc = psmpi_cmd("merge", "all.h5", "a.h5", "b.h5", study, "a.h5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    merged = psmpi.read(tmp_path / "all.h5", "work")
    assert sorted(merged["a"]) == [a for a in range(15) if a != 7]
    assert merged["_pset_hash"].is_unique
    assert (merged["y"] == merged["a"] * 2).all()
    maps, _ = status_json("all.h5", tmp_path)
    assert list(maps) == ["work", "square", "divide"]
    assert (maps["work"]["done"], maps["work"]["failed"]) == (14, 1)  # a=7 failed in both inputs
    pd.testing.assert_frame_equal(psmpi.read(tmp_path / "all.h5", "square"), psmpi.read(study, "square"))
    # Merging into an existing file adds to it, again without duplicates.
    make(tmp_path, "c.h5", [{"a": a} for a in range(12, 20)])
    assert psmpi_cmd("merge", "all.h5", "c.h5", "b.h5", cwd=tmp_path).returncode == 0
    merged = psmpi.read(tmp_path / "all.h5", "work")
    assert sorted(merged["a"]) == [a for a in range(20) if a != 7]


def test_merge_drops_a_failure_another_input_resolved(tmp_path):
    make(tmp_path, "a.h5", [{"a": a} for a in range(5, 9)])
    make(tmp_path, "fixed.h5", [{"a": 9}, {"a": 7}], fail_seven=False)
    assert psmpi_cmd("merge", "m.h5", "a.h5", "fixed.h5", cwd=tmp_path).returncode == 0
    maps, _ = status_json("m.h5", tmp_path)
    assert (maps["work"]["done"], maps["work"]["failed"]) == (5, 0)
    assert psmpi_cmd("failures", "m.h5", cwd=tmp_path).returncode == 0


def test_merge_keeps_identical_psets_as_often_as_one_input_has_them(tmp_path):
    make(tmp_path, "three.h5", [{"a": 1}] * 3)
    make(tmp_path, "two.h5", [{"a": 1}] * 2 + [{"a": 2}])
    assert psmpi_cmd("merge", "m.h5", "two.h5", "three.h5", cwd=tmp_path).returncode == 0
    assert sorted(psmpi.read(tmp_path / "m.h5")["a"]) == [1, 1, 1, 2]


def test_merge_refuses_an_output_a_survey_is_writing(tmp_path, study):
    make(tmp_path, "a.h5", [{"a": 1}])
    shutil.copy(study, tmp_path / "busy.h5")
    before = (tmp_path / "busy.h5").read_bytes()
    # This test process is alive on this host: its lock is a running survey's.
    (tmp_path / "busy.h5.lock").write_text(json.dumps(
        {"host": os.uname().nodename, "pid": os.getpid(), "started": "now"}))
    proc = psmpi_cmd("merge", "busy.h5", "a.h5", cwd=tmp_path)
    assert proc.returncode == 2 and f"pid {os.getpid()}" in proc.stderr
    assert (tmp_path / "busy.h5").read_bytes() == before


def test_merge_of_maps_whose_types_differ_makes_the_column_general(tmp_path):
    make(tmp_path, "a.h5", [{"a": 1}])
    (tmp_path / "s.py").write_text(textwrap.dedent("""
        import psmpi
        def work(pset):
            return {"y": "text"}
        psmpi.map(work, [{"a": 2}], backend="serial", out="s.h5", verbose=0)
    """))
    subprocess.run([sys.executable, "s.py"], cwd=tmp_path, check=True, timeout=TIMEOUT, env=clean_env())
    proc = psmpi_cmd("merge", "m.h5", "a.h5", "s.h5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    df = psmpi.read(tmp_path / "m.h5").sort_values("a")
    assert df["a"].tolist() == [1, 2] and df["y"].tolist() == [2, "text"]


def test_merge_refuses_to_overwrite_a_foreign_file(tmp_path):
    make(tmp_path, "a.h5", [{"a": 1}])
    (tmp_path / "notes.txt").write_text("precious")
    proc = psmpi_cmd("merge", "notes.txt", "a.h5", cwd=tmp_path)
    assert proc.returncode == 2 and (tmp_path / "notes.txt").read_text() == "precious"


# ---------------------------------------------------------------------- clean
def test_clean_asks_first_and_removes_what_psmpi_made(study):
    cwd, name = study.parent, study.name
    proc = psmpi_cmd("clean", name, cwd=cwd)  # stdin is not a terminal: no prompt possible
    assert proc.returncode == 2 and "--yes" in proc.stderr and study.exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=TIMEOUT)
    (cwd / "study.h5.lock").write_text(json.dumps(
        {"host": os.uname().nodename, "pid": dead.pid, "started": "then"}))
    made_beside = [f"study.h5.{dead.pid}.tmp", "study.h5.attempts"]
    for leftover in made_beside:
        (cwd / leftover).write_text("left by psmpi")
    shutil.copy(study, cwd / "study.simulate.h5")  # what a simulate=True run leaves
    (cwd / "study.h5.bak-20240501T123005Z").write_bytes(study.read_bytes())
    (cwd / "notes.txt").write_text("mine")
    proc = psmpi_cmd("clean", name, "--dry-run", cwd=cwd)
    assert proc.returncode == 0 and "study.h5 (2 maps, 8 results)" in proc.stdout
    assert "study.simulate.h5" in proc.stdout and "bak" not in proc.stdout
    assert len(list(cwd.glob("study*"))) == 7
    proc = psmpi_cmd("clean", name, "--yes", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in cwd.glob("study*")) == ["study.h5.bak-20240501T123005Z", "study.py"]
    proc = psmpi_cmd("clean", name, "--yes", cwd=cwd)
    assert proc.returncode == 2 and "nothing to clean" in proc.stderr
    assert psmpi_cmd("clean", name, "--yes", "--backups", cwd=cwd).returncode == 0
    assert sorted(p.name for p in cwd.glob("*")) == ["notes.txt", "study.py"]


def test_clean_one_map_keeps_the_others(study):
    attempts = study.parent / "study.h5.attempts"  # crash counts of a killed run, per map
    attempts.write_text("A square 3 2 -\nA divide 1 2 -\n")
    proc = psmpi_cmd("clean", study, "--map", "divide", "-y", cwd=study.parent, entry_point=True)
    assert proc.returncode == 0, proc.stderr
    maps, _ = status_json(study, study.parent)
    assert list(maps) == ["square"] and maps["square"]["done"] == 5
    assert psmpi.read(study, "square")["y"].tolist() == [0, 1, 4, 9, 16]
    assert attempts.read_text() == "A square 3 2 -\n"


def test_clean_refuses_a_file_a_survey_is_writing(study):
    (study.parent / "study.h5.lock").write_text(json.dumps(
        {"host": os.uname().nodename, "pid": os.getpid(), "started": "now"}))
    proc = psmpi_cmd("clean", study, "--yes", cwd=study.parent)
    assert proc.returncode == 2 and "being written" in proc.stderr and study.exists()


def test_clean_refuses_a_foreign_file(tmp_path):
    (tmp_path / "data.h5").write_text("not ours")
    proc = psmpi_cmd("clean", "data.h5", "--yes", cwd=tmp_path)
    assert proc.returncode == 2 and (tmp_path / "data.h5").exists()


def test_show_lists_rows_in_pset_order_not_commit_order(study):
    # divide's pset a=2 failed in the first run: the rerun commits it last
    run_study(study.parent, FIXED="1")
    proc = psmpi_cmd("show", study, "-m", "divide", "-c", "a", cwd=study.parent)
    assert proc.returncode == 0, proc.stderr
    assert [line.strip() for line in proc.stdout.splitlines()[2:6]] == ["0", "1", "2", "3"]
    assert psmpi.read(study, name="divide")["a"].tolist()[-1] == 2  # committed last


def test_failures_of_one_bug_group_whatever_the_values_in_their_messages(tmp_path):
    script = textwrap.dedent("""
        import sys, psmpi
        def worker(pset):
            if pset["x"] > 2:
                raise ValueError(f"x={pset['x'] * 1.5} exceeds the limit for {pset['tag']!r}")
            return {"y": pset["x"]}
        psmpi.map(worker, [{"x": x, "tag": f"run-{x}"} for x in range(9)], out=sys.argv[1],
                  backend="serial", verbose=0, name="m")
    """)
    path = run_study(tmp_path, script=script)
    proc = psmpi_cmd("failures", path, "--short", cwd=tmp_path)
    assert proc.returncode == 1
    assert "6 x ValueError: x=<n> exceeds the limit for '…'" in proc.stdout, proc.stdout
    assert "x=4.5 exceeds the limit for 'run-3'" in proc.stdout  # each failure still listed

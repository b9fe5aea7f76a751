"""run_command: a command-line program per pset, from inside a worker."""

import os
import signal
import sys
import time

import pytest

import psmpi
from psmpi import CommandError, PsetError, run_command
from psmpi.store.lock import pid_alive
from psmpi.study.command import format_args

PY = sys.executable


def test_format_args_fills_each_argument_without_a_shell():
    pset = {"a": 0.125, "name": "x y; rm -rf /", "n": 3}
    assert format_args(["prog", "--a={a:.2f}", "{name}", "{{n}}", 7], pset) == \
        ["prog", "--a=0.12", "x y; rm -rf /", "{n}", "7"]
    assert format_args("prog --n {n} '{name}'", pset) == ["prog", "--n", "3", "x y; rm -rf /"]


@pytest.mark.parametrize("args, message", [
    (["prog", "{b}"], r"argument '\{b\}' uses \{b\}, which the pset \{'a': 1\} lacks"),
    (["prog", "{a"], r"cannot fill in argument '\{a'"),
    ([], "non-empty list"),
    (None, "non-empty list"),
])
def test_format_args_errors_name_the_argument(args, message):
    with pytest.raises(PsetError, match=message):
        format_args(args, {"a": 1})


def test_returns_output_status_and_runtime():
    out = run_command([PY, "-c", "import sys; print('out {a}'); print('err', file=sys.stderr)"],
                      {"a": 5})
    assert out["returncode"] == 0 and out["timed_out"] is False
    assert out["stdout"] == "out 5\n" and out["stderr"] == "err\n"
    assert isinstance(out["runtime"], float) and out["runtime"] >= 0


def test_nonzero_exit_raises_with_stderr_when_checked():
    cmd = [PY, "-c", "import sys; print('bad input', file=sys.stderr); sys.exit({code})"]
    with pytest.raises(CommandError, match="exited with status 4: bad input") as info:
        run_command(cmd, {"code": 4})
    assert info.value.returncode == 4 and info.value.stderr == "bad input\n"
    assert run_command(cmd, {"code": 4}, check=False)["returncode"] == 4


def test_missing_program_names_it_and_the_path():
    with pytest.raises(CommandError, match=r"program 'no-such-prog-x' not found on PATH=/nowhere"):
        run_command(["no-such-prog-{n}"], {"n": "x"}, env={"PATH": "/nowhere"})
    with pytest.raises(CommandError, match=r"program './nope' not found relative to /"):
        run_command(["./nope"], {})


def test_program_that_is_not_executable(tmp_path):
    script = tmp_path / "prog.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(CommandError, match="is not executable: chmod"):
        run_command([str(script)])


def test_cwd_is_formatted_and_must_exist(tmp_path):
    (tmp_path / "run-3").mkdir()
    out = run_command([PY, "-c", "import os; print(os.getcwd())"], {"a": 3},
                      cwd=str(tmp_path / "run-{a}"))
    assert out["stdout"].strip() == str(tmp_path / "run-3")
    with pytest.raises(CommandError, match="working directory .*run-4' does not exist"):
        run_command(["true"], {"a": 4}, cwd=str(tmp_path / "run-{a}"))


def test_env_adds_variables():
    out = run_command([PY, "-c", "import os; print(os.environ['PSMPI_TEST_X'], 'PATH' in os.environ)"],
                      env={"PSMPI_TEST_X": 7})
    assert out["stdout"] == "7 True\n"


def test_long_output_keeps_head_and_tail():
    cmd = [PY, "-c", "print('H' * 5000 + 'T' * 5000, end='')"]
    out = run_command(cmd, max_output=100)["stdout"]
    assert out.startswith("H" * 25 + "\n[... 9900 characters cut ...]\n") and out.endswith("T" * 75)
    assert len(run_command(cmd, max_output=None)["stdout"]) == 10_000


def test_undecodable_output_is_replaced_not_raised():
    out = run_command([PY, "-c", "import sys; sys.stdout.buffer.write(b'ok\\xff')"])
    assert out["stdout"] == "ok\ufffd"


def wait_dead(pid, seconds=10):
    deadline = time.monotonic() + seconds
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not pid_alive(pid)


def test_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    cmd = ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"]
    out = run_command(cmd, timeout=0.5, check=False)
    assert out["timed_out"] is True and out["returncode"] == -signal.SIGTERM
    assert wait_dead(int(pidfile.read_text()))  # the grandchild went with it
    with pytest.raises(CommandError, match="did not finish within 0.5 s and was killed"):
        run_command(["sleep", "60"], timeout=0.5)


def test_program_gets_sigterm_even_where_the_worker_ignores_it():
    # psmpi's worker processes ignore SIGTERM, and exec keeps a signal ignored
    old = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        out = run_command(["sleep", "60"], timeout=0.3, check=False)
    finally:
        signal.signal(signal.SIGTERM, old)
    assert out["returncode"] == -signal.SIGTERM  # not SIGKILL after the grace period


def test_program_that_ignores_sigterm_is_killed():
    cmd = ["sh", "-c", "trap '' TERM; echo ready; sleep 60"]  # sleep inherits the ignored TERM
    import psmpi.study.command as command

    grace, command._KILL_GRACE = command._KILL_GRACE, 0.2
    try:
        out = run_command(cmd, timeout=1.0, check=False)
    finally:
        command._KILL_GRACE = grace
    assert out["returncode"] == -signal.SIGKILL and out["stdout"] == "ready\n"


def worker(pset):
    return run_command(["{prog}", "-c", "import sys, time; time.sleep({sleep}); print({sleep})"],
                       pset, timeout=1, check=pset["check"])


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_inside_a_map_failures_become_missing(tmp_path, backend):
    psets = [{"prog": PY, "sleep": 0, "check": True},
             {"prog": PY, "sleep": 30, "check": False},
             {"prog": PY, "sleep": 30, "check": True},
             {"prog": "no-such-prog", "sleep": 0, "check": True}]
    kwargs = {"ncores": 2} if backend == "multiprocessing" else {}
    res = psmpi.map(worker, psets, backend=backend, out=tmp_path / "r.h5", verbose=0,
                    logfile=False, **kwargs)
    rows = res.results.sort_values("sleep")
    assert rows["returncode"].tolist() == [0, -signal.SIGTERM]
    assert rows["timed_out"].tolist() == [False, True]
    assert rows["stdout"].tolist() == ["0\n", ""]
    exceptions = sorted(res.missing.df["_exception"])
    assert exceptions[0].startswith("CommandError: ") and "did not finish within 1 s" in exceptions[0]
    assert "program 'no-such-prog' not found on PATH=" in exceptions[1]
    assert os.environ.get("PATH", "") in exceptions[1]

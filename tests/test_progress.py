"""Progress on the terminal: verbose levels, vstats levels, plain lines, and the tqdm bar."""

import fcntl
import io
import os
import pty
import struct
import termios
import time

import pytest

import psmpi
from psmpi import api, config
from psmpi.results import MapProgress
from psmpi.watch.progress import Reporter


def square(pset):
    return {"y": pset["a"] ** 2}


def fail_on_2(pset):
    if pset["a"] == 2:
        raise ArithmeticError("two is not allowed")
    with psmpi.timer("square"):
        return {"y": pset["a"] ** 2}


@pytest.fixture(autouse=True)
def fresh_session():
    api.init(backend="serial")
    yield
    api._session.close_backend()
    api._session.initialised = False


def reporter(stream, bar=None, **settings) -> Reporter:
    settings = config.resolve(settings, {}, environ={"PSMPI_LOGFILE": "0"})
    return Reporter(settings, "m", "serial", 1, stream=stream, bar=bar)


def psmpi_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("psmpi [")]


def test_verbose_0_prints_nothing_not_even_statistics(capsys):
    psmpi.map(fail_on_2, [{"a": a} for a in range(4)], out=None, verbose=0, vstats=3)
    assert capsys.readouterr().err == ""


def test_verbose_3_prints_a_plain_line_for_every_event(capsys):
    psmpi.map(square, [{"a": a} for a in range(5)], out=None, verbose=3, vstats=0,
              group_size=1)
    err = capsys.readouterr().err
    lines = [line for line in psmpi_lines(err) if "finished," in line and "done" not in line]
    finished = {line.split()[2] for line in lines}
    # every group back is an event: 0/5 (start) .. 5/5 each appear
    assert {f"{n}/5" for n in range(1, 6)} <= finished, err
    assert "\r" not in err  # stderr is no terminal here: no bar, plain lines


def test_verbose_2_prints_each_failure_with_its_traceback(capsys):
    psmpi.map(fail_on_2, [{"a": a} for a in range(4)], out=None, verbose=2, vstats=0)
    err = capsys.readouterr().err
    assert "pset 2 failed (exception): ArithmeticError: two is not allowed" in err
    assert "Traceback (most recent call last)" in err
    assert "1 psets failed: see results.missing" in err


def test_verbose_1_prints_the_summary_but_no_traceback(capsys):
    psmpi.map(fail_on_2, [{"a": a} for a in range(4)], out=None, verbose=1, vstats=0)
    err = capsys.readouterr().err
    assert "done: 3/4 finished, 0 active, 1 failed (1 exceptions)" in err
    assert "Traceback" not in err and "stats:" not in err


@pytest.mark.parametrize("vstats,present,absent", [
    (0, [], ["stats:"]),
    (1, ["stats: 4 psets in"], ["histogram", "peak RSS  ", "timer (seconds)"]),
    (2, ["stats: 4 psets in", "per pset (seconds)", "not on CPU", "histogram of wall-clock",
         "histogram of not on CPU",
         "busy", "waiting", "driver (rank 0)"], ["timer (seconds)"]),
    (3, ["per pset (seconds)", "timer (seconds)", "square not on CPU"], []),
])
def test_vstats_chooses_how_much_statistics(capsys, vstats, present, absent):
    psmpi.map(fail_on_2, [{"a": a} for a in range(4)], out=None, verbose=1, vstats=vstats)
    err = capsys.readouterr().err
    for text in present:
        assert text in err, (text, err)
    for text in absent:
        assert text not in err, (text, err)


def test_verbose_1_and_2_lines_come_at_their_intervals():
    stream = io.StringIO()
    r = reporter(stream, verbose=1)
    progress = MapProgress(total=10, finished=3)
    r.update(progress)
    assert stream.getvalue() == ""  # 30 s have not passed
    r.last -= 31
    r.update(progress)
    r.update(progress)  # at once again: nothing
    assert len(psmpi_lines(stream.getvalue())) == 1
    r2 = reporter(stream := io.StringIO(), verbose=2)
    r2.last -= 1.5
    r2.update(progress)
    lines = psmpi_lines(stream.getvalue())
    assert len(lines) == 1 and lines[0].startswith("psmpi [m] 3/10 finished, 0 active")


def test_line_has_counts_rate_and_eta():
    r = reporter(io.StringIO(), verbose=1)
    r.started = time.monotonic() - 10.0
    line = r.line(MapProgress(total=100, active=4, finished=25, failures=5, exceptions=3,
                              resumed=10))
    # 20 psets computed in this run in 10 s: 2 psets/s; 70 left: 35 s
    assert line.startswith("25/100 finished, 4 active, 5 failed (3 exceptions), 2.0 psets/s")
    assert line.endswith("eta 35 s")
    r.started = time.monotonic() - 1000.0
    assert r.line(MapProgress(total=100, finished=20)).endswith("eta 67 min")


def read_all(master: int) -> str:
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the slave side is closed and everything was read
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def on_a_terminal(run, columns: int = 0) -> str:
    """Run ``run(stream)`` with ``stream`` a pseudo-terminal; return what it showed.

    A new pseudo-terminal reports 0 columns (psmpi then draws 100 wide) unless ``columns``.
    """
    master, slave = pty.openpty()
    if columns:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    stream = os.fdopen(slave, "w")
    try:
        run(stream)
    finally:
        stream.close()
    try:
        return read_all(master)
    finally:
        os.close(master)


def test_reporter_draws_a_bar_on_a_terminal():
    def run(stream):
        r = reporter(stream, verbose=2)
        assert r.use_bar
        progress = MapProgress(total=4)
        r.start(progress, None)
        for n in range(1, 5):
            progress.finished = n
            r.update(progress)
        r.failure(7, "exception", "ValueError: x", "Traceback: ...")
        r.finish(progress, "memory")
    shown = on_a_terminal(run)
    assert "psmpi [m]: 100%" in shown and "4/4" in shown, shown
    assert "\r" in shown  # redrawn in place
    assert "pset 7 failed (exception): ValueError: x" in shown  # written above the bar
    assert "done: 4/4 finished" in shown


def test_map_on_a_terminal_shows_the_bar(monkeypatch):
    def run(stream):
        monkeypatch.setattr("sys.stderr", stream)
        psmpi.map(square, [{"a": a} for a in range(6)], out=None, verbose=1, group_size=2)
    shown = on_a_terminal(run, columns=120)
    assert "psmpi [square]: 100%" in shown and "6/6" in shown and "pset/s" in shown, shown


def test_no_bar_when_not_a_terminal_or_verbose_0():
    assert not reporter(io.StringIO(), verbose=3).use_bar
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as stream:
        assert not reporter(stream, verbose=0).use_bar
        assert reporter(stream, verbose=1).use_bar
    os.close(master)


def test_the_summary_of_a_stopped_map_says_stopped_and_has_no_eta():
    r = reporter(stream := io.StringIO(), verbose=1)
    r.started = time.monotonic() - 10.0
    r.finish(MapProgress(total=100, finished=25), "study.h5", stopped_by="SIGUSR1")
    summary = [line for line in psmpi_lines(stream.getvalue()) if "finished" in line]
    assert summary and summary[0].startswith("psmpi [m] stopped: 25/100 finished"), summary
    assert "eta" not in stream.getvalue()

"""What a running map tells the world: the terminal, the run log and a Carbon server.

Terminal (stderr), as often as ``verbose`` asks: 0 nothing; 1 a line every 30 s and a
summary; 2 a line every second and each failure with its traceback; 3 a line for every event
(a group back, a failure). When stderr is a terminal the periodic lines become a live tqdm
bar; in job logs (not a terminal) they stay plain lines. At the end, ``vstats`` chooses how
much of the statistics to print (0 nothing, 1 a line, 2 tables, 3 timed sections); with
``verbose=0`` nothing is printed at all.

At every ``verbose >= 1``, a worker that stalls (holds its psets far longer than psets take,
or past ``timeout=``) gets one warning line naming it, its host, the psets and for how long
(:mod:`psmpi.watch.stalls`), and one more when it gives them back.

Whatever ``verbose`` is, the run log (:mod:`psmpi.watch.logfile`) gets the map's settings, a
progress line every 30 s, every failure with its pset and traceback, every stalled-worker
warning, and the full statistics; a Carbon server (:mod:`psmpi.watch.carbon`) gets the counts every 10 s.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import traceback

from .. import config
from ..results import MapProgress, PerfStats
from ..utils import vmem
from . import carbon, logfile

INTERVAL_SECONDS = {0: None, 1: 30.0, 2: 1.0, 3: 0.0}
LOG_INTERVAL_SECONDS = 30.0
CARBON_INTERVAL_SECONDS = 10.0
# Longest repr of one setting in the run log (user_kwargs may hold big arrays).
SETTING_REPR_CHARS = 200


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def terminal_columns(stream) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def duration_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Reporter:
    """Reports one map's progress, failures and statistics.

    Parameters
    ----------
    settings : config.Settings
        ``verbose``, ``vstats``, ``logfile`` and the ``carbon_*`` settings are used.
    name : str
        the map's name.
    backend : str
        the backend's name (for the log).
    workers : int
        how many groups run at once (for the log).
    stream : file, optional
        where terminal output goes; default ``sys.stderr``.
    bar : bool, optional
        draw a tqdm bar; default: when ``stream`` is a terminal and ``verbose >= 1``.
    """

    def __init__(self, settings: config.Settings, name: str, backend: str, workers: int,
                 stream=None, bar: bool | None = None):
        self.settings = settings
        self.verbose = settings.verbose
        self.vstats = settings.vstats
        self.name = name
        self.backend = backend
        self.workers = workers
        self.stream = stream or sys.stderr
        self.use_bar = (self.verbose >= 1 and is_terminal(self.stream)) if bar is None else bar
        self.bar = None
        self.bar_postfix = ""
        self.log = logfile.run_log(settings.logfile, backend, workers, config.launched_by_mpi() or 1)
        self.carbon = carbon.sender_for(settings.carbon_server, settings.carbon_port)
        self.started = self.last = self.last_log = self.last_carbon = time.monotonic()
        self.last_counts: tuple[int, ...] | None = None
        self.stalled = 0  # workers judged stalled now (psmpi.watch.stalls.Watch sets it)

    # -- output channels -------------------------------------------------------------------

    def say(self, text: str) -> None:
        """Print ``text`` on the terminal, above the bar if there is one."""
        line = f"psmpi [{self.name}] {text}"
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
            self.stream.flush()
        else:
            print(line, file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """Write ``text`` to the run log (if there is one)."""
        if self.log is not None:
            self.log.write(f"[{self.name}] {text}")

    # -- what run.py calls -----------------------------------------------------------------

    def start(self, progress: MapProgress, path: str | None) -> None:
        """The map begins: its settings go to the log, the bar appears."""
        if self.log is not None:
            self.log.maps += 1
            self.note(f"map started: backend {self.backend} ({self.workers} workers), "
                      f"{progress.total or 'an unknown number of'} psets, results in "
                      f"{path or 'memory'}; settings: {changed_settings(self.settings)}")
        if self.use_bar:
            self.open_bar(progress)
        self.push(progress)

    def update(self, progress: MapProgress) -> None:
        """Called for every outcome and every heartbeat of the backend (~0.2 s)."""
        now = time.monotonic()
        if self.bar is not None:
            self.advance_bar(progress)
        if self.verbose >= 3:
            counts = (progress.finished, progress.failures, progress.active, progress.queued)
            if counts != self.last_counts:
                self.last_counts = counts
                self.say(self.line(progress))
        elif self.bar is None and self.verbose >= 1 and \
                now - self.last >= INTERVAL_SECONDS[self.verbose]:
            self.last = now
            self.say(self.line(progress))
        if self.log is not None and now - self.last_log >= LOG_INTERVAL_SECONDS:
            self.last_log = now
            self.note(self.line(progress))
        if self.carbon is not None and now - self.last_carbon >= CARBON_INTERVAL_SECONDS:
            self.push(progress)

    def warn(self, text: str) -> None:
        """A worker stalled, ran past timeout or came back: log, and terminal at verbose >= 1."""
        self.note(text)
        if self.verbose >= 1:
            self.say(text)

    def failure(self, index: int, kind: str, message: str, traceback_text: str,
                pset: dict | None = None, where: tuple | None = None) -> None:
        """A pset failed; ``where`` is (rank, host, pid) of the process that ran it."""
        if self.log is not None:
            self.log.failures += 1
            origin = ""
            if where is not None and where[2] >= 0:
                origin = f" on {where[1]} (rank {where[0]}, pid {where[2]})"
            self.note(f"pset {index} failed ({kind}){origin}: {message}\npset: {pset!r}\n"
                      f"{traceback_text}".rstrip())
        if self.verbose >= 2:
            self.say(f"pset {index} failed ({kind}): {message}\n{traceback_text}".rstrip())

    def finish(self, progress: MapProgress, where: str, stats: PerfStats | None = None,
               stopped_by: str = "") -> None:
        """The map ended: summary, where the tracebacks are, and the statistics."""
        self.close_bar(progress)
        self.push(progress)
        # A summary, also of a stopped map: no estimate of a time still to come.
        done = (f"{'stopped' if stopped_by else 'done'}: {self.line(progress, eta=False)}; "
                f"{progress.resumed} resumed from {where}")
        self.note(done)
        if stopped_by:
            self.note(f"stopped by {stopped_by}: {progress.active} psets were in flight; "
                      f"running the same command again computes the rest")
        if stats is not None:
            self.note("statistics:\n" + stats.report(3, max_workers=None))
        self.note(f"driver memory: {vmem()}")
        if self.verbose >= 1:
            self.say(done)
            if progress.stale:
                self.say(f"{progress.stale} rows stored by earlier runs match no pset of this "
                         f"map (the pset list changed); they stay in the file")
            if progress.failures:
                logged = f"; tracebacks in {self.log.path}" if self.log is not None else ""
                self.say(f"{progress.failures} psets failed: see results.missing "
                         f"(or `psmpi.read(..., failures=True)`){logged}")
            if stats is not None and self.vstats >= 1:
                self.say("stats: " + stats.report(self.vstats).replace("\n", "\n  "))

    def abort(self, exc: BaseException) -> None:
        """The map ends with an exception: put it in the log, take the bar down."""
        self.close_bar(None)
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.note(f"map ended by {type(exc).__name__}: {exc}\n{text}".rstrip())

    # -- helpers ---------------------------------------------------------------------------

    def line(self, progress: MapProgress, eta: bool = True) -> str:
        elapsed = time.monotonic() - self.started
        done = progress.finished + progress.failures - progress.resumed
        rate = done / elapsed if elapsed > 0 else 0.0
        left = progress.total - progress.finished - progress.failures if progress.total else None
        eta_text = f", eta {duration_text(left / rate)}" if eta and left and rate > 0 else ""
        stalled = f", {self.stalled} stalled" if self.stalled else ""
        queued = f", {progress.queued} queued" if progress.queued else ""
        return (f"{progress.finished}/{progress.total} finished, {progress.active} active"
                f"{queued}{stalled}, {progress.failures} failed ({progress.exceptions} exceptions), "
                f"{rate:.1f} psets/s{eta_text}")

    def open_bar(self, progress: MapProgress) -> None:
        from tqdm import tqdm  # imported when a terminal is there to draw on
        # Follow the terminal's width, unless it reports none (some pseudo-terminals).
        sized = terminal_columns(self.stream) > 0
        self.bar = tqdm(total=progress.total or None, desc=f"psmpi [{self.name}]", unit="pset",
                        file=self.stream, dynamic_ncols=sized, ncols=None if sized else 100,
                        mininterval=0.2, smoothing=0.1)
        self.bar_postfix = ""

    def advance_bar(self, progress: MapProgress) -> None:
        bar = self.bar
        if progress.total and bar.total != progress.total:
            bar.total = progress.total
        stalled = f", {self.stalled} stalled" if self.stalled else ""
        queued = f", {progress.queued} queued" if progress.queued else ""
        postfix = f"{progress.active} active{queued}{stalled}, {progress.failures} failed"
        if postfix != self.bar_postfix:
            self.bar_postfix = postfix
            bar.set_postfix_str(postfix, refresh=False)
        n = progress.finished + progress.failures
        if n != bar.n:
            bar.update(n - bar.n)

    def close_bar(self, progress: MapProgress | None) -> None:
        if self.bar is None:
            return
        if progress is not None:
            self.advance_bar(progress)
        self.bar.close()
        self.bar = None

    def push(self, progress: MapProgress) -> None:
        """Send the counts to the Carbon server, and say once if it cannot be reached."""
        if self.carbon is None:
            return
        self.last_carbon = time.monotonic()
        elapsed = self.last_carbon - self.started
        done = progress.finished + progress.failures - progress.resumed
        counts = {key: getattr(progress, key) for key in
                  ("total", "active", "finished", "failures", "exceptions", "resumed")}
        counts["psets_per_second"] = done / elapsed if elapsed > 0 else 0.0
        self.carbon.send(carbon.progress_metrics(self.settings.carbon_prefix, self.name, counts))
        problem = self.carbon.unreported_problem()
        if problem:
            self.note(f"warning: {problem}")
            if self.verbose >= 1:
                self.say(f"warning: {problem}")


def changed_settings(settings: config.Settings) -> str:
    """The settings that differ from their defaults, for the log."""
    changed = []
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        option = config.OPTIONS.get(field.name)
        if option is not None and value is option.default:
            continue
        try:
            same = option is not None and bool(value == option.default)
        except Exception:  # a value whose == is not a bool (arrays in user_kwargs)
            same = False
        if not same:
            text = repr(value)
            if len(text) > SETTING_REPR_CHARS:
                text = text[:SETTING_REPR_CHARS] + "..."
            changed.append(f"{field.name}={text}")
    return ", ".join(changed) or "all defaults"

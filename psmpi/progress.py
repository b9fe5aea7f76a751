"""Progress lines on stderr, as often as the verbosity asks.

verbose 0: nothing; 1: a line every 30 s and a summary; 2: a line every second and each
failure with its traceback; 3: a line for every finished group.
"""

from __future__ import annotations

import sys
import time

from .results import MapProgress

INTERVAL_SECONDS = {0: None, 1: 30.0, 2: 1.0, 3: 0.0}


class Reporter:
    def __init__(self, verbose: int, name: str, stream=None):
        self.verbose = verbose
        self.name = name
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.last = self.started

    def say(self, text: str) -> None:
        print(f"psmpi [{self.name}] {text}", file=self.stream, flush=True)

    def line(self, progress: MapProgress) -> str:
        elapsed = time.monotonic() - self.started
        done = progress.finished + progress.failures - progress.resumed
        rate = done / elapsed if elapsed > 0 else 0.0
        left = progress.total - progress.finished - progress.failures if progress.total else None
        eta = f", eta {left / rate:.0f} s" if left and rate > 0 else ""
        return (f"{progress.finished}/{progress.total} finished, {progress.active} active, "
                f"{progress.failures} failed ({progress.exceptions} exceptions), "
                f"{rate:.1f} psets/s{eta}")

    def update(self, progress: MapProgress) -> None:
        interval = INTERVAL_SECONDS[self.verbose]
        now = time.monotonic()
        if interval is not None and now - self.last >= interval:
            self.last = now
            self.say(self.line(progress))

    def failure(self, index: int, kind: str, message: str, traceback_text: str) -> None:
        if self.verbose >= 2:
            self.say(f"pset {index} failed ({kind}): {message}\n{traceback_text}".rstrip())

    def finish(self, progress: MapProgress, where: str) -> None:
        if self.verbose >= 1:
            self.say(f"done: {self.line(progress)}; {progress.resumed} resumed from {where}")
            if progress.stale:
                self.say(f"{progress.stale} rows stored by earlier runs match no pset of this "
                         f"map (the pset list changed); they stay in the file")
            if progress.failures:
                self.say(f"{progress.failures} psets failed: see results.missing "
                         f"(or `psmpi.read(..., failures=True)`)")

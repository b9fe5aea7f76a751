"""Progress pushed to a Carbon/Graphite server, for live dashboards.

Metrics ``<carbon_prefix>.<map>.<count>`` (total, active, finished, failures, exceptions,
resumed, psets_per_second) go to the server's pickle listener (``carbon_port``, 2004 by
default): each message is a 4-byte big-endian length, then a pickled list of
``(path, (timestamp, value))`` tuples.

A survey must never wait for a dashboard, so a background thread does the network work and
the driver only puts metrics on a bounded queue. A server that is down or unreachable costs
one warning; the thread retries at most every ``RETRY_SECONDS`` and drops the metrics meant
for it in between.
"""

from __future__ import annotations

import atexit
import pickle
import queue
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable

from . import logfile

# Seconds a connect or a send may take (in the background thread only).
NETWORK_TIMEOUT = 5.0
# After a failure, the next connection attempt waits at least this long.
RETRY_SECONDS = 30.0
# Batches waiting for the thread; beyond this, new ones are dropped (the server is slow).
QUEUE_LENGTH = 100
# At exit, how long to wait for batches still queued for a live connection.
EXIT_FLUSH_SECONDS = 2.0

Metric = tuple[str, tuple[int, float]]


def metric_name(text: str) -> str:
    """A map name as one Graphite path component: dots and spaces would split or break it."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text) or "map"


def progress_metrics(prefix: str, map_name: str, counts: dict[str, float],
                     timestamp: float | None = None) -> list[Metric]:
    """``[(f"{prefix}.{map}.{key}", (timestamp, value)), ...]`` for each of ``counts``."""
    stamp = int(time.time() if timestamp is None else timestamp)
    base = f"{prefix}.{metric_name(map_name)}"
    return [(f"{base}.{key}", (stamp, float(value))) for key, value in counts.items()]


def encode(metrics: list[Metric]) -> bytes:
    """One message of Carbon's pickle protocol."""
    payload = pickle.dumps(metrics, protocol=2)
    return struct.pack("!L", len(payload)) + payload


class CarbonSender:
    """Sends batches of metrics to one server from a daemon thread; never blocks the caller."""

    def __init__(self, server: str, port: int,
                 connect: Callable[..., socket.socket] = socket.create_connection):
        self.address = (server, port)
        self.connect = connect
        self.queue: queue.Queue[list[Metric] | None] = queue.Queue(QUEUE_LENGTH)
        self.sock: socket.socket | None = None
        self.next_attempt = 0.0
        self.sent = self.dropped = 0
        self.problem: str | None = None      # the first failure, to be reported once
        self.reported = False
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve, name=f"psmpi-carbon-{server}:{port}",
                                       daemon=True)
        self.thread.start()

    def send(self, metrics: list[Metric]) -> None:
        """Queue ``metrics`` for sending; drop them if the queue is full."""
        try:
            self.queue.put_nowait(metrics)
        except queue.Full:
            self.dropped += 1

    def serve(self) -> None:
        while True:
            batch = self.queue.get()
            try:
                if batch is None:
                    return
                self.deliver(batch)
            finally:
                self.queue.task_done()

    def deliver(self, batch: list[Metric]) -> None:
        if self.sock is None:
            if time.monotonic() < self.next_attempt:
                self.dropped += 1
                return
            try:
                self.sock = self.connect(self.address, timeout=NETWORK_TIMEOUT)
            except OSError as exc:
                self.failed(exc)
                self.dropped += 1
                return
        try:
            self.sock.sendall(encode(batch))
            self.sent += 1
        except OSError as exc:
            self.sock.close()
            self.sock = None
            self.failed(exc)
            self.dropped += 1

    def failed(self, exc: OSError) -> None:
        self.next_attempt = time.monotonic() + RETRY_SECONDS
        with self.lock:
            if self.problem is None:
                host, port = self.address
                self.problem = (f"cannot send progress to the carbon server {host}:{port} "
                                f"({type(exc).__name__}: {exc}); the survey goes on, "
                                f"retrying at most every {RETRY_SECONDS:.0f} s")

    def unreported_problem(self) -> str | None:
        """The first failure, the first time it is asked for; else None."""
        with self.lock:
            if self.problem is None or self.reported:
                return None
            self.reported = True
            return self.problem

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every queued batch was handled."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Stop the thread (after what is queued) and close the connection."""
        try:
            self.queue.put(None, timeout=NETWORK_TIMEOUT)
        except queue.Full:
            pass
        self.thread.join(NETWORK_TIMEOUT)
        if self.sock is not None:
            self.sock.close()
            self.sock = None


_senders: dict[tuple[str, int], CarbonSender] = {}


def sender_for(server: str | None, port: int) -> CarbonSender | None:
    """The process's sender to ``server:port`` (started on first use), or None."""
    if not server:
        return None
    key = (server, port)
    if key not in _senders:
        if not _senders:
            atexit.register(flush_at_exit)
        _senders[key] = CarbonSender(server, port)
    return _senders[key]


def flush_at_exit() -> None:
    """Give queued metrics a moment to leave, then report a failure nobody was told about."""
    for sender in list(_senders.values()):
        if sender.problem is None:
            sender.flush(EXIT_FLUSH_SECONDS)
        problem = sender.unreported_problem()
        if problem:
            print(f"psmpi: {problem}", file=sys.stderr, flush=True)
            log = logfile.current()
            if log is not None:
                log.write(f"warning: {problem}")

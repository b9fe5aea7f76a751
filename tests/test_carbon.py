"""Progress pushed to Carbon: a real listener on localhost, a dead one, an unreachable one."""

import pickle
import socket
import struct
import threading
import time

import pytest

import psmpi
from psmpi import api
from psmpi.watch import carbon

METRICS = {"total", "active", "finished", "failures", "exceptions", "resumed",
           "psets_per_second"}


def square(pset):
    return {"y": pset["a"] ** 2}


class Listener:
    """A Carbon pickle listener: accepts connections, unpickles every message."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.metrics: list = []
        self.connections = 0
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return  # closed
            self.connections += 1
            threading.Thread(target=self.read, args=(conn,), daemon=True).start()

    def read(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as stream:
            while True:
                header = stream.read(4)
                if len(header) < 4:
                    return
                (length,) = struct.unpack("!L", header)
                self.metrics.extend(pickle.loads(stream.read(length)))

    def latest(self, path: str):
        values = [value for name, (_, value) in self.metrics if name == path]
        return values[-1] if values else None

    def wait_for(self, path: str, value: float, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.latest(path) != value:
            assert time.monotonic() < deadline, (path, value, self.metrics[-10:])
            time.sleep(0.01)

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setenv("PSMPI_LOGFILE", "0")
    api.init(backend="serial", verbose=0)
    yield
    for sender in carbon._senders.values():
        sender.close()
    carbon._senders.clear()
    api._session.close_backend()
    api._session.initialised = False


def dead_port() -> int:
    """A port on localhost where nobody listens (bound, then released)."""
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def test_progress_reaches_a_carbon_listener(listener):
    res = psmpi.map(square, [{"a": a} for a in range(20)], out=None, name="sweep.one",
                    carbon_server="127.0.0.1", carbon_port=listener.port,
                    carbon_prefix="lab.psmpi")
    assert len(res) == 20
    listener.wait_for("lab.psmpi.sweep_one.finished", 20.0)
    names = {name for name, _ in listener.metrics}
    assert names == {f"lab.psmpi.sweep_one.{m}" for m in METRICS}
    assert listener.latest("lab.psmpi.sweep_one.total") == 20.0
    stamps = {stamp for _, (stamp, _) in listener.metrics}
    assert all(isinstance(s, int) and abs(s - time.time()) < 600 for s in stamps)
    # later maps reuse the connection
    psmpi.map(square, [{"a": 1}], out=None, name="two", carbon_server="127.0.0.1",
              carbon_port=listener.port, carbon_prefix="lab.psmpi")
    listener.wait_for("lab.psmpi.two.finished", 1.0)
    assert listener.connections == 1


def test_a_dead_server_warns_once_and_the_survey_completes(capsys):
    port = dead_port()
    kwargs = dict(out=None, verbose=1, vstats=0, carbon_server="127.0.0.1", carbon_port=port)
    first = psmpi.map(square, [{"a": a} for a in range(5)], **kwargs)
    assert carbon._senders[("127.0.0.1", port)].flush(10)  # the refusal has happened
    second = psmpi.map(square, [{"a": a} for a in range(5)], **kwargs)
    assert len(first) == len(second) == 5
    err = capsys.readouterr().err
    assert err.count(f"cannot send progress to the carbon server 127.0.0.1:{port}") == 1, err
    assert "ConnectionRefusedError" in err and "the survey goes on" in err


def test_after_a_failure_connecting_waits_for_the_retry_interval():
    attempts = []

    def refuse(address, timeout):
        attempts.append(address)
        raise ConnectionRefusedError("nobody there")

    sender = carbon.CarbonSender("metrics.example", 2004, connect=refuse)
    try:
        for _ in range(5):
            sender.send(carbon.progress_metrics("p", "m", {"finished": 1}))
        assert sender.flush(10)
        assert len(attempts) == 1 and sender.dropped == 5
        sender.next_attempt = 0.0  # as if RETRY_SECONDS had passed
        sender.send(carbon.progress_metrics("p", "m", {"finished": 2}))
        assert sender.flush(10)
        assert len(attempts) == 2
        assert "metrics.example:2004" in sender.unreported_problem()
        assert sender.unreported_problem() is None  # reported once
    finally:
        sender.close()


def test_an_unreachable_server_never_holds_the_survey_up():
    """A connect that hangs (a host that drops packets) must not stop the driver."""
    release = threading.Event()

    def hang(address, timeout):
        release.wait(60)
        raise TimeoutError("timed out")

    sender = carbon.CarbonSender("10.255.255.1", 2004, connect=hang)
    carbon._senders[("10.255.255.1", 2004)] = sender
    try:
        for _ in range(carbon.QUEUE_LENGTH + 10):  # more than the queue holds: dropped
            sender.send([("p.m.finished", (0, 1.0))])
        res = psmpi.map(square, [{"a": a} for a in range(10)], out=None,
                        carbon_server="10.255.255.1", carbon_port=2004)
        assert len(res) == 10
        assert not release.is_set() and sender.dropped >= 10  # still hanging, all along
    finally:
        release.set()


def test_metric_names_and_the_wire_format():
    metrics = carbon.progress_metrics("a.b", "my map.v2", {"finished": 3, "total": 4},
                                      timestamp=1700000000.7)
    assert metrics == [("a.b.my_map_v2.finished", (1700000000, 3.0)),
                       ("a.b.my_map_v2.total", (1700000000, 4.0))]
    message = carbon.encode(metrics)
    (length,) = struct.unpack("!L", message[:4])
    assert length == len(message) - 4 and pickle.loads(message[4:]) == metrics

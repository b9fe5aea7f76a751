"""SIGKILL a writer at random instants: the committed prefix must stay exact and resumable.

A helper process (tests/helpers/store_writer.py) appends rows whose values are functions
of the row number, in batches of random size, with new columns, an int -> float, an
int -> general and an array -> ragged -> wider ragged widening every 20,000 rows, and a
general and a ragged column throughout. After every kill the file is read read-only and every committed
value is compared with the function; the next writer reclaims the dead writer's lock and
continues from ``n_committed``. Set PSMPI_KILL_SEED to replay a run.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

import numpy as np
import pytest

from psmpi import store

HERE = os.path.dirname(os.path.abspath(__file__))
HELPER = os.path.join(HERE, "helpers", "store_writer.py")
sys.path.insert(0, os.path.join(HERE, "helpers"))
import store_writer  # noqa: E402

# Crash, drain and kill handling: CI runs these on the oldest and the newest Python too.
pytestmark = pytest.mark.crash

# PSMPI_TEST_KILLS: fewer kills, for CI's extra runs on other Python versions
KILLS = int(os.environ.get("PSMPI_TEST_KILLS", 32))
BLOCK = store_writer.BLOCK


def start_writer(path: str, target: int, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, HELPER, path, str(target), *extra], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def read_until(proc: subprocess.Popen, word: str) -> list[str]:
    """Lines the writer printed up to the one starting with ``word`` (all of them if it died)."""
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.startswith(word):
            break
    return lines


class Expected:
    """The deterministic table, computed vectorised (str column cached as it grows)."""

    def __init__(self):
        self.strings: list[str] = []
        self.general: list = []

    def check(self, path: str) -> int:
        """Compare every committed value of ``path`` with store_writer.row; the row count."""
        df = store.read(path, store_writer.MAP)
        n = len(df)
        if not n:  # killed before the first commit made the columns: nothing to compare
            return 0
        i = np.arange(n)
        assert df["i"].dtype == np.int64 and np.array_equal(df["i"].to_numpy(), i)
        assert np.array_equal(df["x"].to_numpy(), i * 0.25 + 1.0 / (i + 1))
        assert df["b"].dtype == bool and np.array_equal(df["b"].to_numpy(), i % 3 == 0)
        opt = np.where(i % 7 == 0, np.nan, 2.0 * i)
        assert np.array_equal(df["opt"].to_numpy(dtype=float), opt, equal_nan=True)
        self.strings += [f"row-{k}-" + "é" * (k % 4) for k in range(len(self.strings), n)]
        assert df["s"].tolist() == self.strings[:n]
        if n:
            a = np.stack(df["a"].to_numpy())
            assert a.dtype == np.int32
            assert np.array_equal(a[:, 0, 0], i) and np.array_equal(a[:, 0, 1], -i)
            assert np.array_equal(a[:, 1, 0], i % 5) and np.all(a[:, 1, 1] == 7)
        self.general += [[k, "x"] if k % 3 else (k,) for k in range(len(self.general), n)]
        assert df["r"].tolist() == self.general[:n]
        q = df["q"].tolist()  # vectorised: every check reads every committed row again
        present = i % 11 != 0
        assert [v is None for v in q] == (~present).tolist()
        arrays = [v for v in q if v is not None]
        assert {(v.dtype, v.ndim) for v in arrays} <= {(np.dtype(np.float64), 1)}
        sizes = np.array([v.size for v in arrays], dtype=np.int64)
        assert np.array_equal(sizes, (i % 13)[present])
        flat = np.concatenate(arrays) if arrays else np.zeros(0)
        assert np.array_equal(flat, np.repeat(i[present] * 0.5, sizes))
        self.check_blocks(df, n)
        return n

    @staticmethod
    def check_blocks(df, n: int) -> None:
        for name in [c for c in df.columns if c.startswith("w")]:
            block = int(name[1:])
            lo, half = block * BLOCK, block * BLOCK + BLOCK // 2
            expected = np.full(n, np.nan)
            k = np.arange(lo, min(n, lo + BLOCK))
            expected[lo:lo + len(k)] = np.where(k < half, k, k + 0.5)
            assert np.array_equal(df[name].to_numpy(dtype=float), expected, equal_nan=True), name
            if n > half:
                assert df[name].dtype == np.float64
        for name in [c for c in df.columns if c.startswith("g")]:
            block = int(name[1:])
            lo, half = block * BLOCK, block * BLOCK + BLOCK // 2
            values = df[name].tolist()
            assert all(v is None or v != v for v in values[:lo] + values[lo + BLOCK:]), name
            k = range(lo, min(n, lo + BLOCK))
            assert values[lo:lo + len(k)] == [j if j < half else [j] for j in k], name
            assert all(type(v) is (int if j < half else list) for j, v in zip(k, values[lo:]) if n > half)
        for name in [c for c in df.columns if c.startswith("v")]:
            block = int(name[1:])
            lo = block * BLOCK
            values = df[name].tolist()
            assert all(v is None for v in values[:lo] + values[lo + BLOCK:]), name
            got = values[lo:min(n, lo + BLOCK)]
            want = [store_writer.ragged(k) for k in range(lo, lo + len(got))]
            assert [v.shape for v in got] == [w.shape for w in want], name
            # (a column made by a batch killed before its commit has no rows yet)
            assert not got or np.array_equal(np.concatenate(got), np.concatenate(want)), name
            # the widening to float64 is made before the rows that need it are committed:
            # a writer killed in between leaves it, the values exact
            assert {v.dtype for v in got} <= {np.dtype(np.int32), np.dtype(np.float64)}, name
        missing = [b for b in range((n + BLOCK - 1) // BLOCK) if f"w{b}" not in df.columns]
        assert not missing, f"columns w{missing} of committed rows are missing"


@pytest.mark.timeout(120)
def test_sigkill_at_random_instants_keeps_an_exact_committed_prefix(tmp_path):
    seed = int(os.environ.get("PSMPI_KILL_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    path = str(tmp_path / "kill.h5")
    expected = Expected()
    committed, kills, resumed, reclaimed, mid_run = 0, 0, 0, 0, 0
    started = time.monotonic()
    while kills < KILLS:
        lock_pid = None
        if os.path.exists(path + ".lock"):
            with open(path + ".lock") as fh:
                lock_pid = json.load(fh)["pid"]
        proc = start_writer(path, 10**9)
        lines: list[str] = []
        if rng.random() < 0.15:  # sometimes while it starts, opens or creates the file
            time.sleep(rng.uniform(0.0, 0.6))
        else:
            lines = read_until(proc, "READY")
            time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()
        proc.wait()
        kills += 1
        lines += [line.strip() for line in proc.stdout]
        ready = [line for line in lines if line.startswith("READY")]
        assert not [line for line in lines if line.startswith("DONE")], f"seed {seed}: writer finished"
        if ready:
            assert int(ready[0].split()[1]) == committed, f"seed {seed}: writer resumed elsewhere"
            resumed += 1
            if lock_pid is not None:  # the previous writer's lock was reclaimed, with a warning
                assert any(f"dead pid {lock_pid}" in line for line in lines
                           if line.startswith("WARNING")), lines
                reclaimed += 1
        if not os.path.exists(path):
            continue
        n = expected.check(path)
        assert n >= committed, f"seed {seed}: committed rows went from {committed} to {n}"
        mid_run += n > committed
        committed = n
    # a last writer runs to the end; the whole table must be exact and the lock gone
    target = committed + 3 * BLOCK // 2 + 123
    proc = start_writer(path, target)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, f"seed {seed}: {err}"
    assert f"DONE {target}" in out
    assert not os.path.exists(path + ".lock")
    assert expected.check(path) == target
    elapsed = time.monotonic() - started
    print(f"\nseed {seed}: {kills} kills ({resumed} after open, {reclaimed} locks reclaimed, "
          f"{mid_run} with new committed rows), final {target} rows exact, {elapsed:.1f} s")
    assert kills == KILLS and resumed >= KILLS // 2 and reclaimed >= KILLS * 3 // 8


def test_read_while_another_process_writes(tmp_path):
    """A live writer in another process: read() works and a second writer is refused."""
    path = str(tmp_path / "live.h5")
    proc = start_writer(path, 5000, "--hold")
    try:
        lines = read_until(proc, "HOLD")
        assert lines and lines[-1] == "HOLD", lines + [proc.stderr.read()]
        assert Expected().check(path) == 5000
        assert store.map_names(path) == [store_writer.MAP]
        with pytest.raises(store.StoreError, match=f"pid {proc.pid} on host"):
            store.Store.open(path)
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert not os.path.exists(path + ".lock")
    with store.Store.open(path) as s:
        assert s.table(store_writer.MAP).n_rows == 5000

"""A disk that fills up: clean abort, committed rows intact, resumable once space is freed.

The tests mount real small tmpfs file systems (root only, as on CI). HDF5 itself segfaults
when a disk fills during a write, so psmpi checks free space before each commit and stops
below psmpi.store.MIN_FREE_BYTES (16 MiB).
"""

import os
import pathlib
import subprocess
import sys

import pytest

import psmpi

# Crash, drain and kill handling: CI runs these on the oldest and the newest Python too.
pytestmark = pytest.mark.crash

SCRIPT = pathlib.Path(__file__).parent / "scripts" / "full_disk_study.py"
N = 30000  # rows of 1 kB: about 30 MB


@pytest.fixture
def mount(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mounted = []

    def make(size):
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                       check=True)
        mounted.append(point)
        return point
    yield make
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


def run(path, n=N):
    return subprocess.run([sys.executable, str(SCRIPT), str(path), str(n)], capture_output=True,
                          text=True, timeout=120)


def test_too_little_space_is_refused_before_any_compute(mount):
    disk = mount("8m")
    proc = run(disk / "full.h5")
    assert proc.returncode == 1, proc.stderr
    assert "MiB free on the file system" in proc.stderr and "StoreError" in proc.stderr
    assert not (disk / "full.h5.lock").exists()


def test_disk_filling_mid_run_aborts_cleanly_and_resumes(mount):
    disk = mount("32m")
    path = disk / "full.h5"
    proc = run(path)
    assert proc.returncode == 1, proc.stderr
    assert "MiB free on the file system" in proc.stderr and "run the same command" in proc.stderr
    assert not (disk / "full.h5.lock").exists(), "the lock must be released"
    stored = psmpi.read(path, name="full")
    assert 0 < len(stored) < N
    assert (stored["text"] == stored["a"].map(lambda a: f"{a:06d}" * 170)).all()
    # space is freed: the same command completes exactly the rest
    subprocess.run(["mount", "-o", "remount,size=128m", str(disk)], check=True)
    proc = run(path)
    assert proc.returncode == 0, proc.stderr
    assert f"complete {N}" in proc.stdout
    final = psmpi.read(path, name="full")
    assert sorted(final["a"]) == list(range(N))

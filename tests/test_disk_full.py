"""A disk that fills up: clean abort, committed rows intact, resumable once space is freed.

The tests mount real small tmpfs file systems (root only, as on CI). HDF5 itself segfaults
when a disk fills during a write, so psmpi checks free space before each commit and stops
below psmpi.store.MIN_FREE_BYTES (16 MiB).
"""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

import psmpi
from psmpi.store.attempts import AttemptLog, Attempts
from psmpi.store.lock import take_lock

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
        # lazily: a file a failed test left open must not keep the mount for good
        subprocess.run(["umount", "-l", str(point)], check=False)


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


MPI_SCRIPT = pathlib.Path(__file__).parent / "scripts" / "full_disk_mpi_study.py"
MPIEXEC = pathlib.Path(sys.executable).parent / "mpiexec"
MPI_N = 4000  # 2 ms each on one worker rank: 8 s unless the disk fills first


def fill(path):
    """Fill the file system of ``path`` to the last byte, as another program would."""
    with open(path, "wb", buffering=0) as fh:
        for size in (2**20, 2**12, 1):
            chunk = b"\0" * size
            try:
                while True:
                    fh.write(chunk)
            except OSError:
                continue


def mpi_run(path, n=MPI_N):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "HYDRA_", "PSMPI_"))}
    env["PSMPI_LOGFILE"] = "0"
    return subprocess.Popen([str(MPIEXEC), "-n", "2", sys.executable, str(MPI_SCRIPT), str(path),
                             str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)


def committed(path):
    try:
        return len(psmpi.read(path, name="full"))
    except (psmpi.StoreError, KeyError, OSError):
        return 0


@pytest.mark.skipif(not MPIEXEC.exists(), reason="needs the mpiexec of the mpich wheel")
def test_disk_filled_by_another_process_under_mpi_ends_with_a_store_error(mount):
    disk = mount("48m")
    path = disk / "full.h5"
    proc = mpi_run(path)
    try:
        deadline = time.monotonic() + 60
        while committed(path) == 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert committed(path) > 0, "the study committed nothing in 60 s"
        fill(disk / "filler")
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 1, f"{out}\n{err}"
    assert "uncaught StoreError" in err and "uncaught OSError" not in err, err
    assert "free disk space" in err.lower() and "run the same command again" in err, err
    assert not (disk / "full.h5.lock").exists(), "the lock must be released"
    leftovers = [p.name for p in disk.iterdir() if p.name.endswith(".tmp") or ".tmp" in p.name]
    assert leftovers == [], leftovers
    stored = psmpi.read(path, name="full")
    assert 0 < len(stored) < MPI_N and (stored["y"] == 2 * stored["a"]).all()
    # another process freed the space: the same command completes exactly the rest
    (disk / "filler").unlink()
    proc = mpi_run(path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"complete {MPI_N}" in out
    assert sorted(psmpi.read(path, name="full")["a"]) == list(range(MPI_N))
    assert not (disk / "full.h5.attempts").exists()


def test_attempt_log_on_a_full_disk_raises_store_errors_and_keeps_its_counts(mount):
    disk = mount("1m")
    results = str(disk / "s.h5")
    before = AttemptLog(results, "m")
    before.save({5: Attempts(2, "h" * 32)})
    fill(disk / "filler")
    log = AttemptLog(results, "m")
    with pytest.raises(psmpi.StoreError, match="free disk space") as info:
        for i in range(10_000):  # tmpfs takes lines until the file's last page is full
            log.sent([i])
            log.returned([i])
    assert f"cannot write {results}.attempts" in str(info.value)
    with pytest.raises(psmpi.StoreError, match=r"\.attempts\.tmp .*run the same command again"):
        log.save({5: Attempts(3, "h" * 32)})
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "s.h5.attempts"]
    (disk / "filler").unlink()
    # the old counts are still there; a line torn by the full disk does not swallow the next
    again = AttemptLog(results, "m")
    assert again.load()[5] == Attempts(2, "h" * 32)
    again.sent([77])
    assert again.load()[77] == Attempts(1)
    again.save({})  # closes the file, so the disk can be unmounted


def test_lock_on_a_full_disk_is_a_store_error_and_leaves_no_lock(mount):
    # psmpi merge takes the lock without the free-space check of a map; a map can lose the
    # race against another process filling the disk between its check and its lock
    disk = mount("1m")
    fill(disk / "filler")
    with pytest.raises(psmpi.StoreError, match=r"s\.h5\.lock.*free disk space"):
        take_lock(str(disk / "s.h5"))
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]


def test_simulation_copy_on_a_full_disk_is_a_store_error_and_leaves_no_copy(mount):
    disk = mount("24m")
    path = disk / "s.h5"
    psmpi.map(lambda p: {"y": p["a"]}, [{"a": a} for a in range(10)], out=str(path),
              backend="serial", verbose=0, name="m")
    (disk / "s.h5.attempts").write_text("A m 3 1 -\n")  # copied along with the results
    fill(disk / "filler")
    with pytest.raises(psmpi.StoreError, match=r"s\.simulate\.h5.*free disk space"):
        psmpi.map(lambda p: {"y": p["a"]}, [{"a": a} for a in range(10)], out=str(path),
                  backend="serial", verbose=0, name="m", simulate=True)
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "s.h5", "s.h5.attempts"]
    assert len(psmpi.read(path, name="m")) == 10


def test_prep_batch_on_a_full_disk_writes_all_or_nothing(mount):
    templates = pathlib.Path(__file__).parent / "golden" / "templates" / "templates"
    disk = mount("2m")
    calc = disk / "calc"
    psets = psmpi.params.product({"a": list(range(100))}, {"x": 0.5}, {"name": "x y"})
    (disk / "spacer").write_bytes(b"\0" * 40_000)  # room for a few directories, not all
    fill(disk / "filler")
    (disk / "spacer").unlink()
    fix = r"calc/\w{32} .*(?i:free disk space).*prep_batch again"
    with pytest.raises(psmpi.StoreError, match=fix):
        psmpi.prep_batch(psets, templates, calc)
    assert list(calc.iterdir()) == [], "what this call wrote is removed again"
    (disk / "filler").unlink()
    df = psmpi.prep_batch(psets, templates, calc)
    assert df["_new"].all()
    script = next(calc.glob("run_*.sh")).read_text()
    assert all(f"(cd {digest} " in script for digest in df["_pset_hash"])

"""The store benchmarks run (in their smoke mode) and write what they claim to write."""

import json
import os
import pathlib
import pickle
import subprocess
import sys

import h5py
import numpy as np
import pytest

import psmpi

ROOT = pathlib.Path(__file__).parent.parent
BENCHMARKS = ROOT / "benchmarks"


def test_store_values_quick_run_reports_every_scenario_and_target(tmp_path):
    # --baseline with this very checkout: the child processes run, and must import it
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "store_values.py"), "--quick",
                           "--dir", str(tmp_path), "--baseline", str(ROOT)],
                          check=False, cwd=tmp_path, capture_output=True, text=True, timeout=240,
                          env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "Disk: sequential write of 8 MiB" in out
    for title in ("(a) 12 scalars", "(b) a 1 KiB array", "(c) a 1 MiB array",
                  "(d) a ragged array", "(e) a nested dict of 20 entries"):
        assert f"| {title}" in out and "| psmpi |" in out, title
    for target in ("(a) psmpi-columns not more", "(a) psmpi not more", "(c) ≥ 70%",
                   "(d) ≥ 50,000", "(e) ≥ 50,000"):
        line = next(ln for ln in out.splitlines() if f"target {target}" in ln)
        assert ": met (" in line or ": MISSED (" in line, line
    assert "failed" not in out.split("(a) in child processes")[1].split("- target")[0]
    assert os.listdir(tmp_path) == []  # every file written went with its temporary directory


@pytest.mark.parametrize("scenario", list("abcde"))
def test_store_values_writers_write_every_row(tmp_path, scenario):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import store_values as sv
    finally:
        sys.path.remove(str(BENCHMARKS))
    rows = sv.make_data(scenario, 6)
    batches = sv.batched(rows, 4)
    for writer in ("psmpi", "h5py", "pickle"):
        assert sv.write(writer, scenario, str(tmp_path / writer), batches) > 0
    stored = psmpi.read(tmp_path / "psmpi").sort_values("_pset_index")
    assert len(stored) == 6 and stored["_pset_seq"].tolist() == list(range(1, 7))
    with h5py.File(tmp_path / "h5py", "r") as f:
        assert {k: f[k].shape[0] for k in f} == {k: 6 for k in rows[0]}
        plain = {k: f[k][:] for k in f}
    with open(tmp_path / "pickle", "rb") as f:
        pickled = pickle.load(f) + pickle.load(f)  # one list per batch
    assert len(pickled) == 6 and [list(r) for r in pickled] == [list(r) for r in rows]
    for i, row in enumerate(rows):
        for key, want in row.items():
            got, raw = stored[key].iloc[i], plain[key][i]
            if isinstance(want, np.ndarray):
                assert np.array_equal(got, want) and np.array_equal(raw, want)
            elif isinstance(want, dict):
                assert got == want
                assert json.loads(raw) == json.loads(json.dumps(want, default=str))
            else:
                assert got == want and (raw.decode() if isinstance(raw, bytes) else raw) == want


@pytest.mark.timeout(300)
def test_adaptive_benchmark_quick_run_measures_every_system():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "adaptive.py"), "--quick",
                           "-n", "100", "--ranks", "3"], cwd=ROOT, capture_output=True,
                          text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr  # the table goes to stderr, with the progress
    for system in ("executor", "map-rounds", "futures"):
        assert f"| {system} |" in out, out
    assert "FAILED" not in out


def test_merge_quick_run_reports_both_scenarios_and_the_target(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "merge.py"), "--quick", "--inputs",
                           "--dir", str(tmp_path)], check=False, cwd=tmp_path,
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for scenario in ("scalars", "arrays"):
        for merge in ("psmpi", "h5py"):
            assert f"| {scenario} | {merge} |" in proc.stdout, (scenario, merge)
        line = next(ln for ln in proc.stdout.splitlines()
                    if f"hand-written copy, {scenario}:" in ln)
        assert ": met (" in line or ": MISSED (" in line, line
    assert proc.stdout.count("6,000 rows") == 0 and "round 1: psmpi: 6,000 rows" in proc.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.timeout(300)
def test_mpi_startup_quick_run_times_imports_and_the_first_pset():
    """One round of each part: the imports (with this checkout as the baseline too) and
    `mpiexec -n 3` to the first pset, psmpi beside mpi4py.futures."""
    if not (pathlib.Path(sys.executable).parent / "mpiexec").exists():
        pytest.skip("needs the mpiexec of the mpich wheel beside the Python executable")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "mpi_startup.py"), "--quick",
                           "--import-reps", "1", "--ranks", "3", "--baseline", str(ROOT)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    psmpi_row = next(ln for ln in out.splitlines() if ln.startswith("| `import psmpi` |"))
    assert psmpi_row.split("|")[6].strip() == "–", psmpi_row  # neither pandas nor h5py
    assert "| `import pandas` |" in out and "| pandas | 0 | 1 |" in out
    # from .pyc, a worker rank's imports and rank 0's first map, each also of the baseline;
    # the first map does import the driver's pandas and h5py
    rows = [ln for ln in out.splitlines() if ln.startswith("| ")]
    for label in ("`import psmpi`, from .pyc", "worker rank: `import psmpi, psmpi.backends.mpi`",
                  "worker rank, from .pyc", "rank 0: `import psmpi` + first `psmpi.map`"):
        assert sum(ln.startswith(f"| {label}") for ln in rows) == 2, label
    first_map = next(ln for ln in rows if ln.startswith("| rank 0: "))
    assert first_map.split("|")[6].strip() == "h5py, pandas", first_map
    for what in ("wall", "CPU"):
        line = next(ln for ln in out.splitlines() if f"by the median {what} time" in ln)
        assert ": met (" in line or ": **missed** (" in line, line
    for system in ("psmpi", "futures", "baseline"):
        assert f"| 3 | {system} |" in out, out
    assert "2/2 | 1 |" in out and "FAILED" not in proc.stderr

def simulator():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import mpi_sim
    finally:
        sys.path.remove(str(BENCHMARKS))
    return mpi_sim


def test_simulated_workers_run_every_pset_once_through_the_real_master(tmp_path):
    mpi_sim = simulator()
    result = mpi_sim.simulate(20, 0.05, rounds=3, directory=str(tmp_path))
    assert result.psets == mpi_sim.planned_psets(20, 0.05, 3, None) == 100
    rows = psmpi.read(tmp_path / "sim.h5", "sim")
    assert sorted(rows["_pset_index"]) == list(range(100))
    assert sorted(rows["y"]) == [i * 0.5 for i in range(100)]
    # 20 workers on 50-ms psets: rank 0 mostly asleep, no worker ever waits for it
    assert result.efficiency > 0.97 and result.utilisation < 0.5
    assert 0.9 < result.overall <= 1.0


def test_simulated_balance_takes_groups_back_and_keeps_list_order():
    # mpi_balance.py's 200 lognormal psets on 8 simulated workers, deterministic (fixed
    # costs per message). Sample 4 at these costs put two long psets (0.48 s, 0.41 s) one
    # behind the other on a worker: 0.85 of greedy list order without the take-back of a
    # group queued behind a straggler.
    mpi_sim = simulator()
    result = mpi_sim.balance()
    assert result.given >= 1 and result.of_ceiling >= 0.98, result
    assert mpi_sim.balance(cost=True).efficiency >= 0.97
    straggler = mpi_sim.balance(seed=4, mpi_seconds=(1e-3, 5e-5))
    assert straggler.given >= 1 and straggler.of_ceiling >= 0.95, straggler


def test_simulation_shows_a_saturated_rank_0():
    # 1,000 workers on 1-ms psets, one per group: a million groups/s asked of rank 0
    result = simulator().simulate(1000, 0.001, rounds=2, group_size=1)
    assert result.utilisation > 0.95 and result.efficiency < 0.2
    assert result.efficiency * 1000 / 0.001 * result.cost_per_group == pytest.approx(1, rel=0.2)


def test_a_saturated_master_hands_every_arrival_to_the_driver_so_groups_grow():
    # Yielding one outcome per pass, a master receiving hundreds per pass handed out all
    # 10,000 psets in groups of one before the grouper saw a duration.
    result = simulator().simulate(1000, 0.01, rounds=2)
    assert result.groups < result.psets / 2
    assert result.group_psets >= 10


def test_mpi_scale_simulate_quick_prints_the_table_and_the_frontier(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "mpi_scale.py"), "--simulate",
                           "--quick", "--seconds", "0.01,0.1", "--rounds", "2"],
                          check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    table = out.split("| workers | pset s |")[1].split("\n\n")[0]
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    assert [(r[0].strip("| "), r[1]) for r in rows] == [
        ("100", "0.01"), ("100", "0.1"), ("1,000", "0.01"), ("1,000", "0.1")]
    # 1,000 workers on 0.01-s psets one per group saturate rank 0: simulated, not modelled
    assert float(rows[2][6]) < 0.5 and rows[2][9].strip(" |") == "1.00"
    assert "| 0.01 | " in out.split("The frontier:")[1]
    assert os.listdir(tmp_path) == []

"""results.stats: wall/CPU per pset, psmpi.timer sections, per-worker usage, memory."""

import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import psmpi
from psmpi.backends.multiprocessing import crashed
from psmpi.results import PerfStats, Timings
from psmpi.watch.perf import PerfCollector
from psmpi.worker import task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")


def timed(pset):
    with psmpi.timer("sleep"):
        time.sleep(0.004)
    for _ in range(3):  # blocks of one name add up
        with psmpi.timer("thrice"):
            time.sleep(0.001)
    if pset["a"] % 2 == 0:
        with psmpi.timer("even only"):
            sum(range(1000))
    return {"y": pset["a"]}


def sleeper(pset):
    time.sleep(0.005)
    return {}


pytestmark = pytest.mark.usefixtures("serial_session")


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_timed_sections_come_back_merged_from_every_worker(backend):
    res = psmpi.map(timed, [{"a": a} for a in range(10)], out=None, backend=backend,
                    ncores=2, group_size=3)
    timers = res.stats.timers
    assert set(timers) == {"sleep", "thrice", "even only"}
    assert timers["sleep"].count == timers["thrice"].count == 10
    assert timers["even only"].count == 5
    assert timers["sleep"].wall.min() >= 0.004
    assert timers["thrice"].wall.min() >= 0.003  # three blocks of 1 ms summed per pset
    # sleeping costs microseconds of CPU: nearly all of it is not on a CPU
    sleep = timers["sleep"]
    assert np.all(sleep.off_cpu > 0.5 * sleep.wall) and np.all(sleep.off_cpu <= sleep.wall)
    # the worker call contains its sections
    assert res.stats.runtimes.min() >= 0.007
    if backend == "serial":
        assert res.stats.usage["pid"].tolist() == [os.getpid()]


def test_timer_name_must_be_a_string():
    res = psmpi.map(lambda p: psmpi.timer(3), [{"a": 1}], out=None)
    assert "psmpi.timer(name): name must be a non-empty str (got 3)" in \
        res.missing.df["_exception"][0]


def test_cpu_and_off_cpu_seconds_per_pset():
    res = psmpi.map(sleeper, [{"a": a} for a in range(6)], out=None, group_size=2)
    stats = res.stats
    assert np.isfinite(stats.cpu_times).all()  # 5 ms psets are all measured
    assert np.all(stats.off_cpu > 0.5 * stats.runtimes)
    assert set(stats.percentiles("off_cpu")) == {"p50", "p90", "p99", "max"}
    counts, edges = stats.histogram("wall", bins=4)
    assert counts.sum() == 6 and len(edges) == 5


def test_cpu_time_is_not_measured_for_trivial_psets():
    res = psmpi.map(lambda p: {}, [{"a": a} for a in range(2000)], out=None, group_size=200)
    measured = np.isfinite(res.stats.cpu_times).sum()
    assert 10 <= measured < 2000  # at least the first pset of each of the 10 groups


def test_usage_per_worker_process_adds_up_to_the_wall_clock():
    res = psmpi.map(sleeper, [{"a": a} for a in range(20)], out=None,
                    backend="multiprocessing", ncores=2, group_size=1)
    usage = res.stats.usage
    assert 1 <= len(usage) <= 2 and usage["psets"].sum() == 20 and usage["groups"].sum() == 20
    assert all(label == f"worker {rank}, pid {pid}" and rank in (1, 2)
               for label, rank, pid in zip(usage["worker"], usage["rank"], usage["pid"]))
    assert (usage["busy"] >= usage["psets"] * 0.005).all()
    # idle is what is left of the map's wall-clock time (never below 0)
    parts = usage[["busy", "psmpi", "waiting", "idle"]].sum(axis=1)
    assert (usage["idle"] >= 0).all() and (parts >= res.stats.wall_seconds - 1e-9).all()
    assert (usage["peak_rss"] > 0).all() and res.stats.peak_rss >= usage["peak_rss"].max()
    assert res.stats.driver_cpu_seconds >= 0 and res.stats.driver_peak_rss > 0


def test_wait_is_measured_between_groups_of_one_map():
    a, b = task.Task(sleeper, "a", "serial"), task.Task(sleeper, "b", "serial")
    first = a([(0, {"x": 1})])
    second = a([(1, {"x": 2})])
    other = b([(0, {"x": 1})])
    assert math.isnan(first.wait_seconds) and math.isnan(other.wait_seconds)
    assert second.wait_seconds >= 0
    assert first.group_seconds >= first.runtimes[0] >= 0.005
    assert first.peak_rss > 0 and len(first.cpu_times) == 1 and first.timers == {}


def test_crashed_groups_have_no_measurements_and_count_for_no_worker():
    collector = PerfCollector()
    collector.add(crashed([(0, {"a": 1}), (1, {"a": 2})]))
    stats = collector.stats("multiprocessing", 2, 1.0)
    assert stats.computed == 2 and np.isnan(stats.runtimes).all()
    assert np.isnan(stats.cpu_times).all() and len(stats.usage) == 0
    assert "2 psets in" in stats.report(3)


def test_timings_and_report_levels():
    stats = PerfStats("serial", 1, 10.0, 4, np.array([1.0, 2.0, 3.0, 4.0]),
                      np.array([1.0, 1.0, 1.0, np.nan]),
                      {"solve": Timings(np.array([0.5, 1.5]), np.array([0.5, 0.5]))})
    assert stats.off_cpu[:3].tolist() == [0.0, 1.0, 2.0] and np.isnan(stats.off_cpu[3])
    assert stats.percentiles("off_cpu")["max"] == 2.0
    assert stats.timers["solve"].total == 2.0
    assert stats.timers["solve"].percentiles("off_cpu")["max"] == 1.0
    with pytest.raises(ValueError, match="which must be one of wall, cpu, off_cpu"):
        stats.percentiles("gpu")
    one = stats.report(1)
    assert "\n" not in one and one.startswith("4 psets in 10 s on 1 serial workers")
    assert "50% not on CPU" in one  # of the three measured calls: 3 s of 6 s
    two = stats.report(2)
    assert "per pset (seconds)" in two and "histogram" in two and "timer (" not in two
    three = stats.report(3)
    assert "solve not on CPU" in three
    # the five-argument form of earlier versions still works
    old = PerfStats("serial", 1, 1.0, 2, np.array([0.1, 0.2]))
    assert np.isnan(old.cpu_times).all() and "2 psets in" in str(old)


def test_vmem_reports_this_process():
    memory = psmpi.utils.vmem()
    assert memory.peak_rss >= (memory.rss or 0) > 0
    assert memory.virtual >= memory.rss
    assert psmpi.utils.format_bytes(3 * 1024 ** 2) == "3 MiB"
    assert psmpi.utils.format_bytes(1536) == "1.5 KiB"
    assert psmpi.utils.format_bytes(None) == "n/a"


@pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None or not os.path.exists(MPIEXEC),
                    reason="needs mpi4py and the mpiexec of the mpich wheel")
def test_under_mpi_stats_are_merged_across_ranks(tmp_path):
    script = tmp_path / "study.py"
    script.write_text(textwrap.dedent("""
        import json, time
        import psmpi

        def worker(pset):
            with psmpi.timer("nap"):
                time.sleep(0.01)
            return {}

        psmpi.init()
        res = psmpi.map(worker, [{"a": a} for a in range(30)], out=None, verbose=0,
                        group_size=1)
        s = res.stats
        print(json.dumps({"ranks": sorted(s.usage["rank"].tolist()),
                          "psets": int(s.usage["psets"].sum()),
                          "naps": s.timers["nap"].count,
                          "rss": int(s.usage["peak_rss"].min()),
                          "report": s.report(3)}))
    """))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "PMIX_", "OMPI_", "HYDRA_"))}
    env["PYTHONPATH"] = ROOT
    done = subprocess.run([MPIEXEC, "-n", "3", sys.executable, str(script)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["ranks"] == [1, 2] and out["psets"] == 30 and out["naps"] == 30
    assert out["rss"] > 0
    assert "rank 1 " in out["report"] and "rank 2 " in out["report"]
    assert "nap not on CPU" in out["report"]

"""What the `psmpi` command does, as library functions without argparse: psmpi.status,
psmpi.tools.summary.failures, psmpi.merge, psmpi.tools.merging.remove_maps, psmpi.clean, and the map
observers `psmpi test` listens with."""

import json
import os
import shutil
import subprocess
import sys

import pytest

import psmpi
from psmpi import StoreError
from psmpi import map as bound_before  # bound before any observer: still observed
from psmpi.api import observing_maps
from psmpi.tools import summary
from psmpi.tools.cleaning import clean_targets, leftovers
from psmpi.tools.merging import remove_maps


def work(pset):
    if pset["a"] == 7 and not pset.get("fixed"):
        raise ValueError("seven")
    return {"y": pset["a"] * 2}


def fixed(pset):
    return {"y": pset["a"] * 2}


def survey(path, psets, worker=work, name="work"):
    return psmpi.map(worker, psets, name=name, out=str(path), backend="serial", verbose=0)


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=60)
    return proc.pid


def test_status_counts_done_failed_and_remaining(tmp_path):
    path = tmp_path / "s.h5"
    survey(path, [{"a": a} for a in range(5, 10)])
    (s,) = psmpi.status(str(path))
    assert isinstance(s, psmpi.MapSummary)
    assert (s.name, s.done, s.failed, s.crashed, s.total, s.remaining) == ("work", 4, 1, 0, 5, 0)
    assert s.first_start <= s.last_end
    assert s.as_dict()["remaining"] == 0
    survey(path, [{"a": a} for a in range(5, 10)], worker=fixed)  # the failure is resolved
    assert [(m.done, m.failed) for m in psmpi.status(str(path), ["work"])] == [(5, 0)]
    with pytest.raises(StoreError, match=r"has no map 'nope'; its maps are \['work'\]"):
        psmpi.status(str(path), ["nope"])


def test_failures_are_the_unresolved_ones_unless_every(tmp_path):
    path = tmp_path / "f.h5"
    survey(path, [{"a": 7}, {"a": 7, "b": 1}, {"a": 1}])
    found = summary.failures(str(path))
    assert list(found) == ["work"] and len(found["work"]) == 2
    common = summary.common_failures(found["work"])
    assert common.to_dict() == {"ValueError: seven": 2}
    assert len(summary.failures(str(path), kind="crashed")["work"]) == 0
    survey(path, [{"a": 7}, {"a": 7, "b": 1}, {"a": 1}], worker=fixed)
    assert len(summary.failures(str(path))["work"]) == 0
    assert len(summary.failures(str(path), every=True)["work"]) == 2


def test_merge_keeps_each_pset_once_and_adds_to_the_output(tmp_path):
    a, b, c, out = (str(tmp_path / n) for n in ("a.h5", "b.h5", "c.h5", "all.h5"))
    survey(a, [{"a": x} for x in range(10)])
    survey(b, [{"a": x} for x in range(5, 15)])
    assert psmpi.merge([a, b, a], out) == {"work": 15}  # 14 results, a=7's failure once
    merged = psmpi.read(out, "work")
    assert sorted(merged["a"]) == [x for x in range(15) if x != 7]
    assert merged["_pset_hash"].is_unique
    survey(c, [{"a": x} for x in range(12, 20)])
    psmpi.merge([c], out)
    assert sorted(psmpi.read(out, "work")["a"]) == [x for x in range(20) if x != 7]


def test_merge_keeps_identical_psets_as_often_as_one_input_has_them(tmp_path):
    three, two, out = (str(tmp_path / n) for n in ("three.h5", "two.h5", "m.h5"))
    survey(three, [{"a": 1}] * 3)
    survey(two, [{"a": 1}] * 2 + [{"a": 2}])
    psmpi.merge([two, three], out)
    assert sorted(psmpi.read(out)["a"]) == [1, 1, 1, 2]


def test_merge_drops_a_failure_another_input_resolved(tmp_path):
    failed, good, out = (str(tmp_path / n) for n in ("a.h5", "fixed.h5", "m.h5"))
    survey(failed, [{"a": a} for a in range(5, 9)])
    survey(good, [{"a": 9}, {"a": 7}], worker=fixed)
    psmpi.merge([failed, good], out)
    assert [(s.done, s.failed) for s in psmpi.status(out)] == [(5, 0)]


def test_merge_refuses_a_foreign_file_and_a_running_survey(tmp_path):
    a = str(tmp_path / "a.h5")
    survey(a, [{"a": 1}])
    notes = tmp_path / "notes.txt"
    notes.write_text("precious")
    with pytest.raises(StoreError):
        psmpi.merge([a], str(notes))
    assert notes.read_text() == "precious"
    busy = tmp_path / "busy.h5"
    shutil.copy(a, busy)
    (tmp_path / "busy.h5.lock").write_text(json.dumps(
        {"host": os.uname().nodename, "pid": os.getpid(), "started": "now"}))
    with pytest.raises(StoreError, match=f"pid {os.getpid()}"):
        psmpi.merge([a], str(busy))


def test_remove_maps_keeps_the_others(tmp_path):
    path = str(tmp_path / "two.h5")
    survey(path, [{"a": 1}, {"a": 2}], name="keep")
    survey(path, [{"a": 3}], name="drop")
    assert remove_maps(path, ["drop"]) == {"keep": 2}
    assert [s.name for s in psmpi.status(path)] == ["keep"]


def test_clean_removes_what_psmpi_made_and_nothing_else(tmp_path):
    path = tmp_path / "study.h5"
    survey(path, [{"a": 1}])
    pid = dead_pid()
    beside = [tmp_path / f"study.h5.{pid}.tmp", tmp_path / "study.h5.attempts"]
    for leftover in beside:
        leftover.write_text("left by psmpi")
    shutil.copy(path, tmp_path / "study.simulate.h5")
    backup = tmp_path / "study.h5.bak-20240501T123005Z"
    shutil.copy(path, backup)
    (tmp_path / "notes.txt").write_text("mine")
    assert leftovers(str(path)) == [str(beside[0])]
    assert str(backup) not in clean_targets(str(path))
    assert str(backup) in clean_targets(str(path), backups=True)
    removed = psmpi.clean(str(path))
    assert sorted(os.path.basename(f) for f in removed) == sorted(
        ["study.h5", "study.h5.attempts", f"study.h5.{pid}.tmp", "study.simulate.h5"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", backup.name]
    psmpi.clean(str(path), backups=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_clean_refuses_a_foreign_file_and_a_running_survey(tmp_path):
    foreign = tmp_path / "data.h5"
    foreign.write_text("not ours")
    with pytest.raises(StoreError):
        psmpi.clean(str(foreign))
    assert foreign.exists()
    path = tmp_path / "busy.h5"
    survey(path, [{"a": 1}])
    (tmp_path / "busy.h5.lock").write_text(json.dumps(
        {"host": os.uname().nodename, "pid": os.getpid(), "started": "now"}))
    with pytest.raises(StoreError, match="being written|holds|lock"):
        psmpi.clean(str(path))
    assert path.exists()


def test_observers_see_every_map_call_and_its_error():
    seen = []
    with observing_maps(lambda name, results, error: seen.append((name, results, error))):
        res = bound_before(fixed, [{"a": 2}], name="ok", out=None, backend="serial", verbose=0)
        with pytest.raises(psmpi.PsetError):
            psmpi.map(fixed, "not psets", name="bad", out=None, backend="serial", verbose=0)
    assert [(name, error is None) for name, _, error in seen] == [("ok", True), ("bad", False)]
    assert seen[0][1] is res and seen[1][1] is None
    psmpi.map(fixed, [{"a": 2}], name="unseen", out=None, backend="serial", verbose=0)
    assert len(seen) == 2, "an observer is gone after its with block"

"""prep_batch: pset directories and submit scripts from templates, checked against golden files.

tests/golden/templates/templates/ is the input; expected-first/ is calc/ after the first
prep_batch call and expected-extended/ after a second call with one more value of a.
"""

import os
import pathlib
import shutil
import stat
import subprocess

import pytest

import psmpi
from psmpi import ConfigError, PsetError, prep_batch
from psmpi.params import pset_hash

GOLDEN = pathlib.Path(__file__).parent / "golden" / "templates"
TEMPLATES = GOLDEN / "templates"
FIRST = psmpi.params.product({"a": [1, 2]}, {"x": 0.5}, {"name": "x y"})
EXTENDED = psmpi.params.product({"a": [1, 2, 3]}, {"x": 0.5}, {"name": "x y"})


def tree(root):
    """{relative path: (bytes, executable)} of every file under root."""
    out = {}
    for path in sorted(pathlib.Path(root).rglob("*")):
        if path.is_file():
            out[path.relative_to(root).as_posix()] = (
                path.read_bytes(), bool(path.stat().st_mode & stat.S_IXUSR))
    return out


def assert_same_tree(got, expected):
    got, expected = tree(got), tree(expected)
    assert sorted(got) == sorted(expected)
    for rel in expected:
        assert got[rel] == expected[rel], rel


def test_first_call_matches_golden_files(tmp_path):
    df = prep_batch(FIRST, TEMPLATES, tmp_path / "calc")
    assert_same_tree(tmp_path / "calc", GOLDEN / "expected-first")
    assert df["_new"].tolist() == [True, True]
    assert df["_pset_hash"].tolist() == [pset_hash(p) for p in FIRST]
    assert df["_pset_dir"].tolist() == [str(tmp_path / "calc" / pset_hash(p)) for p in FIRST]
    assert df[["a", "x", "name"]].to_dict("records") == FIRST.to_list()


def test_extending_adds_directories_and_comments_old_submit_lines(tmp_path):
    calc = tmp_path / "calc"
    prep_batch(FIRST, TEMPLATES, calc)
    (calc / pset_hash({"a": 1, "x": 0.5, "name": "x y"}) / "output").write_text("kept")
    df = prep_batch(EXTENDED, TEMPLATES, calc)
    (calc / pset_hash({"a": 1, "x": 0.5, "name": "x y"}) / "output").unlink()
    assert_same_tree(calc, GOLDEN / "expected-extended")
    assert df["_new"].tolist() == [False, False, True]


def test_same_psets_again_writes_nothing_new(tmp_path):
    calc = tmp_path / "calc"
    prep_batch(EXTENDED, TEMPLATES, calc)
    df = prep_batch(EXTENDED, TEMPLATES, calc)
    assert not df["_new"].any()
    lines = (calc / "run_local.sh").read_text().splitlines()
    submits = [line for line in lines if "jobscript_local" in line and "(cd" in line]
    assert len(submits) == 3 and all(line.startswith("# (cd ") for line in submits)


def test_local_run_script_runs_every_new_jobscript(tmp_path):
    calc = tmp_path / "calc"
    prep_batch(FIRST, TEMPLATES, calc, machines=["local"])
    proc = subprocess.run(["sh", str(calc / "run_local.sh")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    outs = sorted((calc / pset_hash(p) / "out.txt").read_text() for p in FIRST)
    assert outs == ["local 1\n", "local 2\n"]
    assert not list(calc.glob("*/jobscript_cluster"))
    assert not (calc / "run_cluster.sh").exists()


def copy_templates(tmp_path):
    dst = tmp_path / "templates"
    shutil.copytree(TEMPLATES, dst)
    return dst


def test_missing_key_lists_template_and_psets_and_writes_nothing(tmp_path):
    with pytest.raises(PsetError, match=r"input.txt uses \$x, which pset 0 .* pset 1"):
        prep_batch([{"a": 1, "name": "n"}, {"a": 2, "name": "n"}], TEMPLATES, tmp_path / "calc")
    assert not (tmp_path / "calc").exists()


def test_bare_dollar_is_refused_with_line_and_fix(tmp_path):
    templates = copy_templates(tmp_path)
    (templates / "calc" / "run.sh").write_text("#!/bin/sh\necho $a\necho $(hostname)\n")
    with pytest.raises(ConfigError, match=r"run.sh, line 3: '\$\(hostname\)'.*write \$\$"):
        prep_batch(FIRST, templates, tmp_path / "calc")


def test_unknown_underscore_placeholder_is_refused(tmp_path):
    templates = copy_templates(tmp_path)
    (templates / "calc" / "x.txt").write_text("$_pset_id\n")
    with pytest.raises(ConfigError, match=r"\$_pset_id: the placeholders psmpi fills in"):
        prep_batch(FIRST, templates, tmp_path / "calc")


def test_identical_psets_are_refused(tmp_path):
    with pytest.raises(PsetError, match="psets 0 and 2 are identical.*seed"):
        prep_batch([{"a": 1, "x": 0, "name": "n"}, {"a": 2, "x": 0, "name": "n"},
                    {"a": 1, "x": 0, "name": "n"}], TEMPLATES, tmp_path / "calc")


def test_invalid_pset_is_refused(tmp_path):
    with pytest.raises(PsetError, match="pset 0: key 'a/b'"):
        prep_batch([{"a/b": 1}], TEMPLATES, tmp_path / "calc")


@pytest.mark.parametrize("info, message", [
    ("subcmd: [1, 2]\n", "set subcmd"),
    ("- sbatch\n", "must be a YAML mapping"),
    ("subcmd: sbatch\nsubcommand: x\n", r"unknown key\(s\) \['subcommand'\]"),
    ("subcmd: 'unclosed\n", "not valid YAML"),
])
def test_bad_info_yaml_is_refused(tmp_path, info, message):
    templates = copy_templates(tmp_path)
    (templates / "machines" / "local" / "info.yaml").write_text(info)
    with pytest.raises(ConfigError, match=message):
        prep_batch(FIRST, templates, tmp_path / "calc")


def test_machine_without_jobscript_is_refused(tmp_path):
    templates = copy_templates(tmp_path)
    (templates / "machines" / "local" / "jobscript").unlink()
    with pytest.raises(ConfigError, match="machine 'local': .*jobscript is missing"):
        prep_batch(FIRST, templates, tmp_path / "calc")


def test_unknown_machine_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"machines=\['laptop'\] not found.*\['cluster', 'local'\]"):
        prep_batch(FIRST, TEMPLATES, tmp_path / "calc", machines=["laptop"])


def test_empty_templates_dir_is_refused(tmp_path):
    (tmp_path / "templates").mkdir()
    with pytest.raises(ConfigError, match="neither calc/ nor machines/"):
        prep_batch(FIRST, tmp_path / "templates", tmp_path / "calc")


def test_calc_templates_only_write_no_run_script(tmp_path):
    templates = tmp_path / "templates"
    (templates / "calc").mkdir(parents=True)
    (templates / "calc" / "in.txt").write_text("a=$a idx=$_pset_index\n")
    prep_batch(FIRST, templates, tmp_path / "calc")
    assert sorted(os.listdir(tmp_path / "calc")) == sorted(pset_hash(p) for p in FIRST)
    assert (tmp_path / "calc" / pset_hash(FIRST.to_list()[1]) / "in.txt").read_text() == "a=2 idx=1\n"


def test_numpy_values_and_dataframe_psets(tmp_path):
    import numpy as np
    import pandas as pd

    templates = tmp_path / "templates"
    (templates / "calc").mkdir(parents=True)
    (templates / "calc" / "in.txt").write_text("$a $b $c\n")
    df = pd.DataFrame({"a": np.array([1, 2], dtype=np.int32), "b": [0.25, float("nan")],
                       "c": [True, False], "_pset_hash": ["ignored", "ignored"]})
    out = prep_batch(df, templates, tmp_path / "calc")
    texts = [pathlib.Path(d, "in.txt").read_text() for d in out["_pset_dir"]]
    assert texts == ["1 0.25 True\n", "2 nan False\n"]

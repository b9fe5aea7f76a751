"""The documentation: README.md and docs/ build without a warning, and every Python example
in them runs.

A page's ```python blocks run in order as one script, in an empty directory, so a later
block may use what an earlier one made (a results file, a function). Blocks that are not
Python to run are fenced as what they are (```bash, ```text, ```console).
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md"] + sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_of(page: pathlib.Path) -> str:
    return "\n".join(PYTHON_BLOCK.findall(page.read_text()))


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSMPI_")}
    git = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
           for what, value in (("NAME", "psmpi docs"), ("EMAIL", "docs@example.org"))}
    return dict(env, **git, PSMPI_VERBOSE="0", PYTHONPATH=str(ROOT))


@pytest.mark.parametrize("page", [p for p in PAGES if python_of(p)],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_python_example_of_a_page_runs(page, tmp_path):
    script = tmp_path / "page.py"
    script.write_text(python_of(page))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=240, env=clean_env())
    assert proc.returncode == 0, f"{page}:\n{proc.stdout}\n{proc.stderr}"


def test_the_examples_are_found():
    assert python_of(ROOT / "README.md").count("psmpi.map(") >= 1
    assert len([p for p in PAGES if python_of(p)]) >= 8


@pytest.mark.timeout(600)
def test_the_documentation_builds_without_a_warning(tmp_path):
    pytest.importorskip("sphinx", reason="pip install -e '.[docs]' (the test extra has it)")
    out = tmp_path / "html"
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-E",
                           "-b", "html", str(DOCS), str(out)], capture_output=True, text=True,
                          timeout=540, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = (out / "reference" / "cli-help.html").read_text()
    assert "psmpi status" in page and "psmpi merge" in page  # generated from the parsers
    assert "psmpi.map" in (out / "reference" / "api.html").read_text()
    shutil.rmtree(out)


def test_the_file_layout_reference_names_every_on_disk_name():
    from psmpi import layout

    page = (DOCS / "reference" / "file-layout.md").read_text()
    names = [value for name, value in vars(layout).items()
             if name.isupper() and isinstance(value, str) and "{" not in value
             and "(" not in value]
    names += list(layout.LEGACY_NAMES)
    assert len(names) > 30
    missing = [n for n in names if n not in page]
    assert not missing, f"docs/reference/file-layout.md does not name {missing}"

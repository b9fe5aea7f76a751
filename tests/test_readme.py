"""README's first commands are what CI runs, so they stay true."""

import pathlib
import re

ROOT = pathlib.Path(__file__).parent.parent


def readme_commands():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in first_block.splitlines() if line and not line.startswith("#")]


def test_readme_starts_with_install_and_run_and_install_and_test():
    example, tests = readme_commands()
    assert "pip install" in example and "examples/" in example
    assert "pip install" in tests and "pytest" in tests


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci


def readme_study():
    text = (ROOT / "README.md").read_text()
    section = text.split("## A study", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_study_runs_with_python_and_under_mpiexec(tmp_path):
    import subprocess
    import sys

    (tmp_path / "study.py").write_text(readme_study())
    mpiexec = str(pathlib.Path(sys.executable).parent / "mpiexec")
    for command in ([sys.executable, "study.py"], [mpiexec, "-n", "3", sys.executable, "study.py"]):
        proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "3 20 60" in proc.stdout  # a=3, b=20, y=60


def test_the_executor_example_of_the_docs_runs_with_python_and_under_mpiexec(tmp_path):
    import subprocess
    import sys

    section = (ROOT / "docs" / "guide" / "adaptive.md").read_text()
    (tmp_path / "adaptive.py").write_text(re.search(r"```python\n(.*?)```", section, re.S).group(1))
    mpiexec = str(pathlib.Path(sys.executable).parent / "mpiexec")
    for command in ([sys.executable, "adaptive.py"], [sys.executable, "adaptive.py"],
                    [mpiexec, "-n", "3", sys.executable, "adaptive.py"]):
        proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "best x 0.3008" in proc.stdout, proc.stdout  # the same answer, resumed or not
    assert "24 resumed" in proc.stderr  # the second and third runs replay the file


def test_readme_shards_example_runs(tmp_path):
    import os
    import subprocess
    import sys

    section = (ROOT / "docs" / "guide" / "shards.md").read_text()
    (tmp_path / "shards.py").write_text(re.search(r"```python\n(.*?)```", section, re.S)[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PSMPI_", "SLURM_"))}
    proc = subprocess.run([sys.executable, "shards.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "30 psets merged" in proc.stdout
    assert len(list(tmp_path.glob("study.shard-*-of-004.h5"))) == 4

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

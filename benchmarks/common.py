"""Small helpers shared by the benchmark scripts: statistics, markdown, machine facts."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
import statistics
import sys
import time

PACKAGES = ("psmpi", "h5py", "numpy", "pandas", "paramsurvey", "psweep", "schwimmbad", "tables")


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_line() -> str:
    """One line: cores, Python, platform and the versions of the packages involved."""
    versions = ", ".join(f"{p} {version(p)}" for p in PACKAGES)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"nproc {cores}, Python {platform.python_version()}, {platform.system()} "
            f"{platform.machine()}; {versions}")


def header(title: str) -> None:
    """The markdown heading of a report: what, when, where, and the exact command."""
    print(f"## {title}\n")
    print(f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"- machine: {machine_line()}")
    print(f"- command: `{shlex.join([sys.executable] + sys.argv)}` (cwd {os.getcwd()})")


def spread(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def fmt(x: float) -> str:
    """A number with 3 significant digits, thousands separated."""
    if x >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def say(*args) -> None:
    """Progress for the person watching, on stderr, so stdout stays the markdown report."""
    print(*args, file=sys.stderr, flush=True)

"""Batch jobs from template files: one directory per pset and a script that submits them.

Layout read by :func:`prep_batch`::

    templates/
      calc/                     files copied into every pset directory, placeholders filled
      machines/<machine>/
        jobscript               becomes calc/<pset_hash>/jobscript_<machine>
        info.yaml               subcmd: sbatch      (the command that submits a jobscript)

Layout written::

    calc/<pset_hash>/...        one directory per pset, named by psmpi.params.pset_hash
    calc/run_<machine>.sh       one submit line per new directory; earlier lines commented

Placeholders are :class:`string.Template`'s: ``$name`` or ``${name}`` is replaced by the
pset's value of ``name``, ``$$`` is a literal ``$`` (so a shell's ``$HOME`` is written
``$$HOME`` in a template). Braces are left alone, which keeps shell, JSON and C templates
readable.
"""

from __future__ import annotations

import os
import re
import shutil
import string
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import layout, params
from ..errors import ConfigError, PsetError, StoreError

if TYPE_CHECKING:
    import pandas as pd

# Placeholders psmpi fills in besides the pset's own keys.
RESERVED = (layout.PSET_HASH, layout.PSET_INDEX)
MACHINE_RESERVED = ("_machine",)
INFO_KEYS = ("subcmd",)
_MACHINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_SUBMIT_LINE = re.compile(r"^(?:# )?(\(cd [0-9a-f]{32} && .*)$")


class _TemplateFile:
    """One template file: its text (None for a binary file, copied as is) and placeholders."""

    def __init__(self, path: Path, rel: str):
        self.path, self.rel = path, rel
        try:
            self.text: str | None = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            self.text, self.names = None, set()
            return
        self.template = string.Template(self.text)
        self.names = self._placeholders()

    def _placeholders(self) -> set[str]:
        names = set()
        for m in self.template.pattern.finditer(self.text):
            if m.group("invalid") is not None:
                line = self.text.count("\n", 0, m.start()) + 1
                snippet = self.text[m.start():m.start() + 12].split("\n")[0]
                raise ConfigError(f"template {self.path}, line {line}: '{snippet}' is not a "
                                  "placeholder; write $$ for a literal $ (e.g. $$(hostname), "
                                  "$$HOME), and $name or ${name} for a pset value")
            name = m.group("named") or m.group("braced")
            if name:
                names.add(name)
        return names

    def render(self, values: dict) -> bytes:
        if self.text is None:
            return self.path.read_bytes()
        return self.template.substitute(values).encode("utf-8")

    def write(self, dst: Path, values: dict) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(self.render(values))
        shutil.copymode(self.path, dst)  # a template that is executable stays executable


class _Machine:
    def __init__(self, directory: Path):
        self.name = directory.name
        if not _MACHINE_NAME.match(self.name):
            raise ConfigError(f"machine directory {directory}: use letters, digits, '_', '.' "
                              "and '-' in machine names (they become file names)")
        jobscript, info = directory / "jobscript", directory / "info.yaml"
        for need in (jobscript, info):
            if not need.is_file():
                raise ConfigError(f"machine {self.name!r}: {need} is missing; a machine "
                                  "directory holds a jobscript and an info.yaml with subcmd")
        self.jobscript = _TemplateFile(jobscript, f"jobscript_{self.name}")
        if self.jobscript.text is None:
            raise ConfigError(f"{jobscript} is not UTF-8 text")
        self.subcmd = _read_info(info)["subcmd"]


def _read_info(path: Path) -> dict:
    try:
        import yaml
    except ImportError:
        raise ConfigError(f"reading {path} needs PyYAML: pip install pyyaml") from None
    try:
        info = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(info, dict):
        raise ConfigError(f"{path} must be a YAML mapping such as 'subcmd: sbatch', "
                          f"not {type(info).__name__}")
    unknown = sorted(map(str, set(info) - set(INFO_KEYS)))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; the keys are {list(INFO_KEYS)}")
    if not isinstance(info.get("subcmd"), str) or not info["subcmd"].strip():
        raise ConfigError(f"{path}: set subcmd to the command that submits a jobscript, "
                          "e.g. 'subcmd: sbatch' (or 'subcmd: sh' to run it here)")
    return info


def _read_templates(templates_dir: Path, machines: Iterable[str] | None
                    ) -> tuple[list[_TemplateFile], list[_Machine]]:
    calc, machines_dir = templates_dir / "calc", templates_dir / "machines"
    if not calc.is_dir() and not machines_dir.is_dir():
        raise ConfigError(f"{templates_dir} has neither calc/ nor machines/: put the files "
                          "for each pset directory in calc/ and one directory per machine, "
                          "with jobscript and info.yaml, in machines/")
    files = []
    if calc.is_dir():
        for path in sorted(p for p in calc.rglob("*") if p.is_file()):
            files.append(_TemplateFile(path, path.relative_to(calc).as_posix()))
    available = sorted(p.name for p in machines_dir.iterdir() if p.is_dir()) \
        if machines_dir.is_dir() else []
    chosen = available if machines is None else list(machines)
    unknown = [m for m in chosen if m not in available]
    if unknown:
        raise ConfigError(f"machines={unknown} not found in {machines_dir}; "
                          f"the machines there are {available}")
    found = [_Machine(machines_dir / m) for m in chosen]
    clash = [f.rel for f in files if f.rel in {m.jobscript.rel for m in found}]
    if clash:
        raise ConfigError(f"calc templates {clash} would be overwritten by a machine's "
                          "jobscript: rename them")
    return files, found


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _check_psets(psets: list[dict], files: list[_TemplateFile], machines: list[_Machine]) -> list[str]:
    """The psets' hashes; every problem with them raised at once as a PsetError."""
    problems = [f"pset {i}: {msg}" for i, p in enumerate(psets) for msg in params.pset_problems(p)]
    if problems:
        raise PsetError("prep_batch: " + "; ".join(problems[:10]))
    hashes = [params.pset_hash(p) for p in psets]
    first: dict[str, int] = {}
    for i, h in enumerate(hashes):
        if h in first:
            problems.append(f"psets {first[h]} and {i} are identical")
        first.setdefault(h, i)
    if problems:
        raise PsetError("prep_batch: " + "; ".join(problems[:10]) + "; each pset gets a "
                        "directory named by its hash, so make repeats differ (e.g. a seed key)")
    wanted = [(f, set(RESERVED)) for f in files] + \
             [(m.jobscript, set(RESERVED + MACHINE_RESERVED)) for m in machines]
    for tfile, reserved in wanted:
        unknown = sorted(n for n in tfile.names if n.startswith("_") and n not in reserved)
        if unknown:
            raise ConfigError(f"template {tfile.path} uses ${unknown[0]}: the placeholders psmpi "
                              f"fills in are {sorted(reserved)}; write $${unknown[0]} for a literal")
        for i, p in enumerate(psets):
            lacking = sorted(n for n in tfile.names if not n.startswith("_") and n not in p)
            if lacking:
                problems.append(f"template {tfile.path} uses ${lacking[0]}, which pset {i} "
                                f"{p} lacks")
    if problems:
        raise PsetError("prep_batch: " + "; ".join(problems[:10]) + "; add the key to the "
                        "psets, or write $$ for a literal $")
    return hashes


def _write_pset_dir(calc: Path, digest: str, values: dict, files: list[_TemplateFile],
                    machines: list[_Machine]) -> None:
    """Write one pset's directory under a temporary name, then rename: it exists whole or not."""
    tmp = calc / f".{digest}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed process with this pid
    try:
        for f in files:
            f.write(tmp / f.rel, values)
        for m in machines:
            m.jobscript.write(tmp / m.jobscript.rel, dict(values, _machine=m.name))
        tmp.mkdir(parents=True, exist_ok=True)  # no calc templates and no machines: still a dir
        os.rename(tmp, calc / digest)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        exc.filename = exc.filename or str(calc / digest)  # a failed write names no file
        raise


def _pset_note(index: int, pset: dict) -> str:
    values = ", ".join(f"{k}={v!r}" for k, v in pset.items()).replace("\n", " ")
    return f"pset {index}: {values}"


def _write_run_script(calc: Path, machine: _Machine, new: list[tuple[int, str, dict]]) -> Path:
    script = calc / f"run_{machine.name}.sh"
    old = []
    if script.exists():
        for line in script.read_text(encoding="utf-8").splitlines():
            m = _SUBMIT_LINE.match(line)
            if m:
                old.append("# " + m.group(1))
    lines = ["#!/bin/sh",
             f"# Written by psmpi.prep_batch: submits each pset directory's jobscript_{machine.name}",
             f"# with `{machine.subcmd}`. Lines of earlier prep_batch calls are commented out.",
             'cd "$(dirname "$0")" || exit 1',
             *dict.fromkeys(old)]  # a directory deleted and written again has two old lines
    lines += [f"(cd {digest} && {machine.subcmd} jobscript_{machine.name})  # "
              f"{_pset_note(i, p)}" for i, digest, p in new]
    tmp = script.with_name(f".{script.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp.chmod(0o755)
        os.replace(tmp, script)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        exc.filename = exc.filename or str(script)
        raise
    return script


def prep_batch(psets: Any, templates_dir: str | os.PathLike = "templates",
               calc_dir: str | os.PathLike = "calc", machines: Iterable[str] | None = None
               ) -> pd.DataFrame:
    """Write one directory per pset from template files, and a submit script per machine.

    For each pset without a directory yet, ``calc_dir/<pset_hash>/`` is written: every
    file of ``templates_dir/calc/`` (subdirectories kept) and, for every machine in
    ``templates_dir/machines/``, its ``jobscript`` as ``jobscript_<machine>``, with the
    placeholders filled in. Directories that exist are never touched, so running it again
    with more psets extends the study: ``calc_dir/run_<machine>.sh`` keeps the submit
    lines of earlier calls, commented out, and submits only the new directories.

    Placeholders (:class:`string.Template`): ``$key`` or ``${key}`` is the pset's value
    (``str()`` of it: ``0.5``, ``True``, ``None``, ``nan``), ``$_pset_hash`` the directory
    name, ``$_pset_index`` the position in ``psets``, ``$_machine`` the machine (in
    jobscripts), and ``$$`` a literal ``$``. Everything is checked before anything is
    written. Files that are not UTF-8 text are copied unchanged.

    Parameters
    ----------
    psets : list of dict, Space or DataFrame
        Anything :func:`psmpi.params.as_space` accepts. Psets must differ (a directory
        per pset): give repeats a distinguishing key such as ``seed``.
    templates_dir : str or os.PathLike
        Holds ``calc/`` and/or ``machines/<machine>/{jobscript,info.yaml}``. ``info.yaml``
        has one key, ``subcmd``: the command that submits a jobscript (``sbatch``, ``sh``).
    calc_dir : str or os.PathLike
        Where the pset directories and ``run_<machine>.sh`` go; created if needed.
    machines : iterable of str, optional
        Only these machines (default: every directory in ``templates_dir/machines``).

    Returns
    -------
    pandas.DataFrame
        One row per pset, in order: the pset's columns, ``_pset_hash``, ``_pset_dir``
        (``calc_dir/<pset_hash>``) and ``_new`` (True if written by this call).

    Raises
    ------
    ConfigError
        For a missing or malformed template, ``info.yaml`` or machine name.
    PsetError
        For invalid or identical psets, or psets lacking a key a template uses; all
        offenders are listed.
    """
    import pandas as pd
    space = params.as_space(psets)
    plist = list(space)
    files, found = _read_templates(Path(templates_dir), machines)
    hashes = _check_psets(plist, files, found)
    calc = Path(calc_dir)
    calc.mkdir(parents=True, exist_ok=True)
    new: list[tuple[int, str, dict]] = []
    try:
        for i, (p, digest) in enumerate(zip(plist, hashes)):
            if not (calc / digest).exists():
                values = {k: str(_plain(v)) for k, v in p.items()}
                values.update(_pset_hash=digest, _pset_index=str(i))
                _write_pset_dir(calc, digest, values, files, found)
                new.append((i, digest, p))
        for machine in found:
            _write_run_script(calc, machine, new)
    except OSError as exc:
        # Directories without submit lines would be skipped by the next call: none stay.
        for _, digest, _ in new:
            shutil.rmtree(calc / digest, ignore_errors=True)
        raise StoreError(f"prep_batch cannot write {exc.filename or calc} "
                         f"({exc.strerror or exc}); the {len(new)} directories it wrote are "
                         f"removed again. Free disk space (or fix the file system) and call "
                         f"prep_batch again") from exc
    written = {digest for _, digest, _ in new}
    df = pd.DataFrame(plist, columns=space.keys)
    df[layout.PSET_HASH] = hashes
    df["_pset_dir"] = [os.path.join(os.fspath(calc_dir), h) for h in hashes]
    df["_new"] = [h in written for h in hashes]
    return df

"""``psmpi test``: run a study script in this process with one pset per map and nothing
written; PASS or FAIL per map. The maps are observed through :func:`psmpi.api.observing_maps`,
so a study that imported ``map`` by name is tested too."""

from __future__ import annotations

import argparse
import dataclasses
import os
import runpy
import sys
import traceback
from typing import Any

from .. import layout
from ..api import observing_maps
from .common import EXIT_BAD, EXIT_OK, CliError, add_command, plural, pset_text


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "test", "run one pset of each map of a study, in this process",
                    "Run the study script in this process with PSMPI_LIMIT=1 PSMPI_BACKEND=serial "
                    "PSMPI_OUT=none PSMPI_VERBOSE=3 (and PSMPI_LOGFILE=0 PSMPI_GIT=0 "
                    "PSMPI_BACKUP=0 PSMPI_SIMULATE=0 PSMPI_CARBON_SERVER=none): each map computes "
                    "one pset, nothing is written, tracebacks are printed, breakpoints in the "
                    "worker work. Prints PASS or FAIL per map; exit status 1 if a map failed or "
                    "the script raised.")
    p.add_argument("script", metavar="STUDY.py")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="arguments for the script")
    p.add_argument("--limit", type=int, default=1, metavar="N", help="psets per map (default 1)")
    p.add_argument("--backend", default="serial", choices=("serial", "multiprocessing"),
                   help="default serial: the worker runs in this process")
    p.set_defaults(run=run)


# A test run writes nothing anywhere: no results file, log, backup, git commit or metrics.
TEST_ENV = {"PSMPI_OUT": "none", "PSMPI_VERBOSE": "3", "PSMPI_LOGFILE": "0", "PSMPI_GIT": "0",
            "PSMPI_BACKUP": "0", "PSMPI_SIMULATE": "0", "PSMPI_CARBON_SERVER": "none"}


@dataclasses.dataclass
class _MapCall:
    name: str
    results: Any = None       # MapResults
    error: str | None = None  # the traceback when map() itself raised


def _record_maps(calls: list[_MapCall]) -> Any:
    """While active, each ``psmpi.map`` call's MapResults (or its error) is recorded in ``calls``."""
    def record(name: str, results: Any, error: BaseException | None) -> None:
        text = None if error is None else "".join(traceback.format_exception(error))
        calls.append(_MapCall(name, results, text))

    return observing_maps(record)


def _run_script(script: str, argv: list[str]) -> str | None:
    """Run ``script`` as ``__main__`` in this process; the traceback if it failed, else None."""
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [script, *argv]
    sys.path.insert(0, os.path.dirname(script))
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (None, 0):
            return f"the script exited with status {exc.code}"
    except KeyboardInterrupt:
        raise
    except BaseException:
        return traceback.format_exc()
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return None


def _judge(call: _MapCall) -> tuple[str, list[str]]:
    """("PASS" | "FAIL" | "EMPTY", lines explaining) for one map() call."""
    if call.error is not None:
        return "FAIL", ["map() raised before computing:", *call.error.rstrip().splitlines()]
    res = call.results
    missing = res.missing.df
    if len(missing):
        lines = []
        for _, row in missing.iterrows():
            lines.append(f"pset {int(row[layout.PSET_INDEX])} {pset_text(row)}: "
                         f"{row[layout.KIND]}: {row[layout.EXCEPTION]}")
            lines += str(row.get(layout.TRACEBACK) or "").rstrip().splitlines()
        return "FAIL", lines
    if not len(res.results):
        return "EMPTY", ["no psets: nothing was tested"]
    text = repr(next(res.iterdicts()))
    return "PASS", [f"{plural(res.stats.computed, 'pset')} computed in {res.stats.wall_seconds:.2f} s: "
                    f"{text if len(text) <= 300 else text[:297] + '...'}"]


def run(args: argparse.Namespace) -> int:
    script = os.path.abspath(args.script)
    if not os.path.isfile(script):
        raise CliError(f"{args.script} does not exist; give the study script, e.g. psmpi test study.py")
    env = {**TEST_ENV, "PSMPI_LIMIT": str(args.limit), "PSMPI_BACKEND": args.backend}
    os.environ.update(env)
    print("psmpi test: " + " ".join(f"{k}={v}" for k, v in sorted(env.items()))
          + f" python {args.script}", file=sys.stderr, flush=True)
    calls: list[_MapCall] = []
    with _record_maps(calls):
        script_error = _run_script(script, args.args)
    sys.stdout.flush()
    failed = 0
    print(f"\npsmpi test {args.script}:")
    for call in calls:
        verdict, lines = _judge(call)
        failed += verdict == "FAIL"
        print(f"{verdict:5} {call.name}: {lines[0]}")
        for line in lines[1:]:
            print("      " + line)
    if script_error is not None and not any(c.error for c in calls):
        failed += 1
        print("FAIL  the script itself:")
        for line in script_error.rstrip().splitlines():
            print("      " + line)
    if not calls:
        print("FAIL  the script made no psmpi.map() call: nothing was tested")
        return EXIT_BAD
    passed = sum(_judge(c)[0] != "FAIL" for c in calls)
    print(f"{passed} of {len(calls)} maps passed"
          + ("; the script itself failed" if script_error is not None else ""))
    return EXIT_BAD if failed else EXIT_OK

"""``psmpi clean``: delete a results file (or maps of it) and what psmpi made beside it,
after asking (psmpi.clean, psmpi.tools.merging.remove_maps)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .. import layout
from ..tools.cleaning import clean_targets, remove_files
from ..tools.merging import check_psmpi_file, remove_maps
from ..tools.summary import status
from .common import EXIT_BAD, EXIT_OK, CliError, add_command, confirm, plural


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "clean",
                    "delete a results file (or maps of it) and what psmpi made beside it",
                    "Delete FILE and what psmpi made beside it: its attempt counts FILE.attempts, "
                    "the copy a simulate=True run made (FILE without .h5 plus .simulate.h5), "
                    "temporary files of dead psmpi processes, and the lock if the survey that "
                    "wrote it is dead. Backups (FILE.bak-*) only with --backups; calc directories "
                    "never. With --map, remove only those maps (the file is rewritten without "
                    "them). Refuses a file a running survey holds. Asks first, unless --yes.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-m", "--map", action="append", metavar="NAME",
                   help="remove only this map (repeatable)")
    p.add_argument("--backups", action="store_true", help="also remove the backups FILE.bak-*")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")
    p.add_argument("-n", "--dry-run", action="store_true",
                   help="say what would be removed, remove nothing")
    p.set_defaults(run=run)


def _remove_maps(path: str, names: list[str], yes: bool, dry_run: bool) -> int:
    done = sum(s.done for s in status(path, names))
    what = (f"map{'s' * (len(names) > 1)} {', '.join(map(repr, names))} "
            f"({plural(done, 'result')}) from {path}")
    if dry_run:
        print(f"would remove {what}")
        return EXIT_OK
    if not confirm(f"remove {what}", yes):
        print("nothing removed")
        return EXIT_BAD
    remove_maps(path, names)
    print(f"psmpi: removed {what}", file=sys.stderr)
    return EXIT_OK


def _described(path: str, targets: list[str], lock: list[str]) -> list[str]:
    described = []
    for target in targets:
        if target == path:
            summaries = status(path)
            described.append(f"{path} ({plural(len(summaries), 'map')}, "
                             f"{plural(sum(s.done for s in summaries), 'result')})")
        else:
            described.append(target)
    return described + ([f"{lock[0]} (if its process is dead)"] if lock else [])


def run(args: argparse.Namespace) -> int:
    path = args.file
    if os.path.exists(path):
        check_psmpi_file(path)  # never delete a file psmpi did not write
    elif args.map:
        raise CliError(f"{path} does not exist")
    if args.map:
        return _remove_maps(path, args.map, args.yes, args.dry_run)
    targets = clean_targets(path, args.backups)
    lock = [layout.lock_path(path)] if os.path.exists(layout.lock_path(path)) else []
    if not targets and not lock:
        raise CliError(f"{path} does not exist; nothing to clean")
    described = _described(path, targets, lock)
    what = ", ".join(described)
    if args.dry_run:
        print("would remove:\n" + "\n".join("  " + d for d in described))
        return EXIT_OK
    if not confirm(f"remove {what}", args.yes):
        print("nothing removed")
        return EXIT_BAD
    remove_files(path, targets)  # the locks refuse a running survey and reclaim a dead one's
    print(f"psmpi: removed {what}", file=sys.stderr)
    return EXIT_OK

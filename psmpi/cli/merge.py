"""``psmpi merge``: combine the maps of several results files into one (psmpi.merge)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..store.lock import owner_of
from ..tools.merging import check_psmpi_file, merge, merge_shards
from ..tools.summary import writer_of
from .common import EXIT_OK, add_command, plural


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "merge", "combine the maps of several results files into one",
                    "Copy every map of IN... into OUT (added to what OUT already holds). A pset "
                    "stored in several inputs is kept once (identical psets of one run stay "
                    "separate rows). OUT is written whole and moved into place, so it is never "
                    "half-merged; a file a running survey holds is refused. Without IN: build "
                    "OUT from its shard files beside it (OUT.shard-KKK-of-NNN; a study run as "
                    "many jobs), each pset once; merging again adds only what the shards "
                    "computed since.")
    p.add_argument("out", metavar="OUT")
    p.add_argument("inputs", nargs="*", metavar="IN")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.inputs:
        added = merge_shards(args.out)
        what = ", ".join(f"{name}: {plural(n, 'row')}" for name, n in added.items())
        print(f"psmpi: merged the shards of {args.out}: added {what or 'no rows'}",
              file=sys.stderr)
        return EXIT_OK
    for path in args.inputs:
        check_psmpi_file(path)
        owner = owner_of(path)
        if owner is not None and owner.state == "live":
            print(f"psmpi: warning: {path} is {writer_of(path)}; only its committed rows are "
                  "merged", file=sys.stderr)
    counts = merge(args.inputs, args.out)
    total = sum(counts.values())
    print(f"psmpi: {args.out} now holds {plural(len(counts), 'map')}; {plural(total, 'row')} "
          f"({', '.join(f'{n}: {c}' for n, c in counts.items()) or 'none'})", file=sys.stderr)
    return EXIT_OK

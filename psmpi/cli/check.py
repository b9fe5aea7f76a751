"""``psmpi check``: verify every checksum of a file; say what is damaged, what is intact."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from ..store import check
from .common import EXIT_BAD, EXIT_OK, add_command


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "check",
                    "verify every checksum of a file: what is damaged, what is intact",
                    "Read every map, table, column and null mask of FILE chunk by chunk, "
                    "verifying the checksums psmpi writes, and print what is damaged (map, "
                    "column, row ranges) and which rows are intact in every column. Exit status "
                    "1 if anything is damaged, 0 if nothing, 2 if the file cannot be opened at all.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    report = check(args.file)
    if args.json:
        print(json.dumps(dataclasses.asdict(report) | {"damaged": report.damaged}, indent=1))
    else:
        print(report.text())
    return EXIT_BAD if report.damaged else EXIT_OK

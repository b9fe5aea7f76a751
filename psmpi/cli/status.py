"""``psmpi status``: per map, psets done, failed, crashed and remaining; who writes the file
and, while a survey runs, which worker holds which psets."""

from __future__ import annotations

import argparse
import datetime
import json
import os
from typing import Any

from ..tools.shards import left_overall, resubmit_line, shards_status
from ..tools.summary import running_now, status, writer_of
from ..watch.stalls import seconds_text
from .common import EXIT_OK, add_command, add_map_option, ago, or_unknown, text_table


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "status",
                    "progress of every map: total, done, failed, crashed, remaining",
                    "Per map: psets done (committed results), failed and crashed (psets whose "
                    "latest attempt failed and that have no result), total and remaining (when "
                    "the file records the total), and when the last pset finished. Also says "
                    "whether a survey is writing the file now and, while it runs, which worker "
                    "(rank or process, host) holds which psets for how long, marking stalled "
                    "ones and those past timeout=. When shard files of FILE lie beside it (a "
                    "study run as many jobs), also every shard's state (done, running, "
                    "missing, failed, incomplete), what is left overall, and the sbatch "
                    "line that resubmits the shards that are not complete.")
    p.add_argument("file", metavar="FILE")
    add_map_option(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    shards = shards_status(args.file)
    if shards and not os.path.exists(args.file):  # not merged yet: the shards only
        return print_shards(args, shards)
    code = print_file(args)
    if shards:
        print()
        print_shards(args, shards)
    return code


def print_shards(args: argparse.Namespace, shards: list) -> int:
    """Every shard's state, what is left overall, and how to resubmit the stragglers."""
    overall, again = left_overall(shards), resubmit_line(shards)
    if args.json:
        print(json.dumps({"file": args.file, "shards": [s.as_dict() for s in shards],
                          "overall": overall, "resubmit": again}, indent=2))
        return EXIT_OK
    print(f"{args.file}: {len(shards)} shards")
    rows = []
    for s in shards:
        done = sum(m.done for m in s.maps)
        failed = sum(m.failed + m.crashed for m in s.maps)
        total = None if any(m.total is None for m in s.maps) or not s.maps else \
            sum(m.total for m in s.maps)
        rows.append((s.k, s.state, or_unknown(total) if s.maps else "-", done, failed,
                     os.path.basename(s.path)))
    print(text_table(("shard", "state", "psets", "done", "failed", "file"), rows))
    for name, o in overall.items():
        print(f"map {name!r} overall: {o['done']} done, {o['failed']} failed, "
              f"{or_unknown(o['left'])} left of {or_unknown(o['total'])}")
    counts = {state: sum(s.state == state for s in shards) for state in
              ("done", "failed", "running", "incomplete", "missing")}
    print(", ".join(f"{n} {state}" for state, n in counts.items() if n))
    if again:
        print(f"to resubmit the shards that are not complete: {again}")
    if counts["done"] + counts["failed"] == len(shards):
        print(f"every shard is complete: psmpi merge {args.file}")
    return EXIT_OK


def print_file(args: argparse.Namespace) -> int:
    summaries = status(args.file, args.map)
    writer = writer_of(args.file)
    running = running_now(args.file)
    if args.json:
        print(json.dumps({"file": args.file, "writer": writer, "running": running,
                          "maps": [s.as_dict() for s in summaries]}, indent=2))
        return EXIT_OK
    print(f"{args.file}: {len(summaries)} map{'s' * (len(summaries) != 1)}; "
          f"{writer or 'no survey is writing it'}")
    if running is not None:
        print(running_text(running))
    if not summaries:
        return EXIT_OK
    rows = [(s.name, or_unknown(s.total), s.done, s.failed, s.crashed, or_unknown(s.remaining),
             ago(s.last_end)) for s in summaries]
    print(text_table(("map", "total", "done", "failed", "crashed", "remaining", "last finished"),
                     rows))
    if any(s.total is None for s in summaries):
        print("?: this file does not record how many psets the map was given; running the "
              "study again computes whatever is missing")
    if any(s.failed or s.crashed for s in summaries):
        print(f"failed psets: psmpi failures {args.file}")
    return EXIT_OK


def running_text(running: dict) -> str:
    """What the workers hold now, longest first, from a ``.running`` report."""
    holders = running["holders"]
    stalled = f", {running['stalled']} stalled" if running.get("stalled") else ""
    lines = [f"map {running['map']!r} running: {running['busy']} worker(s) busy{stalled} "
             f"(as of {running['updated']}, {ago(running.get('updated_unix'))})"]
    if holders:
        rows = [(h["worker"], h["host"], _short_indexes(h["indexes"]),
                 seconds_text(h["seconds"]), _since(h["since"]), h["state"]) for h in holders]
        lines.append(text_table(("worker", "host", "psets", "held for", "since", "state"),
                                rows))
        lines += [f"  {h['worker']}: {'; '.join(h['psets'])}" for h in holders
                  if h["state"] != "fine" and h["psets"]]
    if running["busy"] > len(holders):
        lines.append(f"  (the {len(holders)} longest-held of {running['busy']} shown)")
    return "\n".join(lines)


def _since(text: str) -> str:
    """An ISO time as the time of day if it is today, else date and time."""
    try:
        t = datetime.datetime.fromisoformat(text)
    except ValueError:
        return text
    today = t.date() == datetime.datetime.now(t.tzinfo).date()
    return t.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M:%S")


def _short_indexes(indexes: list[int]) -> str:
    return ",".join(map(str, indexes[:3])) + (f" +{len(indexes) - 3}" if len(indexes) > 3 else "")

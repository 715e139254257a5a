"""``onward clean [PATH]``: remove abandoned partial copies and their journals."""

from __future__ import annotations

import argparse
import os
import sys

from ..endpoints.localtree import display
from ..errors import EXIT_FAILED, EXIT_OK, OnwardError, UsageError
from ..jobs.status import remove_unfinished
from ..units import format_size
from .render import emit_json, report_error
from .status import line, listed


def main(args: argparse.Namespace) -> int:
    items = listed(args.path)
    if not items:
        if not args.json:
            print(f"no unfinished copies under {display(args.path)}")
        return EXIT_OK
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"{display(args.path)}: {len(items)} unfinished copies; pass --yes to remove them"
            )
        for item in items:
            print(line(item))
        answer = input(f"remove {len(items)} unfinished copies and their progress? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return EXIT_OK
    failed = 0
    for item in items:
        freed = sum(os.path.getsize(p) for p in (item.partial, item.journal) if p and os.path.exists(p))
        try:
            remove_unfinished(item)
        except OnwardError as exc:
            report_error(exc, json_mode=args.json)
            failed += 1
            continue
        if args.json:
            emit_json({"event": "removed", "destination": item.destination, "freed": freed})
        elif item.upload_id is not None:
            print(f"aborted multipart upload {item.upload_id} of {item.destination}")
        else:
            print(f"removed the unfinished copy to {display(item.destination)} ({format_size(freed)} freed)")
    return EXIT_FAILED if failed else EXIT_OK

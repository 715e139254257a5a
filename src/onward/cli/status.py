"""``onward status [PATH]``: unfinished copies and how far each got."""

from __future__ import annotations

import argparse
import dataclasses
import time

from ..status import Unfinished, find_unfinished
from ..units import format_size
from .render import emit_json


def as_json(item: Unfinished) -> dict[str, object]:
    return {**dataclasses.asdict(item), "percent": item.percent}


def line(item: Unfinished) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(item.last_activity))
    if item.problem is not None:
        return f"   ?%  {'?':>10}  {when}  {item.destination}  ({item.problem})"
    size = format_size(item.size or 0)
    files = f"  ({item.files_done} of {item.files} files)" if item.files is not None else ""
    return f"{item.percent or 0:5.1f}%  {size:>10}  {when}  {item.source} -> {item.destination}{files}"


def main(args: argparse.Namespace) -> int:
    items = find_unfinished(args.path)
    if args.json:
        for item in items:
            emit_json(as_json(item))
        return 0
    if not items:
        print(f"no unfinished copies under {args.path}")
        return 0
    print(f"{'DONE':>6}  {'SIZE':>10}  {'LAST ACTIVITY':19}  SOURCE -> DESTINATION")
    for item in items:
        print(line(item))
    return 0

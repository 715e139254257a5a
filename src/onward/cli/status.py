"""``onward status [PATH]``: unfinished copies and how far each got."""

from __future__ import annotations

import argparse
import os
import time

from ..endpoints.localtree import display
from ..errors import EXIT_OK
from ..jobs.status import Unfinished, find_unfinished, find_uploads
from ..units import format_size
from .render import emit_json


def as_json(item: Unfinished) -> dict[str, object]:
    return {**item._asdict(), "percent": item.percent}


def line(item: Unfinished) -> str:
    """One unfinished copy for people; names that are not UTF-8 shown as ``\\xNN``."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(item.last_activity))
    destination = display(item.destination)
    if item.problem is not None:
        return f"   ?%  {'?':>10}  {when}  {destination}  ({display(item.problem)})"
    files = f"  ({item.files_done} of {item.files} files)" if item.files is not None else ""
    source = display(item.source or "?")
    if item.restarts:  # the percentage would promise a resume that cannot happen
        size = "?" if item.size is None else format_size(item.size)
        why = "its server cannot resume a download: a re-run starts over"
        return f"   -%  {size:>10}  {when}  {source} -> {destination}{files}  ({why})"
    if item.size is None:  # a download whose server gives no length: what it has, of no known total
        return f"   ?%  {format_size(item.done):>10}  {when}  {source} -> {destination}{files}"
    size = format_size(item.size)
    return f"{item.percent or 0:5.1f}%  {size:>10}  {when}  {source} -> {destination}{files}"


def listed(path: str) -> list[Unfinished]:
    """The unfinished copies at or below ``path``; with the default path (none given), the
    unfinished uploads too, whose journals live in the state directory. ``status`` shows
    them and ``clean`` offers them."""
    items = find_unfinished(path)
    if path == ".":
        seen = {os.path.realpath(i.journal) for i in items if i.journal}
        items += [u for u in find_uploads() if u.journal and os.path.realpath(u.journal) not in seen]
    return items


def main(args: argparse.Namespace) -> int:
    items = listed(args.path)
    if args.json:
        for item in items:
            emit_json(as_json(item))
        return EXIT_OK
    if not items:
        print(f"no unfinished copies under {display(args.path)}")
        return EXIT_OK
    print(f"{'DONE':>6}  {'SIZE':>10}  {'LAST ACTIVITY':19}  SOURCE -> DESTINATION")
    for item in items:
        print(line(item))
    return EXIT_OK

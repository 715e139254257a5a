"""``onward copy --dry-run`` (``-n``): what the copy would do, on stdout; nothing is written.

Text: one line per action, ``ACTION PATH (SIZE; NOTE)`` (a tree's paths relative to its
roots, after a line on stderr that names them), then one line on stderr with the total.
``--json``: one ``plan`` object per action and a ``dry_run`` object with the total.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..endpoints.localtree import display
from ..errors import EXIT_FAILED, EXIT_OK, OnwardError
from ..jobs.dryrun import Planned, plan_copy, plan_tree_copy, shown
from ..jobs.tree import resolve_tree
from ..options import Options
from ..units import format_size
from .render import emit_json, emit_line, report_error


def main(args: argparse.Namespace, sources: list[str], dst: str, opts: dict[str, Any]) -> int:
    options = Options.build(**opts)
    moved, failed = 0, 0
    for src in sources:
        try:
            actions = plan_one(args, src, dst, options)
        except OnwardError as exc:
            if len(sources) == 1:
                raise
            report_error(exc, json_mode=args.json)
            failed += 1
            continue
        for item in actions:
            moved += max(item.bytes, 0)
            if args.json:
                emit_json({"event": "plan", **item._asdict()})
            else:
                emit_line(shown(item))
    if args.json:
        emit_json({"event": "dry_run", "bytes": moved})
    else:
        sys.stderr.write(f"onward: dry run: {format_size(moved)} would be copied; nothing was written\n")
    return EXIT_FAILED if failed else EXIT_OK


def plan_one(args: argparse.Namespace, src: str, dst: str, opts: Options) -> list[Planned]:
    tree = args.recursive and (os.path.isdir(src) or not os.path.lexists(src))
    if not tree:
        return [plan_copy(src, dst, opts)]
    src_root, dst_root, rules = resolve_tree(src, dst, opts, args.rules, make=False)
    if not args.json:
        sys.stderr.write(f"onward: dry run of {display(src_root)} -> {display(dst_root)}:\n")
    _, actions = plan_tree_copy(
        src_root,
        dst_root,
        opts,
        follow=args.dereference,
        delete=args.delete,
        compare=args.compare_content,
        rules=rules,
    )
    return actions

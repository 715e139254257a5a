"""``onward copy SRC... DST``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..errors import Interrupted, OnwardError, UsageError
from ..events import Listener
from ..units import parse_size
from .preserve import preserve_options
from .render import JsonLines, Lister, Notices, RichProgress, TextProgress, report_error


def options_from(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {"restart": args.restart, "verify": args.verify}
    try:
        for flag in ("chunk_size", "checkpoint_bytes"):
            if getattr(args, flag) is not None:
                opts[flag] = parse_size(getattr(args, flag))
    except ValueError as exc:
        raise UsageError(f"--{flag.replace('_', '-')}: {exc}") from None
    for flag, unit in (("bwlimit", "K"), ("limit_rate", "")):  # rsync's KiB/s, curl's bytes/s
        text = getattr(args, flag)
        if text is not None:
            try:
                opts["bwlimit"] = parse_size(text + unit if text.strip().isdigit() else text)
            except ValueError as exc:
                raise UsageError(f"--{flag.replace('_', '-')}: {exc}") from None
    if not getattr(args, "sparse", True):
        opts["sparse"] = False
    if args.checkpoint_seconds is not None:
        opts["checkpoint_seconds"] = args.checkpoint_seconds
    if args.retries is not None:
        opts["retries"] = args.retries
    if args.expect_digest is not None:
        opts["checksum"] = args.expect_digest
    for flag in ("content_disposition", "allow_hidden"):
        if getattr(args, flag, False):
            opts[flag] = True
    if getattr(args, "part_size", None) is not None:
        try:
            opts["part_size"] = parse_size(args.part_size)
        except ValueError as exc:
            raise UsageError(f"--part-size: {exc}") from None
    for flag in ("checksum_algorithm", "profile", "endpoint_url", "region"):
        if getattr(args, flag, None) is not None:
            opts[flag] = getattr(args, flag)
    for flag in ("connections", "timeout"):
        if getattr(args, flag) is not None:
            opts[flag] = getattr(args, flag)
    if args.header:
        opts["headers"] = tuple(parse_header(h) for h in args.header)
    opts.update(preserve_options(args.preserve, args.no_preserve))
    return opts


def target_name(url: str) -> str:
    """An upload URL as it may be shown (no credentials), even when it does not parse."""
    from ..core.upload import parse_target

    try:
        return parse_target(url).name
    except ValueError:
        return url.partition("://")[0] + "://..."


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise UsageError(f"-H {text!r}: expected 'Name: value'")
    return name.strip(), value.strip()


def listeners_for(args: argparse.Namespace) -> tuple[list[Listener], RichProgress | None]:
    if args.json:
        return [JsonLines()], None
    listeners, bar = people_listeners(args)
    return ([*listeners, Lister()] if args.verbose else listeners), bar


def people_listeners(args: argparse.Namespace) -> tuple[list[Listener], RichProgress | None]:
    if args.quiet:
        return [Notices()], None
    if sys.stderr.isatty():
        bar = RichProgress()
        return [bar], bar
    if args.progress:
        return [Notices(), TextProgress()], None
    return [Notices()], None


def main(args: argparse.Namespace) -> int:
    if len(args.paths) < 2:
        raise UsageError("copy needs a source and a destination: onward copy SRC [SRC...] DST")
    *sources, dst = args.paths
    if (len(sources) > 1 or args.recursive) and "://" in dst:
        from ..core.upload import is_upload_url  # here: local copies need not import it

        if is_upload_url(dst):
            raise UsageError(
                f"{target_name(dst)}: an upload sends one file (several files or -r go to a directory)"
            )
    if args.dry_run:
        from .dryrun import main as dry_run

        return dry_run(args, sources, dst, options_from(args))
    if args.recursive and any(p[:5].lower() == "s3://" for p in (*sources, dst)):
        return copy_s3_trees(args, sources, dst)
    if args.recursive or args.delete or args.dereference or args.compare_content or args.rules:
        from .copytree import main as copy_trees

        return copy_trees(args, sources, dst, options_from(args))
    if len(sources) > 1 and not os.path.isdir(dst):
        raise UsageError(f"{dst}: is not a directory (several sources go into a directory)")
    from ..api import copy  # the engine only once something is to be copied

    opts = options_from(args)
    failed = 0
    for src in sources:
        listeners, bar = listeners_for(args)
        try:
            copy(src, dst, listeners=listeners, **opts)
        except Interrupted:
            raise
        except OnwardError as exc:
            if len(sources) == 1:
                raise
            report_error(exc, json_mode=args.json)
            failed += 1
        finally:
            if bar is not None:
                bar.stop()
    return 1 if failed else 0


def copy_s3_trees(args: argparse.Namespace, sources: list[str], dst: str) -> int:
    """``onward copy -r DIR s3://bucket/prefix/`` and back (docs/S3.md): one line per file."""
    from ..options import Options
    from ..s3tree import copy_tree

    if args.delete or args.dereference:
        raise UsageError("--delete and -L do not apply to S3 trees yet")
    opts = Options.build(**options_from(args))

    def per_file() -> list[Listener]:
        if args.json:
            return [JsonLines()]
        return [Notices(), TextProgress()] if args.progress else [Notices()]

    for src in sources:
        copied, skipped = copy_tree(src, dst, opts, per_file)
        if not args.quiet and not args.json:
            print(f"{src} -> {dst}: {copied} file(s) copied, {skipped} already there")
    return 0

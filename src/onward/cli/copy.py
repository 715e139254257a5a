"""``onward copy SRC... DST``, and ``copy -r`` of directory trees.

A tree reports through the same subscribers as a file (``render.listeners_for``): a bar
(files done/total, bytes, rate, ETA) on a terminal, plain progress lines with
``--progress``, notices (special files skipped, entries only in the destination) as they
come, and every failure listed at the end, before the final line that says how many
failed (exit 23). ``--json``: one object per event (docs/CLI.md, "--json events of a tree").
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    Interrupted,
    OnwardError,
    PartialCopyError,
    UsageError,
)
from ..events import Listener
from ..units import parse_size
from .preserve import preserve_options
from .render import JsonLines, Notices, TextProgress, listeners_for, report_error


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


def main(args: argparse.Namespace) -> int:
    sources, dst = operands(args)
    if args.dry_run:
        from .dryrun import main as dry_run

        return dry_run(args, sources, dst, options_from(args))
    if args.recursive and any(p[:5].lower() == "s3://" for p in (*sources, dst)):
        return copy_s3_trees(args, sources, dst)
    tree_flags = args.delete or args.dereference or args.compare_content or args.rules
    opts = options_from(args) if args.recursive or tree_flags else None  # trees: options first
    if not args.recursive and tree_flags:
        given = [("--delete", args.delete), ("-L", args.dereference), ("-c", args.compare_content)]
        flag = next((name for name, on in given if on), "--exclude, --include or --filter")
        raise UsageError(f"{flag} applies to directory trees; add -r")
    if len(sources) > 1 and not os.path.isdir(dst):
        raise UsageError(f"{dst}: is not a directory (several sources go into a directory)")
    return copy_each(args, sources, dst, options_from(args) if opts is None else opts)


def operands(args: argparse.Namespace) -> tuple[list[str], str]:
    """(sources, destination), after refusing what no copy can do with them."""
    if len(args.paths) < 2:
        raise UsageError("copy needs a source and a destination: onward copy SRC [SRC...] DST")
    *sources, dst = args.paths
    if (len(sources) > 1 or args.recursive) and "://" in dst:
        from ..core.upload import is_upload_url  # here: local copies need not import it

        if is_upload_url(dst):
            raise UsageError(
                f"{target_name(dst)}: an upload sends one file (several files or -r go to a directory)"
            )
    return sources, dst


def copy_each(args: argparse.Namespace, sources: list[str], dst: str, opts: dict[str, Any]) -> int:
    """Copy every source in turn; with several, one that fails is reported and the rest go on
    (exit 1, or 23 when only entries of trees failed)."""
    failed = partial = False
    for src in sources:
        tree = args.recursive and (os.path.isdir(src) or not os.path.lexists(src))
        listeners, bar = listeners_for(args, tree=tree)
        try:
            copy_one(args, src, dst, listeners, opts, tree=tree)
        except Interrupted:
            raise
        except OnwardError as exc:
            if len(sources) == 1:
                raise
            report_error(exc, json_mode=args.json)
            partial = partial or isinstance(exc, PartialCopyError)
            failed = failed or not isinstance(exc, PartialCopyError)
        finally:
            if bar is not None:
                bar.stop()
    return EXIT_FAILED if failed else EXIT_PARTIAL if partial else EXIT_OK


def copy_one(
    args: argparse.Namespace,
    src: str,
    dst: str,
    listeners: list[Listener],
    opts: dict[str, Any],
    *,
    tree: bool,
) -> None:
    """One source: a directory tree (``tree``), else a file, a URL or an upload."""
    if not tree:
        from ..jobs.api import copy  # the engine only once something is to be copied

        copy(src, dst, listeners=listeners, **opts)
        return
    from ..jobs.tree import copy_tree

    copy_tree(
        src,
        dst,
        listeners=listeners,
        delete=args.delete,
        follow_symlinks=args.dereference,
        compare_content=args.compare_content,
        rules=args.rules,
        **opts,
    )


def copy_s3_trees(args: argparse.Namespace, sources: list[str], dst: str) -> int:
    """``onward copy -r DIR s3://bucket/prefix/`` and back (docs/S3.md): one line per file."""
    from ..jobs.s3tree import copy_tree
    from ..options import Options

    opts = Options.build(**options_from(args))

    def per_file() -> list[Listener]:
        if args.json:
            return [JsonLines()]
        return [Notices(), TextProgress()] if args.progress else [Notices()]

    for src in sources:
        counts = copy_tree(src, dst, opts, per_file, delete=args.delete, follow=args.dereference)
        if not args.quiet and not args.json:
            print(f"{src} -> {dst}: {counts.describe()}")
    return EXIT_OK

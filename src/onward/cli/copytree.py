"""``onward copy -r SRC... DST``: directory trees, with their own progress and summary.

Human output: a bar (files done/total, bytes, rate, ETA) on a terminal, plain
progress lines with ``--progress``, notices (special files skipped, entries only
in the destination) as they come, and every failure listed at the end, before
the final line that says how many failed (exit 23). ``--json``: one object per
event (docs/CLI.md, "--json events of a tree").
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from ..errors import Interrupted, OnwardError, PartialCopyError, UsageError
from ..events import (
    Checkpoint,
    FileDone,
    FileFailed,
    Listener,
    Notice,
    Retry,
    Subscriber,
    TreeDone,
    TreeProgress,
    TreeResult,
    TreeStart,
)
from ..units import format_size
from .render import PROGRESS_EVERY, Lister, ProgressLine, RichProgress, emit_json, report_error, rich_bar

EXIT_OK, EXIT_FAILED, EXIT_PARTIAL = 0, 1, 23


def result_fields(result: TreeResult) -> dict[str, Any]:
    body = result._asdict()
    body["failed"] = [{"path": p, "message": m} for p, m in result.failed]
    return body


def summary(result: TreeResult) -> str:
    parts = [f"{result.copied_files} copied ({format_size(result.copied)})"]
    for count, what in (
        (result.unchanged_files, "unchanged"),
        (result.linked, "hard-linked"),
        (result.symlinks, "symlinks made"),
        (result.deleted, "deleted"),
        (len(result.failed), "failed"),
    ):
        if count:
            parts.append(f"{count} {what}")
    return (
        f"onward: {result.destination}: {result.files} files, {format_size(result.bytes)}: "
        f"{', '.join(parts)} in {result.duration:.1f}s"
    )


class TreeJson(Subscriber):
    """Every tree event as a JSON line; tree progress at most every PROGRESS_EVERY seconds."""

    def __init__(self) -> None:
        self.last = 0.0

    def write(
        self, event: TreeStart | FileDone | FileFailed | TreeProgress | Checkpoint | Retry | Notice
    ) -> None:
        emit_json({"event": event.kind, **event._asdict()})

    def on_tree_start(self, event: TreeStart) -> None:
        self.write(event)

    def on_file(self, event: FileDone) -> None:
        self.write(event)

    def on_file_error(self, event: FileFailed) -> None:
        self.write(event)

    def on_tree_progress(self, event: TreeProgress) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY or event.done == event.total:
            self.last = now
            self.write(event)

    def on_checkpoint(self, event: Checkpoint) -> None:
        self.write(event)

    def on_retry(self, event: Retry) -> None:
        self.write(event)

    def on_notice(self, event: Notice) -> None:
        self.write(event)

    def on_tree_done(self, event: TreeDone) -> None:
        emit_json({"event": event.kind, **result_fields(event.result)})


class TreeNotices(Subscriber):
    """Notices as they come, failures listed at the end (stderr)."""

    def __init__(self, *, summary: bool = False) -> None:
        self.summary = summary

    def on_notice(self, event: Notice) -> None:
        sys.stderr.write(f"onward: {event.destination}: {event.message}\n")

    def on_retry(self, event: Retry) -> None:
        sys.stderr.write(f"onward: {event.error}; retry {event.attempt} in {event.delay:.1f}s\n")

    def on_tree_done(self, event: TreeDone) -> None:
        for _, message in event.result.failed:
            sys.stderr.write(f"onward: {message}\n")
        if self.summary:
            sys.stderr.write(summary(event.result) + "\n")


class TreeText(Subscriber):
    """Progress lines on stderr (``--progress`` off a terminal)."""

    def __init__(self) -> None:
        self.line = ProgressLine()

    def on_tree_start(self, event: TreeStart) -> None:
        self.line.began = time.monotonic()
        if event.files_done:
            sys.stderr.write(
                f"onward: {event.destination}: {event.files_done} of {event.files} files already done\n"
            )

    def on_tree_progress(self, event: TreeProgress) -> None:
        line = self.line(event.done, event.total, event.copied)
        if line:
            sys.stderr.write(f"onward: {event.files_done}/{event.files} files, {line}\n")


class TreeBar(Subscriber):
    """A bar on a terminal: files done/total, bytes, rate, ETA; ``rich`` is imported only here."""

    def __init__(self) -> None:
        self.console, self.bar = rich_bar("files")
        self.task: Any = None
        self.files = 0

    def on_tree_start(self, event: TreeStart) -> None:
        self.files = event.files
        self.bar.start()
        name = os.path.basename(event.destination) or event.destination
        self.task = self.bar.add_task(
            name,
            total=event.bytes or 1,
            completed=event.bytes_done,
            files=f"{event.files_done}/{event.files} files",
        )

    def on_tree_progress(self, event: TreeProgress) -> None:
        self.bar.update(self.task, completed=event.done, files=f"{event.files_done}/{event.files} files")

    def on_notice(self, event: Notice) -> None:
        self.console.print(f"onward: {event.destination}: {event.message}", markup=False, highlight=False)

    def on_tree_done(self, event: TreeDone) -> None:
        self.stop()
        for _, message in event.result.failed:
            self.console.print(f"onward: {message}", markup=False, highlight=False)
        self.console.print(summary(event.result), markup=False, highlight=False)

    def stop(self) -> None:
        if self.bar.live.is_started:
            self.bar.stop()


def tree_listeners(args: argparse.Namespace) -> tuple[list[Listener], TreeBar | None]:
    if args.json:
        return [TreeJson()], None
    listeners, bar = people_tree_listeners(args)
    return ([*listeners, Lister()] if args.verbose else listeners), bar


def people_tree_listeners(args: argparse.Namespace) -> tuple[list[Listener], TreeBar | None]:
    if args.quiet:
        return [TreeNotices()], None
    if sys.stderr.isatty():
        bar = TreeBar()
        return [bar], bar
    if args.progress:
        return [TreeNotices(summary=True), TreeText()], None
    return [TreeNotices()], None


def main(args: argparse.Namespace, sources: list[str], dst: str, opts: dict[str, Any]) -> int:
    """Copy each source (a directory tree; a file is copied as without -r) into ``dst``."""
    from ..tree import copy_tree

    if not args.recursive:
        given = [("--delete", args.delete), ("-L", args.dereference), ("-c", args.compare_content)]
        flag = next((name for name, on in given if on), "--exclude, --include or --filter")
        raise UsageError(f"{flag} applies to directory trees; add -r")
    if len(sources) > 1 and not os.path.isdir(dst):
        raise UsageError(f"{dst}: is not a directory (several sources go into a directory)")
    failed = partial = False
    for src in sources:
        tree = os.path.isdir(src) or not os.path.lexists(src)
        listeners: list[Listener]
        bar: TreeBar | RichProgress | None
        if tree:
            listeners, bar = tree_listeners(args)
        else:
            from .copy import listeners_for

            listeners, bar = listeners_for(args)
        try:
            if tree:
                follow = args.dereference
                copy_tree(
                    src,
                    dst,
                    listeners=listeners,
                    delete=args.delete,
                    follow_symlinks=follow,
                    compare_content=args.compare_content,
                    rules=args.rules,
                    **opts,
                )
            else:
                from ..api import copy

                copy(src, dst, listeners=listeners, **opts)
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

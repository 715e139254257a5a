"""Turning events and results into text for people, or JSON lines for scripts.

The JSON schema is documented in docs/CLI.md: every line is one object with an
``event`` field (start, progress, checkpoint, retry, notice, done, error).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, TextIO

from ..errors import Interrupted, OnwardError
from ..events import (
    CopyResult,
    Done,
    Event,
    FileAction,
    FileDone,
    Listener,
    Notice,
    Progress,
    Retry,
    Start,
    Subscriber,
    TreeDone,
    TreeProgress,
    TreeResult,
    TreeStart,
)
from ..units import format_size

PROGRESS_EVERY = 0.5  # seconds between progress lines off a terminal or in JSON


def event_fields(event: Event) -> dict[str, Any]:
    """An event as its JSON object: a result's fields flat, a tree's failures as objects."""
    if isinstance(event, TreeDone):
        body = event.result._asdict()
        body["failed"] = [{"path": p, "message": m} for p, m in event.result.failed]
    elif isinstance(event, Done):
        body = event.result._asdict()
    else:
        body = event._asdict()
    return {"event": event.kind, **body}


def emit_json(obj: dict[str, Any], stream: TextIO | None = None) -> None:
    if stream is None:
        emit_line(json.dumps(obj, ensure_ascii=False))
        return
    stream.write(json.dumps(obj, ensure_ascii=False) + "\n")
    stream.flush()


def stdout_closed() -> None:
    """The reader of stdout went away (``onward copy --json ... | head -1``). A copy is worth
    more than its log: say so once on stderr, send the rest of the lines nowhere, and go on."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # also spares Python's own flush at exit the same error
    os.close(devnull)
    sys.stderr.write("onward: standard output was closed; its lines stop here, the copy goes on\n")


def report_error(exc: OnwardError, *, json_mode: bool) -> None:
    if json_mode:
        obj: dict[str, Any] = {
            "event": "error",
            "message": exc.message,
            "path": exc.path,
            "exit_code": exc.exit_code,
        }
        if isinstance(exc, Interrupted):
            obj.update(done=exc.done, total=exc.total)
        emit_json(obj)
    sys.stderr.write(f"onward: {exc.message}\n")


class JsonLines:
    """Every event, a file's or a tree's, as one JSON line; progress at most every
    PROGRESS_EVERY seconds (and always the last)."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, event: Event) -> None:
        if isinstance(event, Progress | TreeProgress):
            now = time.monotonic()
            if now - self.last < PROGRESS_EVERY and event.done != event.total:
                return
            self.last = now
        emit_json(event_fields(event))


class Notices(Subscriber):
    """Notices and retries on stderr as they come, a tree's failures listed at its end: for
    people (the JSON mode carries them as events)."""

    def on_notice(self, event: Notice) -> None:
        sys.stderr.write(f"onward: {event.destination}: {event.message}\n")

    def on_retry(self, event: Retry) -> None:
        sys.stderr.write(f"onward: {event.error}; retry {event.attempt} in {event.delay:.1f}s\n")

    def on_tree_done(self, event: TreeDone) -> None:
        for _, message in event.result.failed:
            sys.stderr.write(f"onward: {message}\n")


class Lister(Subscriber):
    """``-v``: one line on stdout per entry as it is finished, ``ACTION PATH`` (tree paths
    relative to the roots, as rsync -v lists them); entries the run leaves as they are
    (verified, unchanged) are not listed."""

    def on_done(self, event: Done) -> None:
        emit_line(f"copied {event.result.location or event.result.destination}")

    def on_file(self, event: FileDone) -> None:
        if event.action is not FileAction.VERIFIED:
            emit_line(f"{event.action} {event.path}")


def emit_line(text: str) -> None:
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        stdout_closed()


def summary(result: CopyResult) -> str:
    resumed = f", resumed at {format_size(result.resumed_from)}" if result.resumed_from else ""
    rate = result.copied / result.duration if result.duration > 0 else 0.0
    at = f"; the upload is at {result.location}" if result.location else ""
    return (
        f"onward: {result.destination}: {format_size(result.size)} done, {format_size(result.copied)} "
        f"copied in {result.duration:.1f}s ({format_size(rate)}/s){resumed}{at}"
    )


def tree_summary(result: TreeResult) -> str:
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


def resumed_at(event: Start) -> str:
    of = "" if event.total is None else f" of {format_size(event.total)}"
    return f"resumed at {format_size(event.resumed_from)}{of}"


class ProgressLine:
    """The text progress line (``X of Y (P%) R/s ETA Ss``) of a file or a tree copy, at most
    every ``PROGRESS_EVERY`` seconds and at the end."""

    def __init__(self) -> None:
        self.last = 0.0
        self.began = time.monotonic()

    def __call__(self, done: int, total: int | None, copied: int) -> str | None:
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY and done != total:
            return None
        self.last = now
        rate = copied / max(now - self.began, 1e-9)
        if total is None:  # a body without a length: bytes and rate, nothing to count down
            return f"{format_size(done)} {format_size(rate)}/s"
        eta = (total - done) / rate if rate else 0.0
        pct = 100 * done // total if total else 100
        return f"{format_size(done)} of {format_size(total)} ({pct}%) {format_size(rate)}/s ETA {eta:.0f}s"


class TextProgress(Subscriber):
    """Plain progress lines on stderr, of a file or a tree, for ``--progress`` off a terminal."""

    def __init__(self) -> None:
        self.line = ProgressLine()

    def on_start(self, event: Start) -> None:
        self.line.began = time.monotonic()
        if event.resumed_from:
            sys.stderr.write(f"onward: {event.destination}: {resumed_at(event)}\n")

    def on_progress(self, event: Progress) -> None:
        self.show(event)

    def show(self, event: Progress | TreeProgress, files: str = "") -> None:
        line = self.line(event.done, event.total, event.copied)
        if line:
            sys.stderr.write(f"onward: {files}{line}\n")

    def on_done(self, event: Done) -> None:
        sys.stderr.write(summary(event.result) + "\n")

    def on_tree_start(self, event: TreeStart) -> None:
        self.line.began = time.monotonic()
        if event.files_done:
            sys.stderr.write(
                f"onward: {event.destination}: {event.files_done} of {event.files} files already done\n"
            )

    def on_tree_progress(self, event: TreeProgress) -> None:
        self.show(event, f"{event.files_done}/{event.files} files, ")

    def on_tree_done(self, event: TreeDone) -> None:
        sys.stderr.write(tree_summary(event.result) + "\n")


def rich_bar(*fields: str) -> tuple[Any, Any]:
    """A ``rich`` console on stderr and a bar on it: description, the task ``fields`` named,
    bar, bytes, rate, ETA. ``rich`` is imported only here, when a terminal shows a bar."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """The rate in binary units, as the summary line gives it (rich's own column says MB/s)."""

        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{format_size(speed)}/s" if speed else "?", style="progress.data.speed")

    console = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description}"),
        *(TextColumn(f"{{task.fields[{name}]}}") for name in fields),
        BarColumn(),
        DownloadColumn(binary_units=True),
        RateColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    return console, bar


class RichProgress(Subscriber):
    """A progress bar with bytes, rate and ETA on a terminal; ``rich`` is imported only here."""

    fields: tuple[str, ...] = ()  # task fields shown between the name and the bar

    def __init__(self) -> None:
        self.console, self.bar = rich_bar(*self.fields)
        self.task: Any = None

    def say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def on_start(self, event: Start) -> None:
        name = event.destination.rsplit("/", 1)[-1]
        label = name
        if event.resumed_from:
            label += f" ({resumed_at(event)})"
        self.bar.start()
        total = None if event.total is None else event.total or 1  # None: rich shows no ETA
        self.task = self.bar.add_task(label, total=total, completed=event.resumed_from)

    def on_progress(self, event: Progress) -> None:
        self.bar.update(self.task, completed=event.done)

    def on_notice(self, event: Notice) -> None:
        self.say(f"onward: {event.destination}: {event.message}")

    def on_done(self, event: Done) -> None:
        self.bar.update(self.task, completed=event.result.size or 1)
        self.stop()
        self.say(summary(event.result))

    def stop(self) -> None:
        if self.bar.live.is_started:
            self.bar.stop()


class TreeBar(RichProgress):
    """The bar of a tree: files done/total, bytes, rate, ETA; failures and the summary after it."""

    fields = ("files",)

    def on_tree_start(self, event: TreeStart) -> None:
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

    def on_tree_done(self, event: TreeDone) -> None:
        self.stop()
        for _, message in event.result.failed:
            self.say(f"onward: {message}")
        self.say(tree_summary(event.result))


def listeners_for(
    args: argparse.Namespace, *, tree: bool = False
) -> tuple[list[Listener], RichProgress | None]:
    """What ``copy`` (``tree``: ``copy -r`` of a directory) reports through, by ``--json``,
    ``-q``, ``-P``, ``-v`` and whether stderr is a terminal; and the bar to stop at the end."""
    if args.json:
        return [JsonLines()], None
    listeners: list[Listener]
    bar: RichProgress | None = None
    if args.quiet:
        listeners = [Notices()]
    elif sys.stderr.isatty():
        bar = TreeBar() if tree else RichProgress()
        listeners = [bar]
    elif args.progress:
        listeners = [Notices(), TextProgress()]
    else:
        listeners = [Notices()]
    return ([*listeners, Lister()] if args.verbose else listeners), bar

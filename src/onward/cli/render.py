"""Turning events and results into text for people, or JSON lines for scripts.

The JSON schema is documented in docs/CLI.md: every line is one object with an
``event`` field (start, progress, checkpoint, retry, notice, done, error).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, TextIO

from ..errors import Interrupted, OnwardError
from ..events import (
    Checkpoint,
    CopyResult,
    Done,
    Event,
    FileDone,
    Notice,
    Progress,
    Retry,
    Start,
    Subscriber,
)
from ..units import format_size

PROGRESS_EVERY = 0.5  # seconds between progress lines off a terminal or in JSON


def event_fields(event: Event) -> dict[str, Any]:
    body = event.result._asdict() if isinstance(event, Done) else event._asdict()
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


class JsonLines(Subscriber):
    """Every event as one JSON line; progress at most every PROGRESS_EVERY seconds."""

    def __init__(self) -> None:
        self.last = 0.0

    def write(self, event: Event) -> None:
        emit_json(event_fields(event))

    def on_start(self, event: Start) -> None:
        self.write(event)

    def on_progress(self, event: Progress) -> None:
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

    def on_done(self, event: Done) -> None:
        self.write(event)


class Notices(Subscriber):
    """Notices and retries on stderr, for people (the JSON mode carries them as events)."""

    def on_notice(self, event: Notice) -> None:
        sys.stderr.write(f"onward: {event.destination}: {event.message}\n")

    def on_retry(self, event: Retry) -> None:
        sys.stderr.write(f"onward: {event.error}; retry {event.attempt} in {event.delay:.1f}s\n")


class Lister(Subscriber):
    """``-v``: one line on stdout per entry as it is finished, ``ACTION PATH`` (tree paths
    relative to the roots, as rsync -v lists them); entries the run leaves as they are
    (verified, unchanged) are not listed."""

    def on_done(self, event: Done) -> None:
        emit_line(f"copied {event.result.location or event.result.destination}")

    def on_file(self, event: FileDone) -> None:
        if event.action != "verified":
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
    """Plain progress lines on stderr, for ``--progress`` off a terminal."""

    def __init__(self) -> None:
        self.line = ProgressLine()

    def on_start(self, event: Start) -> None:
        self.line.began = time.monotonic()
        if event.resumed_from:
            sys.stderr.write(f"onward: {event.destination}: {resumed_at(event)}\n")

    def on_progress(self, event: Progress) -> None:
        line = self.line(event.done, event.total, event.copied)
        if line:
            sys.stderr.write(f"onward: {line}\n")

    def on_done(self, event: Done) -> None:
        sys.stderr.write(summary(event.result) + "\n")


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

    def __init__(self) -> None:
        self.console, self.bar = rich_bar()
        self.task: Any = None

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
        self.console.print(f"onward: {event.destination}: {event.message}", markup=False, highlight=False)

    def on_done(self, event: Done) -> None:
        self.bar.update(self.task, completed=event.result.size or 1)
        self.stop()
        self.console.print(summary(event.result), markup=False, highlight=False)

    def stop(self) -> None:
        if self.bar.live.is_started:
            self.bar.stop()

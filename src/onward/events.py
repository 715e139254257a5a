"""Progress events and the subscriber contract.

The engine reports what happens as typed events; a caller watches by passing
``Subscriber`` objects (override only the methods you need) or a plain
callable that receives every event. Nothing in the library prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "Checkpoint",
    "CopyResult",
    "Done",
    "Event",
    "FileDone",
    "FileFailed",
    "Notice",
    "Progress",
    "Retry",
    "Start",
    "Subscriber",
    "TreeDone",
    "TreeProgress",
    "TreeResult",
    "TreeStart",
    "dispatch",
]


@dataclass(frozen=True)
class CopyResult:
    """What one finished copy did."""

    source: str
    destination: str
    size: int
    resumed_from: int  # bytes already durable before this run
    copied: int  # bytes moved by this run
    digest: str  # hex xxh3-128 of the chunk digests in order (see docs/JOURNAL.md)
    duration: float  # seconds


@dataclass(frozen=True)
class Start:
    kind: ClassVar[str] = "start"
    source: str
    destination: str
    total: int
    resumed_from: int
    chunk_size: int


@dataclass(frozen=True)
class Progress:
    kind: ClassVar[str] = "progress"
    destination: str
    done: int  # bytes in the partial, resumed ones included
    total: int
    copied: int  # bytes moved by this run


@dataclass(frozen=True)
class Checkpoint:
    kind: ClassVar[str] = "checkpoint"
    destination: str
    committed: int  # bytes durable and recorded in the journal
    total: int


@dataclass(frozen=True)
class Retry:
    kind: ClassVar[str] = "retry"
    destination: str
    attempt: int
    delay: float
    error: str


@dataclass(frozen=True)
class Notice:
    kind: ClassVar[str] = "notice"
    destination: str
    message: str


@dataclass(frozen=True)
class Done:
    kind: ClassVar[str] = "done"
    result: CopyResult


# -- directory trees (onward.copy_tree; docs/CLI.md, "--json events of a tree") ----------


@dataclass(frozen=True)
class TreeResult:
    """What one run of a tree copy did. Paths in ``failed`` are absolute."""

    source: str
    destination: str
    files: int  # regular files in the source
    bytes: int  # their bytes (hard links counted once)
    copied_files: int  # files copied by this run
    copied: int  # bytes moved by this run
    unchanged_files: int  # files found already done (not read)
    linked: int  # hard links made
    symlinks: int  # symlinks made
    dirs_made: int
    deleted: int  # entries removed with --delete
    extras: int  # entries only in the destination, kept
    skipped: int  # special files and onward's own working files, not copied
    failed: tuple[tuple[str, str], ...]  # (path, message) of every entry that failed
    duration: float


@dataclass(frozen=True)
class TreeStart:
    kind: ClassVar[str] = "tree-start"
    source: str
    destination: str
    files: int
    bytes: int
    files_done: int  # already done before this run (not read again)
    bytes_done: int


@dataclass(frozen=True)
class FileDone:
    """One entry made, replaced or removed: ``action`` is copied, linked, symlinked, updated
    (permission bits only), verified (--verify full found it intact) or deleted."""

    kind: ClassVar[str] = "file"
    path: str  # relative to the roots
    action: str
    size: int
    copied: int  # bytes moved for it by this run
    resumed_from: int  # bytes of it already durable before this run
    files_done: int
    files: int


@dataclass(frozen=True)
class FileFailed:
    kind: ClassVar[str] = "file-error"
    path: str  # absolute path of the source or destination entry at fault
    message: str


@dataclass(frozen=True)
class TreeProgress:
    kind: ClassVar[str] = "tree-progress"
    files_done: int
    files: int
    done: int  # bytes in place, done-before included
    total: int
    copied: int  # bytes moved by this run


@dataclass(frozen=True)
class TreeDone:
    kind: ClassVar[str] = "summary"
    result: TreeResult


Event = (
    Start
    | Progress
    | Checkpoint
    | Retry
    | Notice
    | Done
    | TreeStart
    | FileDone
    | FileFailed
    | TreeProgress
    | TreeDone
)


class Subscriber:
    """Receives a transfer's events; every method defaults to doing nothing."""

    def on_start(self, event: Start) -> None:
        pass

    def on_progress(self, event: Progress) -> None:
        pass

    def on_checkpoint(self, event: Checkpoint) -> None:
        pass

    def on_retry(self, event: Retry) -> None:
        pass

    def on_notice(self, event: Notice) -> None:
        pass

    def on_done(self, event: Done) -> None:
        pass

    def on_tree_start(self, event: TreeStart) -> None:
        pass

    def on_file(self, event: FileDone) -> None:
        pass

    def on_file_error(self, event: FileFailed) -> None:
        pass

    def on_tree_progress(self, event: TreeProgress) -> None:
        pass

    def on_tree_done(self, event: TreeDone) -> None:
        pass


Listener = Subscriber | Callable[[Event], None]


def dispatch(listener: Listener, event: Event) -> None:
    if not isinstance(listener, Subscriber):
        listener(event)
        return
    match event:
        case Start():
            listener.on_start(event)
        case Progress():
            listener.on_progress(event)
        case Checkpoint():
            listener.on_checkpoint(event)
        case Retry():
            listener.on_retry(event)
        case Notice():
            listener.on_notice(event)
        case Done():
            listener.on_done(event)
        case TreeStart():
            listener.on_tree_start(event)
        case FileDone():
            listener.on_file(event)
        case FileFailed():
            listener.on_file_error(event)
        case TreeProgress():
            listener.on_tree_progress(event)
        case TreeDone():
            listener.on_tree_done(event)

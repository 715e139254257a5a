"""Progress events and the subscriber contract.

The engine reports what happens as typed events; a caller watches by passing
``Subscriber`` objects (override only the methods you need) or a plain
callable that receives every event. Nothing in the library prints.
"""

from collections.abc import Callable
from enum import StrEnum
from typing import NamedTuple

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
]  # what onward re-exports; dispatch is for its engine


class EventKind(StrEnum):
    """What an event is: its ``kind``, and the ``event`` field of its JSON line (docs/CLI.md)."""

    START = "start"
    PROGRESS = "progress"
    CHECKPOINT = "checkpoint"
    RETRY = "retry"
    NOTICE = "notice"
    DONE = "done"
    TREE_START = "tree-start"
    FILE = "file"
    FILE_ERROR = "file-error"
    TREE_PROGRESS = "tree-progress"
    SUMMARY = "summary"


class FileAction(StrEnum):
    """What a tree copy did to one entry (``FileDone.action``)."""

    COPIED = "copied"
    LINKED = "linked"  # a hard link made
    SYMLINKED = "symlinked"
    UPDATED = "updated"  # permission bits only
    VERIFIED = "verified"  # --verify full or -c found it intact
    DELETED = "deleted"  # --delete


class CopyResult(NamedTuple):
    """What one finished copy did."""

    source: str
    destination: str
    size: int
    resumed_from: int  # bytes kept from earlier runs, not moved by this one
    copied: int  # bytes moved by this run
    digest: str  # hex xxh3-128 of the chunk digests in order (see docs/JOURNAL.md)
    duration: float  # seconds
    # bytes of earlier runs' chunks this run read back from the partial to check them (a resume:
    # the last chunks, or all of them without proof that the partial is untouched; docs/RELIABILITY.md)
    rechecked: int = 0
    location: str | None = None  # an upload: the URL of the finished upload (no credentials)


class Start(NamedTuple):
    source: str
    destination: str
    total: int | None  # None: a download whose server gives no length
    resumed_from: int
    chunk_size: int

    @property
    def kind(self) -> EventKind:
        return EventKind.START


class Progress(NamedTuple):
    destination: str
    done: int  # bytes in the partial, resumed ones included
    total: int | None  # None: a download whose server gives no length
    copied: int  # bytes moved by this run

    @property
    def kind(self) -> EventKind:
        return EventKind.PROGRESS


class Checkpoint(NamedTuple):
    destination: str
    committed: int  # bytes durable and recorded in the journal
    total: int

    @property
    def kind(self) -> EventKind:
        return EventKind.CHECKPOINT


class Retry(NamedTuple):
    destination: str
    attempt: int
    delay: float
    error: str

    @property
    def kind(self) -> EventKind:
        return EventKind.RETRY


class Notice(NamedTuple):
    destination: str
    message: str

    @property
    def kind(self) -> EventKind:
        return EventKind.NOTICE


class Done(NamedTuple):
    result: CopyResult

    @property
    def kind(self) -> EventKind:
        return EventKind.DONE


# -- directory trees (onward.copy_tree; docs/CLI.md, "--json events of a tree") ----------


class TreeResult(NamedTuple):
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


class TreeStart(NamedTuple):
    source: str
    destination: str
    files: int
    bytes: int
    files_done: int  # already done before this run (not read again)
    bytes_done: int

    @property
    def kind(self) -> EventKind:
        return EventKind.TREE_START


class FileDone(NamedTuple):
    """One entry made, replaced or removed, and how (``FileAction``)."""

    path: str  # relative to the roots
    action: FileAction
    size: int
    copied: int  # bytes moved for it by this run
    resumed_from: int  # bytes of it kept from earlier runs
    files_done: int
    files: int

    @property
    def kind(self) -> EventKind:
        return EventKind.FILE


class FileFailed(NamedTuple):
    path: str  # absolute path of the source or destination entry at fault
    message: str

    @property
    def kind(self) -> EventKind:
        return EventKind.FILE_ERROR


class TreeProgress(NamedTuple):
    files_done: int
    files: int
    done: int  # bytes in place, done-before included
    total: int
    copied: int  # bytes moved by this run

    @property
    def kind(self) -> EventKind:
        return EventKind.TREE_PROGRESS


class TreeDone(NamedTuple):
    result: TreeResult

    @property
    def kind(self) -> EventKind:
        return EventKind.SUMMARY


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


# The Subscriber method each kind of event goes to.
HANDLERS: dict[type[Event], str] = {
    Start: "on_start",
    Progress: "on_progress",
    Checkpoint: "on_checkpoint",
    Retry: "on_retry",
    Notice: "on_notice",
    Done: "on_done",
    TreeStart: "on_tree_start",
    FileDone: "on_file",
    FileFailed: "on_file_error",
    TreeProgress: "on_tree_progress",
    TreeDone: "on_tree_done",
}


def dispatch(listener: Listener, event: Event) -> None:
    if isinstance(listener, Subscriber):
        getattr(listener, HANDLERS[type(event)])(event)
    else:
        listener(event)

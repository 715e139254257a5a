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
    "Notice",
    "Progress",
    "Retry",
    "Start",
    "Subscriber",
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


Event = Start | Progress | Checkpoint | Retry | Notice | Done


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

"""Endpoints do I/O only: one module per kind of storage, behind these small interfaces.

A ``Source`` says who it is and reads ranges; a ``Sink`` writes ranges into a
partial copy, makes them durable, reads them back for verification and
promotes the finished partial to its final name. Errors leave an endpoint as
``onward.errors`` types, never as bare ``OSError``.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from ..core.identity import Identity
from ..core.journal import Promote, Seal

__all__ = ["Attributes", "JournalStore", "Sink", "Source"]


class Attributes(NamedTuple):
    """What a source says about its bytes that a copy may preserve (None: unknown)."""

    mode: int | None
    times_ns: tuple[int, int] | None  # (atime, mtime)


class Source(Protocol):
    name: str

    @property
    def connections(self) -> int:
        """How many chunks the engine may read at once (parallel requests)."""
        ...

    @property
    def readahead(self) -> int:
        """Chunk buffers the engine fills ahead of the writer (docs/PERFORMANCE.md). A file waits
        while the writer syncs at no cost, so one being read as another is written suffices; a
        stream's receive window fills in that time and the sender stalls, so it gets more."""
        ...

    @property
    def recheck_on_change(self) -> bool:
        """Whether a changed source's committed chunks are worth re-reading to keep the
        matching ones (cheap locally; a second download remotely, so there: start over)."""
        ...

    def identity(self) -> Identity:
        """The source as it is now (raises ``SourceError`` when it cannot be read)."""
        ...

    def attributes(self) -> Attributes:
        """Permission bits and times as of the last ``identity()``."""
        ...

    def read_into(self, offset: int, buf: memoryview) -> int:
        """Fill ``buf`` from ``offset``; fewer bytes only at the end of the source."""
        ...

    def close(self) -> None: ...


class Sink(Protocol):
    name: str
    # Whether written chunks can be read back for verification (a local partial can; a remote
    # upload cannot: the engine then skips its read-backs, docs/UPLOAD.md).
    can_read_back: bool

    def present(self) -> int | None:
        """Bytes in the partial, or None when there is no partial."""
        ...

    def reset(self) -> None:
        """Empty the partial (create it if needed)."""
        ...

    def write(self, offset: int, data: memoryview) -> None: ...

    def read_into(self, offset: int, buf: memoryview) -> int: ...

    def truncate(self, size: int) -> None: ...

    def sync(self) -> None:
        """Make every write so far durable; raises ``DurabilityError`` on failure."""
        ...

    def seal(self) -> Seal | None:
        """The partial as it is now, recorded after each write so that a resume can prove it
        untouched since (``core.trust``); None where there is nothing to read back."""
        ...

    def token(self) -> Promote:
        """What identifies the partial once it holds the final name."""
        ...

    def holds(self, token: Promote) -> bool:
        """Whether the final name already holds the partial ``token`` names (renamed earlier)."""
        ...

    def promote(self, mode: int | None, times_ns: tuple[int, int] | None) -> None:
        """Apply metadata, make it durable, and atomically take the final name."""
        ...

    def settle(self) -> None:
        """Make the final name durable (a promotion a crash interrupted)."""
        ...

    def close(self) -> None: ...


class JournalStore(Protocol):
    """Where a transfer's journal lives: beside a local destination, or in a state directory."""

    name: str

    def read(self) -> bytes | None: ...

    def create(self, data: bytes) -> None:
        """Replace the journal atomically with ``data`` (durable on return)."""
        ...

    def append(self, data: bytes) -> None:
        """Append and make durable; raises ``DurabilityError`` when it cannot."""
        ...

    def note(self, data: bytes) -> None:
        """Append without making it durable (IN-FLIGHT and SEAL records: a lost one costs a
        read-back, never a wrong byte)."""
        ...

    def set_aside(self) -> str:
        """Move an unreadable journal out of the way (``NAME.bad``); returns where it went."""
        ...

    def remove(self) -> None: ...

    def close(self) -> None: ...

"""Endpoints do I/O only: one module per kind of storage, behind these small interfaces.

A ``Source`` says who it is and reads ranges; a ``Sink`` writes ranges, makes them durable and
promotes the finished copy to its final name. What only some endpoints can do is a capability
of its own, a small protocol the engine checks for by type (``read_back``, ``sealer``,
``hole_sink``, ``hole_source``, ``change_reason``), never by name: reading the written bytes
back (``ReadBack``), sealing the partial (``Sealable``), leaving holes (``HoleSink``) and
finding them (``HoleSource``), explaining a change (``ExplainsChange``). Errors leave an
endpoint as ``onward.errors`` types, never as bare ``OSError``.

Durability, as each method promises it on return, is the engine's ordering rule (data durable
before the journal record that claims it): ``Sink.sync`` and ``JournalStore.append`` are where
it is kept, ``Sink.promote`` and ``JournalStore.create`` are durable too, nothing else is.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

from ..core.identity import Identity
from ..core.journal import Promote, Seal

__all__ = [
    "Attributes",
    "ExplainsChange",
    "HoleSink",
    "HoleSource",
    "JournalStore",
    "ReadBack",
    "Sealable",
    "Sink",
    "Source",
    "change_reason",
    "hole_sink",
    "hole_source",
    "read_back",
    "sealer",
]


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


@runtime_checkable
class HoleSource(Protocol):
    """Capability of a source that knows where its holes are (a local file: ``SEEK_DATA`` and
    ``SEEK_HOLE``). Both answers are hints: a wrong one costs a hole written as zeros (or a
    chunk written whole), never a wrong byte, because the engine leaves a hole only where the
    bytes it read are zeros."""

    def in_hole(self, offset: int, length: int) -> bool:
        """Whether ``offset`` to ``offset + length`` lies wholly in a hole."""
        ...

    def data_in(self, offset: int, length: int) -> list[tuple[int, int]] | None:
        """The data extents (start, end) in that range, or None when it is all data."""
        ...


@runtime_checkable
class ExplainsChange(Protocol):
    """Capability of a source that may know better than "changed" why its identity moved (HTTP:
    a broken response that cannot be continued)."""

    why_changed: str | None


class Sink(Protocol):
    """Where the copy goes: written at offsets, made durable, then promoted to its final name.

    Every sink keeps these promises; a method with nothing to do says why in its docstring."""

    name: str

    def present(self) -> int | None:
        """Bytes the destination holds from earlier runs, or None when there is nothing to resume."""
        ...

    def reset(self) -> None:
        """Drop whatever earlier runs left (create an empty partial where one is kept)."""
        ...

    def write(self, offset: int, data: memoryview) -> None:
        """Write ``data`` at ``offset``; not durable until ``sync`` returns (``data`` may be
        reused as soon as this returns)."""
        ...

    def sync(self) -> None:
        """On return every write so far is durable (survives a crash or a power cut): the engine
        journals a chunk only after this. Raises ``DurabilityError`` when it cannot say so, and
        after one such failure keeps failing (progress since the last checkpoint is not trusted)."""
        ...

    def token(self) -> Promote:
        """What identifies the partial once it holds the final name (journaled before ``promote``)."""
        ...

    def holds(self, token: Promote) -> bool:
        """Whether the final name already holds the copy ``token`` names (promoted earlier)."""
        ...

    def promote(self, mode: int | None, times_ns: tuple[int, int] | None) -> None:
        """Apply metadata and make the finished copy durable under its final name, atomically:
        on return the final name holds all of it, before it held none of it."""
        ...

    def settle(self) -> None:
        """Make a promotion a crash interrupted durable (the final name is already in place)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ReadBack(Protocol):
    """Capability of a sink whose written bytes can be read back from the device: the
    end-to-end check after each sync, on resume and by ``--verify full``. Remote uploads lack
    it (their integrity is the server's acknowledged offset or the store's part checksums,
    docs/UPLOAD.md). ``can_read_back`` False turns the capability off (a test double)."""

    can_read_back: bool

    def read_into(self, offset: int, buf: memoryview) -> int:
        """Fill ``buf`` with the bytes at ``offset`` as the device holds them (not a cached copy)."""
        ...

    def truncate(self, size: int) -> None:
        """Cut or extend the partial to ``size`` bytes (durable at the next ``sync``)."""
        ...


@runtime_checkable
class Sealable(Protocol):
    """Capability of a partial that can be sealed: its state recorded after each write so that a
    resume can prove it untouched since (``core.trust``) and skip reading it all back."""

    def seal(self) -> Seal | None:
        """The partial as it is now (no I/O beyond an ``fstat``); None when there is no partial."""
        ...


@runtime_checkable
class HoleSink(Protocol):
    """Capability of a partial that can keep holes (``--sparse``, the default for local files)."""

    def leave_hole(self, offset: int, length: int) -> bool:
        """Keep ``offset`` to ``offset + length`` a hole, the partial extended over it so that it
        reads as zeros (durable, as writes are, at the next ``sync``); False, with nothing done,
        where the partial holds data there (the zeros must be written)."""
        ...


def read_back(sink: Sink) -> ReadBack | None:
    """The sink's read-back capability, or None."""
    return sink if isinstance(sink, ReadBack) and sink.can_read_back else None


def sealer(sink: Sink) -> Sealable | None:
    """The sink's seal, where it can also be read back (a seal saves read-backs), or None."""
    return sink if read_back(sink) is not None and isinstance(sink, Sealable) else None


def hole_sink(sink: Sink) -> HoleSink | None:
    return sink if isinstance(sink, HoleSink) else None


def hole_source(source: Source) -> HoleSource | None:
    return source if isinstance(source, HoleSource) else None


def change_reason(source: Source) -> str | None:
    """Why the source's identity moved, where it knows better than "changed"."""
    return source.why_changed if isinstance(source, ExplainsChange) else None


class JournalStore(Protocol):
    """Where a transfer's journal lives: beside a local destination, or in a state directory."""

    name: str

    def read(self) -> bytes | None: ...

    def create(self, data: bytes) -> None:
        """Replace the journal atomically with ``data`` (durable on return)."""
        ...

    def append(self, data: bytes) -> None:
        """Append CHUNK and PROMOTE records; durable on return, or ``DurabilityError``.

        One store keeps a weaker promise, for a stated reason: ``MemoryJournal``
        (``endpoints.batch``) keeps nothing on disk, a batched file's progress is its batch,
        made durable by the batch's own sync before anything relies on it."""
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

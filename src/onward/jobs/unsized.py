"""Downloads of a body whose length the server does not give (chunked, or ended by a close).

The engine plans a copy as fixed chunks of a known total. Here the plan grows: one
response is read in order, chunk after chunk, and the journal header is rewritten at
every checkpoint with the size reached, so at any time the journal describes a copy of
that many bytes, with the ordering rule, read-backs, verification and the atomic rename
of every other copy (``Transfer``'s own). A broken response starts over (its source's
identity changes, ``HttpSource``), within the retry budget.

A later run resumes such a partial only when the server then proves it is the same file:
a size, byte ranges and the strong ETag (or Last-Modified) the first response carried
(``adopt_unsized``); otherwise it starts over.
"""

from __future__ import annotations

from collections.abc import Callable

from ..core.identity import Identity
from ..core.journal import DecodeError, decode, encode_chunks, encode_start
from ..core.plan import ChunkRecord
from ..endpoints import JournalStore
from ..engine import Transfer, digest
from ..events import Progress, Start

__all__ = ["UnsizedTransfer", "adopt_unsized"]

UNSIZED = "unknown"  # the "length" attribute of such a download's identity


class UnsizedTransfer(Transfer):
    """A ``Transfer`` whose total is known only once the source's one response ends."""

    def announce(self) -> None:
        self.emit(Start(self.source.name, self.sink.name, None, self.resumed_from, self.plan.chunk_size))

    def copy_remaining(self) -> None:
        size = self.plan.chunk_size
        every = self.opts.checkpoint_every(False)
        offset = self.durable  # 0: a response that broke cannot be continued, it starts over
        since, last = 0, self.clock()
        while True:
            view = self.buffer[:size]
            got = self.source.read_into(offset, view)
            if got:
                chunk_digest = digest(view[:got])
                self.write(offset // size, view[:got], chunk_digest)  # between IN-FLIGHT and SEAL
                self.pace(got)
                self.pending.append(ChunkRecord(offset // size, got, chunk_digest))
                offset += got
                self.copied += got
                since += got
                self.header = self.header_or_fail()._replace(total_size=offset)
                self.emit(Progress(self.sink.name, offset, None, self.copied))
            if got < size:  # the body ended
                break
            if since >= every or self.clock() - last >= self.opts.checkpoint_seconds:
                self.checkpoint()
                since, last = 0, self.clock()
        self.checkpoint()

    def claim(self, records: list[ChunkRecord], read: Callable[[int, memoryview], int] | None) -> int:
        """The engine's claim, then the journal rewritten with the size reached in its header
        (records beyond a header's total would read as a damaged tail)."""
        bad = super().claim(records, read)
        self.rewrite()
        return bad


def adopt_unsized(journal: JournalStore, name: str, current: Identity, resumable: bool) -> str | None:
    """Turn the journal of an earlier download without a length into one of the file the server
    now describes (``current``: its size and validators), when the server proves it is the same
    file: ``resumable`` (byte ranges and a validator) and the same strong ETag, or without ETags
    the same Last-Modified. Returns a notice, or None when there was no such journal."""
    raw = journal.read()
    if raw is None:
        return None
    try:
        loaded = decode(raw)
    except DecodeError:
        return None  # the engine says what is wrong with it
    header = loaded.header
    old = header.identity
    if old.attrs.get("length") != UNSIZED or header.source != name or current.attrs.get("length") == UNSIZED:
        return None
    etag, modified = old.attrs.get("etag"), old.attrs.get("last_modified")
    same = (etag and etag == current.attrs.get("etag")) or (
        not etag
        and not current.attrs.get("etag")
        and modified
        and modified == current.attrs.get("last_modified")
    )
    chunk = header.chunk_size
    kept = [r for r in loaded.chunks.values() if r.length == chunk and (r.index + 1) * chunk <= current.size]
    if not (resumable and same and kept):
        return None  # the engine starts over (the identity differs) and says so
    header = header._replace(identity=current, total_size=current.size)
    journal.create(encode_start(header) + encode_chunks(sorted(kept)))
    return "the earlier download had no length; the server now gives its size and ranges for the same version"

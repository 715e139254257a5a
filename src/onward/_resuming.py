"""The engine's first half: a transfer's state, and carrying out ``core.resume``'s decisions.

``Resuming`` loads or creates the journal and makes the state match what the partial really
holds (resume, adopt, rebase, start over); ``engine.Transfer`` builds on it with the copy loop,
verification and promotion. Each choice here is ``core.resume``'s; this module only does what
it says, with the endpoints, and reports it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Sequence

import xxhash

from .core.identity import Identity
from .core.journal import (
    Decoded,
    DecodeError,
    Garbled,
    Header,
    decode,
    encode_chunks,
    encode_seal,
    encode_start,
)
from .core.plan import ChunkRecord, Plan, without
from .core.resume import Change, Owner, after_change, on_partial, owner, recheck
from .core.trust import distrust
from .endpoints import JournalStore, ReadBack, Sealable, Sink, Source, read_back, sealer
from .endpoints.buffers import aligned_buffer
from .errors import DestinationError, JournalError
from .events import Event, Listener, Notice, dispatch
from .options import Options
from .units import format_size

__all__ = ["Resuming", "digest"]


def digest(data: memoryview) -> bytes:
    return xxhash.xxh3_128(data).digest()


class Resuming:
    """A transfer's state and how a run takes up what an earlier one left."""

    # Set by ``Transfer`` before this class's ``__init__`` runs.
    source: Source
    sink: Sink
    journal: JournalStore
    opts: Options
    listeners: Sequence[Listener]

    def __init__(self) -> None:
        self.readable: ReadBack | None = read_back(self.sink)  # None: a remote sink (docs/UPLOAD.md)
        # A partial that can be read back gets IN-FLIGHT and SEAL records around every write, so
        # that a resume can prove it untouched since (core/trust.py).
        self.sealer: Sealable | None = sealer(self.sink)
        self.header: Header | None = None
        self.committed: dict[int, ChunkRecord] = {}
        self.resumed_from = 0  # bytes kept from earlier runs (journaled, or written and adopted)
        self.earlier: frozenset[int] = frozenset()  # the chunks those bytes are in
        self.rechecked = 0  # bytes of earlier runs' chunks read back from the partial by this run
        self._buffer: memoryview | None = None

    @property
    def sealing(self) -> bool:
        return self.sealer is not None

    # -- reporting and shared state -------------------------------------------

    def emit(self, event: Event) -> None:
        for listener in self.listeners:
            dispatch(listener, event)

    def notice(self, message: str) -> None:
        self.emit(Notice(self.sink.name, message))

    @property
    def plan(self) -> Plan:
        return self.header_or_fail().plan

    def header_or_fail(self) -> Header:
        assert self.header is not None
        return self.header

    @property
    def durable(self) -> int:
        return self.plan.committed_bytes(self.committed)

    @property
    def buffer(self) -> memoryview:
        """Where a chunk is read to be checked (and ``copy_single``'s one chunk): one chunk of
        the plan, whose size is the journal's (an earlier run's ``--chunk-size``), not this
        run's option; made on first use."""
        if self._buffer is None:
            self._buffer = aligned_buffer(self.plan.chunk_size)
        return self._buffer

    @property
    def adopts(self) -> bool:
        """Whether a resume keeps the chunks written after the last checkpoint (``adopt``): a
        cheap source to compare them with (a local file) and a sink to read them back from."""
        return self.source.recheck_on_change and self.readable is not None

    # -- preparing: fresh start or resume -------------------------------------

    def prepare(self, current: Identity) -> bool:
        """Load or create the journal; True when an earlier run already promoted the copy."""
        if self.opts.restart:
            self.journal.remove()
        raw = self.journal.read()
        if raw is None:
            self.start_fresh(current)
            return False
        try:
            loaded = decode(raw)
        except Garbled as exc:
            aside = self.journal.set_aside()
            self.start_over(current, f"{self.journal.name}: journal unreadable ({exc}), moved to {aside}")
            return False
        except DecodeError as exc:
            raise JournalError(
                f"{self.journal.name}: {exc}; move it away, or re-run with --restart to start over",
                self.journal.name,
            ) from None
        self.check_owner(loaded.header, current)
        self.header = loaded.header
        if loaded.promote is not None and self.sink.holds(loaded.promote):
            # Renamed into place by an earlier run that stopped before removing the journal.
            self.committed = dict(loaded.chunks)
            self.sink.settle()
            self.journal.remove()
            self.notice("an earlier run had already finished this copy; it is complete")
            return True
        self.resume(loaded, current)
        return False

    def start_fresh(self, current: Identity) -> None:
        self.begin(current)
        self.rewrite()

    def start_over(self, current: Identity, why: str) -> None:
        """A new journal in place of an unreadable one; for a local source the chunks the
        partial holds that still equal the source's are kept (``adopt``), else it is emptied."""
        present = self.sink.present()
        if not present or not self.adopts:
            self.notice(f"{why}; starting over")
            self.start_fresh(current)
            return
        self.header = self.new_header(current)
        self.committed = {}
        self.rewrite()
        self.adopt(present)
        self.notice(f"{why}; kept {len(self.committed)} chunk(s) of the partial copy that equal the source")

    def new_header(self, current: Identity) -> Header:
        """A plan for the source as it is now."""
        return Header(
            source=self.source.name,
            destination=self.sink.name,
            identity=current,
            chunk_size=self.opts.chunk_size,
            total_size=current.size,
            created=time.time(),
        )

    def begin(self, current: Identity) -> None:
        """A plan for the source as it is now, nothing committed, an empty partial."""
        self.header = self.new_header(current)
        self.committed = {}
        self.sink.reset()

    def check_owner(self, header: Header, current: Identity) -> None:
        whose = owner(header, self.source.name, self.sink.name, current)
        if whose is Owner.OTHER_DESTINATION:
            raise JournalError(
                f"{self.journal.name}: journal belongs to a copy to {header.destination}; "
                "move it away, or re-run with --restart to start over",
                self.journal.name,
            )
        if whose is Owner.OTHER_SOURCE:
            raise DestinationError(
                f"{self.sink.name}: holds an unfinished copy of {header.source}; re-run that copy "
                "to finish it, or use --restart to discard it",
                self.sink.name,
            )

    def resume(self, loaded: Decoded, current: Identity) -> None:
        """Take up an earlier run's journal: keep what the partial still holds, read back what
        is not proven intact, deal with a changed source, then adopt what was written unclaimed."""
        if loaded.damaged_tail:
            self.notice(f"journal tail damaged: ignored its last {loaded.damaged_tail} bytes")
        present = self.sink.present()
        partial = on_partial(self.plan, loaded.chunks, present, loaded.damaged_tail > 0)
        if partial.reset:
            if partial.dropped:
                self.notice("the partial copy is gone; starting over")
            self.sink.reset()
        elif partial.dropped:
            self.notice(
                f"the partial copy is shorter than its journal ({format_size(present or 0)}); "
                f"copying {len(partial.dropped)} chunk(s) again"
            )
        self.committed, dirty = partial.committed, partial.dirty
        why = self.distrusted(loaded) if self.committed and self.opts.verify != "full" else None
        damaged: list[int] = []  # found wrong in the partial: not worth adopting again
        if why is not None:  # no proof that the partial is as onward left it: read it all back
            damaged = self.check(self.reread, self.records(self.committed))
            outcome = f"{len(damaged)} damaged, copying them again" if damaged else "all intact"
            self.notice(f"{why}: read back its {len(self.committed)} committed chunk(s), {outcome}")
            self.committed, dirty = without(self.committed, damaged), dirty or bool(damaged)
        change = after_change(
            self.header_or_fail().identity,
            current,
            recheck_on_change=self.source.recheck_on_change,
            since_last_run=True,
        )
        if change is not None:
            self.rebase(current, change)
            return
        bad = self.recheck(reread_all=why is not None)
        if dirty or bad:
            self.rewrite()
        elif self.sealing:
            self.journal.note(self.sealed())  # as checked now: a next resume need not read it again
        if present is not None and self.adopts:
            self.adopt(present, skip=set(damaged + bad))

    def recheck(self, *, reread_all: bool) -> list[int]:
        """Check the committed chunks ``core.resume.recheck`` names; drop and return the bad ones."""
        which = recheck(
            self.committed,
            full=self.opts.verify == "full",
            readable=self.readable is not None,
            reread_all=reread_all,
            last=self.opts.recheck_chunks,
        )
        bad = self.check(self.source.read_into, self.records(which.source))
        bad += self.check(self.reread, self.records(set(which.read_back) - set(bad)))
        if bad:
            self.notice(f"{len(bad)} chunk(s) of the partial copy are damaged; copying them again")
            self.committed = without(self.committed, bad)
        return bad

    def distrusted(self, loaded: Decoded) -> str | None:
        """Why the committed chunks cannot be trusted unread (core/trust.py), or None."""
        if self.readable is None:
            return None
        now = self.sealer.seal() if self.sealer is not None else None
        if now is None:
            return "the partial copy cannot be sealed"
        return distrust(loaded.seal, loaded.in_flight, now)

    def reread(self, offset: int, buf: memoryview) -> int:
        """Read back, from the partial, a chunk an earlier run wrote (counted in ``rechecked``)."""
        assert self.readable is not None
        got = self.readable.read_into(offset, buf)
        self.rechecked += got
        return got

    def sealed(self) -> bytes:
        """A SEAL record of the partial as it is now, or nothing where it cannot be read back."""
        seal = self.sealer.seal() if self.sealer is not None else None
        return encode_seal(seal) if seal is not None else b""

    def adopt(self, present: int, skip: Collection[int] = ()) -> None:
        """Keep what an earlier run wrote after its last checkpoint (it was killed, or crashed)
        instead of copying it again: the chunks the partial holds are made durable, read back
        and journaled if they equal the source's, as that checkpoint would have done."""
        records = []
        for index in self.plan.unclaimed(self.committed, present):
            if index in skip:
                continue
            offset, length = self.plan.span(index)
            view = self.buffer[:length]
            if self.source.read_into(offset, view) != length:
                break  # the source got shorter: the copy finds out and deals with it
            records.append(ChunkRecord(index, length, digest(view)))
        if records:
            self.claim(records, self.reread)  # always read back: what is on disk is unknown until read

    def claim(self, records: list[ChunkRecord], read: Callable[[int, memoryview], int] | None) -> int:
        """Sync the partial, read ``records`` back from it with ``read`` (None: not at all), then
        journal the ones that read back intact (the ordering rule: data durable before the record
        claims it). Returns how many did not."""
        self.sink.sync()
        bad = set(self.check(read, records)) if read is not None else set()
        good = [r for r in records if r.index not in bad]
        if good:
            self.journal.append(encode_chunks(good))
            self.committed.update((r.index, r) for r in good)
        return len(bad)

    def rebase(self, current: Identity, change: Change) -> None:
        """Adopt the source as it is now, keeping only committed chunks it still holds."""
        self.header = self.header_or_fail()._replace(identity=current, total_size=current.size)
        if not change.keep_matching:
            # Re-checking a remote source's chunks would download them again: start over instead.
            self.committed = {}
            self.notice(f"{change.why}: starting over from zero")
        else:
            kept = self.plan.rebase(self.committed)
            bad = self.check(self.source.read_into, self.records(kept))
            self.committed = without(kept, bad)
            self.notice(
                f"{change.why}: kept {len(self.committed)} of {len(kept)} committed chunk(s) "
                "that still match it"
            )
        self.rewrite()
        # Only what is still kept of the earlier runs' chunks counts as resumed (the done event).
        self.resumed_from = self.plan.committed_bytes(
            {i: self.committed[i] for i in self.earlier & set(self.committed)}
        )

    def rewrite(self) -> None:
        """A new journal: the header, the chunks still trusted, and a seal of the partial as it
        is now (every caller has just checked or decided what the partial holds)."""
        self.journal.create(
            encode_start(self.header_or_fail()) + encode_chunks(self.records(self.committed)) + self.sealed()
        )

    def records(self, indexes: Iterable[int]) -> list[ChunkRecord]:
        return [self.committed[i] for i in sorted(indexes)]

    def check(self, read: Callable[[int, memoryview], int], records: Iterable[ChunkRecord]) -> list[int]:
        """Indexes of the ``records`` whose bytes, as ``read`` returns them, fail their digest."""
        bad = []
        for record in records:
            offset = record.index * self.plan.chunk_size
            view = self.buffer[: record.length]
            if read(offset, view) != record.length or digest(view) != record.digest:
                bad.append(record.index)
        return bad

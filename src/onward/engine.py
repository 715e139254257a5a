"""The one loop: read chunks from a source, write them to a sink, checkpoint, verify, promote.

Every decision comes from ``onward.core``; every byte moves through an
endpoint. The ordering rule lives here and nowhere else: chunk data is synced
by the sink *before* the journal record that claims it is appended.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Iterable, Sequence

import xxhash

from .checksum import FinalCheck
from .core.identity import Identity, matches, one_response
from .core.journal import (
    Decoded,
    DecodeError,
    Garbled,
    Header,
    decode,
    encode_chunks,
    encode_in_flight,
    encode_promote,
    encode_seal,
    encode_start,
)
from .core.lifecycle import Lifecycle, State, Step
from .core.plan import ChunkRecord, Plan, without
from .core.retry import Backoff
from .core.throttle import Throttle, paced
from .core.trust import distrust
from .endpoints import JournalStore, Sink, Source
from .endpoints.direct import aligned_buffer
from .errors import (
    DestinationError,
    DurabilityError,
    IntegrityError,
    Interrupted,
    JournalError,
    NoSpaceError,
    OnwardError,
    TransientError,
)
from .events import Checkpoint, CopyResult, Done, Event, Listener, Notice, Progress, Retry, Start, dispatch
from .options import Options
from .readahead import Readahead
from .units import format_size

__all__ = ["Transfer"]


def digest(data: memoryview) -> bytes:
    return xxhash.xxh3_128(data).digest()


class Transfer:
    """One copy from ``source`` to ``sink``; ``run()`` once."""

    def __init__(
        self,
        source: Source,
        sink: Sink,
        journal: JournalStore,
        options: Options,
        listeners: Sequence[Listener] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] | None = None,  # default random.random
        final_check: FinalCheck | None = None,
        throttle: Throttle | None = None,  # shared by several copies (a tree); else from options
    ) -> None:
        self.source, self.sink, self.journal, self.opts = source, sink, journal, options
        if throttle is None and options.bwlimit is not None:
            throttle = paced(options.bwlimit, options.chunk_size, clock())
        self.throttle = throttle
        self.final_check = final_check  # whole-file digests (--expect-digest), last step of verify
        self.listeners = listeners
        self.clock, self.sleep, self._jitter = clock, sleep, jitter
        self.life = Lifecycle()
        self.header: Header | None = None
        self.committed: dict[int, ChunkRecord] = {}
        self.pending: list[ChunkRecord] = []  # written, not yet synced and journaled
        self.copied = 0
        self.resumed_from = 0  # bytes kept from earlier runs (journaled, or written and adopted)
        self.earlier: frozenset[int] = frozenset()  # the chunks those bytes are in
        self.rechecked = 0  # bytes of earlier runs' chunks read back from the partial by this run
        self.wrong_read_backs = 0  # chunks of this run that read back wrong: one notice at the end
        # A partial that can be read back gets IN-FLIGHT and SEAL records around every write, so
        # that a resume can prove it untouched since (core/trust.py).
        self.sealing = sink.can_read_back
        self._buffer: memoryview | None = None
        self._zeros: dict[int, bytes] = {}  # the digest of zeros, by length (a chunk, the last one)

    def jitter(self) -> float:
        """A random fraction for a retry's delay; ``random`` is imported when a retry needs it."""
        if self._jitter is None:
            import random

            self._jitter = random.random
        return self._jitter()

    def pace(self, moved: int) -> None:
        """--bwlimit: wait after ``moved`` bytes are written, between chunks (never between a
        sync and its journal record, so the limit leaves the durability order alone)."""
        if self.throttle is not None:
            wait = self.throttle.delay(moved, self.clock())
            if wait > 0:
                self.sleep(wait)

    # -- reporting -----------------------------------------------------------

    def emit(self, event: Event) -> None:
        for listener in self.listeners:
            dispatch(listener, event)

    def notice(self, message: str) -> None:
        self.emit(Notice(self.sink.name, message))

    @property
    def plan(self) -> Plan:
        assert self.header is not None
        return self.header.plan

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

    # -- the run -------------------------------------------------------------

    def run(self, *, lean: bool = False) -> CopyResult:
        """Copy, resuming what an earlier run left. ``lean``: the caller keeps no journal of this
        copy that a later run could resume (a batched file of a tree: ``endpoints.batch``); a
        source of at most one chunk is then copied in one pass (``copy_single``)."""
        started = self.clock()
        try:
            if not (lean and self.copy_single(self.source.identity())):
                self.copy_all()
        except KeyboardInterrupt:
            self.life.step(Step.INTERRUPT)
            raise self.interrupted() from None
        except OnwardError as exc:
            self.life.step(Step.ERROR)
            if not isinstance(exc, DurabilityError):
                self.salvage()
            if isinstance(exc, NoSpaceError):
                raise self.no_space(exc) from None
            raise
        finally:
            if self.wrong_read_backs:
                self.notice(
                    f"{self.wrong_read_backs} chunk(s) read back wrong after writing; copied them again"
                )
            self.source.close()
            self.sink.close()
            self.journal.close()
        joined = b"".join(self.committed[i].digest for i in range(self.plan.chunk_count))
        result = CopyResult(
            source=self.source.name,
            destination=self.sink.name,
            size=self.plan.total_size,
            resumed_from=self.resumed_from,
            copied=self.copied,
            digest=xxhash.xxh3_128(joined).hexdigest(),
            duration=self.clock() - started,
            rechecked=self.rechecked,
        )
        self.emit(Done(result))
        return result

    def copy_all(self) -> None:
        """The general loop: prepare or resume, copy, verify (in rounds), promote."""
        finished_earlier = self.prepare(self.source.identity())
        self.earlier = frozenset(self.committed)
        self.resumed_from = self.durable
        self.announce()
        if finished_earlier:
            return
        self.life.step(Step.PLANNED)
        while self.life.state is not State.PROMOTING:
            self.copy_with_retries()
            self.life.step(Step.COPIED)
            if self.verify():
                self.life.step(Step.VERIFIED)
            elif self.life.step(Step.DAMAGED) is State.FAILED:
                raise IntegrityError(
                    f"{self.source.name}: the source kept changing (or the copy kept failing "
                    f"verification) over {self.life.max_rounds} rounds; nothing was promoted, "
                    "re-run when it is stable",
                    self.source.name,
                )
        self.promote()
        self.life.step(Step.PROMOTED)

    def copy_single(self, current: Identity) -> bool:
        """A source of at most one chunk with nothing to resume, in one pass: no journal (the
        caller keeps none: ``run(lean=True)``), no reader thread, no verification rounds.

        The general loop's steps, in its order: read and digest, write, sync, read back, check
        the source's identity, promote; then the events and the result the general loop gives.
        False, before anything is promoted or any progress reported, when it does not apply or
        anything is amiss (a short read, a read-back that differs, a source that changed): the
        general loop then starts the copy over and deals with it as with any other copy. Errors
        and Ctrl-C leave it as they leave the general loop (``run``'s except clauses).
        """
        if (
            current.size > self.opts.chunk_size
            or self.source.connections != 1
            or self.opts.verify == "full"  # re-reads of the source: the general loop's verify()
            or self.final_check is not None
            or self.journal.read() is not None
        ):
            return False
        self.begin(current)
        size, records = current.size, []
        if size:
            view = self.buffer[:size]
            if self.source.read_into(0, view) != size:
                return False
            records.append(ChunkRecord(0, size, digest(view)))
            self.put(0, view, records[0].digest)
            self.pace(size)
            self.sink.sync()
            if self.reads_back and self.check(self.sink.read_into, records):
                self.wrong_read_backs += 1
                return False
        if not matches(current, self.source.identity()):
            return False
        # No truncate: begin() emptied the partial, which now holds exactly the bytes just written.
        self.committed = {r.index: r for r in records}
        self.promote_sink()
        self.copied = size
        self.announce()
        if records:
            self.emit(Progress(self.sink.name, size, size, size))
            self.emit(Checkpoint(self.sink.name, size, size))
        return True

    def announce(self) -> None:
        self.emit(
            Start(
                self.source.name,
                self.sink.name,
                self.plan.total_size,
                self.resumed_from,
                self.plan.chunk_size,
            )
        )

    def salvage(self) -> None:
        """Checkpoint the chunks fully written before a stop or an error, if that still works."""
        try:
            if self.header is not None:
                self.checkpoint()
        except (OnwardError, KeyboardInterrupt):
            pass

    def no_space(self, exc: NoSpaceError) -> NoSpaceError:
        present = self.sink.present() or 0
        needed = max(self.plan.total_size - max(present, self.durable), 0) if self.header else 0
        return NoSpaceError(
            f"{exc.message}: about {format_size(needed)} more needed; "
            "the partial is kept, free space and re-run to resume",
            exc.path,
        )

    def interrupted(self) -> Interrupted:
        """Checkpoint what is fully written, then describe where a re-run will pick up."""
        self.salvage()
        total = self.plan.total_size if self.header else 0
        done = self.durable if self.header else 0
        pct = f" ({100 * done // total}%)" if total else ""
        then = "run the same command again to resume"
        if self.header and one_response(self.header.identity):
            then = "this server cannot resume a download: running the same command again starts over"
        return Interrupted(
            f"{self.sink.name}: interrupted at {format_size(done)} of {format_size(total)}{pct}; {then}",
            self.sink.name,
            done,
            total,
        )

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
        if header.destination != self.sink.name:
            raise JournalError(
                f"{self.journal.name}: journal belongs to a copy to {header.destination}; "
                "move it away, or re-run with --restart to start over",
                self.journal.name,
            )
        same_file = "ino" in current.attrs and all(
            header.identity.attrs.get(k) == current.attrs.get(k) for k in ("dev", "ino")
        )
        if header.source != self.source.name and not same_file:
            raise DestinationError(
                f"{self.sink.name}: holds an unfinished copy of {header.source}; re-run that copy "
                "to finish it, or use --restart to discard it",
                self.sink.name,
            )

    def resume(self, loaded: Decoded, current: Identity) -> None:
        committed = dict(loaded.chunks)
        damaged: list[int] = []  # found wrong in the partial: not worth adopting again
        dirty = loaded.damaged_tail > 0
        if dirty:
            self.notice(f"journal tail damaged: ignored its last {loaded.damaged_tail} bytes")
        present = self.sink.present()
        if present is None:
            if committed:
                self.notice("the partial copy is gone; starting over")
            committed, dirty = {}, True
            self.sink.reset()
        else:
            short = self.plan.beyond(committed, present)
            if short:
                self.notice(
                    f"the partial copy is shorter than its journal ({format_size(present)}); "
                    f"copying {len(short)} chunk(s) again"
                )
                committed, dirty = without(committed, short), True
        self.committed = committed
        why = self.distrusted(loaded) if committed and self.opts.verify != "full" else None
        if why is not None:  # no proof that the partial is as onward left it: read it all back
            bad = self.check(self.reread, self.records(committed))
            outcome = f"{len(bad)} damaged, copying them again" if bad else "all intact"
            self.notice(f"{why}: read back its {len(committed)} committed chunk(s), {outcome}")
            self.committed, dirty = without(committed, bad), dirty or bool(bad)
            committed, damaged = self.committed, bad
        if not matches(self.header_or_fail().identity, current):
            why = "the source changed since the last run"
            if one_response(self.header_or_fail().identity):  # nothing changed: it never could resume
                why = "nothing changed, but the last run's server cannot resume a download"
            self.rebase(current, why)
            return
        if not self.sink.can_read_back or why is not None:  # remote: nothing to read (docs/UPLOAD.md)
            bad = []
        elif self.opts.verify == "full":
            bad = self.check(self.source.read_into, self.records(committed))
            bad += self.check(self.reread, self.records(set(committed) - set(bad)))
        else:  # proven untouched: only the last chunks, where an interruption does its damage
            bad = self.check(self.reread, self.records(Plan.last(committed, self.opts.recheck_chunks)))
        if bad:
            self.notice(f"{len(bad)} chunk(s) of the partial copy are damaged; copying them again")
            self.committed, dirty = without(self.committed, bad), True
        if dirty:
            self.rewrite()
        elif self.sealing:
            self.journal.note(self.sealed())  # as checked now: a next resume need not read it again
        if present is not None and self.adopts:
            self.adopt(present, skip=set(damaged + bad))

    def distrusted(self, loaded: Decoded) -> str | None:
        """Why the committed chunks cannot be trusted unread (core/trust.py), or None."""
        if not self.sink.can_read_back:
            return None
        now = self.sink.seal()
        if now is None:
            return "the partial copy cannot be sealed"
        return distrust(loaded.seal, loaded.in_flight, now)

    def reread(self, offset: int, buf: memoryview) -> int:
        """Read back, from the partial, a chunk an earlier run wrote (counted in ``rechecked``)."""
        got = self.sink.read_into(offset, buf)
        self.rechecked += got
        return got

    def sealed(self) -> bytes:
        """A SEAL record of the partial as it is now, or nothing where it cannot be read back."""
        seal = self.sink.seal() if self.sealing else None
        return encode_seal(seal) if seal is not None else b""

    @property
    def adopts(self) -> bool:
        """Whether a resume keeps the chunks written after the last checkpoint (``adopt``): a
        cheap source to compare them with (a local file) and a sink to read them back from."""
        return self.source.recheck_on_change and self.sink.can_read_back

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

    def header_or_fail(self) -> Header:
        assert self.header is not None
        return self.header

    def rebase(self, current: Identity, why: str) -> None:
        """Adopt the source as it is now, keeping only committed chunks it still holds."""
        self.header = self.header_or_fail()._replace(identity=current, total_size=current.size)
        if not self.source.recheck_on_change:
            # Re-checking a remote source's chunks would download them again: start over instead.
            self.committed = {}
            self.notice(f"{why}: starting over from zero")
        else:
            kept = self.plan.rebase(self.committed)
            bad = self.check(self.source.read_into, self.records(kept))
            self.committed = without(kept, bad)
            self.notice(
                f"{why}: kept {len(self.committed)} of {len(kept)} committed chunk(s) that still match it"
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

    # -- copying ------------------------------------------------------------

    def copy_with_retries(self) -> None:
        backoff = Backoff(retries=self.opts.retries)
        attempt, durable_at_failure = 0, -1
        while True:
            try:
                self.copy_remaining()
                return
            except TransientError as exc:
                self.checkpoint()  # keep the chunks fully written before the error (sync first)
                # A remote source is asked again after a failure: a new version, or a response that
                # cannot be continued (HTTP without ranges), starts over, and that is no progress.
                restarted = not self.source.recheck_on_change and self.source_changed()
                attempt = 1 if self.durable > durable_at_failure and not restarted else attempt + 1
                durable_at_failure = self.durable
                delay = backoff.delay(attempt, self.jitter(), exc.retry_after)
                if delay is None:
                    raise
                self.emit(Retry(self.sink.name, attempt, delay, exc.reason))
                self.sleep(delay)

    def copy_remaining(self) -> None:
        plan, opts = self.plan, self.opts
        since, last, base = 0, self.clock(), self.durable
        every = opts.checkpoint_every(self.adopts)
        spans = [(i, *plan.span(i)) for i in plan.remaining(self.committed)]
        workers = self.source.connections  # parallel requests (HTTP --connections)
        depth = self.source.readahead + workers - 1
        with Readahead(
            self.source.read_into, digest, spans, plan.chunk_size, depth=depth, workers=workers
        ) as chunks:
            for chunk in chunks:
                if chunk.short:
                    break  # the source shrank: verification sees the new identity
                self.write(chunk.index, chunk.view, chunk.digest)
                self.pace(len(chunk.view))
                chunks.release(chunk.view)
                self.pending.append(ChunkRecord(chunk.index, len(chunk.view), chunk.digest))
                self.copied += len(chunk.view)
                since += len(chunk.view)
                self.emit(Progress(self.sink.name, base + since, plan.total_size, self.copied))
                if since >= every or self.clock() - last >= opts.checkpoint_seconds:
                    self.checkpoint()
                    since, last, base = 0, self.clock(), self.durable
        self.checkpoint()

    def write(self, index: int, view: memoryview, chunk_digest: bytes) -> None:
        """Write one chunk between an IN-FLIGHT record and a SEAL record (core/trust.py): one
        unsynced append each and one ``fstat``, so that a resume may trust the partial unread."""
        if not self.sealing:
            self.put(index * self.plan.chunk_size, view, chunk_digest)
            return
        try:
            self.journal.note(encode_in_flight(index))
            self.put(index * self.plan.chunk_size, view, chunk_digest)
        except BaseException:  # an error, or Ctrl-C: the write is over, whatever it did
            with contextlib.suppress(OnwardError):
                self.journal.note(self.sealed())
            raise
        self.journal.note(self.sealed())

    def put(self, offset: int, view: memoryview, chunk_digest: bytes) -> None:
        """Write a chunk to the partial; or, where it lies wholly in a hole of the source
        (docs/CLI.md, ``--no-sparse``), leave it a hole the partial is extended over; or, where
        it is partly a hole, write only its data. Its record is an ordinary one, claimed after
        the sync that makes that size durable, and read back as any chunk (docs/JOURNAL.md).
        A chunk that read as zeros costs two ``SEEK_DATA``s; a data chunk one ``SEEK_HOLE``."""
        if self.opts.sparse:
            in_hole = getattr(self.source, "in_hole", None)  # local files only
            leave_hole = getattr(self.sink, "leave_hole", None)
            if in_hole and leave_hole:
                if chunk_digest == self.zeros(len(view)):
                    if in_hole(offset, len(view)) and leave_hole(offset, len(view)):
                        return
                elif self.put_data_only(offset, view, leave_hole):
                    return
        self.sink.write(offset, view)

    def put_data_only(self, offset: int, view: memoryview, leave_hole: Callable[[int, int], bool]) -> bool:
        """A data chunk with holes in the source: write only its data extents, leave the rest
        holes. False (nothing written) when it has none, or where a hole of the source did
        not read as zeros or the partial holds data: then the chunk is written whole."""
        spans = self.source.data_in(offset, len(view))  # type: ignore[attr-defined]
        if spans is None:
            return False
        cuts = [offset, *(edge for span in spans for edge in span), offset + len(view)]
        gaps = [(a - offset, b - offset) for a, b in zip(cuts[::2], cuts[1::2], strict=True) if a < b]
        for a, b in gaps:
            if view[a:b].tobytes() != bytes(b - a) or not leave_hole(offset + a, b - a):
                return False
        for start, end in spans:
            self.sink.write(start, view[start - offset : end - offset])
        return True

    def zeros(self, length: int) -> bytes:
        """The digest of ``length`` zero bytes (made once per length: a chunk, the last one)."""
        if length not in self._zeros:
            self._zeros[length] = digest(memoryview(bytes(length)))
        return self._zeros[length]

    @property
    def reads_back(self) -> bool:
        """Whether written chunks are read back after their sync (not with ``--verify none``,
        nor into a remote sink: docs/UPLOAD.md)."""
        return self.opts.verify != "none" and self.sink.can_read_back

    def checkpoint(self) -> None:
        """Sync the data, read it back, then journal the chunks that read back intact.

        The read-back (from the device: the sink bypasses the page cache) is the end-to-end
        check of every chunk, made once, by the run that writes it; so neither a resume nor
        the final verification re-reads the chunks of earlier runs (``--verify full`` does).
        ``--verify none`` skips it: durable, but unchecked.
        """
        if not self.pending:
            return
        self.wrong_read_backs += self.claim(self.pending, self.sink.read_into if self.reads_back else None)
        # Cleared only once journaled: a Ctrl-C before this point leaves them to salvage()
        # (a record appended twice is harmless, the later one replaces the earlier).
        self.pending.clear()
        self.emit(Checkpoint(self.sink.name, self.durable, self.plan.total_size))

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

    # -- verifying and promoting ---------------------------------------------

    def source_changed(self) -> bool:
        current = self.source.identity()
        if matches(self.header_or_fail().identity, current):
            return False
        # A source may know better than "changed" (HTTP: a broken response that cannot go on).
        why = getattr(self.source, "why_changed", None) or "the source changed during the copy"
        self.rebase(current, why)
        return True

    def verify(self) -> bool:
        """End-to-end check of the whole partial; False sends the transfer back to copying."""
        if self.source_changed() or not self.plan.is_complete(self.committed):
            return False
        self.sink.truncate(self.plan.total_size)
        if self.sealing:
            self.journal.note(self.sealed())  # a truncation changes the partial's ctime
        everything = self.records(self.committed)
        bad: list[int] = []  # every chunk was read back after its sync, by the run that wrote it
        if self.opts.verify == "full" and self.sink.can_read_back:
            bad = self.check(self.source.read_into, everything)
            bad = sorted(set(bad) | set(self.check(self.sink.read_into, everything)))
        if bad:
            self.notice(f"verification found {len(bad)} damaged chunk(s); copying them again")
            self.committed = without(self.committed, bad)
            self.rewrite()
            return False
        if self.source_changed():
            return False
        if self.final_check is not None:
            self.final_check(self.sink.read_into, self.plan.total_size)
        return True

    def promote(self) -> None:
        self.journal.append(encode_promote(self.sink.token()))
        self.promote_sink()
        self.journal.remove()

    def promote_sink(self) -> None:
        attrs = self.source.attributes()
        self.sink.promote(
            attrs.mode if self.opts.preserve_mode else None,
            attrs.times_ns if self.opts.preserve_times else None,
        )

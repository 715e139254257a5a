"""The one loop: read chunks from a source, write them to a sink, checkpoint, verify, promote.

Every decision comes from ``onward.core``; every byte moves through an
endpoint. The ordering rule lives here and nowhere else: chunk data is synced
by the sink *before* the journal record that claims it is appended. Taking up
what an earlier run left is ``_resuming.Resuming`` (the engine's own half), which ``Transfer``
builds on.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence

import xxhash

from ._resuming import Resuming, digest
from .checksum import FinalCheck
from .core.identity import Identity, matches, one_response
from .core.journal import encode_in_flight, encode_promote
from .core.lifecycle import Lifecycle, State, Step
from .core.plan import ChunkRecord, without
from .core.resume import after_change
from .core.retry import Backoff
from .core.throttle import Throttle, paced
from .endpoints import HoleSink, HoleSource, JournalStore, Sink, Source, change_reason, hole_sink, hole_source
from .errors import (
    DurabilityError,
    IntegrityError,
    Interrupted,
    NoSpaceError,
    OnwardError,
    TransientError,
)
from .events import Checkpoint, CopyResult, Done, Listener, Progress, Retry, Start
from .options import Options
from .readahead import Readahead
from .units import format_size

__all__ = ["Transfer", "digest"]


class Transfer(Resuming):
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
        self.listeners = listeners
        super().__init__()
        if throttle is None and options.bwlimit is not None:
            throttle = paced(options.bwlimit, options.chunk_size, clock())
        self.throttle = throttle
        # Whole-file digests (--expect-digest), last step of verify: read back from the sink.
        self.final_check = final_check
        self.clock, self.sleep, self._jitter = clock, sleep, jitter
        self.life = Lifecycle()
        self.pending: list[ChunkRecord] = []  # written, not yet synced and journaled
        self.copied = 0
        self.wrong_read_backs = 0  # chunks of this run that read back wrong: one notice at the end
        # --sparse: a source that knows its holes, a sink that can keep them (local files).
        self.holes: tuple[HoleSource, HoleSink] | None = None
        if options.sparse and (found := hole_source(source)) and (kept := hole_sink(sink)):
            self.holes = (found, kept)
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
            if self.readable is not None and self.reads_back and self.check(self.readable.read_into, records):
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
        if self.holes is not None:
            source, sink = self.holes
            if chunk_digest == self.zeros(len(view)):
                if source.in_hole(offset, len(view)) and sink.leave_hole(offset, len(view)):
                    return
            elif self.put_data_only(offset, view, source, sink):
                return
        self.sink.write(offset, view)

    def put_data_only(self, offset: int, view: memoryview, source: HoleSource, sink: HoleSink) -> bool:
        """A data chunk with holes in the source: write only its data extents, leave the rest
        holes. False (nothing written) when it has none, or where a hole of the source did
        not read as zeros or the partial holds data: then the chunk is written whole."""
        spans = source.data_in(offset, len(view))
        if spans is None:
            return False
        cuts = [offset, *(edge for span in spans for edge in span), offset + len(view)]
        gaps = [(a - offset, b - offset) for a, b in zip(cuts[::2], cuts[1::2], strict=True) if a < b]
        for a, b in gaps:
            if view[a:b].tobytes() != bytes(b - a) or not sink.leave_hole(offset + a, b - a):
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
        return self.opts.verify != "none" and self.readable is not None

    def checkpoint(self) -> None:
        """Sync the data, read it back, then journal the chunks that read back intact.

        The read-back (from the device: the sink bypasses the page cache) is the end-to-end
        check of every chunk, made once, by the run that writes it; so neither a resume nor
        the final verification re-reads the chunks of earlier runs (``--verify full`` does).
        ``--verify none`` skips it: durable, but unchecked.
        """
        if not self.pending:
            return
        read = self.readable.read_into if self.readable is not None and self.reads_back else None
        self.wrong_read_backs += self.claim(self.pending, read)
        # Cleared only once journaled: a Ctrl-C before this point leaves them to salvage()
        # (a record appended twice is harmless, the later one replaces the earlier).
        self.pending.clear()
        self.emit(Checkpoint(self.sink.name, self.durable, self.plan.total_size))

    # -- verifying and promoting ---------------------------------------------

    def source_changed(self) -> bool:
        """Whether the source moved since the journal's header; if so, rebase onto it."""
        current = self.source.identity()
        change = after_change(
            self.header_or_fail().identity,
            current,
            recheck_on_change=self.source.recheck_on_change,
            since_last_run=False,
            reason=change_reason(self.source),  # it may know better than "changed" (HTTP)
        )
        if change is None:
            return False
        self.rebase(current, change)
        return True

    def verify(self) -> bool:
        """End-to-end check of the whole partial; False sends the transfer back to copying.
        A sink without read-back (an upload) has no partial of its own to cut to size or check:
        the server's offset or the store's part checksums stand for it (docs/UPLOAD.md)."""
        if self.source_changed() or not self.plan.is_complete(self.committed):
            return False
        partial = self.readable
        if partial is not None:
            partial.truncate(self.plan.total_size)
        if self.sealing:
            self.journal.note(self.sealed())  # a truncation changes the partial's ctime
        everything = self.records(self.committed)
        bad: list[int] = []  # every chunk was read back after its sync, by the run that wrote it
        if self.opts.verify == "full" and partial is not None:
            bad = self.check(self.source.read_into, everything)
            bad = sorted(set(bad) | set(self.check(partial.read_into, everything)))
        if bad:
            self.notice(f"verification found {len(bad)} damaged chunk(s); copying them again")
            self.committed = without(self.committed, bad)
            self.rewrite()
            return False
        if self.source_changed():
            return False
        if self.final_check is not None and partial is not None:
            self.final_check(partial.read_into, self.plan.total_size)
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

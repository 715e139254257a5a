"""The engine's rules, checked against in-memory endpoints (tests/doubles.py)."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Literal

import pytest

from doubles import MemoryJournal, MemorySink, MemorySource
from onward.core.journal import decode, encode_chunks, encode_promote, encode_seal
from onward.core.plan import ChunkRecord
from onward.engine import Transfer, digest
from onward.errors import (
    DurabilityError,
    IntegrityError,
    Interrupted,
    NoSpaceError,
    OnwardError,
    TransientError,
)
from onward.events import Checkpoint, Done, Event, Notice, Progress, Retry, Start
from onward.options import Options

CHUNK = 4096
OPTS = Options(chunk_size=CHUNK, checkpoint_bytes=3 * CHUNK)


def make(
    data: bytes, *, can_read_back: bool = True, **opts: object
) -> tuple[MemorySource, MemorySink, MemoryJournal, list[Event], Transfer]:
    log: list[tuple[str, object]] = []
    source, sink, journal = (
        MemorySource(data, log),
        MemorySink(log, can_read_back=can_read_back),
        MemoryJournal(log),
    )
    events: list[Event] = []
    options = OPTS._replace(**opts)  # type: ignore[arg-type]
    transfer = Transfer(
        source, sink, journal, options, [events.append], sleep=lambda s: None, jitter=lambda: 0.0
    )
    return source, sink, journal, events, transfer


def test_fresh_copy_is_exact_and_cleans_up() -> None:
    data = os.urandom(10 * CHUNK + 7)
    _, sink, journal, events, transfer = make(data)
    result = transfer.run()
    assert sink.final == data and journal.data is None
    assert (result.resumed_from, result.copied, result.size) == (0, len(data), len(data))
    assert isinstance(events[0], Start) and isinstance(events[-1], Done)
    assert any(isinstance(e, Checkpoint) for e in events) and any(isinstance(e, Progress) for e in events)
    assert sink.promoted_with == (0o640, (1, 2))


def test_every_claimed_chunk_was_synced_before_its_journal_record() -> None:
    data = os.urandom(10 * CHUNK)
    _, sink, _, _, transfer = make(data)
    transfer.run()
    written_since_sync: set[int] = set()
    durable: set[int] = set()
    for op, arg in sink.log:
        if op == "write":
            written_since_sync.add(arg)  # type: ignore[arg-type]
        elif op == "sync":
            durable |= written_since_sync
            written_since_sync = set()
        elif op == "journal-append" and isinstance(arg, bytes):
            claimed = chunks_in(arg)
            assert claimed <= durable, f"journal claims {claimed - durable} before they were synced"
    assert durable == {i * CHUNK for i in range(10)}


def chunks_in(appended: bytes) -> set[int]:
    """Offsets of the chunks a journal append claims (CHUNK records are 37 bytes each)."""
    out = set()
    for pos in range(0, len(appended), 37):
        _, kind = struct.unpack_from("<IB", appended, pos)
        if kind == 2:
            out.add(struct.unpack_from("<Q", appended, pos + 5)[0] * CHUNK)
    return out


def test_resume_reads_only_what_is_missing() -> None:
    data = os.urandom(8 * CHUNK)
    source, sink, journal, _, transfer = make(data)
    # Build the state a killed run leaves: chunks 0-4 durable and journaled.
    transfer.start_fresh(source.identity())
    sink.write(0, memoryview(data[: 5 * CHUNK]))
    journal.append(
        encode_chunks(
            [ChunkRecord(i, CHUNK, digest(memoryview(data[i * CHUNK : (i + 1) * CHUNK]))) for i in range(5)]
        )
    )
    source.log.clear()
    resumed = Transfer(source, sink, journal, transfer.opts).run()
    assert resumed.resumed_from == 5 * CHUNK and resumed.copied == 3 * CHUNK
    copy_reads = [offset for op, offset in source.log if op == "read"]
    assert copy_reads == [5 * CHUNK, 6 * CHUNK, 7 * CHUNK]
    assert sink.final == data


def test_transient_read_errors_are_retried_from_the_last_checkpoint() -> None:
    data = os.urandom(6 * CHUNK)
    failures = iter([True, True, False])
    source, sink, _, events, transfer = make(data)
    source.fail_read = lambda offset: (
        TransientError("/src: read: Input/output error")
        if offset == 4 * CHUNK and next(failures, False)
        else None
    )
    result = transfer.run()
    assert sink.final == data and result.copied >= len(data)
    assert [e.attempt for e in events if isinstance(e, Retry)] == [1, 2]


def test_transient_errors_give_up_after_the_retries() -> None:
    source, sink, journal, _, transfer = make(os.urandom(4 * CHUNK), retries=2)
    source.fail_read = lambda offset: TransientError("/src: read: Input/output error") if offset else None
    with pytest.raises(TransientError):
        transfer.run()
    assert sink.final is None
    assert journal.data is not None and list(decode(journal.data).chunks) == [0]


def test_fsync_failure_is_fatal_and_claims_nothing() -> None:
    _source, sink, journal, _, transfer = make(os.urandom(4 * CHUNK))
    sink.fail_sync = True
    with pytest.raises(DurabilityError):
        transfer.run()
    assert sink.final is None and journal.data is not None and decode(journal.data).chunks == {}


def test_source_changed_during_copy_ends_with_the_new_content() -> None:
    old, new = os.urandom(6 * CHUNK), os.urandom(6 * CHUNK)
    source, sink, _, events, transfer = make(old)

    def change_once(src: MemorySource, offset: int) -> None:
        if offset == 3 * CHUNK and src.version == 1:
            src.replace(new)

    source.on_read = change_once
    transfer.run()
    assert sink.final == new
    assert any(isinstance(e, Notice) and "changed during the copy" in e.message for e in events)


def test_a_source_that_never_settles_fails_without_promoting() -> None:
    source, sink, _, _, transfer = make(os.urandom(4 * CHUNK))
    source.on_read = lambda src, offset: src.replace(os.urandom(4 * CHUNK)) if offset == 0 else None
    with pytest.raises(IntegrityError, match="kept changing"):
        transfer.run()
    assert sink.final is None


def scribble_on_chunk(sink: MemorySink, victim: int, when_writing: int) -> dict[str, bool]:
    """Flip a byte of chunk ``victim`` in the partial once chunk ``when_writing`` is written."""
    state = {"done": False}

    def damage(offset: int) -> None:
        if offset == when_writing * CHUNK and not state["done"] and sink.partial is not None:
            state["done"] = True
            sink.partial[victim * CHUNK + 10] ^= 0xFF

    sink.on_write = damage
    return state


def test_damage_before_the_read_back_is_never_claimed_and_is_copied_again() -> None:
    data = os.urandom(6 * CHUNK)
    _, sink, journal, events, transfer = make(data, checkpoint_bytes=3 * CHUNK)
    # Chunk 1 is damaged after it was written but before its checkpoint reads it back.
    state = scribble_on_chunk(sink, victim=1, when_writing=2)
    appended: list[bytes] = []
    original = journal.append

    def append(data: bytes) -> None:
        appended.append(data)
        original(data)

    journal.append = append  # type: ignore[method-assign]
    transfer.run()
    assert state["done"] and sink.final == data
    assert CHUNK not in chunks_in(appended[0])  # the first checkpoint did not claim chunk 1
    assert any(isinstance(e, Notice) and "read back wrong" in e.message for e in events)


def test_full_verification_finds_damage_to_an_already_checked_chunk() -> None:
    data = os.urandom(6 * CHUNK)
    _, sink, _, events, transfer = make(data, verify="full")
    state = scribble_on_chunk(sink, victim=1, when_writing=5)
    transfer.run()
    assert state["done"] and sink.final == data
    assert any(isinstance(e, Notice) and "verification found 1 damaged" in e.message for e in events)


def written_by_a_run(sink: MemorySink, journal: MemoryJournal, data: bytes) -> None:
    """``data`` written from offset 0 as a run writes: then its SEAL record (unsynced)."""
    sink.write(0, memoryview(data))
    seal = sink.seal()
    assert seal is not None
    journal.note(encode_seal(seal))


def resumed_with_damage_in_chunk_0(
    verify: str, *, seen: bool = False
) -> tuple[bytes, MemorySink, list[Event], set[int]]:
    """8 chunks, 5 of them committed by an earlier run that sealed the partial after writing,
    chunk 0 of the partial damaged since, by a change its seal sees (``seen``: another program
    writing) or not (bit rot); resume with ``verify``: (data, sink, events, the chunks the resume
    read back from the sink)."""
    data = os.urandom(8 * CHUNK)
    source, sink, journal, events, transfer = make(data, verify=verify)
    transfer.start_fresh(source.identity())
    written_by_a_run(sink, journal, data[: 5 * CHUNK])
    assert sink.partial is not None
    journal.append(encode_chunks(records_of(data, range(5))))
    sink.partial[3] ^= 0xFF  # chunk 0: not among the last 4 chunks a resume re-checks at once
    sink.changes += seen
    reads: set[int] = set()
    read_into = sink.read_into

    def recording(offset: int, buf: memoryview) -> int:
        got = read_into(offset, buf)
        reads.update(range(offset // CHUNK, -(-(offset + got) // CHUNK)))
        return got

    sink.read_into = recording  # type: ignore[method-assign]
    Transfer(source, sink, journal, transfer.opts, [events.append]).run()
    return data, sink, events, reads


def test_a_resume_rereads_a_bounded_tail_of_earlier_chunks_not_the_prefix() -> None:
    """What an earlier run wrote was read back after its sync; a resume re-checks the last
    ``recheck_chunks`` of it and reads back only what it writes itself (issue 4: the cost of a
    resume follows the remaining bytes)."""
    _, _, _, reads = resumed_with_damage_in_chunk_0("fast")
    assert sorted(reads) == [1, 2, 3, 4, 5, 6, 7], reads  # not chunk 0
    # (The seal cannot see bit rot; it is what --verify full is for.)


def test_a_resume_without_proof_reads_back_every_committed_chunk_and_repairs_them() -> None:
    """The partial changed since the earlier run's last write (its seal no longer matches):
    every committed chunk is read back, the damaged one is copied again, one notice says why."""
    data, sink, events, reads = resumed_with_damage_in_chunk_0("fast", seen=True)
    assert sink.final == data
    assert sorted(reads) == list(range(8)), reads
    [notice] = [e for e in events if isinstance(e, Notice)]
    assert "changed since the last run" in notice.message and "1 damaged" in notice.message
    [done] = [e for e in events if isinstance(e, Done)]
    assert done.result.rechecked == 5 * CHUNK


def test_full_verification_rereads_chunks_from_an_earlier_run() -> None:
    data, sink, events, _ = resumed_with_damage_in_chunk_0("full")
    assert sink.final == data
    assert any(isinstance(e, Notice) and "damaged" in e.message for e in events)


@pytest.mark.parametrize("verify", ["fast", "full"])
def test_a_resume_keeps_the_journals_chunk_size_whatever_this_run_asks(
    verify: Literal["none", "fast", "full"],
) -> None:
    """A copy begun with ``--chunk-size 8K`` and resumed without it: chunks are checked at the
    journal's size (they once were read into a buffer of this run's size, all came back short
    and "damaged", and the copy failed after three rounds)."""
    data = os.urandom(8 * CHUNK)
    source, sink, journal, events, first = make(data, chunk_size=2 * CHUNK)
    first.start_fresh(source.identity())
    written_by_a_run(sink, journal, data[: 4 * CHUNK])
    big = [
        ChunkRecord(i, 2 * CHUNK, digest(memoryview(data[2 * i * CHUNK : 2 * (i + 1) * CHUNK])))
        for i in (0, 1)
    ]
    journal.append(encode_chunks(big))
    result = Transfer(source, sink, journal, OPTS._replace(verify=verify), [events.append]).run()
    assert sink.final == data
    assert result.resumed_from == 4 * CHUNK and result.copied == 4 * CHUNK
    assert not [e for e in events if isinstance(e, Notice)]


def killed_after_writing(
    data: bytes, written: int, journaled: int
) -> tuple[MemorySink, MemoryJournal, Transfer]:
    """An earlier run that wrote ``written`` chunks and was killed when its journal claimed the
    first ``journaled``; returns the sink, the journal and a new run over them."""
    source, sink, journal, events, first = make(data)
    first.start_fresh(source.identity())
    written_by_a_run(sink, journal, data[: written * CHUNK])
    journal.append(encode_chunks(records_of(data, range(journaled))))
    return sink, journal, Transfer(source, sink, journal, first.opts, [events.append])


def test_a_resume_keeps_what_the_killed_run_wrote_after_its_last_checkpoint() -> None:
    """Chunks 3-5 were written but never journaled: they are synced, read back, found equal to
    the source and journaled, not copied again (a kill costs only the chunk in flight)."""
    data = os.urandom(8 * CHUNK)
    sink, _, transfer = killed_after_writing(data, written=6, journaled=3)
    before = len(sink.log)
    result = transfer.run()
    assert sink.final == data
    assert (result.resumed_from, result.copied) == (6 * CHUNK, 2 * CHUNK)
    ops = sink.log[before:]
    assert [arg for op, arg in ops if op == "write"] == [6 * CHUNK, 7 * CHUNK]
    adopted = next(i for i, (op, arg) in enumerate(ops) if op == "journal-append")
    assert chunks_in(ops[adopted][1]) == {3 * CHUNK, 4 * CHUNK, 5 * CHUNK}  # type: ignore[arg-type]
    assert ("sync", None) in ops[:adopted]  # durable before the journal claims them


def test_a_resume_copies_again_what_the_killed_run_left_torn() -> None:
    data = os.urandom(8 * CHUNK)
    sink, _, transfer = killed_after_writing(data, written=6, journaled=3)
    assert sink.partial is not None
    sink.partial[4 * CHUNK + 100] ^= 0xFF  # chunk 4 torn by the kill
    before = len(sink.log)
    result = transfer.run()
    assert sink.final == data
    assert (result.resumed_from, result.copied) == (5 * CHUNK, 3 * CHUNK)
    assert [arg for op, arg in sink.log[before:] if op == "write"] == [4 * CHUNK, 6 * CHUNK, 7 * CHUNK]


def records_of(data: bytes, indexes: range) -> list[ChunkRecord]:
    return [ChunkRecord(i, CHUNK, digest(memoryview(data[i * CHUNK : (i + 1) * CHUNK]))) for i in indexes]


def test_interrupt_checkpoints_what_was_written() -> None:
    data = os.urandom(6 * CHUNK)
    _source, sink, journal, _, transfer = make(data, checkpoint_bytes=100 * CHUNK, checkpoint_seconds=1e9)

    def stop(offset: int) -> None:
        if offset == 4 * CHUNK:
            raise KeyboardInterrupt

    sink.on_write = stop
    with pytest.raises(Interrupted) as info:
        transfer.run()
    assert info.value.done == 4 * CHUNK and info.value.exit_code == 130
    assert journal.data is not None and sorted(decode(journal.data).chunks) == [0, 1, 2, 3]


def test_a_promotion_interrupted_after_the_rename_is_finished_by_the_next_run() -> None:
    data = os.urandom(2 * CHUNK)
    source, sink, journal, _, transfer = make(data)
    transfer.start_fresh(source.identity())
    records = [ChunkRecord(i, CHUNK, digest(memoryview(data[i * CHUNK : (i + 1) * CHUNK]))) for i in range(2)]
    journal.append(encode_chunks(records) + encode_promote(sink.token()))
    sink.final, sink.final_token, sink.partial = data, sink.token(), None
    result = Transfer(source, sink, journal, transfer.opts).run()
    assert journal.data is None and ("settle", None) in sink.log
    assert result.copied == 0 and result.resumed_from == len(data)


# -- run(lean=True): a file of at most one chunk with no journal (a tree's batched small files) --


def without_duration(events: list[Event]) -> list[Event]:
    """The events with the run's duration set to 0: the one thing two runs may differ in."""
    return [Done(e.result._replace(duration=0.0)) if isinstance(e, Done) else e for e in events]


def logging_read_back(sink: MemorySink) -> None:
    read_into = sink.read_into

    def logged(offset: int, buf: memoryview) -> int:
        sink.log.append(("read-back", offset))
        return read_into(offset, buf)

    sink.read_into = logged  # type: ignore[method-assign]


@pytest.mark.parametrize("verify", ["fast", "none"])
@pytest.mark.parametrize("size", [0, 1, 1000, CHUNK, 3 * CHUNK + 5])
def test_the_lean_path_gives_the_general_loops_result_and_events(size: int, verify: str) -> None:
    data = os.urandom(size)
    outcomes, logs = [], []
    for lean in (False, True):
        _, sink, _, events, transfer = make(data, verify=verify)
        logging_read_back(sink)
        result = transfer.run(lean=lean)
        outcomes.append(
            (result._replace(duration=0.0), without_duration(events), sink.final, sink.promoted_with)
        )
        logs.append(sink.log)
    assert outcomes[0] == outcomes[1]
    assert outcomes[1][2] == data and outcomes[1][0].copied == size
    if size <= CHUNK:  # one pass: no journal, data synced (and read back) before the promotion
        copied = [("read", 0), ("write", 0), ("sync", None)] if size else []
        read_back = [("read-back", 0)] if size and verify == "fast" else []
        assert logs[1] == [*copied, *read_back, ("promote", None), ("close-source", None)]
    else:  # more than one chunk: the general loop, journal and all
        assert any(op == "journal-create" for op, _ in logs[1])


def lands_wrong_once(source: MemorySource, sink: MemorySink) -> bytes:
    """The first write puts a wrong byte in the partial: its read-back differs."""
    write, writes = sink.write, []

    def wrong_once(offset: int, data: memoryview) -> None:
        write(offset, data)
        writes.append(offset)
        if len(writes) == 1 and sink.partial is not None:
            sink.partial[0] ^= 0xFF

    sink.write = wrong_once  # type: ignore[method-assign]
    return source.data


def cut_before_the_first_read(source: MemorySource, sink: MemorySink) -> bytes:
    """The source loses its second half after its identity was taken: the read comes up short."""
    half = source.data[: len(source.data) // 2]

    def cut(offset: int) -> None:
        if source.version == 1:
            source.replace(half)

    source.fail_read = cut
    return half


def replaced_during_the_read(source: MemorySource, sink: MemorySink) -> bytes:
    """The source is replaced (same size) just after it was read: its identity changes."""
    new = os.urandom(len(source.data))
    source.on_read = lambda src, offset: src.replace(new) if src.version == 1 else None
    return new


@pytest.mark.parametrize("trouble", [lands_wrong_once, cut_before_the_first_read, replaced_during_the_read])
def test_the_lean_path_falls_back_to_the_general_loop_and_ends_correct(
    trouble: Callable[[MemorySource, MemorySink], bytes],
) -> None:
    source, sink, journal, events, transfer = make(os.urandom(CHUNK - 10))
    expected = trouble(source, sink)
    result = transfer.run(lean=True)
    assert sink.final == expected and result.copied == len(expected) and result.size == len(expected)
    _, _, _, reference, general = make(expected)
    assert result.digest == general.run().digest
    assert any(op == "journal-create" for op, _ in journal.log)  # the general loop finished it
    starts = [e for e in events if isinstance(e, Start)]
    assert starts == [Start("/src", "/dst", len(expected), 0, CHUNK)]  # nothing reported before
    assert [type(e) for e in events if not isinstance(e, Notice)] == [
        type(e) for e in reference if not isinstance(e, Notice)
    ]
    misread = [e for e in events if isinstance(e, Notice) and "read back wrong" in e.message]
    assert len(misread) == (trouble is lands_wrong_once)


def no_space(offset: int) -> None:
    raise NoSpaceError("/dst.partial: write: No space left on device", "/dst.partial")


def ctrl_c(offset: int) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("fault", ["ctrl-c", "no space", "fsync"])
def test_the_lean_path_stops_and_fails_as_the_general_loop(fault: str) -> None:
    data = os.urandom(CHUNK // 2)
    outcomes = []
    for lean in (False, True):
        _, sink, _, _, transfer = make(data)
        if fault == "fsync":
            sink.fail_sync = True
        else:
            sink.on_write = ctrl_c if fault == "ctrl-c" else no_space
        with pytest.raises(OnwardError) as info:
            transfer.run(lean=lean)
        error = info.value
        outcomes.append((type(error), str(error), error.path, error.exit_code, vars(error), sink.final))
    assert outcomes[0] == outcomes[1]
    kind, message, _, exit_code, _, final = outcomes[1]
    assert final is None
    if fault == "ctrl-c":
        assert kind is Interrupted and exit_code == 130 and "run the same command again" in message
    elif fault == "no space":
        assert kind is NoSpaceError and "2.0 KiB more needed" in message and "partial is kept" in message
    else:
        assert kind is DurabilityError


def test_the_default_checkpoint_interval_is_longer_where_a_resume_keeps_what_a_kill_left() -> None:
    from onward.options import CHECKPOINT_BYTES, CHECKPOINT_BYTES_KEPT

    *_, local = make(b"x", checkpoint_bytes=None)
    remote_source, *_, remote = make(b"x", checkpoint_bytes=None)
    remote_source.recheck_on_change = False  # a download: checking a chunk would download it
    *_, upload = make(b"x", checkpoint_bytes=None, can_read_back=False)  # the sink's capability is read once
    assert local.adopts and not remote.adopts and not upload.adopts
    assert Options().checkpoint_every(local.adopts) == CHECKPOINT_BYTES_KEPT > CHECKPOINT_BYTES
    assert Options().checkpoint_every(remote.adopts) == Options().checkpoint_every(upload.adopts)
    assert Options().checkpoint_every(False) == CHECKPOINT_BYTES
    assert Options(checkpoint_bytes=5).checkpoint_every(True) == 5  # what the user asked for wins

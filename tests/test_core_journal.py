"""The journal codec: round trips, and a damaged tail is found and never trusted."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onward.core.identity import Identity
from onward.core.journal import (
    FORMAT_VERSION,
    MAGIC,
    DecodeError,
    Garbled,
    Header,
    Promote,
    Seal,
    decode,
    encode_chunks,
    encode_in_flight,
    encode_promote,
    encode_seal,
    encode_start,
)
from onward.core.plan import ChunkRecord, Plan
from onward.core.trust import UNKNOWN_BOOT, distrust

HEADER = Header(
    source="/data/src \udcff.img",  # a name that is not valid UTF-8 survives
    destination="/backup/dst.img",
    identity=Identity("local", 100, {"dev": 1, "ino": 2, "mtime_ns": 3, "ctime_ns": 4}),
    chunk_size=16,
    total_size=100,
    created=1700000000.5,
)
PLAN = Plan(100, 16)


def records(indexes: list[int]) -> list[ChunkRecord]:
    return [ChunkRecord(i, PLAN.span(i)[1], bytes([i]) * 16) for i in indexes]


chunk_lists = st.lists(st.integers(0, PLAN.chunk_count - 1), max_size=20)


@given(chunk_lists)
def test_round_trip(indexes: list[int]) -> None:
    data = encode_start(HEADER) + encode_chunks(records(indexes))
    out = decode(data)
    assert out.header == HEADER
    assert out.chunks == {r.index: r for r in records(indexes)}
    assert out.damaged_tail == 0 and out.valid_length == len(data) and out.promote is None


def test_promote_record_round_trips() -> None:
    out = decode(encode_start(HEADER) + encode_chunks(records([0])) + encode_promote(Promote(7, 9)))
    assert out.promote == Promote(7, 9)


@given(chunk_lists, st.data())
def test_a_cut_anywhere_in_the_records_keeps_exactly_the_whole_records(
    indexes: list[int], data: st.DataObject
) -> None:
    start = encode_start(HEADER)
    recs = records(indexes)
    body = encode_chunks(recs)
    cut = data.draw(st.integers(0, len(body)))
    out = decode(start + body[:cut])
    whole = cut // len(encode_chunks(recs[:1])) if recs else 0
    assert out.chunks == {r.index: r for r in recs[:whole]}
    assert out.valid_length + out.damaged_tail == len(start) + cut


@given(chunk_lists, st.data())
def test_a_flipped_byte_in_the_records_is_never_trusted(indexes: list[int], data: st.DataObject) -> None:
    recs = records(indexes)
    if not recs:
        return
    start, body = encode_start(HEADER), bytearray(encode_chunks(recs))
    size = len(body) // len(recs)
    pos = data.draw(st.integers(0, len(body) - 1))
    body[pos] ^= data.draw(st.integers(1, 255))
    out = decode(start + bytes(body))
    damaged = pos // size
    # Every record before the damaged one is kept, and nothing at or after it is trusted.
    assert out.chunks == {r.index: r for r in recs[:damaged]}
    assert out.damaged_tail == len(body) - damaged * size


def test_records_that_do_not_fit_the_plan_end_the_journal() -> None:
    bad = ChunkRecord(99, 16, bytes(16))  # index past the end, with a valid checksum
    out = decode(encode_start(HEADER) + encode_chunks([*records([0]), bad, *records([1])]))
    assert list(out.chunks) == [0] and out.damaged_tail > 0


def test_later_record_for_an_index_replaces_the_earlier() -> None:
    first = ChunkRecord(2, 16, b"a" * 16)
    second = ChunkRecord(2, 16, b"b" * 16)
    assert decode(encode_start(HEADER) + encode_chunks([first, second])).chunks[2] == second


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (b"hello world, not a journal", "not an onward journal"),
        (MAGIC + struct.pack("<HH", FORMAT_VERSION + 1, 0), "newer onward"),
        (MAGIC + struct.pack("<HH", 0, 0), "unknown format"),
        (MAGIC + struct.pack("<HH", FORMAT_VERSION, 0), "header record is missing"),
        (encode_start(HEADER)[:-1], "header record is missing"),
    ],
)
def test_unusable_journals_raise(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode(data)


@pytest.mark.parametrize(
    ("data", "garbled"),
    [
        (b"", True),
        (bytes(200), True),  # zeroed
        (b"\x89ON", True),  # cut to 3 bytes
        (MAGIC + struct.pack("<HH", 0, 0), True),
        (encode_start(HEADER)[:-1], True),  # the header's CRC
        (MAGIC + struct.pack("<HH", FORMAT_VERSION + 1, 0), False),  # a newer onward's: refused
    ],
)
def test_a_garbled_journal_is_told_from_one_that_must_be_refused(data: bytes, garbled: bool) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(data)
    assert isinstance(caught.value, Garbled) is garbled


SEAL = Seal(1_764_000_000_123_456_789, 4096, 131, 27, bytes(range(16)))


def test_the_last_seal_and_a_write_in_flight_after_it_are_read() -> None:
    start = encode_start(HEADER) + encode_chunks(records([0]))
    assert decode(start).seal is None
    sealed = start + encode_in_flight(1) + encode_seal(SEAL)
    assert decode(sealed).seal == SEAL and decode(sealed).in_flight is None
    flying = sealed + encode_in_flight(2)
    assert decode(flying).seal == SEAL and decode(flying).in_flight == 2
    assert decode(flying + encode_chunks(records([1]))).in_flight == 2  # a checkpoint ends no write


def test_a_seal_proves_only_an_untouched_partial() -> None:
    assert distrust(SEAL, None, SEAL) is None
    assert "does not record" in str(distrust(None, None, SEAL))
    assert "writing chunk 7" in str(distrust(SEAL, 7, SEAL))
    assert "restarted" in str(distrust(SEAL, None, SEAL._replace(boot=bytes(16))))
    assert "restarted" in str(
        distrust(SEAL._replace(boot=UNKNOWN_BOOT), None, SEAL._replace(boot=UNKNOWN_BOOT))
    )
    assert "mounted again" in str(distrust(SEAL, None, SEAL._replace(mount=28)))
    assert "mounted again" in str(distrust(SEAL._replace(mount=0), None, SEAL._replace(mount=0)))
    assert "replaced" in str(distrust(SEAL, None, SEAL._replace(inode=132)))
    assert "changed size" in str(distrust(SEAL, None, SEAL._replace(size=4095)))
    assert "was changed" in str(distrust(SEAL, None, SEAL._replace(ctime_ns=SEAL.ctime_ns + 1)))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_decoder(blob: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(blob)
    with contextlib.suppress(DecodeError):
        decode(encode_start(HEADER) + blob)


def test_header_with_wrong_types_is_unreadable() -> None:
    import json
    import zlib

    payload = json.dumps({"source": 1}).encode()
    body = bytes([1]) + payload
    data = (
        MAGIC
        + struct.pack("<HH", FORMAT_VERSION, 0)
        + struct.pack("<IB", len(payload), 1)
        + payload
        + struct.pack("<I", zlib.crc32(body))
    )
    with pytest.raises(DecodeError, match="header is unreadable"):
        decode(data)

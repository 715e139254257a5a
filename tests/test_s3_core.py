"""The pure decisions of S3 copies (onward.core.s3), without a server."""

from __future__ import annotations

import hashlib

import pytest

from onward.core import s3
from onward.core.identity import Identity
from onward.core.journal import Header, decode, encode_chunks, encode_start
from onward.core.plan import ChunkRecord

MiB = 1 << 20


def test_part_size_keeps_within_the_protocol_limits() -> None:
    assert s3.choose_part_size(1, None) == 8 * MiB
    assert s3.choose_part_size(80_000 * MiB, None) == 8 * MiB
    five_tib = 5 * 1024 * 1024 * MiB
    part = s3.choose_part_size(five_tib, None)
    assert part % MiB == 0 and -(-five_tib // part) <= s3.MAX_PARTS and part <= 5 * 1024 * MiB
    with pytest.raises(ValueError, match="largest object"):
        s3.choose_part_size(five_tib + 1, None)
    with pytest.raises(ValueError, match="between"):
        s3.choose_part_size(100 * MiB, 4 * MiB)  # below S3's 5 MiB
    assert s3.choose_part_size(30 * MiB, 4096, minimum=4096) == 4096  # a store that allows less
    with pytest.raises(ValueError, match="more than 10000 parts"):
        s3.choose_part_size(10_001 * 5 * MiB, 5 * MiB)


def test_urls_and_prefixes() -> None:
    assert s3.parse_s3_url("s3://bucket/a/b") == s3.S3Url("bucket", "a/b")
    url = s3.parse_s3_url("s3://bucket/dir/")
    assert url.is_prefix and s3.object_key(url, "f.bin").key == "dir/f.bin"
    assert s3.object_key(s3.parse_s3_url("s3://bucket"), "f").name == "s3://bucket/f"
    for bad in ("s3://", "s3://ab/k", "s3://bad bucket/k", "http://x/y"):
        with pytest.raises(ValueError):
            s3.parse_s3_url(bad)


def test_composite_etag_is_the_md5_of_the_part_md5s() -> None:
    parts = [b"a" * 10, b"b" * 7]
    md5s = [hashlib.md5(p).hexdigest() for p in parts]
    joined = b"".join(bytes.fromhex(m) for m in md5s)
    want = f'"{hashlib.md5(joined).hexdigest()}-2"'
    assert s3.composite_etag([f'"{m}"' for m in md5s]) == want
    assert s3.composite_etag(['"not-an-md5"']) is None


def test_a_listed_part_must_match_what_the_journal_remembers() -> None:
    remembered = s3.Part(1, 100, '"abc"', "crc")
    assert s3.part_matches(s3.Part(1, 100, "abc", "crc"), remembered, 100) is True
    assert s3.part_matches(s3.Part(1, 100, "abc", None), remembered, 100) is True  # store lists none
    assert s3.part_matches(s3.Part(1, 100, "abd", "crc"), remembered, 100) is False
    assert s3.part_matches(s3.Part(1, 100, "abc", "other"), remembered, 100) is False
    assert s3.part_matches(s3.Part(1, 99, "abc", "crc"), remembered, 100) is False  # not the plan's size
    assert s3.part_matches(s3.Part(1, 100, "abc", "crc"), None, 100) is None  # compare with the file


def test_records_round_trip_and_a_torn_tail_is_ignored() -> None:
    identity = Identity("file", 300, {"ino": 1})
    header = Header("/src", "s3://bucket/k", identity, 100, 300, 0.0)
    upload = s3.S3Upload("bucket", "k", "http://127.0.0.1:1", "UP1", 100, "crc32c", identity, 300, 1.0)
    parts = [s3.Part(1, 100, '"e1"', "c1"), s3.Part(2, 100, '"e2"', None)]
    raw = (
        encode_start(header)
        + s3.encode_s3_upload(upload)
        + s3.encode_parts(parts)
        + encode_chunks([ChunkRecord(0, 100, b"\0" * 16)])
    )
    torn = raw + s3.encode_parts([s3.Part(3, 100, '"e3"', None)])[:-3]
    for data in (raw, torn):
        found, listed = s3.read_s3_records(data)
        assert found == upload and listed == {1: parts[0], 2: parts[1]}
        assert list(decode(data).chunks) == [0]  # the codec skips S3 records
    newer = upload._replace(upload_id="UP2")
    assert s3.read_s3_records(raw + s3.encode_s3_upload(newer)) == (newer, {})  # parts belong to UP1


def test_error_codes() -> None:
    assert s3.classify("SlowDown", 503) == "transient"
    assert s3.classify("", 503) == "transient"
    assert s3.classify("RequestTimeTooSkewed", 403) == "skew"
    assert s3.classify("AccessDenied", 403) == "denied"
    assert s3.classify("NoSuchBucket", 404) == "no-bucket"
    assert s3.classify("NoSuchUpload", 404) == "no-upload"
    assert s3.classify("PreconditionFailed", 412) == "changed"
    assert s3.classify("404", 404) == "no-key"


def test_running_checksums_equal_one_shot_ones() -> None:
    data = bytes(range(256)) * 1000
    for algorithm in s3.CHECKSUMS:
        running = s3.Running(algorithm)
        running.update(data[:1000])
        running.update(data[1000:])
        assert running.value() == s3.checksum_of(algorithm, data)

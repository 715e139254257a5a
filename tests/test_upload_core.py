"""The pure rules of an upload (onward.core.upload), its journal record, and the engine with a
sink that cannot be read back. No sockets here: tests/test_upload_peers.py runs real servers."""

from __future__ import annotations

import base64
import hashlib

import pytest

from doubles import MemoryJournal, MemorySink, MemorySource
from onward.core import upload as rules
from onward.core.identity import Identity
from onward.core.journal import Header, Upload, decode, encode_chunks, encode_start, encode_upload
from onward.core.plan import ChunkRecord
from onward.engine import Transfer
from onward.options import Options


@pytest.mark.parametrize(
    ("given", "protocol", "url", "name"),
    [
        ("tus+https://h.example/files/", "tus", "https://h.example/files/", "tus+https://h.example/files/"),
        ("TUS+HTTP://h:8080/f", "tus", "http://h:8080/f", "tus+http://h:8080/f"),
        ("ietf+https://h/up", "ietf", "https://h/up", "ietf+https://h/up"),
        (
            "tus+https://u:pw@h/files/?token=abc&x=1",
            "tus",
            "https://u:pw@h/files/?token=abc&x=1",
            "tus+https://h/files/?token=REDACTED&x=1",
        ),
    ],
)
def test_targets_keep_credentials_for_requests_only(given: str, protocol: str, url: str, name: str) -> None:
    target = rules.parse_target(given)
    assert (target.protocol, target.url, target.name) == (protocol, url, name)
    assert rules.is_upload_url(given)


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("https://h/files/", "not an upload URL"),
        ("tus+ftp://h/", "not an upload URL"),
        ("tus+http://", "no host name"),
        ("tus+http://h:70000/", "out of range"),
        ("/local/path", "not an upload URL"),
    ],
)
def test_what_is_not_an_upload_target(given: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        rules.parse_target(given)


def test_tus_creation_headers_say_length_and_metadata_once() -> None:
    headers = rules.creation_headers("tus", 1234, {"filename": "a b.txt", "bad key": "x", "empty": ""})
    assert headers["Tus-Resumable"] == "1.0.0"
    assert headers["Upload-Length"] == "1234"
    assert headers["Upload-Metadata"] == "filename " + base64.b64encode(b"a b.txt").decode() + ",empty"
    assert "Upload-Complete" not in headers


def test_ietf_creation_is_incomplete_with_a_length_and_no_tus_header() -> None:
    headers = rules.creation_headers("ietf", 99, {"filename": "r\u00e9sum\u00e9.pdf"})
    assert headers["Upload-Draft-Interop-Version"] == "8"
    assert (headers["Upload-Complete"], headers["Upload-Length"]) == ("?0", "99")
    assert "Tus-Resumable" not in headers
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9.pdf" in headers["Content-Disposition"]


def test_append_headers_per_protocol() -> None:
    tus = rules.append_headers("tus", 10, complete=True, checksum="sha1 abc=")
    assert tus == {
        "Tus-Resumable": "1.0.0",
        "Upload-Offset": "10",
        "Content-Type": "application/offset+octet-stream",
        "Upload-Checksum": "sha1 abc=",
    }
    draft = rules.append_headers("ietf", 10, complete=False)
    assert draft["Content-Type"] == "application/partial-upload"
    assert draft["Upload-Complete"] == "?0" and "Repr-Digest" not in draft
    last = rules.append_headers("ietf", 20, complete=True, digest="sha-256=:x:")
    assert (last["Upload-Complete"], last["Repr-Digest"]) == ("?1", "sha-256=:x:")


def test_checksums_prefer_sha256_and_are_base64() -> None:
    assert rules.choose_checksum(rules.parse_tokens("md5, SHA1 ,sha256")) == "sha256"
    assert rules.choose_checksum(["sha1", "crc32"]) == "sha1"
    assert rules.choose_checksum(["md5"]) is None
    value = rules.upload_checksum("sha1", memoryview(b"hello"))
    assert value == "sha1 " + base64.b64encode(hashlib.sha1(b"hello").digest()).decode()
    digest = hashlib.sha256(b"x").digest()
    assert rules.repr_digest(digest) == f"sha-256=:{base64.b64encode(digest).decode()}:"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0), (" 42 ", 42), ("-1", None), ("1.5", None), ("", None), (None, None), ("9" * 20, None)],
)
def test_offsets_are_non_negative_integers_only(value: str | None, expected: int | None) -> None:
    assert rules.parse_offset(value) == expected


def test_completeness_tus_by_offset_ietf_by_header() -> None:
    assert rules.upload_complete("tus", {}, 5, 5)
    assert not rules.upload_complete("tus", {}, 4, 5)
    assert not rules.upload_complete("ietf", {"upload-complete": "?0"}, 5, 5)
    assert rules.upload_complete("ietf", {"upload-complete": "?1"}, 5, 5)
    assert rules.parse_boolean("?1") is True and rules.parse_boolean("1") is None


def test_limits_ignore_unknown_keys_and_void_on_bad_values() -> None:
    got = rules.parse_limits("max-size=1000, max-append-size=100;x, future=1, min-append-size=10")
    assert got == rules.Limits(1000, 100, 10)
    assert rules.parse_limits("max-size=-1") == rules.Limits()
    assert rules.parse_limits("max-size") == rules.Limits()
    assert rules.parse_limits(None) == rules.Limits()


@pytest.mark.parametrize(
    ("offset", "length", "server", "skip", "gap"),
    [
        (0, 10, 0, 0, 0),  # in step
        (10, 10, 15, 5, 0),  # the server has half this chunk (an earlier run sent it)
        (10, 10, 40, 10, 0),  # the server has all of it: nothing to send
        (30, 10, 10, 0, 20),  # the server lacks 20 bytes before it: send them first
    ],
)
def test_the_server_offset_decides_what_is_sent(
    offset: int, length: int, server: int, skip: int, gap: int
) -> None:
    assert rules.place(offset, length, server) == rules.Placement(skip, gap)


def test_patch_pieces_respect_max_append_size() -> None:
    assert rules.patch_pieces(0, 10, None) == [(0, 10)]
    assert rules.patch_pieces(5, 15, 4) == [(5, 9), (9, 13), (13, 15)]
    assert rules.patch_pieces(3, 3, 4) == []


@pytest.mark.parametrize(
    ("status", "kind"),
    [(204, "ok"), (201, "ok"), (404, "gone"), (410, "gone"), (409, "offset"), (460, "checksum"),
     (503, "transient"), (423, "transient"), (429, "transient"), (413, "too-large"), (400, "fatal")],
)  # fmt: skip
def test_status_kinds(status: int, kind: str) -> None:
    assert rules.status_kind("tus", status) == kind
    assert rules.status_kind("ietf", 403) == "fatal" and rules.status_kind("tus", 403) == "gone"


def test_upload_urls_are_resolved_and_secrets_restored_from_the_endpoint() -> None:
    assert rules.resolve_location("http://h:1/files/", "/files/abc") == "http://h:1/files/abc"
    assert rules.resolve_location("http://h/files/", "https://o/x") == "https://o/x"
    assert rules.strip_userinfo("http://u:p@h/x#f") == "http://h/x"
    recorded = "http://h/files/abc?token=REDACTED&v=2"
    assert (
        rules.restore_secrets(recorded, "http://u:p@h/files/?token=s3") == "http://h/files/abc?token=s3&v=2"
    )
    assert rules.restore_secrets(recorded, "http://h/files/") is None
    assert rules.restore_secrets("http://h/files/abc", "http://h/files/?token=s") == "http://h/files/abc"


def test_state_directory_follows_xdg() -> None:
    assert rules.state_dir({"XDG_STATE_HOME": "/s"}, "/home/u") == "/s/onward/uploads"
    assert rules.state_dir({"XDG_STATE_HOME": "rel"}, "/home/u") == "/home/u/.local/state/onward/uploads"
    assert rules.state_dir({}, "/home/u/") == "/home/u/.local/state/onward/uploads"
    a = rules.state_key("/a", "tus+https://h/files/")
    assert a != rules.state_key("/b", "tus+https://h/files/") and a.startswith("upload-")


def test_upload_record_round_trips_and_the_last_one_wins() -> None:
    identity = Identity("local", 10, {"dev": 1, "ino": 2, "mtime_ns": 3, "ctime_ns": 4})
    header = Header("/f", "tus+https://h/files/", identity, 4096, 10, 1.0)
    first = Upload("tus", "https://h/files/1", identity, 10, 2.0)
    second = Upload("tus", "https://h/files/2", identity, 10, 3.0)
    raw = (
        encode_start(header)
        + encode_upload(first)
        + encode_chunks([ChunkRecord(0, 10, b"d" * 16)])
        + encode_upload(second)
    )
    loaded = decode(raw)
    assert loaded.upload == second and list(loaded.chunks) == [0] and loaded.damaged_tail == 0
    assert decode(raw[:-3]).upload == first  # a torn record is a damaged tail, never trusted


def test_engine_skips_read_back_for_a_sink_that_cannot_read() -> None:
    """A remote sink: no read-back after a checkpoint, on resume or at the end."""
    data = bytes(range(256)) * 1000
    log: list[tuple[str, object]] = []
    source, sink, journal = MemorySource(data, log), MemorySink(log), MemoryJournal(log)
    sink.can_read_back = False

    def refuse(offset: int, buf: memoryview) -> int:
        raise AssertionError("read back from a sink that cannot be read")

    sink.read_into = refuse  # type: ignore[method-assign]
    result = Transfer(source, sink, journal, Options(chunk_size=4096, verify="full")).run()
    assert sink.final == data and result.size == len(data)
    # and a resume of a half-done copy does not read back either
    log2: list[tuple[str, object]] = []
    source2, sink2 = MemorySource(data, log2), MemorySink(log2)
    sink2.can_read_back = False
    sink2.read_into = refuse  # type: ignore[method-assign]
    sink2.on_write = lambda offset: (_ for _ in ()).throw(KeyboardInterrupt) if offset >= 40960 else None
    journal2 = MemoryJournal(log2)
    with pytest.raises(Exception, match="interrupted"):
        Transfer(source2, sink2, journal2, Options(chunk_size=4096)).run()
    sink2.on_write = lambda offset: None
    again = Transfer(MemorySource(data, log2), sink2, journal2, Options(chunk_size=4096)).run()
    assert sink2.final == data and again.resumed_from > 0

"""The upload sink's protocol behaviour, through the engine, against an in-memory server.

httpx's MockTransport stands in for the network (no socket): a small, strict tus /
IETF-draft server written for these tests that records every request. It lets a test
damage a PATCH, refuse one, or forget bytes it acknowledged, and check exactly which
headers went out. The real servers are in test_upload_peers.py and test_upload_ours.py.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from onward.core import upload as rules
from onward.endpoints.local import LocalSource
from onward.endpoints.tus import UploadSink
from onward.endpoints.uploadjournal import UploadJournal
from onward.engine import Transfer
from onward.errors import TransientError
from onward.options import Options

CHUNK = 4096


class FakeServer:
    """A strict in-memory upload server (tus 1.0.0 with the checksum extension, or the draft)."""

    def __init__(self, protocol: str, checksums: str = "sha1,sha256") -> None:
        self.protocol = protocol
        self.checksums = checksums
        self.data: dict[str, bytearray] = {}
        self.length: dict[str, int] = {}
        self.complete: dict[str, bool] = {}
        self.requests: list[httpx.Request] = []
        self.fail: Callable[[httpx.Request], httpx.Response | None] = lambda request: None
        self.created_headers: dict[str, str] = {}  # added to the creation response

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        failed = self.fail(request)
        if failed is not None:
            return failed
        uid = request.url.path.rsplit("/", 1)[-1]
        if request.method == "OPTIONS":
            return httpx.Response(
                204,
                headers={
                    "Tus-Version": "1.0.0",
                    "Tus-Extension": "creation,checksum",
                    "Tus-Checksum-Algorithm": self.checksums,
                },
            )
        if request.method == "POST":
            uid = f"u{len(self.data)}"
            self.data[uid], self.length[uid] = bytearray(), int(request.headers["Upload-Length"])
            self.complete[uid] = False
            return httpx.Response(201, headers={"Location": f"/files/{uid}", **self.created_headers})
        if uid not in self.data:
            return httpx.Response(404)
        if request.method == "HEAD":
            headers = {"Upload-Offset": str(len(self.data[uid])), "Upload-Length": str(self.length[uid])}
            if self.protocol == "ietf":
                headers["Upload-Complete"] = "?1" if self.complete[uid] else "?0"
            return httpx.Response(204, headers=headers)
        assert request.method == "PATCH"
        if int(request.headers["Upload-Offset"]) != len(self.data[uid]):
            return httpx.Response(409)
        body = request.content
        check = request.headers.get("Upload-Checksum")
        if check is not None:
            alg, value = check.split(" ")
            if hashlib.new(alg, body).digest() != base64.b64decode(value):
                return httpx.Response(460)
        self.data[uid] += body
        if self.protocol == "ietf" and request.headers.get("Upload-Complete") == "?1":
            self.complete[uid] = True
        return httpx.Response(204, headers={"Upload-Offset": str(len(self.data[uid]))})

    def patches(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "PATCH"]


def upload(tmp_path: Path, src: Path, server: FakeServer, **options: object) -> int:
    """One run of ``onward copy src <protocol>+http://fake/files/``; returns resumed_from."""
    target = rules.parse_target(f"{server.protocol}+http://fake.test/files/")
    opts = Options.build(chunk_size=CHUNK, checkpoint_bytes=CHUNK, **options)
    source = LocalSource.open(str(src))
    client = httpx.Client(transport=httpx.MockTransport(server))
    sink = UploadSink(
        target, client, read_source=source.read_into, chunk_size=CHUNK, metadata={}, retries=opts.retries,
        sleep=lambda s: None,
    )  # fmt: skip
    journal = UploadJournal.open(str(tmp_path / "state"), rules.state_key(source.name, target.name), sink)
    from onward.jobs.upload import continue_earlier

    continue_earlier(journal, sink, source, target)
    result = Transfer(source, sink, journal, opts, sleep=lambda s: None).run()
    return result.resumed_from


def stopped_at(tmp_path: Path, stop: int) -> tuple[Path, bytes, FakeServer]:
    """A file of 8 chunks, uploaded until the server refused the PATCH at offset ``stop``;
    the server accepts everything again."""
    src = tmp_path / "f"
    data = os.urandom(8 * CHUNK)
    src.write_bytes(data)
    server = FakeServer("tus")
    server.fail = lambda r: httpx.Response(503) if r.headers.get("Upload-Offset") == str(stop) else None
    with pytest.raises(TransientError):
        upload(tmp_path, src, server, retries=0)
    server.fail = lambda request: None
    return src, data, server


def test_tus_sends_sha256_upload_checksums_when_advertised(tmp_path: Path) -> None:
    src = tmp_path / "f"
    data = os.urandom(5 * CHUNK + 17)
    src.write_bytes(data)
    server = FakeServer("tus")
    upload(tmp_path, src, server)
    assert bytes(server.data["u0"]) == data
    assert [r.method for r in server.requests[:2]] == ["OPTIONS", "POST"]
    patches = server.patches()
    assert len(patches) == 6
    for request in patches:
        alg, value = request.headers["Upload-Checksum"].split(" ")
        assert alg == "sha256" and base64.b64decode(value) == hashlib.sha256(request.content).digest()
        assert request.headers["Content-Type"] == "application/offset+octet-stream"


def test_tus_without_the_checksum_extension_sends_none(tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(os.urandom(2 * CHUNK))
    server = FakeServer("tus", checksums="md5")
    upload(tmp_path, src, server)
    assert all("Upload-Checksum" not in r.headers for r in server.patches())


def test_damaged_patch_is_sent_again(tmp_path: Path) -> None:
    src = tmp_path / "f"
    data = os.urandom(3 * CHUNK)
    src.write_bytes(data)
    server = FakeServer("tus")
    hits: list[int] = []

    def damage_once(request: httpx.Request) -> httpx.Response | None:
        if request.method == "PATCH" and request.headers["Upload-Offset"] == str(CHUNK) and not hits:
            hits.append(1)
            return httpx.Response(460)
        return None

    server.fail = damage_once
    upload(tmp_path, src, server)
    assert bytes(server.data["u0"]) == data and hits


def test_ietf_completes_with_the_whole_files_repr_digest_even_after_a_resume(tmp_path: Path) -> None:
    src = tmp_path / "f"
    data = os.urandom(6 * CHUNK + 3)
    src.write_bytes(data)
    server = FakeServer("ietf")

    def refuse_after_three(request: httpx.Request) -> httpx.Response | None:
        if request.method == "PATCH" and int(request.headers["Upload-Offset"]) >= 3 * CHUNK:
            return httpx.Response(503)
        return None

    server.fail = refuse_after_three
    with pytest.raises(TransientError):
        upload(tmp_path, src, server, retries=0)
    assert len(server.data["u0"]) == 3 * CHUNK
    server.fail = lambda request: None
    assert upload(tmp_path, src, server) == 3 * CHUNK
    assert bytes(server.data["u0"]) == data and len(server.data) == 1
    patches = [r for r in server.patches() if r.headers["Upload-Offset"] != str(3 * CHUNK) or r.content]
    assert all(r.headers["Content-Type"] == "application/partial-upload" for r in patches)
    last = server.patches()[-1]
    assert last.headers["Upload-Complete"] == "?1"
    assert last.headers["Repr-Digest"] == rules.repr_digest(hashlib.sha256(data).digest())
    assert all(r.headers["Upload-Complete"] == "?0" for r in server.patches()[:-1])
    assert all("Tus-Resumable" not in r.headers for r in server.requests)
    assert all(r.headers["Upload-Draft-Interop-Version"] == "8" for r in server.requests)


def test_bytes_the_server_lost_are_sent_again_from_the_file(tmp_path: Path) -> None:
    """The server's offset is authoritative, even when it went back below the journal."""
    src, data, server = stopped_at(tmp_path, 6 * CHUNK)
    del server.data["u0"][2 * CHUNK :]  # a server restarted without its last writes
    assert upload(tmp_path, src, server) == 2 * CHUNK
    assert bytes(server.data["u0"]) == data and len(server.data) == 1


def test_bytes_the_journal_lacks_are_not_sent_twice(tmp_path: Path) -> None:
    """A kill between the server's acknowledgement and the checkpoint: the server is ahead."""
    src, data, server = stopped_at(tmp_path, 4 * CHUNK)
    server.data["u0"] += data[4 * CHUNK : 6 * CHUNK]  # arrived, but the client died before journaling
    sent_before = len(server.patches())
    upload(tmp_path, src, server)
    assert bytes(server.data["u0"]) == data
    offsets = [int(r.headers["Upload-Offset"]) for r in server.patches()[sent_before:]]
    assert offsets == [6 * CHUNK, 7 * CHUNK]


def test_a_changed_file_goes_to_a_new_upload(tmp_path: Path) -> None:
    src, data, server = stopped_at(tmp_path, 4 * CHUNK)
    changed = data[:100] + b"!" + data[101:]
    src.write_bytes(changed)
    assert upload(tmp_path, src, server) == 0
    assert bytes(server.data["u1"]) == changed and bytes(server.data["u0"]) == data[: 4 * CHUNK]


def test_ietf_max_append_size_splits_a_chunk(tmp_path: Path) -> None:
    src = tmp_path / "f"
    data = os.urandom(2 * CHUNK + 5)
    src.write_bytes(data)
    server = FakeServer("ietf")
    server.created_headers = {"Upload-Limit": "max-append-size=1000, max-age=60"}
    upload(tmp_path, src, server)
    assert bytes(server.data["u0"]) == data
    assert max(len(r.content) for r in server.patches()) == 1000


def test_credentials_go_only_to_the_origin_given(tmp_path: Path) -> None:
    """Basic auth from the URL and -H headers are not sent to an upload URL on another host."""
    src = tmp_path / "f"
    src.write_bytes(os.urandom(CHUNK))
    server = FakeServer("tus")

    def elsewhere(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST":
            server.fail = lambda request: None
            response = server(request)
            server.fail = elsewhere
            return httpx.Response(
                201, headers={"Location": f"http://other.test{response.headers['Location']}"}
            )
        return None

    server.fail = elsewhere
    target = rules.parse_target("tus+http://ann:pw@fake.test/files/")
    source = LocalSource.open(str(src))
    sink = UploadSink(
        target,
        httpx.Client(transport=httpx.MockTransport(server)),
        read_source=source.read_into,
        chunk_size=CHUNK,
        metadata={},
        headers=[("X-Api-Key", "k")],
    )
    journal = UploadJournal.open(str(tmp_path / "state"), "upload-x", sink)
    Transfer(source, sink, journal, Options.build(chunk_size=CHUNK)).run()
    for request in server.requests:
        mine = request.url.host == "fake.test"
        assert ("authorization" in request.headers) == mine, request
        assert ("x-api-key" in request.headers) == mine, request
    assert {r.url.host for r in server.requests} == {"fake.test", "other.test"}
    assert server.requests[0].headers["authorization"] == "Basic " + base64.b64encode(b"ann:pw").decode()

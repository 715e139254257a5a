"""``onward serve``: the real server in a subprocess on 127.0.0.1, driven with raw HTTP requests.

Every bad request gets the status code its protocol gives and leaves no byte where it should
not be; a SIGKILLed server restarted on the same directory reports exactly the durable offset,
and the upload then finishes byte-identical.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from http_servers import HOST
from peers.servers import OnwardServer
from polling import read_by_peer, wait_until

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}
V8 = {"Upload-Draft-Interop-Version": "8"}
PARTIAL = "application/partial-upload"
STAGING = ".onward-uploads"


def data(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def staged(updir: Path) -> dict[str, int]:
    """Every file of the staging directory (but its lock) and its size."""
    return {p.name: p.stat().st_size for p in (updir / STAGING).iterdir() if p.name != ".lock"}


def finished(updir: Path) -> list[str]:
    return sorted(p.name for p in updir.iterdir() if p.name != STAGING)


def create(client: httpx.Client, length: int | None, **headers: str) -> str:
    sent = {**TUS, **({"Upload-Length": str(length)} if length is not None else {"Upload-Defer-Length": "1"})}
    response = client.post("/files/", headers={**sent, **headers})
    assert response.status_code == 201, response.text
    return response.headers["location"]


def upload_id(location: str) -> str:
    return location.rsplit("/", 1)[1]


def raw_request(port: int, head: str, body: bytes = b"", timeout: float = 10) -> tuple[int, str]:
    """Send exactly these bytes (no client-side path normalisation); the status and the reply."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    text = reply.decode("latin-1")
    return int(text.split(" ", 2)[1]), text


# --- the protocol's ordinary path ---------------------------------------------------------------


def test_options_advertises_versions_extensions_and_limits(updir: Path) -> None:
    with OnwardServer(updir, "--max-size", "1M").start() as srv:
        response = httpx.options(f"{srv.url}")
    assert response.status_code == 204
    assert response.headers["tus-version"] == "1.0.0"
    assert set(response.headers["tus-extension"].split(",")) == {
        "creation", "creation-with-upload", "creation-defer-length", "expiration", "checksum",
        "termination", "concatenation",
    }  # fmt: skip
    assert set(response.headers["tus-checksum-algorithm"].split(",")) >= {"sha1", "sha256", "md5"}
    assert response.headers["tus-max-size"] == str(1 << 20)
    assert "application/partial-upload" in response.headers["accept-patch"]
    assert f"max-size={1 << 20}" in response.headers["upload-limit"]


def test_tus_upload_in_chunks_is_promoted_with_metadata(client: httpx.Client, updir: Path) -> None:
    payload = data(300_000)
    name = base64.b64encode(b"report.pdf").decode()
    location = create(client, len(payload), **{"Upload-Metadata": f"filename {name},private"})
    for offset in range(0, len(payload), 100_000):
        chunk = payload[offset : offset + 100_000]
        response = client.patch(location, headers={**OCTETS, "Upload-Offset": str(offset)}, content=chunk)
        assert response.status_code == 204
        assert response.headers["upload-offset"] == str(offset + len(chunk))
    head = client.head(location, headers=TUS)
    assert head.status_code == 200 and head.headers["upload-offset"] == str(len(payload))
    assert head.headers["upload-length"] == str(len(payload)) and head.headers["cache-control"] == "no-store"
    assert head.headers["upload-metadata"] == f"filename {name},private"
    assert "GMT" in head.headers["upload-expires"]
    uid = upload_id(location)
    assert (updir / uid).read_bytes() == payload
    meta = json.loads((updir / f"{uid}.json").read_text())
    assert meta["size"] == len(payload) and meta["metadata"] == {"filename": name, "private": None}
    assert f"{uid}.part" not in staged(updir)


def test_creation_with_upload_and_deferred_length(client: httpx.Client, updir: Path) -> None:
    payload = data(5000)
    response = client.post(
        "/files/", headers={**OCTETS, "Upload-Length": "5000"}, content=payload[:2000]
    )  # creation-with-upload
    assert response.status_code == 201 and response.headers["upload-offset"] == "2000"
    location = response.headers["location"]
    done = client.patch(location, headers={**OCTETS, "Upload-Offset": "2000"}, content=payload[2000:])
    assert done.status_code == 204 and (updir / upload_id(location)).read_bytes() == payload

    deferred = create(client, None)
    head = client.head(deferred, headers=TUS)
    assert head.headers["upload-defer-length"] == "1" and "upload-length" not in head.headers
    client.patch(deferred, headers={**OCTETS, "Upload-Offset": "0"}, content=payload[:3000])
    last = client.patch(
        deferred, headers={**OCTETS, "Upload-Offset": "3000", "Upload-Length": "5000"}, content=payload[3000:]
    )
    assert last.status_code == 204 and (updir / upload_id(deferred)).read_bytes() == payload


def test_checksums_that_match_are_accepted(client: httpx.Client, updir: Path) -> None:
    payload = data(3000)
    location = create(client, 3000)
    for i, alg in enumerate(("sha1", "sha256", "md5")):
        chunk = payload[i * 1000 : (i + 1) * 1000]
        digest = base64.b64encode(hashlib.new(alg, chunk).digest()).decode()
        headers = {**OCTETS, "Upload-Offset": str(i * 1000), "Upload-Checksum": f"{alg} {digest}"}
        assert client.patch(location, headers=headers, content=chunk).status_code == 204
    assert (updir / upload_id(location)).read_bytes() == payload


def test_termination_removes_the_upload(client: httpx.Client, updir: Path) -> None:
    location = create(client, 1000)
    client.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=b"x" * 500)
    assert client.delete(location, headers=TUS).status_code == 204
    assert client.head(location, headers=TUS).status_code == 404
    assert staged(updir) == {} and finished(updir) == []


def test_concatenation_of_partial_uploads(client: httpx.Client, updir: Path) -> None:
    a, b = data(1500, 1), data(2500, 2)
    parts = []
    for piece in (a, b):
        location = create(client, len(piece), **{"Upload-Concat": "partial"})
        client.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=piece)
        assert client.head(location, headers=TUS).headers["upload-concat"] == "partial"
        parts.append(location)
    assert finished(updir) == []  # a partial upload is a piece, not a finished file
    response = client.post("/files/", headers={**TUS, "Upload-Concat": "final;" + " ".join(parts)})
    assert response.status_code == 201
    final = response.headers["location"]
    assert (updir / upload_id(final)).read_bytes() == a + b
    head = client.head(final, headers=TUS)
    assert head.headers["upload-concat"].startswith("final;") and head.headers["upload-offset"] == "4000"
    forbidden = client.patch(final, headers={**OCTETS, "Upload-Offset": "4000"}, content=b"x")
    assert forbidden.status_code == 403


def test_ietf_draft_upload_interop_versions_8_and_6(client: httpx.Client, updir: Path) -> None:
    for version in ("8", "6"):
        headers = {"Upload-Draft-Interop-Version": version}
        payload = data(4000, int(version))
        response = client.post(
            "/files/", headers={**headers, "Upload-Complete": "?0"}, content=payload[:1000]
        )
        assert response.status_code == 201 and response.headers["upload-complete"] == "?0"
        assert response.headers["upload-offset"] == "1000" and "max-age=" in response.headers["upload-limit"]
        location = response.headers["location"]
        head = client.head(location, headers=headers)
        assert head.status_code == 204 and head.headers["upload-offset"] == "1000"
        assert head.headers["upload-complete"] == "?0" and head.headers["cache-control"] == "no-store"
        append = {**headers, "Content-Type": PARTIAL, "Upload-Complete": "?0", "Upload-Offset": "1000"}
        assert client.patch(location, headers=append, content=payload[1000:2500]).status_code == 204
        last = {**append, "Upload-Complete": "?1", "Upload-Offset": "2500"}
        done = client.patch(location, headers=last, content=payload[2500:])
        assert done.status_code == 200 and done.headers["upload-complete"] == "?1"
        assert (updir / upload_id(location)).read_bytes() == payload
        head = client.head(location, headers=headers)
        assert head.headers["upload-complete"] == "?1" and head.headers["upload-length"] == "4000"
        assert client.delete(location, headers=headers).status_code == 204


def test_ietf_single_request_upload_with_repr_digest(client: httpx.Client, updir: Path) -> None:
    payload = data(10_000)
    good = base64.b64encode(hashlib.sha256(payload).digest()).decode()
    response = client.put(
        "/files/",
        headers={**V8, "Upload-Complete": "?1", "Repr-Digest": f"sha-256=:{good}:"},
        content=payload,
    )
    assert response.status_code == 200 and response.headers["upload-complete"] == "?1"
    assert (updir / upload_id(response.headers["location"])).read_bytes() == payload
    before, kept = finished(updir), staged(updir)  # a finished upload's record stays, for HEAD
    bad = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    response = client.post(
        "/files/", headers={**V8, "Upload-Complete": "?1", "Repr-Digest": f"sha-256=:{bad}:"}, content=payload
    )
    assert response.status_code == 400 and "Repr-Digest" in response.json()["title"]
    assert finished(updir) == before and staged(updir) == kept


# --- bad requests: the status the spec gives, nothing written --------------------------------


def test_wrong_offset_is_409_and_writes_nothing(client: httpx.Client, updir: Path) -> None:
    location = create(client, 1000)
    client.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=b"a" * 100)
    for wrong in ("0", "50", "101", "999"):
        response = client.patch(location, headers={**OCTETS, "Upload-Offset": wrong}, content=b"b" * 10)
        assert response.status_code == 409 and response.headers["upload-offset"] == "100"
    problem = client.patch(
        location,
        headers={**V8, "Content-Type": PARTIAL, "Upload-Offset": "7", "Upload-Complete": "?0"},
        content=b"c",
    )
    assert problem.status_code == 409 and problem.headers["content-type"] == "application/problem+json"
    body = problem.json()
    assert body["type"].endswith("#mismatching-upload-offset")
    assert (body["expected-offset"], body["provided-offset"]) == (100, 7)
    assert staged(updir)[f"{upload_id(location)}.part"] == 100
    assert client.head(location, headers=TUS).headers["upload-offset"] == "100"


def test_wrong_content_type_is_415(client: httpx.Client, updir: Path) -> None:
    location = create(client, 1000)
    for content_type in ("application/octet-stream", "text/plain", PARTIAL, ""):
        headers = {**TUS, "Upload-Offset": "0", "Content-Type": content_type}
        assert client.patch(location, headers=headers, content=b"x" * 10).status_code == 415
    ietf = {
        **V8,
        "Upload-Offset": "0",
        "Upload-Complete": "?0",
        "Content-Type": "application/offset+octet-stream",
    }
    assert client.patch(location, headers=ietf, content=b"x" * 10).status_code == 415
    with_data = client.post(
        "/files/", headers={**TUS, "Upload-Length": "10", "Content-Type": "text/plain"}, content=b"x"
    )
    assert with_data.status_code == 415
    assert staged(updir) == {f"{upload_id(location)}.part": 0, f"{upload_id(location)}.info": staged(updir)[
        f"{upload_id(location)}.info"]}  # fmt: skip


def test_missing_or_wrong_tus_resumable_is_412(client: httpx.Client, updir: Path) -> None:
    location = create(client, 1000)
    before = staged(updir)
    for headers in ({}, {"Tus-Resumable": "0.2.2"}, {"Tus-Resumable": ""}):
        created = client.post("/files/", headers={**headers, "Upload-Length": "10"})
        assert created.status_code == 412 and created.headers["tus-version"] == "1.0.0"
        patched = client.patch(
            location,
            headers={**headers, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
            content=b"x" * 10,
        )
        assert patched.status_code == 412
    assert staged(updir) == before


def test_oversize_is_413_and_nothing_past_the_limit_is_written(updir: Path) -> None:
    with OnwardServer(updir, "--max-size", "1000").start() as srv, httpx.Client(base_url=srv.origin) as c:
        assert c.post("/files/", headers={**TUS, "Upload-Length": "1001"}).status_code == 413
        assert staged(updir) == {}
        v8 = c.post("/files/", headers={**V8, "Upload-Complete": "?1"}, content=b"x" * 1001)
        assert v8.status_code == 413 and "max-size=1000" in v8.headers["upload-limit"]
        assert staged(updir) == {}
        deferred = create(c, None)
        uid = upload_id(deferred)
        over = c.patch(deferred, headers={**OCTETS, "Upload-Offset": "0"}, content=b"x" * 1500)
        assert over.status_code == 413
        known = create(c, 100)
        past = c.patch(known, headers={**OCTETS, "Upload-Offset": "0"}, content=b"y" * 101)
        assert past.status_code == 413

        def chunked() -> Iterator[bytes]:  # no Content-Length: the limit is enforced on the stream
            yield b"z" * 60
            yield b"z" * 60

        streamed = c.patch(known, headers={**OCTETS, "Upload-Offset": "0"}, content=chunked())
        assert streamed.status_code == 413
        sizes = staged(updir)
        assert sizes[f"{uid}.part"] == 0 and sizes[f"{upload_id(known)}.part"] == 0
        assert c.head(known, headers=TUS).headers["upload-offset"] == "0"


def test_bad_checksum_is_460_and_the_chunk_is_dropped(client: httpx.Client, updir: Path) -> None:
    location = create(client, 2000)
    uid = upload_id(location)
    client.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=b"a" * 500)
    wrong = base64.b64encode(hashlib.sha1(b"something else").digest()).decode()
    response = client.patch(
        location,
        headers={**OCTETS, "Upload-Offset": "500", "Upload-Checksum": f"sha1 {wrong}"},
        content=b"b" * 500,
    )
    assert response.status_code == 460
    assert staged(updir)[f"{uid}.part"] == 500
    assert client.head(location, headers=TUS).headers["upload-offset"] == "500"
    unknown = client.patch(
        location,
        headers={**OCTETS, "Upload-Offset": "500", "Upload-Checksum": "crc32 AAAAAA=="},
        content=b"b",
    )
    assert unknown.status_code == 400
    garbled = client.patch(
        location, headers={**OCTETS, "Upload-Offset": "500", "Upload-Checksum": "sha1 !!"}, content=b"b"
    )
    assert garbled.status_code == 400
    digest = base64.b64encode(hashlib.sha256(b"nope").digest()).decode()
    ietf = {**V8, "Content-Type": PARTIAL, "Upload-Offset": "500", "Upload-Complete": "?0"}
    mismatch = client.patch(
        location, headers={**ietf, "Content-Digest": f"sha-256=:{digest}:"}, content=b"c" * 9
    )
    assert mismatch.status_code == 400
    assert staged(updir)[f"{uid}.part"] == 500


def test_unknown_upload_is_404_and_creates_nothing(client: httpx.Client, updir: Path) -> None:
    ghost = "/files/" + "A" * 32
    assert client.head(ghost, headers=TUS).status_code == 404
    assert client.patch(ghost, headers={**OCTETS, "Upload-Offset": "0"}, content=b"x").status_code == 404
    assert client.delete(ghost, headers=TUS).status_code == 404
    assert client.head(ghost, headers=V8).status_code == 404
    assert client.get("/elsewhere", headers=TUS).status_code == 404
    assert staged(updir) == {} and finished(updir) == []


def test_path_traversal_ids_never_reach_the_file_system(
    server: OnwardServer, updir: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    before = sorted(p.name for p in tmp_path.iterdir())
    targets = [
        "/files/../victim",
        "/files/..%2Fvictim",
        "/files/%2e%2e/victim",
        "/files/.onward-uploads",
        "/files/.lock",
        "/files/" + "A" * 31 + "/",
        "/files/" + "A" * 33,
        "/files/" + "A" * 30 + "%00x",
        "/files/" + "A" * 31 + ".",
        "/files/../../../../../../etc/passwd",
    ]
    for target in targets:
        for method, extra in (
            ("HEAD", ""),
            ("DELETE", ""),
            ("PATCH", "Upload-Offset: 0\nContent-Length: 3\n"),
        ):
            head = (
                f"{method} {target} HTTP/1.1\nHost: x\nTus-Resumable: 1.0.0\n"
                f"Content-Type: application/offset+octet-stream\n{extra}Connection: close\n"
            )
            status, _ = raw_request(server.port, head, b"abc" if method == "PATCH" else b"")
            assert status in (400, 404), (method, target, status)
    assert victim.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert staged(updir) == {} and finished(updir) == []


def test_malformed_metadata_and_headers_are_400(client: httpx.Client, updir: Path) -> None:
    bad_creations = [
        {"Upload-Length": "10", "Upload-Metadata": "key not-base64!"},
        {"Upload-Length": "10", "Upload-Metadata": "a YQ==,a Yg=="},
        {"Upload-Length": "10", "Upload-Metadata": "k YQ== extra"},
        {"Upload-Length": "10", "Upload-Metadata": ",,"},
        {"Upload-Length": "abc"},
        {"Upload-Length": "-1"},
        {"Upload-Length": "1e3"},
        {"Upload-Length": "10, 20"},
        {"Upload-Length": "10", "Upload-Defer-Length": "1"},
        {"Upload-Defer-Length": "2"},
        {},
        {"Upload-Concat": "final;"},
        {"Upload-Concat": "final;/elsewhere/" + "A" * 32},
        {"Upload-Concat": "final;/files/../x"},
        {"Upload-Concat": "sideways"},
    ]
    for headers in bad_creations:
        response = client.post("/files/", headers={**TUS, **headers})
        assert response.status_code == 400, headers
    ietf_creations = [
        {**V8},  # no Upload-Complete
        {**V8, "Upload-Complete": "yes"},
        {"Upload-Draft-Interop-Version": "5", "Upload-Complete": "?0"},
        {"Upload-Draft-Interop-Version": "eight", "Upload-Complete": "?0"},
        {**V8, "Upload-Complete": "?1", "Upload-Length": "3"},  # Content-Length says 5
    ]
    for headers in ietf_creations:
        assert client.post("/files/", headers=headers, content=b"hello").status_code == 400, headers
    assert staged(updir) == {}
    location = create(client, 100)
    for headers in (
        {"Upload-Offset": "x"},
        {"Upload-Offset": "-3"},
        {},
        {"Upload-Offset": "0", "Upload-Length": "5"},
    ):
        assert client.patch(location, headers={**OCTETS, **headers}, content=b"x").status_code == 400, headers
    ietf = {**V8, "Content-Type": PARTIAL}
    for headers in (
        {"Upload-Offset": "0"},
        {"Upload-Complete": "?0"},
        {"Upload-Offset": "0", "Upload-Complete": "1"},
    ):
        assert client.patch(location, headers={**ietf, **headers}, content=b"x").status_code == 400, headers
    assert staged(updir)[f"{upload_id(location)}.part"] == 0


def test_token_is_required_when_set(updir: Path) -> None:
    with OnwardServer(updir, "--token", "s3cret").start() as srv, httpx.Client(base_url=srv.origin) as c:
        for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0"}):
            response = c.post("/files/", headers={**TUS, "Upload-Length": "5", **auth})
            assert response.status_code == 401 and "bearer" in response.headers["www-authenticate"].lower()
        assert staged(updir) == {}
        assert c.options("/files/").status_code == 204  # discovery needs no credentials
        ok = c.post("/files/", headers={**TUS, "Upload-Length": "5", "Authorization": "Bearer s3cret"})
        assert ok.status_code == 201
        assert c.head(ok.headers["location"], headers=TUS).status_code == 401


def test_cors_answers_allowed_origins_only(updir: Path) -> None:
    with OnwardServer(updir, "--cors-origin", "https://app.example").start() as srv, httpx.Client() as c:
        preflight = c.options(
            srv.url,
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "tus-resumable, upload-length",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert "PATCH" in preflight.headers["access-control-allow-methods"]
        created = c.post(srv.url, headers={**TUS, "Upload-Length": "3", "Origin": "https://app.example"})
        assert "Upload-Offset" in created.headers["access-control-expose-headers"]
        stranger = c.post(srv.url, headers={**TUS, "Upload-Length": "3", "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in stranger.headers


# --- one writer, timeouts, crashes -----------------------------------------------------------


def open_patch(port: int, location: str, offset: int, total: int, first: bytes) -> socket.socket:
    """A PATCH that announces ``total`` bytes, sends ``first`` and then waits: a stalled client."""
    sock = socket.create_connection((HOST, port), timeout=30)
    head = (
        f"PATCH {location} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
        f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\n"
        f"Content-Length: {total}\r\n\r\n"
    )
    sock.sendall(head.encode() + first)
    return sock


def status_of(sock: socket.socket) -> int | None:
    try:
        reply = sock.recv(65536)
    except OSError:
        return None
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1") else None


def test_a_second_patch_ends_the_stale_one(server: OnwardServer, client: httpx.Client, updir: Path) -> None:
    payload = data(400_000)
    location = create(client, len(payload))
    stale = open_patch(server.port, location, 0, len(payload), payload[:100_000])
    try:
        wait_until(lambda: read_by_peer(stale), what="the server has taken those bytes")
        second = client.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=payload)
        # The stale request was ended and what it delivered kept, so offset 0 is now wrong.
        assert second.status_code == 409 and second.headers["upload-offset"] == "100000"
        assert status_of(stale) in (409, None)
    finally:
        stale.close()
    rest = client.patch(location, headers={**OCTETS, "Upload-Offset": "100000"}, content=payload[100_000:])
    assert rest.status_code == 204
    assert (updir / upload_id(location)).read_bytes() == payload


def test_a_stalled_request_times_out_and_keeps_what_arrived(updir: Path) -> None:
    with OnwardServer(updir, "--timeout", "1").start() as srv, httpx.Client(base_url=srv.origin) as c:
        location = create(c, 100_000)
        sock = open_patch(srv.port, location, 0, 100_000, b"q" * 30_000)
        try:
            sock.settimeout(10)
            assert status_of(sock) == 408
        finally:
            sock.close()
        assert c.head(location, headers=TUS).headers["upload-offset"] == "30000"
        assert staged(updir)[f"{upload_id(location)}.part"] == 30_000


def test_sigkill_mid_upload_then_restart_reports_the_durable_offset(updir: Path) -> None:
    payload = data(8 << 20)
    srv = OnwardServer(updir).start()
    try:
        with httpx.Client(base_url=srv.origin) as c:
            location = create(c, len(payload))
        uid = upload_id(location)
        sock = open_patch(srv.port, location, 0, len(payload), payload[: 3 << 20])
        info = updir / STAGING / f"{uid}.info"
        # Pacing, the behaviour under test: blocks older than the 1 s checkpoint interval ...
        time.sleep(1.3)
        recorded = info.stat().st_size
        sock.sendall(payload[3 << 20 : 5 << 20])  # ... so the next block is checkpointed
        wait_until(lambda: info.stat().st_size > recorded, what="a checkpoint inside the request")
        srv.kill()
        sock.close()
        part = (updir / STAGING / f"{uid}.part").read_bytes()
        srv.start()
        with httpx.Client(base_url=srv.origin) as c:
            offset = int(c.head(location, headers=TUS).headers["upload-offset"])
            # Durable and never ahead of the data: at least the blocks written before the pause (the
            # checkpoint after it covers them), at most what was sent, every byte it claims on disk.
            assert 2 << 20 <= offset <= 5 << 20
            assert len(part) >= offset and part[:offset] == payload[:offset]
            rest = c.patch(
                location, headers={**OCTETS, "Upload-Offset": str(offset)}, content=payload[offset:]
            )
            assert rest.status_code == 204
        assert (updir / uid).read_bytes() == payload
    finally:
        srv.stop()


def test_a_second_server_on_the_same_directory_is_refused(server: OnwardServer, updir: Path) -> None:
    from http_servers import free_port

    done = _cli("serve", str(updir), "--port", str(free_port()))
    assert done.returncode == 1 and "another onward server" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_a_port_in_use_is_one_line_exit_1_and_leaves_the_directory_as_it_was(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _cli("serve", str(tmp_path), "--host", HOST, "--port", str(port))
    assert done.returncode == 1, done.stderr
    assert done.stderr == f"onward: serve: cannot listen on {HOST}:{port}: Address already in use\n"
    assert list(tmp_path.iterdir()) == []  # no .onward-uploads left behind


def test_an_address_not_on_this_machine_is_one_line_exit_1(tmp_path: Path) -> None:
    from http_servers import free_port

    port = free_port()
    done = _cli("serve", str(tmp_path), "--host", "192.0.2.1", "--port", str(port))  # TEST-NET-1: never local
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"onward: serve: cannot listen on 192.0.2.1:{port}: ")
    assert done.stderr.count("\n") == 1 and list(tmp_path.iterdir()) == []


def test_upload_ids_never_begin_with_a_dash(updir: Path) -> None:
    from onward.server.headers import ID_PATTERN
    from onward.server.store import Store

    store = Store(str(updir / "ids"))
    ids = [store.new_id() for _ in range(5000)]  # about 78 would begin with "-" if not redrawn
    assert not [i for i in ids if i.startswith("-")]
    assert all(ID_PATTERN.fullmatch(i) for i in ids) and len(set(ids)) == len(ids)
    assert {i[0] for i in ids} >= set("ABCXYZabcxyz0189_")  # every other first character still occurs


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "onward", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=cwd)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["serve", "/nonexistent/dir"], "not a directory"),
        (["serve", ".", "--certfile", "/etc/hostname"], "--certfile and --keyfile go together"),
        (["serve", ".", "--max-size", "lots"], "not a size"),
        (["serve", ".", "--port", "70000"], "not a port"),
        (["serve", ".", "--timeout", "0"], "--timeout"),
        (["serve", ".", "--on-complete", ""], "empty"),
    ],
)
def test_bad_cli_input_is_one_line_and_exit_2(args: list[str], says: str, tmp_path: Path) -> None:
    done = _cli(*args, cwd=tmp_path)
    assert not (tmp_path / ".onward-uploads").exists()  # refused before touching the directory
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_completion_command_runs_with_the_upload(updir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "hook.json"
    script = (
        "import json,os,sys; json.dump({'argv': sys.argv[1:], 'id': os.environ['ONWARD_UPLOAD_ID'], "
        f"'size': os.environ['ONWARD_UPLOAD_SIZE']}}, open({str(marker)!r}, 'w'))"
    )
    command = f"{sys.executable} -c {json.dumps(script)}"
    with OnwardServer(updir, "--on-complete", command).start() as srv, httpx.Client(base_url=srv.origin) as c:
        location = create(c, 3)
        assert c.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=b"abc").status_code == 204
    seen = json.loads(marker.read_text())
    uid = upload_id(location)
    assert seen == {"argv": [str(updir / uid)], "id": uid, "size": "3"}


def test_tls(updir: Path, tmp_path: Path) -> None:
    from http_servers import self_signed

    cert, key = self_signed(tmp_path)
    with OnwardServer(updir, "--certfile", str(cert), "--keyfile", str(key)).start() as srv:
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=f"https://{HOST}:{srv.port}", verify=trust) as c:
            location = create(c, 4)
            done = c.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=b"safe")
            assert done.status_code == 204
        with pytest.raises(httpx.HTTPError):
            httpx.options(srv.url, timeout=5)  # plain HTTP to a TLS port
    assert (updir / upload_id(location)).read_bytes() == b"safe"


def test_base_path_option(updir: Path) -> None:
    with (
        OnwardServer(updir, "--base-path", "/api/uploads").start() as srv,
        httpx.Client(base_url=srv.origin) as c,
    ):
        assert c.post("/files/", headers={**TUS, "Upload-Length": "2"}).status_code == 404
        created = c.post("/api/uploads", headers={**TUS, "Upload-Length": "2"})
        assert created.status_code == 201 and created.headers["location"].startswith("/api/uploads/")
        done = c.patch(created.headers["location"], headers={**OCTETS, "Upload-Offset": "0"}, content=b"ok")
        assert done.status_code == 204
    assert (updir / upload_id(created.headers["location"])).read_bytes() == b"ok"

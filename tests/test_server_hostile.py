"""``onward serve`` against clients that lie or misbehave, and uploads that live long.

Through real HTTP against the real server: a digest holds whatever the framing (a chunked body
is checked like a length-delimited one), a refused request keeps no byte and sets no length,
and a restart after a record history longer than any read buffer reports the exact offset,
finished uploads included.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from onward.core.journal import frame, frames
from onward.server import store as upload_store
from peers.servers import OnwardServer
from test_server import OCTETS, PARTIAL, STAGING, TUS, V8, create, data, finished, staged, upload_id

MiB = 1 << 20


def chunked(payload: bytes, piece: int = 1000) -> Iterator[bytes]:
    """The body as a generator: httpx sends it with Transfer-Encoding: chunked, no Content-Length."""
    for at in range(0, len(payload), piece):
        yield payload[at : at + piece]


def framed(payload: bytes, framing: str) -> bytes | Iterator[bytes]:
    return payload if framing == "length" else chunked(payload)


def tus_checksum(payload: bytes) -> str:
    return "sha1 " + base64.b64encode(hashlib.sha1(payload).digest()).decode()


def content_digest(payload: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(payload).digest()).decode() + ":"


FRAMINGS = ["length", "chunked"]


# --- a digest holds whatever the framing ------------------------------------------------------


@pytest.mark.parametrize("framing", FRAMINGS)
def test_tus_creation_with_upload_and_a_wrong_checksum_keeps_nothing(
    framing: str, client: httpx.Client, updir: Path
) -> None:
    payload = data(3000)
    headers = {**OCTETS, "Upload-Length": "3000", "Upload-Checksum": tus_checksum(b"other")}
    response = client.post("/files/", headers=headers, content=framed(payload, framing))
    assert response.status_code == 460, response.text
    assert "location" not in response.headers
    assert staged(updir) == {} and finished(updir) == []  # no upload, no data, nothing promoted
    good = client.post(
        "/files/",
        headers={**headers, "Upload-Checksum": tus_checksum(payload)},
        content=framed(payload, framing),
    )
    assert good.status_code == 201 and good.headers["upload-offset"] == "3000"
    assert (updir / upload_id(good.headers["location"])).read_bytes() == payload


@pytest.mark.parametrize("framing", FRAMINGS)
def test_ietf_creation_with_a_wrong_content_digest_keeps_nothing(
    framing: str, client: httpx.Client, updir: Path
) -> None:
    payload = data(3000)
    for version in ("8", "6"):
        headers = {
            "Upload-Draft-Interop-Version": version,
            "Upload-Complete": "?1",
            "Content-Digest": content_digest(b"other"),
        }
        response = client.post("/files/", headers=headers, content=framed(payload, framing))
        assert response.status_code == 400, response.text
        assert response.headers.get("upload-complete") != "?1"
        assert staged(updir) == {} and finished(updir) == []
    good = client.post(
        "/files/",
        headers={**V8, "Upload-Complete": "?1", "Content-Digest": content_digest(payload)},
        content=framed(payload, framing),
    )
    assert good.status_code == 200 and good.headers["upload-complete"] == "?1"
    assert (updir / upload_id(good.headers["location"])).read_bytes() == payload


@pytest.mark.parametrize("framing", FRAMINGS)
def test_appends_with_a_wrong_checksum_or_digest_keep_nothing(
    framing: str, client: httpx.Client, updir: Path
) -> None:
    payload = data(3000)
    location = create(client, 3000)
    uid = upload_id(location)
    assert client.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=payload[:1000])
    rest = payload[1000:]
    tus = client.patch(
        location,
        headers={**OCTETS, "Upload-Offset": "1000", "Upload-Checksum": tus_checksum(b"other")},
        content=framed(rest, framing),
    )
    assert tus.status_code == 460
    ietf = {**V8, "Content-Type": PARTIAL, "Upload-Offset": "1000", "Upload-Complete": "?1"}
    wrong = client.patch(
        location, headers={**ietf, "Content-Digest": content_digest(b"other")}, content=framed(rest, framing)
    )
    assert wrong.status_code == 400
    assert staged(updir)[f"{uid}.part"] == 1000 and finished(updir) == []
    assert client.head(location, headers=TUS).headers["upload-offset"] == "1000"
    right = client.patch(
        location, headers={**ietf, "Content-Digest": content_digest(rest)}, content=framed(rest, framing)
    )
    assert right.status_code == 200 and (updir / uid).read_bytes() == payload


@pytest.mark.parametrize("framing", FRAMINGS)
def test_creation_with_data_of_another_type_is_415(framing: str, client: httpx.Client, updir: Path) -> None:
    for content_type in ("text/plain", "application/octet-stream", None):
        headers = {**TUS, "Upload-Length": "10"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        response = client.post("/files/", headers=headers, content=framed(b"x" * 10, framing))
        assert response.status_code == 415, (content_type, response.text)
    assert staged(updir) == {}

    def empty() -> Iterator[bytes]:  # a chunked body with no data is no creation-with-upload
        yield from ()

    plain = client.post("/files/", headers={**TUS, "Upload-Length": "10"}, content=empty())
    assert plain.status_code == 201 and plain.headers["upload-offset"] == "0"


# --- a refused request keeps no byte ---------------------------------------------------------


def test_an_overrunning_chunked_patch_keeps_nothing_even_after_a_checkpoint(
    client: httpx.Client, updir: Path
) -> None:
    """The body is long and slow enough for the server to checkpoint inside the request; the
    overrun at its end still takes back every byte of it, recorded offset included."""
    length = 5 * MiB
    location = create(client, length)
    uid = upload_id(location)
    info = updir / STAGING / f"{uid}.info"
    assert client.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=b"a" * 100)
    recorded = info.stat().st_size

    def body() -> Iterator[bytes]:
        yield b"b" * (2 * MiB)
        time.sleep(1.2)  # pace the client past the 1 s checkpoint interval (the behaviour under test) ...
        yield b"b" * (2 * MiB)
        deadline = time.monotonic() + 20
        while info.stat().st_size == recorded and time.monotonic() < deadline:
            time.sleep(0.02)  # ... until the server has recorded an offset inside this request
        assert info.stat().st_size > recorded, "the server took no checkpoint inside the request"
        yield b"b" * (2 * MiB)  # past Upload-Length

    response = client.patch(location, headers={**OCTETS, "Upload-Offset": "100"}, content=body())
    assert response.status_code == 413
    assert client.head(location, headers=TUS).headers["upload-offset"] == "100"
    assert staged(updir)[f"{uid}.part"] == 100


def test_a_refused_patch_leaves_a_deferred_length_unset(client: httpx.Client, updir: Path) -> None:
    location = create(client, None)
    bad_checksum = client.patch(
        location,
        headers={
            **OCTETS,
            "Upload-Offset": "0",
            "Upload-Length": "10",
            "Upload-Checksum": tus_checksum(b"other"),
        },
        content=b"x" * 10,
    )
    assert bad_checksum.status_code == 460
    overrun = client.patch(
        location,
        headers={**OCTETS, "Upload-Offset": "0", "Upload-Length": "10"},
        content=chunked(b"y" * 20, 5),
    )
    assert overrun.status_code == 413
    ietf = {**V8, "Content-Type": PARTIAL, "Upload-Offset": "0", "Upload-Complete": "?1"}
    digest = client.patch(
        location, headers={**ietf, "Content-Digest": content_digest(b"other")}, content=b"z" * 10
    )
    assert digest.status_code == 400
    head = client.head(location, headers=TUS)
    assert head.headers["upload-defer-length"] == "1" and "upload-length" not in head.headers
    assert head.headers["upload-offset"] == "0"
    ok = client.patch(
        location, headers={**OCTETS, "Upload-Offset": "0", "Upload-Length": "4"}, content=b"done"
    )
    assert ok.status_code == 204 and (updir / upload_id(location)).read_bytes() == b"done"


# --- a history longer than any buffer survives a restart ---------------------------------------

HISTORY = 300_000  # OFFSET records: about 5 MB of record file, past the 4 MiB a fixed read would see


def long_history(info: Path, offsets: range, tail: bytes = b"") -> None:
    """Rewrite the record as its UPLOAD record and one OFFSET record per value of ``offsets``
    (what a slow client's small PATCHes over days leave), then ``tail``."""
    raw = info.read_bytes()
    header_end = frames(raw)[0][2]
    pack = upload_store._U64.pack
    records = b"".join(frame(upload_store.KIND_OFFSET, pack(o)) for o in offsets)
    info.write_bytes(raw[:header_end] + records + tail)


def test_restart_after_a_long_history_reports_the_exact_offset(updir: Path) -> None:
    payload = data(HISTORY + 1000)
    srv = OnwardServer(updir).start()
    try:
        with httpx.Client(base_url=srv.origin, timeout=60) as c:
            location = create(c, len(payload))
            uid = upload_id(location)
            assert c.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=payload[:HISTORY])
        srv.stop()
        info = updir / STAGING / f"{uid}.info"
        long_history(info, range(1, HISTORY + 1))
        assert info.stat().st_size > 4 << 20
        srv.start()
        with httpx.Client(base_url=srv.origin, timeout=60) as c:
            assert c.head(location, headers=TUS).headers["upload-offset"] == str(HISTORY)
            more = c.patch(
                location, headers={**OCTETS, "Upload-Offset": str(HISTORY)}, content=payload[HISTORY:-500]
            )
            assert more.status_code == 204
        assert info.stat().st_size < 4096  # the next record shortened the history
        srv.kill()
        srv.start()
        with httpx.Client(base_url=srv.origin, timeout=60) as c:
            at = len(payload) - 500
            assert c.head(location, headers=TUS).headers["upload-offset"] == str(at)
            last = c.patch(location, headers={**OCTETS, "Upload-Offset": str(at)}, content=payload[at:])
            assert last.status_code == 204
        assert (updir / uid).read_bytes() == payload
    finally:
        srv.stop()


def test_a_finished_upload_with_a_long_history_is_still_served_after_a_restart(updir: Path) -> None:
    payload = data(HISTORY)
    srv = OnwardServer(updir).start()
    try:
        with httpx.Client(base_url=srv.origin, timeout=60) as c:
            location = create(c, len(payload))
            uid = upload_id(location)
            assert c.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=payload)
        srv.stop()
        info = updir / STAGING / f"{uid}.info"
        kinds = (upload_store.KIND_COMPLETE, upload_store.KIND_PROMOTED, upload_store.KIND_HOOKED)
        long_history(info, range(1, HISTORY + 1), b"".join(frame(k, b"") for k in kinds))
        srv.start()
        with httpx.Client(base_url=srv.origin, timeout=60) as c:
            head = c.head(location, headers=TUS)
            assert head.status_code == 200 and head.headers["upload-offset"] == str(HISTORY)
            ietf = c.head(location, headers=V8)
            assert ietf.status_code == 204 and ietf.headers["upload-complete"] == "?1"
        assert (updir / uid).read_bytes() == payload
    finally:
        srv.stop()


def test_an_upload_killed_between_its_last_byte_and_promotion_is_finished_at_restart(
    updir: Path, tmp_path: Path
) -> None:
    """A server killed after recording the last OFFSET but before COMPLETE and the rename: its
    client is told the whole length is there and will not send again, so the restart finishes it."""
    marker = tmp_path / "hooked"
    script = tmp_path / "hook.py"
    script.write_text(f"import sys\nopen({str(marker)!r}, 'w').write(sys.argv[1])\n")
    hook = f"{sys.executable} {script}"
    payload = data(5000)
    srv = OnwardServer(updir, "--on-complete", hook).start()
    try:
        with httpx.Client(base_url=srv.origin, timeout=60) as c:
            location = create(c, len(payload))
        uid = upload_id(location)
        srv.kill()
        (updir / STAGING / f"{uid}.part").write_bytes(payload)  # what the last checkpoint synced ...
        info = updir / STAGING / f"{uid}.info"
        with open(info, "ab") as f:  # ... and recorded, before the kill
            f.write(frame(upload_store.KIND_OFFSET, upload_store._U64.pack(len(payload))))
        srv.start()
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (updir / uid).read_bytes() == payload and marker.read_text() == str(updir / uid)
        with httpx.Client(base_url=srv.origin, timeout=60) as c:
            head = c.head(location, headers=V8)
            assert head.headers["upload-complete"] == "?1" and head.headers["upload-offset"] == "5000"
    finally:
        srv.stop()

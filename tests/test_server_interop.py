"""Interop: real third-party clients upload to ``onward serve``, are SIGKILLed mid-way, resume.

tus-js-client (npm) in both its ``tus-v1`` and ``ietf-draft-05`` (interop version 6) modes, and
tuspy (PyPI), each with its own resume mechanism: tus-js-client is given the upload URL of the
killed run (its Node URL storage is a no-op by default), tuspy finds it in its own URL storage.
The finished file must be byte-identical to the source, and the resumed run must not start over.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from peers.servers import (
    PEERS,
    OnwardServer,
    missing,
    read_events_until,
    start_tus_js,
    tus_js_upload,
)

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))

MiB = 1 << 20


def source(tmp_path: Path, size: int, seed: int = 0) -> Path:
    path = tmp_path / f"source-{size}-{seed}.bin"
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def offset_of(server: OnwardServer, url: str, protocol: str) -> int:
    headers = {"Tus-Resumable": "1.0.0"} if protocol == "tus-v1" else {"Upload-Draft-Interop-Version": "6"}
    response = httpx.head(url, headers=headers, timeout=30)
    assert response.status_code in (200, 204), response.text
    return int(response.headers["upload-offset"])


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@pytest.mark.parametrize("protocol", ["tus-v1", "ietf-draft-05"])
def test_tus_js_client_killed_between_chunks_resumes(protocol: str, updir: Path, tmp_path: Path) -> None:
    src = source(tmp_path, 6 * MiB)
    with OnwardServer(updir).start() as server:
        chunk = ["--chunk-size", str(512 * 1024), "--protocol", protocol]
        first = start_tus_js(server.url, src, *chunk, "--pause-after", str(2 * MiB))
        events = read_events_until(first, "paused")
        kill(first)
        assert events and events[-1]["event"] == "paused", events
        url = next(e["url"] for e in events if e["event"] == "url")
        durable = offset_of(server, url, protocol)
        assert durable >= 2 * MiB
        events = tus_js_upload(server.url, src, *chunk, "--upload-url", url)
        chunks = [e["accepted"] for e in events if e["event"] == "chunk"]
        assert chunks[0] == durable + 512 * 1024  # continued from the server's offset, not from 0
        assert [e["url"] for e in events if e["event"] == "url"] == [url]
    assert (updir / url.rsplit("/", 1)[1]).read_bytes() == src.read_bytes()


@pytest.mark.parametrize("protocol", ["tus-v1", "ietf-draft-05"])
def test_tus_js_client_killed_inside_a_request_resumes(protocol: str, updir: Path, tmp_path: Path) -> None:
    src = source(tmp_path, 48 * MiB, 1)
    with OnwardServer(updir).start() as server:
        # one PATCH for the whole file: the kill lands inside it (or, on a fast day, after it)
        first = start_tus_js(server.url, src, "--protocol", protocol)
        events = read_events_until(first, "url")
        server.wait_for_bytes(MiB)  # the request is under way
        kill(first)
        url = events[-1]["url"]
        deadline = time.monotonic() + 10
        durable = offset_of(server, url, protocol)  # ends the dead client's request if still open
        while time.monotonic() < deadline and durable != offset_of(server, url, protocol):
            durable = offset_of(server, url, protocol)
        events = tus_js_upload(server.url, src, "--protocol", protocol, "--upload-url", url)
        assert events[-1]["event"] == "done"
    assert (updir / url.rsplit("/", 1)[1]).read_bytes() == src.read_bytes()


def test_tuspy_killed_mid_way_resumes_from_its_url_storage(updir: Path, tmp_path: Path) -> None:
    src = source(tmp_path, 5 * MiB, 2)
    store = tmp_path / "tuspy-urls.json"
    script = str(PEERS / "tuspy_upload.py")
    with OnwardServer(updir).start() as server:
        argv = [sys.executable, script, "--endpoint", server.url, "--file", str(src), "--store", str(store)]
        argv += ["--chunk-size", str(256 * 1024)]
        first = subprocess.Popen(
            [*argv, "--pause-after", str(MiB)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        events = read_events_until(first, "paused")
        kill(first)
        assert events and events[-1]["event"] == "paused", events
        url = next(e["url"] for e in events if e["event"] == "chunk")
        assert offset_of(server, url, "tus-v1") >= MiB
        second = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr[-2000:]
        lines = second.stdout.splitlines()
        start = json.loads(lines[0])
        assert start["url"] == url and start["offset"] >= MiB  # resumed the same upload, not from 0
        assert '"event": "done"' in lines[-1]
    assert (updir / url.rsplit("/", 1)[1]).read_bytes() == src.read_bytes()

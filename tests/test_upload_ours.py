"""Our upload client against our own server (``onward serve``), in both protocols.

The client is SIGKILLed mid-upload and run again; the server is SIGKILLed mid-upload and
restarted on the same directory while the client retries. Either way the finished file
must be byte-identical. Small chunks (64 KiB) make the upload long enough to be hit.
Traffic goes to 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from peers.servers import OnwardServer, done_event, run_copy, start_copy

RUN_TIMEOUT = 120
SIZE = 24 * 1024 * 1024 + 5


def serve(tmp_path: Path) -> OnwardServer:
    """``onward serve`` on a fresh directory ``tmp_path/store``."""
    store = tmp_path / "store"
    store.mkdir()
    return OnwardServer(store).start()


@pytest.mark.parametrize("protocol", ["tus", "ietf"])
def test_client_killed_mid_upload_resumes_into_the_same_upload(tmp_path: Path, protocol: str) -> None:
    src, state = tmp_path / "big.bin", tmp_path / "state"
    data = os.urandom(SIZE)
    src.write_bytes(data)
    with serve(tmp_path) as server:
        url = server.endpoint(protocol)
        proc = start_copy(src, url, state, "--checkpoint-seconds", "0.1")
        try:
            server.wait_for_bytes(SIZE // 3)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        if proc.returncode == 0:
            pytest.fail("the upload finished before it could be killed: make it slower")
        assert server.files() == []  # nothing finished yet
        result = run_copy(src, url, state, timeout=RUN_TIMEOUT)
        assert result.returncode == 0, result.stderr
        (finished,) = server.files()
        assert finished.read_bytes() == data
    assert int(str(done_event(result.stdout)["resumed_from"])) > 0


@pytest.mark.parametrize("protocol", ["tus", "ietf"])
def test_server_killed_mid_upload_and_restarted(tmp_path: Path, protocol: str) -> None:
    src, state = tmp_path / "big.bin", tmp_path / "state"
    data = os.urandom(SIZE)
    src.write_bytes(data)
    server = serve(tmp_path)
    try:
        proc = start_copy(src, server.endpoint(protocol), state, "--retries", "8", pipe=True)
        server.wait_for_bytes(SIZE // 3)
        server.kill()
        time.sleep(0.3)
        server.start()  # the same port and directory
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
        assert proc.returncode == 0, err
        (finished,) = server.files()
        assert finished.read_bytes() == data
    finally:
        server.stop()
    assert b'"event": "retry"' in out


@pytest.mark.parametrize("protocol", ["tus", "ietf"])
def test_small_files_in_both_protocols(tmp_path: Path, protocol: str) -> None:
    """Empty, one byte, one chunk and one byte more: the edges of the completing request."""
    with serve(tmp_path) as server:
        sizes = [0, 1, 65536, 65537]
        for size in sizes:
            src = tmp_path / f"f{size}"
            src.write_bytes(os.urandom(size))
            result = run_copy(src, server.endpoint(protocol), tmp_path / "state", timeout=RUN_TIMEOUT)
            assert result.returncode == 0, result.stderr
        stored = sorted(p.read_bytes() for p in server.files())
        assert stored == sorted((tmp_path / f"f{size}").read_bytes() for size in sizes)

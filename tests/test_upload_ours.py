"""Our upload client against our own server (``onward serve``), in both protocols.

The client is SIGKILLed mid-upload and run again; the server is SIGKILLed mid-upload and
restarted on the same directory while the client retries. Either way the finished file
must be byte-identical. Small chunks (64 KiB) make the upload long enough to be hit.
Traffic goes to 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from http_servers import HOST, self_signed
from peers.servers import OnwardServer, done_event, events, run_copy, start_copy, state_env
from polling import Output

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
        output = Output(proc)
        server.wait_for_bytes(SIZE // 3)
        server.kill()
        output.wait_for(b'"event": "retry"')  # the client met the dead server and backs off
        server.start()  # the same port and directory
        out, err = output.communicate(timeout=RUN_TIMEOUT)
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


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@pytest.mark.parametrize("protocol", ["tus", "ietf"])
def test_tls_is_verified(tmp_path: Path, protocol: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over https the server's certificate is checked against the trusted CAs (SSL_CERT_FILE
    here): one line and nothing uploaded without it, a byte-identical upload with it."""
    src, state = tmp_path / "f.bin", tmp_path / "state"
    data = os.urandom(3 * 65536 + 7)
    src.write_bytes(data)
    cert, key = self_signed(tmp_path)
    store = tmp_path / "store"
    store.mkdir()
    with OnwardServer(store, "--certfile", str(cert), "--keyfile", str(key)).start() as server:
        url = f"{protocol}+https://{HOST}:{server.port}/files/"
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        refused = run_copy(src, url, state, "--retries", "0", timeout=RUN_TIMEOUT)
        assert refused.returncode == 1
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "TLS certificate verification failed" in lines[0], refused.stderr
        assert server.held() == 0
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        result = run_copy(src, url, state, timeout=RUN_TIMEOUT)
        assert result.returncode == 0, result.stderr
        (finished,) = server.files()
        assert finished.read_bytes() == data


@pytest.mark.parametrize("protocol", ["tus", "ietf"])
def test_a_server_that_is_down_costs_one_retry_budget(tmp_path: Path, protocol: str) -> None:
    """Every request of an upload (discovery, creation, offset, append) draws on one
    ``--retries`` budget: retries nested per request once made 30 attempts of 5."""
    src, state = tmp_path / "a.bin", tmp_path / "state"
    src.write_bytes(os.urandom(100_000))
    with socket.socket() as closed:  # bound, never listening: every connection is refused
        closed.bind((HOST, 0))
        url = f"{protocol}+http://{HOST}:{closed.getsockname()[1]}/files/"
        result = run_copy(src, url, state, "--retries", "2")
    assert result.returncode == 1, result.stderr
    retries = [e for e in events(result.stdout) if e["event"] == "retry"]
    assert [e["attempt"] for e in retries] == [1, 2]
    assert all("re-run" not in str(e["error"]) for e in retries)  # a retry line says what happened
    [error] = [e for e in events(result.stdout) if e["event"] == "error"]
    assert str(error["message"]).endswith("; re-run to resume")  # the last word says what to do
    # No upload was ever made, so there is nothing to resume and nothing for status to list.
    status = subprocess.run(
        [sys.executable, "-m", "onward", "status"], env=state_env(state), capture_output=True, text=True
    )
    assert status.returncode == 0 and str(src) not in status.stdout, status.stdout
    assert [p.name for p in (state / "onward" / "uploads").iterdir()] == []


@pytest.mark.parametrize("protocol", ["tus", "ietf"])
def test_a_finished_upload_says_where_it_is(tmp_path: Path, protocol: str) -> None:
    src, state = tmp_path / "a.bin", tmp_path / "state"
    src.write_bytes(os.urandom(300_000))
    with serve(tmp_path) as server:
        result = run_copy(src, server.endpoint(protocol), state)
        assert result.returncode == 0, result.stderr
        (finished,) = server.files()
        location = str(done_event(result.stdout)["location"])
        assert location == f"{server.url}{finished.name}"  # the upload's own URL, as the server named it
        people = subprocess.run(
            [sys.executable, "-m", "onward", "copy", "-P", str(src), server.endpoint(protocol)],
            env=state_env(state),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        assert people.returncode == 0, people.stderr
        assert f"; the upload is at {server.url}" in people.stderr.splitlines()[-1]


def test_clean_without_a_path_offers_the_unfinished_uploads_status_lists(tmp_path: Path) -> None:
    src, state, cwd = tmp_path / "big.bin", tmp_path / "state", tmp_path / "elsewhere"
    src.write_bytes(os.urandom(SIZE))
    cwd.mkdir()
    with serve(tmp_path) as server:
        proc = start_copy(src, server.endpoint("tus"), state, "--checkpoint-seconds", "0.1")
        try:
            server.wait_for_bytes(SIZE // 4)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)

    def onward(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "onward", *args],
            env=state_env(state),
            cwd=cwd,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )

    assert str(src) in onward("status").stdout
    removed = onward("clean", "--yes", "--json")
    assert removed.returncode == 0, removed.stderr
    assert [json.loads(line)["event"] for line in removed.stdout.splitlines()] == ["removed"]
    assert "no unfinished copies" in onward("status").stdout


def test_sigterm_stops_serve_without_copys_resume_advice(tmp_path: Path) -> None:
    server = serve(tmp_path)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(timeout=30)
    said = server.log.read_text()
    assert "onward: serve: stopped; unfinished uploads are kept for their clients" in said, said
    assert "run the same command again" not in said and "Traceback" not in said

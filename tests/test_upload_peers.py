"""Our upload client against a real tus server: @tus/server with @tus/file-store (Node, tests/peers).

Every test runs ``python -m onward copy FILE tus+http://127.0.0.1:PORT/files/`` as a
subprocess, kills it (SIGKILL) or the server where the test says so, and compares the
bytes the server stored with the file. The server holds each PATCH for a few
milliseconds and the client sends small chunks, so a kill lands mid-upload.
Traffic goes to 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from peers.servers import TusNode, done_event, events, missing, run_copy, start_copy, state_env
from polling import Output

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))

CHUNK = 64 * 1024
RUN_TIMEOUT = 60


def kill_when_stored(proc: subprocess.Popen[bytes], server: TusNode, at_least: int) -> None:
    """SIGKILL ``proc`` once the server has stored ``at_least`` bytes (bounded wait)."""
    try:
        server.wait_for_bytes(at_least, timeout=30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


def journals(state: Path) -> list[Path]:
    return sorted((state / "onward" / "uploads").glob("*.onward-journal"))


def make_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def test_upload_stores_the_exact_bytes_and_leaves_no_journal(tmp_path: Path) -> None:
    src = tmp_path / "file.bin"
    data = make_file(src, 3 * CHUNK + 123)
    with TusNode(tmp_path / "store").start() as server:
        result = run_copy(src, server.endpoint, tmp_path / "state")
        assert result.returncode == 0, result.stderr
        (stored,) = server.uploads().values()
        assert stored.read_bytes() == data
        info = server.info(stored.name)
        assert info.get("size") == len(data)
        assert (info.get("metadata") or {}).get("filename") == "file.bin"
    done = done_event(result.stdout)
    assert (done["size"], done["resumed_from"], done["destination"]) == (len(data), 0, server.endpoint)
    assert journals(tmp_path / "state") == []
    assert not list((tmp_path / "state" / "onward" / "uploads").iterdir())  # no lock file left


def test_empty_file_is_uploaded(tmp_path: Path) -> None:
    src = tmp_path / "empty"
    src.write_bytes(b"")
    with TusNode(tmp_path / "store").start() as server:
        result = run_copy(src, server.endpoint, tmp_path / "state")
        assert result.returncode == 0, result.stderr
        (stored,) = server.uploads().values()
        assert stored.read_bytes() == b""
        assert server.info(stored.name).get("size") == 0


def test_sigkill_mid_upload_then_resume_sends_only_the_rest(tmp_path: Path) -> None:
    src, state = tmp_path / "big.bin", tmp_path / "state"
    data = make_file(src, 96 * CHUNK + 7)
    with TusNode(tmp_path / "store", delay_ms=15).start() as server:
        proc = start_copy(src, server.endpoint, state, "--checkpoint-seconds", "0.1")
        kill_when_stored(proc, server, 30 * CHUNK)
        assert proc.returncode == -signal.SIGKILL
        held = server.held()
        assert 0 < held < len(data)
        assert len(journals(state)) == 1
        # onward status lists it, with how far the journal got.
        status = subprocess.run(
            [sys.executable, "-m", "onward", "status", "--json"],
            env=state_env(state),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            cwd=tmp_path,
        )
        listed = [json.loads(line) for line in status.stdout.splitlines()]
        assert [(i["source"], i["destination"], i["size"]) for i in listed] == [
            (str(src), server.endpoint, len(data))
        ]
        assert 0 < int(listed[0]["done"]) <= held
        result = run_copy(src, server.endpoint, state)
        assert result.returncode == 0, result.stderr
        (stored,) = server.uploads().values()  # the same upload, continued
        assert stored.read_bytes() == data
    done = done_event(result.stdout)
    assert 0 < int(done["resumed_from"]) <= held  # the journal may lag the server, never lead it
    assert journals(state) == []


def test_file_changed_between_runs_goes_to_a_new_upload(tmp_path: Path) -> None:
    """tuspy's weakness: same size, an edit past the first 64 KiB. Never resumed into the old upload."""
    src, state = tmp_path / "doc.bin", tmp_path / "state"
    data = make_file(src, 64 * CHUNK)
    with TusNode(tmp_path / "store", delay_ms=15).start() as server:
        proc = start_copy(src, server.endpoint, state)
        kill_when_stored(proc, server, 20 * CHUNK)
        server.wait_until_still()  # the PATCH in flight at the kill may still be written
        (old_id,) = server.uploads()
        old_bytes = server.uploads()[old_id].read_bytes()
        # Same size, same first 64 KiB, different bytes inside what the server already has.
        changed = bytearray(data)
        changed[5 * CHUNK : 5 * CHUNK + 16] = b"\xff" * 16
        src.write_bytes(bytes(changed))
        result = run_copy(src, server.endpoint, state)
        assert result.returncode == 0, result.stderr
        uploads = server.uploads()
        assert len(uploads) == 2
        new_id = next(i for i in uploads if i != old_id)
        assert uploads[new_id].read_bytes() == bytes(changed)
        assert uploads[old_id].read_bytes() == old_bytes  # never written to again
    notices = [e["message"] for e in events(result.stdout) if e.get("event") == "notice"]
    assert any("changed since its upload" in str(m) for m in notices), notices
    assert done_event(result.stdout)["resumed_from"] == 0


def test_server_killed_and_restarted_mid_upload(tmp_path: Path) -> None:
    src, state = tmp_path / "big.bin", tmp_path / "state"
    data = make_file(src, 96 * CHUNK + 1)
    server = TusNode(tmp_path / "store", delay_ms=15).start()
    try:
        proc = start_copy(src, server.endpoint, state, "--retries", "8", pipe=True)
        output = Output(proc)
        server.wait_for_bytes(30 * CHUNK)
        server.kill()
        output.wait_for(b'"event": "retry"')  # the client met the dead server and backs off
        server.start()  # same port, same directory
        out, err = output.communicate(timeout=RUN_TIMEOUT)
        assert proc.returncode == 0, err
        (stored,) = server.uploads().values()
        assert stored.read_bytes() == data
    finally:
        server.stop()
    kinds = [e.get("event") for e in events(out.decode())]
    assert "retry" in kinds


def test_credentials_stay_out_of_journal_status_and_output(tmp_path: Path) -> None:
    src, state = tmp_path / "f.bin", tmp_path / "state"
    data = make_file(src, 40 * CHUNK)
    with TusNode(tmp_path / "store", delay_ms=15).start() as server:
        url = f"tus+http://alice:s3cr3tpw@127.0.0.1:{server.port}/files/?token=t0ps3cret"
        proc = start_copy(src, url, state, pipe=True)
        server.wait_for_bytes(10 * CHUNK)
        proc.send_signal(signal.SIGKILL)
        first_out, first_err = proc.communicate(timeout=10)
        (journal,) = journals(state)
        raw = journal.read_bytes()
        status = subprocess.run(
            [sys.executable, "-m", "onward", "status"],
            env=state_env(state),
            capture_output=True,
            timeout=RUN_TIMEOUT,
            cwd=tmp_path,
        )
        result = run_copy(src, url, state)
        assert result.returncode == 0, result.stderr
        (stored,) = server.uploads().values()
        assert stored.read_bytes() == data
    seen = [
        raw,
        first_out,
        first_err,
        status.stdout,
        status.stderr,
        result.stdout.encode(),
        result.stderr.encode(),
    ]
    for blob in seen:
        for secret in (b"s3cr3tpw", b"t0ps3cret", b"alice"):
            assert secret not in blob
    assert b"token=REDACTED" in status.stdout


@pytest.mark.parametrize(
    ("url", "code", "expected"),
    [
        ("tus+http://", 2, "no host name"),
        ("tus+http://127.0.0.1:99999/files/", 2, "out of range"),
        ("https://127.0.0.1/files/", 2, "tus+http(s)://"),
    ],
)
def test_bad_upload_urls_get_one_line(tmp_path: Path, url: str, code: int, expected: str) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    result = run_copy(src, url, tmp_path / "state")
    assert result.returncode == code
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_nothing_listening_is_one_line_naming_the_url(tmp_path: Path) -> None:
    from http_servers import free_port

    src = tmp_path / "f"
    src.write_bytes(b"x" * 1000)
    url = f"tus+http://127.0.0.1:{free_port()}/files/"
    result = run_copy(src, url, tmp_path / "state", "--retries", "0")
    assert result.returncode == 1
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and url in line and "refused" in line, line


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    result = run_copy(tmp_path / "nope", "tus+http://127.0.0.1:9/files/", tmp_path / "state")
    assert result.returncode == 1
    assert str(tmp_path / "nope") in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_not_a_tus_endpoint_is_one_line(tmp_path: Path) -> None:
    """A plain static HTTP server (Python's own) answers the creation request 501."""
    import http.server
    import threading

    src = tmp_path / "f"
    src.write_bytes(b"x" * 1000)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"tus+http://127.0.0.1:{httpd.server_address[1]}/files/"
        result = run_copy(src, url, tmp_path / "state", "--retries", "0")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert result.returncode == 1
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and url in line and "501" in line and "tus" in line, line


def test_sigterm_stops_with_130_and_the_same_command_resumes(tmp_path: Path) -> None:
    src, state = tmp_path / "f.bin", tmp_path / "state"
    data = make_file(src, 64 * CHUNK)
    with TusNode(tmp_path / "store", delay_ms=15).start() as server:
        proc = start_copy(src, server.endpoint, state, pipe=True)
        server.wait_for_bytes(16 * CHUNK)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=RUN_TIMEOUT)
        assert proc.returncode == 130, err
        assert "run the same command again" in err.decode() and "Traceback" not in err.decode()
        result = run_copy(src, server.endpoint, state)
        assert result.returncode == 0, result.stderr
        (stored,) = server.uploads().values()
        assert stored.read_bytes() == data
    assert int(str(done_event(result.stdout)["resumed_from"])) >= 16 * CHUNK - CHUNK


def test_clean_removes_an_abandoned_upload_but_not_a_running_one(tmp_path: Path) -> None:
    src, state = tmp_path / "f.bin", tmp_path / "state"
    make_file(src, 64 * CHUNK)
    uploads = state / "onward" / "uploads"

    def clean() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "onward", "clean", str(uploads), "--yes"],
            env=state_env(state),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )

    with TusNode(tmp_path / "store", delay_ms=15).start() as server:
        proc = start_copy(src, server.endpoint, state)
        try:
            server.wait_for_bytes(8 * CHUNK)
            busy = clean()
            assert busy.returncode == 1 and "running" in busy.stderr
            assert len(journals(state)) == 1
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
    done = clean()
    assert done.returncode == 0, done.stderr
    assert list(uploads.iterdir()) == []

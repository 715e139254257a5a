"""``onward serve``: one slow hook or slow client must not stall everyone, and the limits that
bound what one client can cost, through real HTTP against the real server.

Slow hooks run in their own pool: an unrelated creation and PATCH are answered while every
hook thread is held (asserted by order: the hooks are released only after those answers).
Clients that take too long over their headers are dropped while a normal upload succeeds;
connections past the cap get 503; files are as private as the data; the token can be passed
without showing it in ``ps``; a concatenation cannot multiply one partial.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from http_servers import HOST
from peers.servers import OnwardServer
from polling import wait_until
from test_server import OCTETS, STAGING, TUS, V8, _cli, create, data, upload_id

HOOK = """
import os, sys, time
marks = sys.argv[1]
uid = os.environ["ONWARD_UPLOAD_ID"]
open(os.path.join(marks, "started-" + uid), "w").close()
deadline = time.monotonic() + 120
while not os.path.exists(os.path.join(marks, "release")) and time.monotonic() < deadline:
    time.sleep(0.02)
open(os.path.join(marks, "done-" + uid), "w").close()
"""


def test_slow_hooks_do_not_block_an_unrelated_upload(updir: Path, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "hook.py"
    script.write_text(HOOK)
    hook = f"{sys.executable} {script} {marks}"
    finishing = 8  # more than the hook pool (4) and than asyncio's default pool on 2 CPUs (6)
    with OnwardServer(updir, "--on-complete", hook, "--hook-timeout", "300").start() as srv:
        answers: list[int] = []

        def finish(i: int) -> None:
            with httpx.Client(base_url=srv.origin, timeout=120) as c:
                location = create(c, 1000)
                done = c.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=data(1000, i))
                answers.append(done.status_code)

        threads = [threading.Thread(target=finish, args=(i,)) for i in range(finishing)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: len(list(marks.glob("started-*"))) >= 4, what="four hooks running")
            with httpx.Client(base_url=srv.origin, timeout=60) as c:
                location = create(c, 2048)  # an unrelated creation ...
                patched = c.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=b"k" * 1024)
                assert patched.status_code == 204 and patched.headers["upload-offset"] == "1024"
                head = c.head(location, headers=TUS)
                assert head.headers["upload-offset"] == "1024"
            # ... answered while every hook is still held: none has finished, no finishing upload
            # has had its answer
            assert not list(marks.glob("done-*")) and answers == []
        finally:
            (marks / "release").touch()
            for t in threads:
                t.join(timeout=120)
    assert answers == [204] * finishing
    assert len(list(marks.glob("done-*"))) == finishing


def test_a_hook_past_its_timeout_is_killed_and_the_upload_answered(updir: Path, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "hook.py"
    script.write_text(HOOK)  # waits for a release that never comes
    hook = f"{sys.executable} {script} {marks}"
    with (
        OnwardServer(updir, "--on-complete", hook, "--hook-timeout", "1").start() as srv,
        httpx.Client(base_url=srv.origin, timeout=60) as c,
    ):
        location = create(c, 3)
        done = c.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=b"abc")
        assert done.status_code == 204
        assert list(marks.glob("started-*")) and not list(marks.glob("done-*"))
    assert "completion command" in srv.log.read_text()
    assert (updir / upload_id(location)).read_bytes() == b"abc"


def slow_header_client(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=5)
    sock.sendall(b"PATCH /files/")
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Send one more header byte; True once the server has answered 408 or closed."""
    try:
        sock.sendall(b"x")
        sock.setblocking(False)
        try:
            reply = sock.recv(4096)
        except BlockingIOError:
            return False
        finally:
            sock.setblocking(True)
    except OSError:
        return True
    return reply == b"" or reply.startswith(b"HTTP/1.1 408")


def test_slow_header_clients_are_dropped_while_an_upload_succeeds(updir: Path) -> None:
    with OnwardServer(updir, "--header-timeout", "2").start() as srv:
        slow = [slow_header_client(srv.port) for _ in range(50)]
        silent = socket.create_connection((HOST, srv.port), timeout=5)  # sends nothing at all
        try:
            payload = data(4 << 20)
            with httpx.Client(base_url=srv.origin, timeout=60) as c:
                location = create(c, len(payload))
                done = c.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=payload)
                assert done.status_code == 204
            open_ = list(slow)
            deadline = time.monotonic() + 30
            while open_ and time.monotonic() < deadline:  # one byte per round, as a slowloris does
                open_ = [s for s in open_ if not closed_by_server(s)]
                time.sleep(0.1)  # their pace, part of the behaviour under test
            assert not open_, f"{len(open_)} slow clients were still held"
            silent.settimeout(30)
            assert silent.recv(4096).startswith(b"HTTP/1.1 408")
        finally:
            for s in [*slow, silent]:
                s.close()
        assert (updir / upload_id(location)).read_bytes() == payload


def kept_alive(port: int) -> socket.socket | None:
    """A connection that got a 204 to OPTIONS and stays open (keep-alive); None if refused."""
    sock = socket.create_connection((HOST, port), timeout=10)
    sock.sendall(b"OPTIONS /files/ HTTP/1.1\r\nHost: x\r\n\r\n")
    if sock.recv(4096).startswith(b"HTTP/1.1 204"):
        return sock
    sock.close()  # a connection closed just before (the port probe's) was still counted
    return None


def test_connections_past_the_cap_get_503(updir: Path) -> None:
    cap = ["--max-connections", "3", "--keep-alive", "60"]
    with OnwardServer(updir, *cap).start() as srv:
        held: list[socket.socket] = []
        for _ in range(20):
            if len(held) == 3:
                break
            if (sock := kept_alive(srv.port)) is not None:
                held.append(sock)
        try:
            assert len(held) == 3
            extra = socket.create_connection((HOST, srv.port), timeout=10)
            assert extra.recv(4096).startswith(b"HTTP/1.1 503")
            extra.close()
        finally:
            for s in held:
                s.close()
        wait_until(lambda: httpx.options(srv.url, timeout=10).status_code == 204, what="room again")


def test_ietf_creation_sends_104_with_the_location_before_the_data(server: OnwardServer, updir: Path) -> None:
    payload = data(5000)
    with socket.create_connection((HOST, server.port), timeout=30) as sock:
        head = (
            "POST /files/ HTTP/1.1\r\nHost: x\r\nUpload-Draft-Interop-Version: 8\r\nUpload-Complete: ?1\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        )
        sock.sendall(head.encode())
        reader = sock.makefile("rb")
        interim = reader.readline()  # nothing of the body is sent yet
        assert interim.startswith(b"HTTP/1.1 104"), interim
        fields = {}
        while (line := reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            fields[name.strip().lower()] = value.strip()
        assert fields["location"].startswith("/files/") and fields["upload-draft-interop-version"] == "8"
        sock.sendall(payload)
        final = reader.readline()
        assert final.startswith(b"HTTP/1.1 200"), final
    assert (updir / upload_id(fields["location"])).read_bytes() == payload


def test_files_are_as_private_as_the_data(updir: Path) -> None:
    previous = os.umask(0o022)
    try:
        with OnwardServer(updir).start() as srv, httpx.Client(base_url=srv.origin) as c:
            done = c.put("/files/", headers={**V8, "Upload-Complete": "?1"}, content=b"secret")
            unfinished = create(c, 10)
    finally:
        os.umask(previous)
    uid, other = upload_id(done.headers["location"]), upload_id(unfinished)
    paths = [updir / uid, updir / f"{uid}.json", updir / STAGING / f"{uid}.info"]
    paths += [updir / STAGING / f"{other}.part", updir / STAGING / f"{other}.info"]
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_token_file_env_and_a_warning_for_token_on_the_command_line(
    updir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    bearer = {"Authorization": "Bearer s3cret"}
    with (
        OnwardServer(updir, "--token-file", str(secret)).start() as srv,
        httpx.Client(base_url=srv.origin) as c,
    ):
        assert c.post("/files/", headers={**TUS, "Upload-Length": "1"}).status_code == 401
        assert c.post("/files/", headers={**TUS, "Upload-Length": "1", **bearer}).status_code == 201
    assert "warning" not in srv.log.read_text()
    monkeypatch.setenv("ONWARD_SERVE_TOKEN", "s3cret")
    with OnwardServer(updir).start() as srv, httpx.Client(base_url=srv.origin) as c:
        assert c.post("/files/", headers={**TUS, "Upload-Length": "1"}).status_code == 401
        assert c.post("/files/", headers={**TUS, "Upload-Length": "1", **bearer}).status_code == 201
    monkeypatch.delenv("ONWARD_SERVE_TOKEN")
    with OnwardServer(updir, "--token", "s3cret").start() as srv, httpx.Client(base_url=srv.origin) as c:
        assert c.post("/files/", headers={**TUS, "Upload-Length": "1", **bearer}).status_code == 201
    assert "warning: --token is visible" in srv.log.read_text()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--token-file", "/nonexistent/token"], "cannot read the token file"),
        (["--token-file", "/dev/null"], "empty"),
        (["--max-connections", "0"], "--max-connections"),
        (["--header-timeout", "0"], "--header-timeout"),
        (["--hook-timeout", "-1"], "--hook-timeout"),
    ],
)
def test_bad_limit_options_are_one_line_and_exit_2(args: list[str], says: str, tmp_path: Path) -> None:
    done = _cli("serve", ".", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_concatenation_cannot_multiply_one_partial(updir: Path) -> None:
    with OnwardServer(updir, "--max-size", "10K").start() as srv, httpx.Client(base_url=srv.origin) as c:
        location = create(c, 3000, **{"Upload-Concat": "partial"})
        assert (
            c.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=data(3000)).status_code == 204
        )
        repeated = c.post("/files/", headers={**TUS, "Upload-Concat": "final;" + " ".join([location] * 5)})
        assert repeated.status_code == 400 and "more than 4 times" in repeated.text
        too_big = c.post("/files/", headers={**TUS, "Upload-Concat": "final;" + " ".join([location] * 4)})
        assert too_big.status_code == 413  # 12,000 bytes against --max-size 10K
        fits = c.post("/files/", headers={**TUS, "Upload-Concat": "final;" + " ".join([location] * 3)})
        assert fits.status_code == 201
        assert (updir / upload_id(fits.headers["location"])).read_bytes() == data(3000) * 3
        options = c.options("/files/")
        assert options.headers["tus-max-size"] == str(10 << 10)
    with OnwardServer(updir).start() as srv:
        assert httpx.options(srv.url).headers["tus-max-size"] == str(100 << 30)  # the default
    assert json.loads((updir / f"{upload_id(fits.headers['location'])}.json").read_text())["size"] == 9000

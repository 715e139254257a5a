"""The importable ASGI app (``onward.server.create_app``) driven in-process, and its pure rules.

What a subprocess cannot show cheaply: expiry against a controlled clock, the Python
completion hook, the auth hook, mounting under a prefix, and a hook that did not run before
a crash running at the next start.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from onward.server import AuthRequest, FinishedUpload, create_app
from onward.server.headers import Reject, parse_concat, parse_metadata, parse_sf_boolean, valid_id
from onward.server.store import Store
from polling import async_wait_until

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}


def run(app: Any, steps: Callable[[httpx.AsyncClient], Any], root: str = "") -> Any:
    async def go() -> Any:
        transport = httpx.ASGITransport(app=app, root_path=root)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await steps(client)

    return asyncio.run(go())


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_expired_uploads_answer_410_and_are_swept(tmp_path: Path) -> None:
    clock = Clock()
    app = create_app(tmp_path, expire_after=100, clock=clock)

    async def steps(c: httpx.AsyncClient) -> None:
        location = (await c.post("/files/", headers={**TUS, "Upload-Length": "10"})).headers["location"]
        await c.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=b"12345")
        done = (await c.post("/files/", headers={**TUS, "Upload-Length": "2"})).headers["location"]
        await c.patch(done, headers={**OCTETS, "Upload-Offset": "0"}, content=b"ok")
        clock.now += 50
        assert await app.sweep() == []
        clock.now += 51
        assert (await c.head(location, headers=TUS)).status_code == 410
        swept = await app.sweep()
        assert sorted(swept) == sorted([location.rsplit("/", 1)[1], done.rsplit("/", 1)[1]])
        assert (await c.head(location, headers=TUS)).status_code == 404
        # the finished file stays: only its upload record expired
        assert (tmp_path / done.rsplit("/", 1)[1]).read_bytes() == b"ok"

    run(app, steps)
    assert sorted(p.name for p in (tmp_path / ".onward-uploads").iterdir()) == [".lock"]


def test_python_hook_auth_hook_and_mounting(tmp_path: Path) -> None:
    seen: list[FinishedUpload] = []
    asked: list[AuthRequest] = []

    def auth(request: AuthRequest) -> bool:
        asked.append(request)
        return request.headers.get("x-user") == "alice"

    app = create_app(tmp_path, on_complete=seen.append, auth=auth)
    name = base64.b64encode("résumé.txt".encode()).decode()

    async def steps(c: httpx.AsyncClient) -> None:
        denied = await c.post("/api/files/", headers={**TUS, "Upload-Length": "3"})
        assert denied.status_code == 401
        created = await c.post(
            "/api/files/",
            headers={**TUS, "Upload-Length": "3", "X-User": "alice", "Upload-Metadata": f"name {name}"},
        )
        assert created.status_code == 201
        location = created.headers["location"]
        assert location.startswith("/api/files/")  # the mount prefix is part of the upload's URL
        patched = await c.patch(
            location, headers={**OCTETS, "Upload-Offset": "0", "X-User": "alice"}, content=b"abc"
        )
        assert patched.status_code == 204

    run(app, steps, root="/api")
    assert asked[0].method == "POST" and asked[0].path == "/files/"
    [finished] = seen
    assert finished.size == 3 and finished.metadata == {"name": "résumé.txt"}
    assert Path(finished.path).read_bytes() == b"abc" and Path(finished.metadata_path).is_file()


def test_a_hook_missed_by_a_crash_runs_at_the_next_start(tmp_path: Path) -> None:
    first = create_app(tmp_path)  # no hook: stands for a server killed before its hook ran

    async def upload(c: httpx.AsyncClient) -> str:
        location = (await c.post("/files/", headers={**TUS, "Upload-Length": "2"})).headers["location"]
        await c.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=b"hi")
        return str(location).rsplit("/", 1)[1]

    upload_id = run(first, upload)
    record = Store(str(tmp_path)).info_path(upload_id)
    Path(record).write_bytes(Path(record).read_bytes()[:-9])  # drop the HOOKED record (5+4 bytes)
    first.store.close()
    seen: list[FinishedUpload] = []
    second = create_app(tmp_path, on_complete=seen.append)

    async def wait(c: httpx.AsyncClient) -> None:
        await c.options("/files/")  # starts the app
        await async_wait_until(lambda: seen, timeout=10, what="the hook of the unhooked upload")

    run(second, wait)
    assert [f.id for f in seen] == [upload_id]


def test_rules() -> None:
    assert parse_metadata("a YQ==,b") == {"a": "YQ==", "b": None}
    for bad in ("a YQ== x", "a !!", "a,a", " , "):
        with pytest.raises(Reject):
            parse_metadata(bad)
    assert (
        parse_sf_boolean("?1") is True and parse_sf_boolean("?0") is False and parse_sf_boolean("1") is None
    )
    ok = "A" * 32
    assert parse_concat(f"final;/files/{ok} http://h/files/{ok}", "/files/") == ("final", [ok, ok])
    for bad in ("final;/files/../../etc", "final;", "partial;x", f"final;/other/{ok}"):
        with pytest.raises(Reject):
            parse_concat(bad, "/files/")
    assert valid_id(ok) and not valid_id("../" + "A" * 29) and not valid_id("A" * 31 + "/")


def test_a_request_that_will_not_let_go_makes_the_next_one_423(tmp_path: Path) -> None:
    """The holder is inside the completion hook (not waiting for body bytes), so it cannot be
    ended; the next request on the upload waits ``lock_wait`` and gets 423 Locked."""

    entered = threading.Event()

    def slow_hook(upload: FinishedUpload) -> None:
        entered.set()
        time.sleep(1.0)  # a hook that stalls: the behaviour under test

    app = create_app(tmp_path, on_complete=slow_hook, lock_wait=0.2)

    async def steps(c: httpx.AsyncClient) -> None:
        location = (await c.post("/files/", headers={**TUS, "Upload-Length": "3"})).headers["location"]
        finishing = asyncio.ensure_future(
            c.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=b"abc")
        )
        await async_wait_until(entered.is_set, what="the hook is running")
        locked = await c.head(location, headers=TUS)
        assert locked.status_code == 423
        assert (await finishing).status_code == 204
        assert (await c.head(location, headers=TUS)).headers["upload-offset"] == "3"

    run(app, steps)


def test_unknown_ids_and_finished_requests_leave_no_per_upload_state(tmp_path: Path) -> None:
    """No slot is made for an id before it is known to exist, and a slot goes when its last
    request does: memory follows the requests in flight, not the ids ever asked about
    (bench/serve_memory_bench.py measures the RSS of 100,000 such HEADs)."""
    app = create_app(tmp_path)

    async def steps(c: httpx.AsyncClient) -> None:
        for i in range(500):
            assert (await c.head(f"/files/{i:032d}", headers=TUS)).status_code == 404
        assert app._slots == {}
        location = (await c.post("/files/", headers={**TUS, "Upload-Length": "3"})).headers["location"]
        assert (await c.head(location, headers=TUS)).status_code == 200
        assert app._slots == {}

    run(app, steps)


def test_the_app_serves_any_store_it_is_given(tmp_path: Path) -> None:
    """``create_app(store=...)``: the store protocol is what the app speaks to (issue 18 adds one)."""
    app = create_app(store=Store(str(tmp_path)))

    async def steps(c: httpx.AsyncClient) -> None:
        location = (await c.post("/files/", headers={**TUS, "Upload-Length": "2"})).headers["location"]
        done = await c.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=b"hi")
        assert done.status_code == 204

    run(app, steps)
    assert [p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.suffix == ""] == [b"hi"]
    with pytest.raises(TypeError):
        create_app()
    with pytest.raises(TypeError):
        create_app(tmp_path, store=Store(str(tmp_path)))

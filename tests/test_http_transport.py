"""The HTTP plumbing (onward.endpoints.transport) on a real client and a real server on 127.0.0.1.

The download fast path reaches into httpcore: a class attribute it reads on every read
(``READ_NUM_BYTES``) and the socket behind a response. An httpx or httpcore release that
renames either would silently make downloads slower (docs/PERFORMANCE.md); these tests
fail instead, so the pins in pyproject are moved only with them passing.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import httpx
import pytest

from http_servers import Behaviour, Misbehaving
from onward.endpoints import httpbody, transport
from onward.endpoints.http import HttpSource
from onward.errors import DestinationError, SourceError, TransientError

SIZE = 3 * transport.READ_SIZE + 1234


def client_for(url: str) -> httpx.Client:
    return transport.make_client(
        httpx.URL(url), name=url, timeout=10, connections=1, verify=True, redirects=False
    )


def test_httpcore_reads_read_size_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every read httpcore makes of a response body asks the socket for ``READ_SIZE`` bytes
    (httpcore's own default is 64 KiB): the attribute onward raises is the one it reads."""
    monkeypatch.setenv("NETRC", os.devnull)
    data = os.urandom(SIZE)
    with Misbehaving(data, Behaviour(chunked=True)) as server, client_for(server.url) as client:
        assert transport.larger_reads()
        asked: list[int] = []
        with client.stream("GET", server.url) as response:
            stream: Any = response.extensions["network_stream"]
            read = stream.read

            def recording(max_bytes: int, timeout: float | None = None) -> bytes:
                asked.append(max_bytes)
                return bytes(read(max_bytes, timeout))

            stream.read = recording
            body = b"".join(response.iter_raw())
        assert body == data
        assert asked and set(asked) == {transport.READ_SIZE}, asked


def test_a_response_body_can_be_read_from_its_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body framed by Content-Length is read straight from the socket (``body_socket``); a
    chunked one is not (h11 must see its framing)."""
    monkeypatch.setenv("NETRC", os.devnull)
    for behaviour, direct in ((Behaviour(), True), (Behaviour(chunked=True), False)):
        with (
            Misbehaving(b"x" * 1000, behaviour) as server,
            client_for(server.url) as client,
            client.stream("GET", server.url) as response,
        ):
            assert isinstance(transport.body_socket(response), socket.socket) is direct


def test_a_download_reads_its_chunks_from_the_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through ``HttpSource``, as the engine reads: the data request's body comes from the
    socket, byte-identical."""
    monkeypatch.setenv("NETRC", os.devnull)
    found: list[socket.socket | None] = []
    real = transport.body_socket

    def spy(response: httpx.Response) -> socket.socket | None:
        found.append(real(response))
        return found[-1]

    monkeypatch.setattr(httpbody, "body_socket", spy)
    data = os.urandom(SIZE)
    with Misbehaving(data) as server:
        source = HttpSource.open(server.url, retries=0)
        try:
            buf = memoryview(bytearray(SIZE))
            assert source.read_into(0, buf) == SIZE
        finally:
            source.close()
    assert bytes(buf) == data
    assert found and all(isinstance(sock, socket.socket) for sock in found)


def test_errors_map_to_one_line_without_secrets() -> None:
    """One table for downloads and uploads: a refused connection is worth retrying, a name
    under .invalid is final at once (as ``final``), and no password is ever shown."""
    with socket.socket() as closed:  # bound, never listening: every connection is refused
        closed.bind(("127.0.0.1", 0))
        url = f"http://user:hunter2@127.0.0.1:{closed.getsockname()[1]}/f?token=s3cret"
        shown = transport.shown_url(url)
        with client_for(url) as client:
            try:
                client.get(url)
            except httpx.HTTPError as exc:
                error = transport.transport_error(exc, shown=shown, name=shown, url=url, timeout=1)
            else:
                pytest.fail("a refused connection answered")
    assert isinstance(error, TransientError) and "cannot connect" in error.message
    assert "hunter2" not in error.message and "s3cret" not in error.message
    assert error.message.startswith(shown) and "token=REDACTED" in shown
    with pytest.raises(DestinationError, match=r"names under \.invalid never resolve"):
        transport.make_client(
            httpx.URL("http://x.invalid/"),
            name="x",
            timeout=1,
            connections=1,
            verify=True,
            redirects=False,
            final=DestinationError,
        )
    with pytest.raises(SourceError, match="never resolve"):
        client_for("http://x.invalid/")

"""What ``onward serve`` needs from its HTTP/1.1 server and uvicorn does not offer, as a thin
subclass of uvicorn's own protocol class (h11 or httptools), passed as ``Config(http=...)``.

- **A deadline for request headers.** uvicorn ends idle keep-alive connections, but a
  connection that sends nothing, or its headers one byte a second, is held for ever. The
  guard arms a timer when a connection opens and whenever data starts a new request on it,
  and cancels it once a request's headers are complete (uvicorn has then made a request
  cycle). When it fires, the client gets 408 and the connection is closed. The body of a
  request has its own timeout in the app (``--timeout``).
- **A cap on connections.** One past the cap gets 503 with ``Retry-After`` and is closed at
  once, before it costs a request. uvicorn's ``limit_concurrency`` answers 503 only once
  headers are complete, so connections that never finish them are not counted out.
- **Interim responses.** The draft asks for ``104 Upload Resumption Supported`` as soon as
  an upload is created; neither uvicorn nor hypercorn sends a 1xx other than 100 on
  HTTP/1.1 (docs/SERVER.md). The guard puts ``scope["extensions"]["onward.informational"]``
  in every request's scope: a callable that writes a 1xx response line and headers to the
  connection while the final response has not started (a 1xx changes no HTTP/1.1 state).

It relies on attributes both of uvicorn's protocol classes have (``cycle``, ``connections``,
``loop``, ``transport``, ``cycle.scope``, ``cycle.response_started``), checked by
tests/test_server_limits.py through real HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

__all__ = ["INFORMATIONAL", "guarded_protocol"]

INFORMATIONAL = "onward.informational"
_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)
_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_REASONS = {104: "Upload Resumption Supported"}


def guarded_protocol(base: type[asyncio.Protocol], header_timeout: float, max_connections: int) -> type[Any]:
    """``base`` (uvicorn's H11Protocol or HttpToolsProtocol) with the guard's three additions."""
    parent: type[Any] = base

    class Guarded(parent):  # type: ignore[misc]
        _header_timer: asyncio.TimerHandle | None = None
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                self._refused = True
                transport.write(_UNAVAILABLE)
                transport.close()
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._header_timer is None and self._between_requests():
                self._arm()  # a new request begins on a kept-alive connection
            super().data_received(data)
            self._headers_seen()

        def handle_events(self) -> None:  # h11: also called for a pipelined request
            super().handle_events()
            self._headers_seen()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _between_requests(self) -> bool:
            return self.cycle is None or bool(self.cycle.response_complete)

        def _headers_seen(self) -> None:
            if self._between_requests():
                return
            self._disarm()
            _offer_informational(self.cycle, self.transport)

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout, self._timed_out)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _timed_out(self) -> None:
            self._header_timer = None
            if self._between_requests() and not self.transport.is_closing():
                self.transport.write(_TIMED_OUT)
                self.transport.close()

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded


def _offer_informational(cycle: Any, transport: asyncio.Transport) -> None:
    """Put the 1xx sender in the request's scope (once per request cycle)."""
    extensions = cycle.scope.setdefault("extensions", {})
    if INFORMATIONAL not in extensions:
        extensions[INFORMATIONAL] = _informational(cycle, transport)


def _informational(cycle: Any, transport: asyncio.Transport) -> Callable[[int, list[tuple[str, str]]], bool]:
    def send(status: int, headers: list[tuple[str, str]]) -> bool:
        """Write a 1xx response now; False when the final response has begun (too late)."""
        if not 100 < status < 200 or status == 101:
            raise ValueError(f"{status} is not an interim response status")
        if cycle.response_started or transport.is_closing():
            return False
        reason = _REASONS.get(status) or HTTPStatus(status).phrase
        lines = [f"HTTP/1.1 {status} {reason}"] + [f"{name}: {value}" for name, value in headers]
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        return True

    return send

"""An open HTTP response read into chunk buffers, straight from the socket where that is safe.

Each engine worker thread reads its own run of chunks through one long response
(``bytes=OFFSET-LAST``). Its body, when framed by Content-Length, is read straight from
the socket into the chunk buffers: h11 parses the headers, the bytes are not copied
through it (a third of the CPU of a download, docs/PERFORMANCE.md). The connection is
then closed, not reused: h11 never saw the body end.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from .transport import body_socket

__all__ = ["ENDLESS", "Cursor"]

ENDLESS = 1 << 62  # where a cursor over a body without a length ends: when the server ends it


@dataclass
class Cursor:
    """An open response being read into chunks: bytes [pos, end) are still to come."""

    response: httpx.Response
    chunks: Iterator[bytes]
    pos: int
    end: int
    thread: threading.Thread
    rest: memoryview | None = None
    sock: socket.socket | None = None  # set: the body is read straight from the socket

    @classmethod
    def over(
        cls, response: httpx.Response, start: int, end: int, thread: threading.Thread, timeout: float
    ) -> Cursor:
        """A cursor over bytes [start, end) of ``response``'s body; raises ``httpx.HTTPError``
        (with the response closed) when what h11 had buffered cannot be read."""
        cursor = cls(response, response.iter_raw(), start, end, thread)
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) == end - start:
            cursor.sock = body_socket(response)
        if cursor.sock is not None:
            try:
                first = next(cursor.chunks, b"")
            except httpx.HTTPError:
                response.close()
                raise
            cursor.rest = memoryview(first) if first else None
            cursor.sock.settimeout(timeout)
        return cursor

    def fill(self, buf: memoryview) -> int:
        """Copy the next bytes of the body into ``buf``: all of it, or fewer where the body
        ended. Raises ``httpx.HTTPError`` or ``OSError`` (``TimeoutError``) when it broke."""
        want, got = len(buf), 0
        while got < want:
            piece = self.rest
            if piece is None and self.sock is not None:
                n = self.sock.recv_into(buf[got:], want - got)
                if n == 0:
                    break
                got += n
                continue
            if piece is None:
                data = next(self.chunks, None)
                if data is None:
                    break
                piece = memoryview(data)
            n = min(len(piece), want - got)
            buf[got : got + n] = piece[:n]
            self.rest = piece[n:] if n < len(piece) else None
            got += n
        return got

    def finish(self) -> None:
        """Read to its end: let h11 see the body end, so the connection can go back to the pool."""
        if self.sock is None:
            with contextlib.suppress(httpx.HTTPError, StopIteration):
                next(self.chunks)

"""Synchronising a test with what it waits for: poll a condition until a deadline.

A bare sleep is either too short on a loaded machine (a flaky test) or too long everywhere (a
slow one); these wait exactly as long as the condition takes and fail, naming what was awaited,
when it does not come in time.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")

INTERVAL = 0.02  # between two looks: short next to any deadline, long next to one look's cost


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    what: str = "",
    pause: Callable[[], object] | None = None,
) -> T:
    """``predicate()``'s first truthy value, looked for every ``INTERVAL`` s (or after each
    ``pause()``, for a caller that must let something run meanwhile) for ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        if pause is None:
            time.sleep(INTERVAL)
        else:
            pause()
    return value


async def async_wait_until(predicate: Callable[[], T], timeout: float = 30.0, what: str = "") -> T:
    """``wait_until`` inside an event loop: the loop runs on between two looks."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(INTERVAL)
    return value


def read_by_peer(sock: socket.socket) -> bool:
    """Every byte sent on the IPv4 TCP ``sock`` was read by the process at the other end: none is
    left in this socket's send queue nor in the peer's receive queue (``/proc/net/tcp``)."""
    (unsent,) = struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0" * 4))
    if unsent:
        return False
    here, there = sock.getsockname()[1], sock.getpeername()[1]
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, _, queues = row.split()[1:5]
        if int(local.rsplit(":", 1)[1], 16) == there and int(remote.rsplit(":", 1)[1], 16) == here:
            return int(queues.split(":")[1], 16) == 0
    return False


class Output:
    """A child's stdout and stderr, read as they come so that a test can wait for a line."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None and proc.stderr is not None, "start the child with pipes"
        self.proc = proc
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.readers = [self._drain(proc.stdout, self.out), self._drain(proc.stderr, self.err)]

    @staticmethod
    def _drain(stream: IO[bytes], into: list[bytes]) -> threading.Thread:
        def drain() -> None:
            for line in iter(stream.readline, b""):
                into.append(line)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        return reader

    def saw(self, needle: bytes) -> bool:
        return any(needle in line for line in self.out)

    def wait_for(self, needle: bytes, timeout: float = 30.0) -> None:
        """Until a line of stdout holds ``needle``; fails if stdout closes (the child ended) first."""
        wait_until(
            lambda: self.saw(needle) or not self.readers[0].is_alive(), timeout, f"{needle!r} on stdout"
        )
        assert self.saw(needle), f"stdout closed before {needle!r}: {b''.join(self.err)!r}"

    def communicate(self, timeout: float) -> tuple[bytes, bytes]:
        """As ``Popen.communicate``: everything the child wrote, once it has ended."""
        self.proc.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=timeout)
        return b"".join(self.out), b"".join(self.err)

"""Read and digest chunks ahead of the writer, on worker threads.

Reading (a system call that releases the GIL) and hashing overlap with the
engine's writes and syncs; that overlap is what brings a Python copy level
with ``cp`` (docs/PERFORMANCE.md). Buffers come from a fixed pool, so memory
stays bounded whatever the file size. One worker reads in order; several
workers (for endpoints that gain from parallel requests) each read a contiguous
run of chunks and complete them in any order, which the journal's bitmap
already allows.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import NamedTuple

from .endpoints.buffers import aligned_buffer

__all__ = ["Chunk", "Readahead"]

POLL = 0.05  # seconds a blocked worker waits before looking at the stop flag again
# Seconds ``__exit__`` waits for workers. One blocked in a network read (a stalled server, up
# to --timeout) is left behind: a daemon thread that touches only its own buffer, so Ctrl-C
# still stops at once.
JOIN_WAIT = 0.5


class Chunk(NamedTuple):
    index: int  # type: ignore[assignment]  # shadows tuple.index, which nothing calls
    view: memoryview  # exactly the bytes read; fewer than planned means the source got shorter
    digest: bytes
    short: bool


class Readahead:
    """Iterate over ``Chunk``s of ``indexes``; ``release`` each view once it is written."""

    def __init__(
        self,
        read: Callable[[int, memoryview], int],
        digest: Callable[[memoryview], bytes],
        spans: Sequence[tuple[int, int, int]],  # (index, offset, length)
        buffer_size: int,
        *,
        depth: int = 4,
        workers: int = 1,
    ) -> None:
        self._read, self._digest, self._size = read, digest, buffer_size
        self._threads: list[threading.Thread] = []
        # One chunk or none (a small file, many of them in a tree): read on the caller's thread; handing
        # it to a reader thread and back, and making the queues for that, costs more than the
        # overlap could save.
        self._inline = list(spans) if len(spans) <= 1 and workers == 1 else None
        if self._inline is not None:
            self._buffer = aligned_buffer(buffer_size)
            return
        # Each worker reads a contiguous run of chunks (one streamed request each for HTTP); one
        # that finishes early takes the second half of the longest run left, as aria2 splits.
        per = -(-len(spans) // workers)
        self._runs = [collections.deque(spans[n * per : (n + 1) * per]) for n in range(workers)]
        self._runs_lock = threading.Lock()
        self._expected = len(spans)
        self._free: queue.Queue[memoryview] = queue.Queue()
        for _ in range(max(depth, workers)):
            self._free.put(aligned_buffer(buffer_size))
        self._done: queue.Queue[Chunk | BaseException] = queue.Queue()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, args=(n,), name=f"onward-read-{n}", daemon=True)
            for n in range(workers)
        ]

    def __enter__(self) -> Readahead:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._inline is not None:
            return
        self._stop.set()
        deadline = time.monotonic() + JOIN_WAIT
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _next(self, n: int) -> tuple[int, int, int] | None:
        with self._runs_lock:
            mine = self._runs[n]
            if not mine:
                longest = max(self._runs, key=len)
                for _ in range(len(longest) // 2):
                    mine.appendleft(longest.pop())
                if not mine and longest:
                    mine.append(longest.pop())
            return mine.popleft() if mine else None

    def _work(self, n: int) -> None:
        while not self._stop.is_set():
            span = self._next(n)
            if span is None:
                return
            index, offset, length = span
            buf = self._take()
            if buf is None:
                return
            try:
                view = buf[:length]
                got = self._read(offset, view)
                view = view[:got]
                self._done.put(Chunk(index, view, self._digest(view), got < length))
            except BaseException as exc:  # handed to the engine's thread, which decides
                self._done.put(exc)
                return

    def _take(self) -> memoryview | None:
        while not self._stop.is_set():
            try:
                return self._free.get(timeout=POLL)
            except queue.Empty:
                continue
        return None

    def release(self, view: memoryview) -> None:
        if self._inline is not None:
            return
        self._free.put(memoryview(view.obj)[: self._size])

    def __iter__(self) -> Iterator[Chunk]:
        if self._inline is not None:
            for index, offset, length in self._inline:
                view = self._buffer[:length]
                got = self._read(offset, view)
                yield Chunk(index, view[:got], self._digest(view[:got]), got < length)
            return
        for _ in range(self._expected):
            item = self._done.get()
            if isinstance(item, BaseException):
                raise item
            yield item

"""One request body onto one upload: blocks handed to the store in threads, checkpoints, the checksum.

Receiving, writing and checkpointing run as a pipeline: one block is written and one
checkpoint synced in worker threads while the next block arrives, so a sync never stalls
the client. A checkpoint syncs the data first and records the offset after, so the record
never claims more than the store holds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .headers import Checksum, Reject
from .model import BodyEnd
from .options import ServerOptions
from .storage import Upload, UploadData, UploadStore

__all__ = ["WRITE_BLOCK", "BodyWriter", "Slot", "peek_body"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
WRITE_BLOCK = 1 << 20  # request body is handed to the store in blocks of this size


class Slot:
    """One upload's lock, and the way to end the request that holds it."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0  # requests holding or waiting for the lock: the slot is dropped at 0
        self.ended = False
        self.waiting: asyncio.Timeout | None = None  # the holder's wait for its next body message

    def end_holder(self) -> None:
        self.ended = True
        if self.waiting is not None:
            with contextlib.suppress(RuntimeError):
                self.waiting.reschedule(asyncio.get_running_loop().time())


class BodyWriter:
    """Streams one request body onto one upload (``open``, ``stream``, then always ``close``)."""

    def __init__(
        self,
        store: UploadStore,
        upload: Upload,
        checksum: Checksum | None,
        options: ServerOptions,
        pool: concurrent.futures.Executor,
    ) -> None:
        self.store, self.upload, self.checksum, self.options = store, upload, checksum, options
        self.pool = pool
        self.hasher = hashlib.new(checksum.algorithm) if checksum else None
        self.data: UploadData | None = None
        self.start = self.pos = upload.offset
        self.keep = checksum is None  # False: drop what this request wrote (checksum failed or unchecked)
        self._pending: list[bytes] = []  # received, not yet handed to a thread
        self._size = 0  # bytes in _pending
        self._queued = self._written = self.pos  # end of the blocks handed to a thread / known written
        self._writing: asyncio.Future[None] | None = None
        self._syncing: asyncio.Future[None] | None = None
        self._last = 0.0  # loop time of the last checkpoint

    def open(self) -> None:
        self.data = self.store.open_data(self.upload)

    def write(self, data: bytes, at: int) -> None:
        assert self.data is not None, "open() first"
        self.data.write(data, at)
        if self.hasher is not None:
            self.hasher.update(data)

    def checkpoint(self, upto: int | None = None) -> None:
        """Sync, then record the offset: the record never claims more than the store holds."""
        assert self.data is not None, "open() first"
        self.data.sync()
        self.store.record_offset(self.upload, self.pos if upto is None else upto)

    async def stream(self, receive: Receive, slot: Slot, limit: int | None) -> BodyEnd:
        """Take the body until it ends, stops, or would pass ``limit``; how it ended."""
        self._last = asyncio.get_running_loop().time()
        try:
            end = await self._pump(receive, slot, limit)
        finally:
            await self._settle()
        if self._pending and self.keep:
            await self._run(self.write, b"".join(self._pending), self.pos)
            self.pos += self._size
        return self._verdict(end)

    async def _pump(self, receive: Receive, slot: Slot, limit: int | None) -> BodyEnd:
        more = True
        while more:
            message = await self._receive(receive, slot)
            if isinstance(message, BodyEnd):
                return message
            body: bytes = message.get("body", b"")
            more = bool(message.get("more_body", False))
            if limit is not None and self._queued + self._size + len(body) > limit:
                self.keep = False  # none of a body that overruns the length
                return BodyEnd.TOO_LONG
            if body:
                self._pending.append(body)
                self._size += len(body)
            if self._size >= WRITE_BLOCK or not more:
                await self._hand_off(more)
        return BodyEnd.DONE

    async def _receive(self, receive: Receive, slot: Slot) -> Message | BodyEnd:
        """The next body message, or why none came: the idle timeout, a newer request, a hang-up."""
        try:
            async with asyncio.timeout(self.options.idle_timeout) as waiting:
                slot.waiting = waiting
                if slot.ended:
                    waiting.reschedule(asyncio.get_running_loop().time())
                message = await receive()
        except TimeoutError:
            return BodyEnd.ENDED if slot.ended else BodyEnd.TIMEOUT
        finally:
            slot.waiting = None
        return BodyEnd.DISCONNECT if message["type"] == "http.disconnect" else message

    async def _hand_off(self, more: bool) -> None:
        """Hand the pending bytes to a thread once the previous block is written."""
        if self._writing is not None:
            await self._writing
            self._written = self._queued
        data = b"".join(self._pending)  # measured: cheaper than pwritev of many small buffers
        self._pending, self._size = [], 0
        self._writing = self._run(self.write, data, self._queued)
        self._queued += len(data)
        if self.checksum is None and more:  # a checked body is kept whole or not at all
            await self._checkpoint_if_due()

    async def _checkpoint_if_due(self) -> None:
        """Start a checkpoint of what is written when enough bytes or time passed since the last
        one, unless one is still syncing."""
        if self._syncing is not None and not self._syncing.done():
            return
        now = asyncio.get_running_loop().time()
        due = self._written - self.upload.offset >= self.options.checkpoint_bytes
        if not due and now - self._last < self.options.checkpoint_seconds:
            return
        if self._syncing is not None:
            await self._syncing  # done: surfaces its error, if any
        self._syncing = self._run(self.checkpoint, self._written)
        self._last = now

    async def _settle(self) -> None:
        """Wait for the threads; ``pos`` becomes the end of what is known to be written."""
        confirmed = self._written  # a failed write must never be claimed by the final checkpoint
        try:
            if self._writing is not None:
                await self._writing
                confirmed = self._queued
            if self._syncing is not None:
                await self._syncing
        finally:
            self.pos = confirmed

    def _verdict(self, end: BodyEnd) -> BodyEnd:
        if self.hasher is not None and self.checksum is not None:
            # a checked body is kept whole or not at all: never a prefix nobody verified
            self.keep = end is BodyEnd.DONE and self.hasher.digest() == self.checksum.digest
            if end is BodyEnd.DONE and not self.keep:
                return BodyEnd.BAD_CHECKSUM
        return end

    def _run(self, fn: Callable[..., None], *args: Any) -> asyncio.Future[None]:
        return asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def close(self) -> None:
        """Make what arrived durable and record it, or (``keep`` False) drop all of it: an
        offset checkpointed inside this request (nobody was told it) is taken back first,
        then the data cut, so the record never claims bytes the store no longer has."""
        if self.data is None:
            return
        try:
            if self.keep and self.pos != self.upload.offset:
                self.checkpoint()
            elif not self.keep:
                if self.upload.offset != self.start:
                    self.store.record_offset(self.upload, self.start)
                self.data.truncate(self.start)
        finally:
            self.data.close()
            self.data = None


async def peek_body(receive: Receive, idle_timeout: float) -> tuple[bool, Receive]:
    """Whether a body of unknown length (chunked) carries any byte, and a ``receive`` that
    hands back what was read for that first."""
    seen: list[Message] = []
    try:
        async with asyncio.timeout(idle_timeout):
            while not seen or (seen[-1]["type"] == "http.request" and seen[-1].get("more_body")):
                seen.append(await receive())
                if seen[-1].get("body"):
                    break
    except TimeoutError:
        raise Reject(408, f"no data for {idle_timeout:g} s") from None

    async def replay() -> Message:
        return seen.pop(0) if seen else await receive()

    return any(m.get("body") for m in seen), replay

"""Small files of a tree, made durable in batches instead of one by one.

A file no bigger than one chunk gains nothing from a file journal: it is
copied in one step, or copied again. So inside a tree each such file goes
through the same ``engine.Transfer`` as any other (chunk digests, read-back,
source identity checks) with a ``MemoryJournal`` and a ``BatchSink``: the sink
writes the partial beside the destination and applies mode and times, but does
not sync and does not rename. The ``Batch`` then, for many files at once,
makes every partial durable (one ``syncfs`` per file system), renames each onto
its final name, makes the renames durable (an ``fsync`` of each directory), and only then may
the tree journal mark them done. The ordering rule is the file journal's: no
name holds unsynced data, and nothing is marked done before its data, its
rename and its directory entry are durable. Where there is no ``syncfs``, each
partial is ``fsync``ed at promotion instead.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterable
from typing import NamedTuple

from ..core.treejournal import Stamp
from ..errors import DurabilityError
from .local import LocalSink, fsync_dir

__all__ = ["HAVE_SYNCFS", "Batch", "BatchSink", "MemoryJournal", "Pending", "Syncer"]


def _syncfs_call() -> Callable[[int], None] | None:
    try:
        call = ctypes.CDLL(None, use_errno=True).syncfs
    except (AttributeError, OSError):
        return None
    call.argtypes = [ctypes.c_int]
    call.restype = ctypes.c_int

    def syncfs(fd: int) -> None:
        if call(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return syncfs


_syncfs = _syncfs_call()
HAVE_SYNCFS = _syncfs is not None


class MemoryJournal:
    """A ``JournalStore`` that keeps nothing on disk: a batched file's progress is its batch."""

    def __init__(self, destination: str) -> None:
        self.name = destination + " (batched, no journal)"
        self._data: bytes | None = None

    def read(self) -> bytes | None:
        return self._data

    def create(self, data: bytes) -> None:
        self._data = bytes(data)

    def append(self, data: bytes) -> None:
        self._data = (self._data or b"") + data

    def note(self, data: bytes) -> None:
        self.append(data)

    def set_aside(self) -> str:
        self._data = None
        return self.name

    def remove(self) -> None:
        self._data = None

    def close(self) -> None:
        pass


class BatchSink(LocalSink):
    """The partial of a batched file: written without a writeback hint or a sync of its own,
    and "promoted" only as far as mode and times; the ``Batch`` syncs and renames it."""

    direct_io = False  # small files go through the page cache to the batch's one syncfs
    ready = False  # verified, mode and times applied: waiting for its batch

    def write(self, offset: int, data: memoryview) -> None:
        try:
            done = 0
            while done < len(data):
                done += os.pwrite(self._fd, data[done:], offset + done)
        except OSError as exc:
            self._fail(exc, "write")

    def reset(self) -> None:
        # A partial just created is empty already. Truncating it anyway would cost more than the
        # call: ext4 then flushes the file by itself on close (auto_da_alloc), one small write
        # per file instead of one batch.
        if self._fresh:
            self._fresh = False
            return
        super().reset()

    def truncate(self, size: int) -> None:
        if os.fstat(self._fd).st_size != size:
            super().truncate(size)

    def sync(self) -> None:
        """Nothing yet: the batch makes this partial durable before anything relies on it."""

    def promote(self, mode: int | None, times_ns: tuple[int, int] | None) -> None:
        self.apply_metadata(mode, times_ns)
        if not HAVE_SYNCFS:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._fail(exc, "set permissions and times")
        self.ready = True

    def settle(self) -> None:
        """Nothing: a batched file has no journal that could have outlived its rename."""


class Pending(NamedTuple):
    """A verified partial waiting for its batch (a tuple: one is made per small file)."""

    path: str  # relative to the roots
    partial: str
    final: str
    stamp: Stamp  # the source as the copy was verified against
    size: int
    copied: int
    resumed_from: int


class Syncer:
    """One ``syncfs`` per file system the batch touched (a destination tree may span mounts)."""

    def __init__(self) -> None:
        self._dev_of: dict[str, int] = {}
        self._fds: dict[int, int] = {}

    def flush_dirs(self, directories: Iterable[str], doing: str) -> None:
        """fsync each directory: makes the renames in it durable (on ext4 the first one commits
        the journal for all of them), without waiting for other data the way syncfs would."""
        for directory in directories:
            fsync_dir(directory, doing, directory=True)

    def flush(self, directories: Iterable[str], doing: str) -> None:
        try:
            devices: dict[int, str] = {}
            for directory in directories:
                dev = self._dev_of.get(directory)
                if dev is None:
                    dev = self._dev_of[directory] = os.stat(directory).st_dev
                devices.setdefault(dev, directory)
            if _syncfs is None:
                return
            for dev, directory in devices.items():
                fd = self._fds.get(dev)
                if fd is None:
                    fd = self._fds[dev] = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                _syncfs(fd)
        except OSError as exc:
            where = next(iter(directories), ".")
            raise DurabilityError(
                f"{where}: syncing the file system after {doing} failed: {os.strerror(exc.errno or 0)}; "
                "progress since the last checkpoint is not trusted, re-run to resume",
                where,
            ) from None

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class Batch:
    """Verified small files waiting to be made durable and renamed together."""

    def __init__(self, syncer: Syncer) -> None:
        self.syncer = syncer
        self.items: list[Pending] = []
        self.bytes = 0
        self.started: float | None = None

    def add(self, item: Pending, now: float) -> None:
        if self.started is None:
            self.started = now
        self.items.append(item)
        self.bytes += item.size

    def commit(self) -> list[tuple[Pending, OSError | None]]:
        """Sync every partial, rename each onto its name, sync the renames; returns each item
        with the error that kept it from its name (None: durable under its name)."""
        items, self.items, self.bytes, self.started = self.items, [], 0, None
        if not items:
            return []
        directories = sorted({os.path.dirname(i.final) for i in items})
        self.syncer.flush(directories, "writing a batch of files")
        results: list[tuple[Pending, OSError | None]] = []
        for item in items:
            try:
                os.rename(item.partial, item.final)
            except OSError as exc:
                results.append((item, exc))
            else:
                results.append((item, None))
        self.syncer.flush_dirs(directories, "renaming a batch of files")
        return results

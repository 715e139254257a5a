"""Reads and writes that bypass the page cache (``O_DIRECT``), with a buffered fallback.

Two reasons, both measured (docs/PERFORMANCE.md, docs/RELIABILITY.md):

- A read-back served by the page cache proves nothing about the device: after
  ``fdatasync`` the cached pages are the ones just written, whatever the disk
  holds. A direct read comes from the device.
- Copying bytes between user memory and the page cache is most of a buffered
  copy's CPU time; direct I/O moves them by DMA straight from onward's buffers.

Direct I/O needs the offset, the length and the buffer's address aligned to the
device's block. Buffers from ``aligned_buffer`` are page-aligned and chunks
start at multiples of the chunk size, so only the tail of the last chunk (and
any chunk size that is not a multiple of ``BLOCK``) falls back: a tail is read
through a one-block scratch buffer and written through the ordinary descriptor.
A file system that refuses ``O_DIRECT`` (``EINVAL`` at open or at the first
call) gets buffered I/O with the cache dropped before each read-back instead.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os

from .buffers import aligned_buffer

__all__ = ["BLOCK", "DirectFile", "mostly_cached", "pread_full"]

BLOCK = 4096  # alignment of offsets, lengths and addresses: the largest logical block in use


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("cache", "dirty", "writeback", "evicted", "recent")]


_CACHESTAT = 451  # the same number on every architecture (Linux 6.5+)
# cachestat walks every page of the range it is asked about (38 ms for all of a 2 GiB file, a
# tenth of a resume of it): a big file is judged on this many windows spread over it.
SAMPLES, WINDOW = 16, 1 << 20


def _cachestat_call() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        call = ctypes.CDLL(None, use_errno=True).syscall
    except (AttributeError, OSError):
        return None
    call.restype = ctypes.c_long
    return call


_syscall = _cachestat_call()


def mostly_cached(fd: int, size: int) -> bool:
    """Whether at least half of the file is in the page cache (``cachestat``, on ``SAMPLES``
    windows of a big file); False where the kernel cannot tell. Reading such a file through the
    cache costs a memory copy; reading it directly would cost a trip to the device."""
    if _syscall is None or size <= 0:
        return False
    if size <= SAMPLES * WINDOW:
        windows = [(0, size)]
    else:
        step = (size - WINDOW) // (SAMPLES - 1) // mmap.PAGESIZE * mmap.PAGESIZE
        windows = [(n * step, WINDOW) for n in range(SAMPLES)]
    cached = 0
    stat = _Stat()
    for offset, length in windows:
        span = _Range(offset, length)
        if _syscall(_CACHESTAT, fd, ctypes.byref(span), ctypes.byref(stat), 0) != 0:
            return False
        cached += stat.cache
    return bool(cached * mmap.PAGESIZE * 2 >= sum(length for _, length in windows))


def pread_full(fd: int, offset: int, buf: memoryview) -> int:
    """Fill ``buf`` from ``offset``, stopping early only at end of file."""
    got = 0
    while got < len(buf):
        n = os.preadv(fd, [buf[got:]], offset + got)
        if n == 0:
            break
        got += n
    return got


def _aligned(buf: memoryview, offset: int) -> bool:
    if offset % BLOCK:
        return False
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(buf)) % BLOCK == 0
    except (TypeError, ValueError):  # read-only or empty: not for direct I/O
        return False


class DirectFile:
    """A second descriptor on an open file, with ``O_DIRECT``; ``fd`` is the ordinary one."""

    def __init__(self, fd: int, flags: int, *, enabled: bool = True) -> None:
        self.fd, self.direct = fd, -1
        if enabled:
            self._open_direct(flags)

    def _open_direct(self, flags: int) -> None:
        # Through /proc, not the path: the same inode, even if the path was renamed over.
        try:
            self.direct = os.open(f"/proc/self/fd/{self.fd}", flags | os.O_DIRECT | os.O_CLOEXEC)
        except OSError:
            self.direct = -1  # no O_DIRECT here (or no /proc): buffered I/O

    @property
    def bypasses_cache(self) -> bool:
        return self.direct >= 0

    def replace(self, fd: int, flags: int) -> None:
        """The file was replaced (a source renamed over): take the new one's descriptors."""
        enabled = self.bypasses_cache
        self.close()
        self.fd = fd
        if enabled:
            self._open_direct(flags)

    def close_direct(self) -> None:
        """From now on, buffered I/O only (the file system refused a direct call)."""
        if self.direct >= 0:
            os.close(self.direct)
            self.direct = -1

    def read(self, offset: int, buf: memoryview) -> int:
        """``pread_full`` from the device where possible, else through the cache."""
        if self.direct < 0 or not _aligned(buf, offset):
            return pread_full(self.fd, offset, buf)
        head = len(buf) - len(buf) % BLOCK
        try:
            got = pread_full(self.direct, offset, buf[:head])
            if got < head or head == len(buf):
                return got
            scratch = aligned_buffer(BLOCK)  # the last block of a file: once per file, rarely more
            tail = pread_full(self.direct, offset + head, scratch)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self.close_direct()
            return pread_full(self.fd, offset, buf)
        tail = min(tail, len(buf) - head)
        buf[head : head + tail] = scratch[:tail]
        return head + tail

    def write(self, offset: int, data: memoryview) -> bool:
        """Write all of ``data``; True when it went to the device, False through the cache."""
        head = len(data) - len(data) % BLOCK if self.direct >= 0 and _aligned(data, offset) else 0
        if head:
            try:
                _pwrite_full(self.direct, offset, data[:head])
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.close_direct()
                head = 0
        _pwrite_full(self.fd, offset + head, data[head:])
        return head == len(data)

    def close(self) -> None:
        self.close_direct()
        os.close(self.fd)


def _pwrite_full(fd: int, offset: int, data: memoryview) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)

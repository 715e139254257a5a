"""Direct I/O with its fallbacks (endpoints/direct.py), on real files."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest

from onward.endpoints.buffers import aligned_buffer
from onward.endpoints.direct import BLOCK, DirectFile, mostly_cached


def address(view: memoryview) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def open_pair(path: Path) -> DirectFile:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    io = DirectFile(fd, os.O_RDWR)
    if not io.bypasses_cache:
        os.close(fd)
        pytest.skip(f"{path.parent}: the file system refuses O_DIRECT")
    return io


def test_aligned_buffers_are_page_aligned_and_exact() -> None:
    for size in (1, BLOCK - 1, BLOCK, 3 * BLOCK + 5):
        buf = aligned_buffer(size)
        assert len(buf) == size and not buf.readonly
        assert address(buf) % BLOCK == 0


@pytest.mark.parametrize("size", [BLOCK, 5 * BLOCK, 5 * BLOCK + 123, 17])
def test_writes_and_reads_round_trip_whatever_the_tail(tmp_path: Path, size: int) -> None:
    io = open_pair(tmp_path / "f")
    data = os.urandom(size)
    buf = aligned_buffer(size)
    buf[:] = data
    went_direct = io.write(0, buf)
    assert went_direct == (size % BLOCK == 0)  # a tail goes through the cache
    back = aligned_buffer(size)
    assert io.read(0, back) == size and bytes(back) == data
    io.close()
    assert (tmp_path / "f").read_bytes() == data


def test_unaligned_offsets_and_read_only_buffers_fall_back_to_buffered_io(tmp_path: Path) -> None:
    io = open_pair(tmp_path / "f")
    assert io.write(100, memoryview(b"abc")) is False
    assert io.write(BLOCK, memoryview(bytes(BLOCK))) is False  # bytes: read-only, address unknown
    back = aligned_buffer(3)
    assert io.read(100, back) == 3 and bytes(back) == b"abc"
    assert io.bypasses_cache  # a fallback for one call, not for the file
    io.close()


def test_a_read_past_the_end_is_short(tmp_path: Path) -> None:
    io = open_pair(tmp_path / "f")
    data = aligned_buffer(BLOCK + 10)
    data[:] = os.urandom(BLOCK + 10)
    io.write(0, data)
    back = aligned_buffer(4 * BLOCK)
    assert io.read(0, back) == BLOCK + 10 and bytes(back[: BLOCK + 10]) == bytes(data)
    assert io.read(4 * BLOCK, back) == 0
    io.close()


def test_mostly_cached_follows_the_page_cache(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(1 << 20))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.read(fd, 1 << 20)
        assert mostly_cached(fd, 1 << 20)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages: dropped
        if mostly_cached(fd, 1 << 20):
            pytest.skip(f"{tmp_path}: pages stay cached after DONTNEED (tmpfs?)")
    finally:
        os.close(fd)


def test_mostly_cached_samples_a_big_file(tmp_path: Path) -> None:
    """Above 16 MiB only 16 windows of 1 MiB are asked about: the answer is the same."""
    size = 40 << 20
    path = tmp_path / "big"
    path.write_bytes(os.urandom(size))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        if mostly_cached(fd, size):
            pytest.skip(f"{tmp_path}: pages stay cached after DONTNEED (tmpfs?)")
        os.pread(fd, 4 << 20, 0)  # a tenth of it
        assert not mostly_cached(fd, size)
        while os.read(fd, 8 << 20):
            pass
        assert mostly_cached(fd, size)
    finally:
        os.close(fd)

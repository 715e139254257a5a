"""Sparse files through the real CLI: a local source's holes stay holes (docs/CLI.md, --no-sparse)."""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import OnwardCli

MiB = 1 << 20
SLACK_BLOCKS = 512  # 256 KiB for the file system's own bookkeeping (extent trees), never a chunk


def make_sparse(path: Path, size: int, extents: Iterable[tuple[int, int]], seed: int = 0) -> None:
    """A file of ``size`` apparent bytes holding random data only at ``extents`` (offset, length)."""
    rng = random.Random(seed)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        for offset, length in extents:
            os.pwrite(fd, rng.randbytes(length), offset)
    finally:
        os.close(fd)


def data_chunks(path: Path, chunk: int) -> set[int]:
    """The chunks of ``path`` that hold data (SEEK_DATA/SEEK_HOLE over the whole file)."""
    found: set[int] = set()
    fd = os.open(path, os.O_RDONLY)
    try:
        size, offset = os.fstat(fd).st_size, 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            found.update(range(start // chunk, (end - 1) // chunk + 1))
            offset = end
    finally:
        os.close(fd)
    return found


def allowed_blocks(src: Path, chunk: int) -> int:
    """What a copy may allocate: the chunks that touch data, whole, and the slack."""
    return len(data_chunks(src, chunk)) * chunk // 512 + SLACK_BLOCKS


# Data at chunk-unaligned offsets, one extent straddling a 4 MiB chunk boundary, holes between.
EXTENTS = [(123_457, 3000), (10_000_001, 50_000), (4 * 9 * MiB - 1000, 5000), (64 * MiB - 5000, 5000)]


def test_sparse_source_copies_identical_and_sparse(tmp_path: Path, onward_cli: OnwardCli) -> None:
    src, dst = tmp_path / "disk.img", tmp_path / "copy.img"
    make_sparse(src, 64 * MiB, EXTENTS)
    result = onward_cli("copy", src, dst)
    assert result.returncode == 0, result.stderr
    assert dst.read_bytes() == src.read_bytes()
    assert len(data_chunks(src, 4 * MiB)) == 5
    assert os.stat(dst).st_blocks <= allowed_blocks(src, 4 * MiB)
    # Inside a data chunk only the source's data extents are written: no more than the source.
    assert os.stat(dst).st_blocks <= os.stat(src).st_blocks + SLACK_BLOCKS


def test_no_sparse_fills_the_holes(tmp_path: Path, onward_cli: OnwardCli) -> None:
    src, dst = tmp_path / "disk.img", tmp_path / "copy.img"
    make_sparse(src, 64 * MiB, EXTENTS)
    result = onward_cli("copy", "--no-sparse", src, dst)
    assert result.returncode == 0, result.stderr
    assert dst.read_bytes() == src.read_bytes()
    assert os.stat(dst).st_blocks * 512 >= 64 * MiB


def test_tree_keeps_its_files_sparse(tmp_path: Path, onward_cli: OnwardCli) -> None:
    (tmp_path / "a").mkdir()
    src = tmp_path / "a" / "disk.img"
    make_sparse(src, 64 * MiB, EXTENTS)
    (tmp_path / "a" / "small").write_bytes(b"x" * 100)
    result = onward_cli("copy", "-r", tmp_path / "a", tmp_path / "b")
    assert result.returncode == 0, result.stderr
    dst = tmp_path / "b" / "a" / "disk.img"
    assert dst.read_bytes() == src.read_bytes()
    assert os.stat(dst).st_blocks <= allowed_blocks(src, 4 * MiB)


# 16 MiB apparent, data every 3 MiB at unaligned offsets: with the kill helper's 64 KiB chunks,
# hole chunks and data chunks alternate all along the copy.
KILL_EXTENTS = [(3 * MiB * k + 777 * k, 4000) for k in range(6)]


def test_kill_then_resume_stays_sparse(
    tmp_path: Path, onward_cli: OnwardCli, onward_kill_midway: Callable[..., int]
) -> None:
    src, dst = tmp_path / "disk.img", tmp_path / "copy.img"
    make_sparse(src, 16 * MiB, KILL_EXTENTS)
    committed = onward_kill_midway(src, dst, at=4 * MiB)
    assert committed < 16 * MiB
    result = onward_cli("copy", "--chunk-size", "64K", src, dst)
    assert result.returncode == 0, result.stderr
    assert dst.read_bytes() == src.read_bytes()
    assert os.stat(dst).st_blocks <= allowed_blocks(src, 64 * 1024)
    assert os.stat(dst).st_blocks <= os.stat(src).st_blocks + SLACK_BLOCKS


def test_hole_filled_between_runs_is_copied(
    tmp_path: Path, onward_cli: OnwardCli, onward_kill_midway: Callable[..., int]
) -> None:
    src, dst = tmp_path / "disk.img", tmp_path / "copy.img"
    make_sparse(src, 16 * MiB, KILL_EXTENTS)
    onward_kill_midway(src, dst, at=4 * MiB)
    with open(src, "r+b") as fh:  # data where the first run saw (and journaled) a hole
        fh.seek(1 * MiB + 12345)
        fh.write(random.Random(7).randbytes(70_000))
    result = onward_cli("copy", "--chunk-size", "64K", src, dst)
    assert result.returncode == 0, result.stderr
    assert "source changed" in result.stderr
    assert dst.read_bytes() == src.read_bytes()
    assert os.stat(dst).st_blocks <= allowed_blocks(src, 64 * 1024)


def test_data_punched_out_between_runs_reads_as_zeros(
    tmp_path: Path, onward_cli: OnwardCli, onward_kill_midway: Callable[..., int]
) -> None:
    """Where the partial holds an earlier run's data and the source now has a hole, the
    chunk is written as zeros (never left holding the old bytes)."""
    src, dst = tmp_path / "disk.img", tmp_path / "copy.img"
    make_sparse(src, 16 * MiB, [(0, 8 * MiB)])
    onward_kill_midway(src, dst, at=4 * MiB)
    punched = subprocess.run(["fallocate", "--punch-hole", "-o", str(MiB), "-l", str(MiB), src])
    assert punched.returncode == 0
    assert MiB // (64 * 1024) not in data_chunks(src, 64 * 1024)
    result = onward_cli("copy", "--chunk-size", "64K", src, dst)
    assert result.returncode == 0, result.stderr
    assert dst.read_bytes() == src.read_bytes()

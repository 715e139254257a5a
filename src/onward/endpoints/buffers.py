"""Page-aligned chunk buffers: what direct I/O (``direct``), the read-ahead thread and
the engine read into and write from."""

from __future__ import annotations

import contextlib
import mmap

__all__ = ["HUGE_PAGE", "aligned_buffer"]

HUGE_PAGE = 2 << 20


def aligned_buffer(size: int) -> memoryview:
    """A writable, page-aligned buffer of ``size`` bytes (anonymous memory, zero-filled).

    Backed by huge pages where the kernel allows: a direct I/O pins every page of its buffer,
    and pinning a 4 MiB chunk as two huge pages instead of 1,024 small ones was a tenth of
    a copy's CPU time (docs/PERFORMANCE.md)."""
    memory = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if size >= HUGE_PAGE and hasattr(mmap, "MADV_HUGEPAGE"):
        with contextlib.suppress(OSError):
            memory.madvise(mmap.MADV_HUGEPAGE)
    return memoryview(memory)[:size]

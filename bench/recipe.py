#!/usr/bin/env python3
"""The classic resumable-copy recipe onward descends from, ported faithfully: a baseline, not a tool.

Usage::

    python bench/recipe.py SRC DST        # offset side file: DST.offset

What it does, on purpose exactly as the recipe does (docs/PERFORMANCE.md and
DESIGN.md list what is wrong with it):

- copies in 1 KiB chunks (``read(1024)``), straight into the destination under
  its final name;
- after every chunk: ``flush()`` of the destination (Python's buffer to the
  kernel, no ``fsync``), then rewrites the side file ``DST.offset`` with the
  new offset (open, write, close: no ``fsync``, no rename);
- on start, reads the side file and seeks both files there; a garbled or
  missing side file is read as 0;
- removes the side file when the copy is complete.

So the offset may be recorded before the data it claims is on disk, the source
is never checked, and the final name holds a partial file while it runs. It is
here only to be timed beside onward (bench/copy_bench.py).
"""

from __future__ import annotations

import os
import sys

CHUNK = 1024
OFFSET_SUFFIX = ".offset"


def read_offset(path: str) -> int:
    try:
        with open(path) as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 0  # the recipe's flaw, kept: a garbled side file silently means "start over"


def copy(src: str, dst: str) -> None:
    side = dst + OFFSET_SUFFIX
    offset = read_offset(side)
    mode = "r+b" if offset and os.path.exists(dst) else "wb"
    with open(src, "rb") as fin, open(dst, mode) as fout:
        fin.seek(offset)
        fout.seek(offset)
        while True:
            chunk = fin.read(CHUNK)
            if not chunk:
                break
            fout.write(chunk)
            fout.flush()
            offset += len(chunk)
            with open(side, "w") as fh:
                fh.write(str(offset))
    os.remove(side)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: recipe.py SRC DST", file=sys.stderr)
        return 2
    copy(argv[0], argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

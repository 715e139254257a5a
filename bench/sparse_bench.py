#!/usr/bin/env python3
"""Sparse files: onward against ``cp --sparse=always`` and ``rsync -S`` (and ``onward --no-sparse``).

Usage::

    python bench/sparse_bench.py [--size 10G] [--data 64M] [--runs 3] [--dir DIR]
    python bench/sparse_bench.py --smoke      # 64 MiB with 1 MiB of data, 1 round (CI)

One source of ``--size`` apparent bytes holds ``--data`` bytes of random data in 1 MiB extents
spread evenly at 4 KiB-aligned but chunk-unaligned offsets, holes between. Every round runs every
tool once, in a fresh shuffled order (seeded), into an emptied directory after ``sync``; each copy
is compared with the source (``cmp``). Prints, per tool, the median time, its ratio to ``cp``, and
the blocks the copy allocates (``st_blocks`` x 512).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

MiB = 1 << 20
EXTENT = MiB
ONWARD = [sys.executable, "-m", "onward", "copy", "--quiet"]
TOOLS = {
    "cp": ["cp", "--sparse=always"],
    "rsync": ["rsync", "-S"],
    "onward": ONWARD,
    "onward-no-sparse": [*ONWARD, "--no-sparse"],
}


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def make_source(path: str, size: int, data: int) -> None:
    rng = random.Random(19)
    count = max(data // EXTENT, 1)
    stride = size // count
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        for k in range(count):
            offset = (k * stride + 12 * 4096) // 4096 * 4096
            os.pwrite(fd, rng.randbytes(min(EXTENT, size - offset)), offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="10G")
    ap.add_argument("--data", default="64M")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.size, args.data, args.runs = "64M", "1M", 1
    size, data = parse_size(args.size), parse_size(args.data)
    tools = {name: argv for name, argv in TOOLS.items() if shutil.which(argv[0]) or argv[0] == sys.executable}
    if not args.smoke and size > 1 << 30:
        tools.pop("onward-no-sparse", None)  # writes every byte: minutes at 10 GiB, not the point
    times: dict[str, list[float]] = {name: [] for name in tools}
    blocks: dict[str, int] = {}
    rng = random.Random(4)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="sparse-bench-") as work:
        src, out = os.path.join(work, "disk.img"), os.path.join(work, "out")
        make_source(src, size, data)
        src_blocks = os.stat(src).st_blocks * 512
        for _ in range(args.runs):
            order = list(tools)
            rng.shuffle(order)
            for name in order:
                shutil.rmtree(out, ignore_errors=True)
                os.mkdir(out)
                dst = os.path.join(out, "disk.img")
                subprocess.run(["sync"], check=True)
                started = time.perf_counter()
                subprocess.run([*tools[name], src, dst], check=True, stdin=subprocess.DEVNULL)
                times[name].append(time.perf_counter() - started)
                subprocess.run(["cmp", src, dst], check=True)
                blocks[name] = os.stat(dst).st_blocks * 512
        shutil.rmtree(out, ignore_errors=True)
    print(f"source: {size / MiB:.0f} MiB apparent, {src_blocks / MiB:.1f} MiB allocated, {args.runs} run(s)")
    base = statistics.median(times["cp"]) if "cp" in times else None
    for name, runs in times.items():
        median = statistics.median(runs)
        ratio = f"{median / base:5.2f}x cp" if base else ""
        print(f"{name:18} {median:8.3f} s  {ratio}  allocated {blocks[name] / MiB:9.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

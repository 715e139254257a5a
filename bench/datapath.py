#!/usr/bin/env python3
"""Measure before choosing: ways to move and digest the bytes of one local copy, without onward.

Usage::

    python bench/datapath.py SRC DIR [--runs 5] [--drop-caches] [--variants read-write,read-cfr,...]

Each variant copies SRC to DIR/datapath.out in 4 MiB chunks, takes the xxh3-128
digest of every chunk (as onward's journal needs), and calls ``fdatasync`` once
at the end; no journal, no read-back, no threads. Variants run as separate
processes, interleaved, each after ``sync`` (and a dropped page cache with
``--drop-caches``); the table gives median wall time and the user/sys CPU:

- ``read-write``: ``preadv`` into a reused buffer, digest, ``pwrite`` (onward's data path)
- ``read-write-sfr``: the same, plus ``sync_file_range(WRITE)`` after every ``pwrite``
  (what onward's local sink does)
- ``read-cfr``: ``preadv`` into the buffer, digest, then ``copy_file_range`` of the same
  range in the kernel (the source pages are cached by then)
- ``mmap-cfr``: digest straight from an ``mmap`` of the source (no copy to user space),
  then ``copy_file_range``
- ``cfr``: ``copy_file_range`` only, no digest (what ``cp`` does; the floor)
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import xxhash

CHUNK = 4 << 20
VARIANTS = ("read-write", "read-write-sfr", "read-cfr", "mmap-cfr", "cfr")
SYNC_FILE_RANGE_WRITE = 2


def start_writeback() -> Callable[[int, int, int], int]:
    call = ctypes.CDLL(None, use_errno=True).sync_file_range
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return lambda fd, offset, length: int(call(fd, offset, length, SYNC_FILE_RANGE_WRITE))


def copy(variant: str, src: str, dst: str) -> None:
    fin = os.open(src, os.O_RDONLY)
    fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    size = os.fstat(fin).st_size
    buf = memoryview(bytearray(CHUNK))
    writeback = start_writeback() if variant == "read-write-sfr" else None
    mapped = mmap.mmap(fin, 0, prot=mmap.PROT_READ) if variant == "mmap-cfr" and size else None
    try:
        offset = 0
        while offset < size:
            n = min(CHUNK, size - offset)
            if variant in ("read-write", "read-write-sfr", "read-cfr"):
                got = os.preadv(fin, [buf[:n]], offset)
                assert got == n
                xxhash.xxh3_128(buf[:n]).digest()
            elif mapped is not None:
                xxhash.xxh3_128(memoryview(mapped)[offset : offset + n]).digest()
            if variant.startswith("read-write"):
                done = 0
                while done < n:
                    done += os.pwrite(fout, buf[done:n], offset + done)
                if writeback is not None:
                    writeback(fout, offset, n)
            else:
                done = 0
                while done < n:
                    done += os.copy_file_range(fin, fout, n - done, offset + done, offset + done)
            offset += n
        os.fdatasync(fout)
    finally:
        if mapped is not None:
            mapped.close()
        os.close(fin)
        os.close(fout)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--one"]:
        copy(argv[1], argv[2], argv[3])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("src")
    p.add_argument("dir")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--drop-caches", action="store_true")
    p.add_argument("--variants", default=",".join(VARIANTS))
    args = p.parse_args(argv)
    variants = args.variants.split(",")
    dst = os.path.join(args.dir, "datapath.out")
    results: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}
    for rnd in range(args.runs):
        shift = rnd % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            if os.path.exists(dst):
                os.unlink(dst)
            os.sync()
            if args.drop_caches:
                with open("/proc/sys/vm/drop_caches", "w") as fh:
                    fh.write("3\n")
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--one", variant, args.src, dst], check=True)
            wall = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            results[variant].append((wall, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime))
    if os.path.exists(dst):
        os.unlink(dst)
    size = os.stat(args.src).st_size
    print(
        f"{size / (1 << 20):.0f} MiB, {args.runs} runs, "
        f"{'cold' if args.drop_caches else 'warm'} cache; medians (wall of every run)"
    )
    print(f"{'variant':<14} {'wall s':>7} {'usr s':>6} {'sys s':>6}  runs")
    for variant, rows in results.items():
        wall, usr, sys_ = (statistics.median(r[i] for r in rows) for i in range(3))
        each = " ".join(f"{r[0]:.2f}" for r in rows)
        print(f"{variant:<14} {wall:>7.3f} {usr:>6.3f} {sys_:>6.3f}  {each}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

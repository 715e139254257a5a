#!/usr/bin/env python3
"""What reading the copy back from the device (not the page cache) costs a local copy.

After every checkpoint's ``fdatasync`` onward reads the chunks it just wrote back and
checks their digests. By default that read is served by the page cache; with
``LocalSink.uncached_readback`` (on for ``--verify full``) the sink first drops the
partial's clean pages (``posix_fadvise(POSIX_FADV_DONTNEED)``), so the read comes from
the device (docs/RELIABILITY.md, "Verification and the page cache"). This measures both,
for the default verification and for ``--verify full``, on one source file, cold cache
before every run, configurations interleaved round by round::

    python bench/readback_cost.py [--size 1G] [--rounds 7] [--dir DIR]

Run as root (it drops the page cache). Prints the median wall time of each configuration,
the extra device reads per copy (from /proc/self/io) and the cost against its baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import onward
from onward.endpoints.local import LocalSink

UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def force(value: bool | None) -> None:
    """Pin ``uncached_readback`` for every sink (None: whatever the API chooses)."""
    if "uncached_readback" in vars(LocalSink):
        delattr(LocalSink, "uncached_readback")
    if value is not None:
        prop = property(lambda self: value, lambda self, _v: None)
        LocalSink.uncached_readback = prop  # type: ignore[attr-defined]  # stale: gone from LocalSink


def read_bytes() -> int:
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("read_bytes:"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--dir", default="/work/readback-bench")
    args = parser.parse_args()
    size = int(args.size[:-1]) * UNITS[args.size[-1].upper()] if args.size[-1].isalpha() else int(args.size)
    os.makedirs(args.dir, exist_ok=True)
    src, dst = os.path.join(args.dir, "src.bin"), os.path.join(args.dir, "dst.bin")
    if not os.path.exists(src) or os.path.getsize(src) != size:
        with open(src, "wb") as fh:
            for _ in range(size // (1 << 24)):
                fh.write(os.urandom(1 << 24))
            fh.write(os.urandom(size % (1 << 24)))
    configs = {
        "verify fast, page-cache read-back (default)": ("fast", False),
        "verify fast, device read-back": ("fast", True),
        "verify full, page-cache read-back": ("full", False),
        "verify full, device read-back (--verify full)": ("full", True),
    }
    times: dict[str, list[float]] = {name: [] for name in configs}
    reads: dict[str, list[int]] = {name: [] for name in configs}
    for r in range(args.rounds):
        names = list(configs)
        names = names[r % len(names) :] + names[: r % len(names)]  # rotate the starting one
        for name in names:
            verify, uncached = configs[name]
            for path in (dst, dst + ".onward-partial", dst + ".onward-journal"):
                if os.path.exists(path):
                    os.unlink(path)
            subprocess.run(["sync"], check=True)
            with open("/proc/sys/vm/drop_caches", "w") as fh:
                fh.write("3\n")
            force(uncached)
            before, began = read_bytes(), time.monotonic()
            onward.copy(src, dst, verify=verify)
            times[name].append(time.monotonic() - began)
            reads[name].append((read_bytes() - before) >> 20)
    force(None)
    print(f"{args.size} copy, {args.rounds} rounds, cold cache, medians (min-max):")
    for name in configs:
        ts = times[name]
        print(
            f"  {name:48s} {statistics.median(ts):6.3f} s ({min(ts):.2f}-{max(ts):.2f})"
            f"  read {statistics.median(reads[name]):5.0f} MiB   runs: {' '.join(f'{t:.2f}' for t in ts)}"
        )
    names = list(configs)
    for base, other in ((names[0], names[1]), (names[2], names[3])):
        a, b = statistics.median(times[base]), statistics.median(times[other])
        print(f"  device read-back vs page cache, {base.split(',')[0]}: {100 * (b - a) / a:+.1f} % (medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

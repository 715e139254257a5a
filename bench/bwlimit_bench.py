"""``--bwlimit``: the rate onward keeps against the one ``rsync --bwlimit`` keeps, side by side.

Each round copies the same file with ``onward copy --bwlimit RATE`` and with
``rsync --bwlimit=RATE`` (same units: KiB/s, or a suffix; both read ``50M`` as 50 MiB/s),
interleaved, to a fresh destination on the same disk, and times the whole command. Prints
each tool's median achieved rate, its error against the limit, and onward's ratio to rsync.
``--smoke``: 4 MiB at 8 MiB/s, one round (CI: it runs and exits 0).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from benchlib import precompile

MiB = 1 << 20


def parse_rate(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1:].upper() in units else int(text) << 10


def timed(cmd: list[str]) -> float:
    began = time.monotonic()
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
    return time.monotonic() - began


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1G", help="file size (default 1G)")
    ap.add_argument("--rate", default="50M", help="the limit, as both tools take it (default 50M)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to put the files (default: a temporary directory)")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.size, args.rate, args.runs = "4M", "8M", 1
    size, rate = parse_rate(args.size), parse_rate(args.rate)
    print(precompile())
    onward = [sys.executable, "-m", "onward"]
    tools: dict[str, Callable[[str, str], list[str]]]
    tools = {"onward": lambda s, d: [*onward, "copy", "--bwlimit", args.rate, s, d]}
    if shutil.which("rsync"):
        tools["rsync"] = lambda s, d: ["rsync", f"--bwlimit={args.rate}", s, d]
    else:
        print("note: rsync is not installed; onward alone")
    work = tempfile.mkdtemp(prefix="bwlimit-", dir=args.dir)
    try:
        src = os.path.join(work, "src.bin")
        with open(src, "wb") as fh:
            for _ in range(0, size, MiB):
                fh.write(os.urandom(min(MiB, size - fh.tell())))
        times: dict[str, list[float]] = {name: [] for name in tools}
        for n in range(args.runs):
            for name, command in tools.items():
                dst = os.path.join(work, f"{name}-{n}.bin")
                times[name].append(timed(command(src, dst)))
                os.unlink(dst)
        print(f"{args.size} at --bwlimit {args.rate} ({rate / MiB:.1f} MiB/s), {args.runs} round(s), median:")
        achieved = {}
        for name, seconds in times.items():
            achieved[name] = size / statistics.median(seconds)
            error = 100 * (achieved[name] - rate) / rate
            took = statistics.median(seconds)
            print(f"  {name:7} {took:7.2f} s  {achieved[name] / MiB:7.2f} MiB/s  {error:+5.1f} %")
        if "rsync" in achieved:
            print(f"  onward/rsync rate ratio: {achieved['onward'] / achieved['rsync']:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Where one ``onward copy`` spends its time, per system call and per thread.

Usage::

    python bench/profile_onward.py [--drop-caches] [--off=source-direct|sink-direct|readahead] -- copy SRC DST

It runs the onward CLI in this process with the few calls that move data
wrapped in timers: ``os.preadv`` (source reads and read-backs), ``os.pwrite``,
``sync_file_range``, ``os.fdatasync``/``os.fsync`` and the chunk digest. For
each (thread, call) it prints the number of calls, the wall seconds spent
inside them and the CPU seconds of that thread inside them (``time.thread_time``),
so blocked time (wall minus CPU) shows which calls wait for the disk. Every
wrapped call moves MiBs, so the wrappers' own cost (a few microseconds per
call) is far below what they measure. cProfile sees only the main thread and
py-spy's sampling slows the copy down by half; this does neither.
"""

from __future__ import annotations

import collections
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from onward_ablated import PATCHES

Key = tuple[str, str]
TOTALS: collections.defaultdict[Key, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0, 0])
LOCK = threading.Lock()


Counter = Callable[[Any, tuple[Any, ...]], int]


def timed(name: str, fn: Callable[..., Any], nbytes: Counter) -> Callable[..., Any]:
    def wrapper(*args: Any) -> Any:
        w0, c0 = time.perf_counter(), time.thread_time()
        out = fn(*args)
        w1, c1 = time.perf_counter(), time.thread_time()
        key = (threading.current_thread().name, name)
        with LOCK:
            row = TOTALS[key]
            row[0] += 1
            row[1] += w1 - w0
            row[2] += c1 - c0
            row[3] += nbytes(out, args)
        return out

    return wrapper


def _no_bytes(out: Any, args: tuple[Any, ...]) -> int:
    return 0


def _returned(out: Any, args: tuple[Any, ...]) -> int:
    return int(out)


def _view_arg(out: Any, args: tuple[Any, ...]) -> int:
    return len(args[0])


def install() -> None:
    import onward.engine as engine

    os.preadv = timed("preadv", os.preadv, _returned)
    os.pwrite = timed("pwrite", os.pwrite, _returned)
    os.fdatasync = timed("fdatasync", os.fdatasync, _no_bytes)
    os.fsync = timed("fsync", os.fsync, _no_bytes)
    engine.digest = timed("digest", engine.digest, _view_arg)


def main(argv: list[str]) -> int:
    drop = "--drop-caches" in argv
    off = [a.removeprefix("--off=") for a in argv if a.startswith("--off=")]
    rest = argv[argv.index("--") + 1 :] if "--" in argv else argv
    import importlib

    for name in off:
        module_name, attribute, value = PATCHES[name]
        setattr(importlib.import_module(module_name), attribute, value)
    install()
    from onward.cli.main import main as cli

    if drop:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    rc = cli(rest)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"rc {rc}; wall {wall:.3f} s; CPU user {r1.ru_utime - r0.ru_utime:.3f} s, "
        f"sys {r1.ru_stime - r0.ru_stime:.3f} s; peak RSS {r1.ru_maxrss / 1024:.1f} MiB"
        + (f"; off: {', '.join(off)}" if off else "")
    )
    print(f"{'thread':<16} {'call':<16} {'calls':>6} {'wall s':>8} {'CPU s':>7} {'blocked s':>9} {'MiB':>8}")
    for (thread, call), (n, w, c, b) in sorted(TOTALS.items(), key=lambda kv: -kv[1][1]):
        print(f"{thread:<16} {call:<16} {n:>6.0f} {w:>8.3f} {c:>7.3f} {w - c:>9.3f} {b / (1 << 20):>8.0f}")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

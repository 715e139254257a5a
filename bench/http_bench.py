#!/usr/bin/env python3
"""Side-by-side timing of an HTTP download from nginx on loopback, written to disk.

Usage::

    python bench/http_bench.py [--size 2G] [--runs 5] [--dir DIR] [--connections 4] [--json FILE]
    python bench/http_bench.py --smoke        # 4 MiB, 1 round: checks the bench still runs (< 5 s)

One random file is written once and served by nginx (the tests' configuration:
tests/http_servers.py) on a free port of 127.0.0.1. Every round runs every tool
once, round-robin (the starting tool rotates), each into a fresh destination on
``--dir``'s disk:

- ``curl -o DST URL`` — the single-connection anchor (returns once the data is in
  the page cache);
- ``curl && sync`` — the same, made durable, as onward's result is;
- ``onward copy URL DST``;
- ``aria2c -x N -s N`` — the segmented-download anchor;
- ``onward copy --connections N URL DST``.

Before every timed run the previous destination (and partial and journal) is
removed and ``sync`` is run. Each round also measures a resume: ``onward copy``
is SIGKILLed once its partial reaches 90 % of the size, and the re-run that
finishes it is timed, with the bytes it moved (from its ``--json`` result).

Medians, min-max, CPU (user + system of the command and its children), peak RSS
(``/usr/bin/time -f %M`` when installed) and the ratios onward / anchor from the
same run are printed. Only the standard library is used; timings never decide
a test.
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from benchlib import precompile

from http_servers import Nginx, nginx_binary

MiB = 1 << 20
PARTIAL, JOURNAL = ".onward-partial", ".onward-journal"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
GNU_TIME = "/usr/bin/time"
ARIA2_OUT = ["--allow-overwrite=true", "--auto-file-renaming=false", "--dir", "{dir}", "--out", "{name}"]


def parse_size(text: str) -> int:
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 4M, 512M or 2G)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.upper()])


def onward_command() -> list[str]:
    beside = Path(sys.executable).with_name("onward")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("onward")
    return [found] if found else [sys.executable, "-m", "onward"]


@dataclass
class Tool:
    name: str
    argv: list[str]  # {dst} and {url} are filled in per run
    anchor: str | None = None  # the tool this one is compared with
    samples: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Trial:
    killed: bool  # False: the copy finished before the kill (a file too small to catch)
    killed_at: float  # fraction of the size in the partial at the kill
    moved: float  # fraction of the size the resuming run moved
    wall: float
    cpu: float
    rss_mib: float | None


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


SYNC = True  # --smoke: no sync between runs (it flushes the whole machine; timings do not count)


def settle() -> None:
    if SYNC:
        subprocess.run(["sync"], check=True)


def clear(dst: Path) -> None:
    for path in (dst, Path(str(dst) + PARTIAL), Path(str(dst) + JOURNAL)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    settle()


def timed(
    argv: list[str], rss_file: Path | None
) -> tuple[float, float, float | None, subprocess.CompletedProcess[str]]:
    prefix = [GNU_TIME, "-f", "%M", "-o", str(rss_file)] if rss_file else []
    before_cpu, start = cpu_children(), time.perf_counter()
    proc = subprocess.run([*prefix, *argv], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    cpu = cpu_children() - before_cpu
    rss = None
    if rss_file is not None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            rss = int(rss_file.read_text().split()[-1]) / 1024
    return wall, cpu, rss, proc


def resume_trial(
    onward: list[str], url: str, dst: Path, size: int, at: float, rss_file: Path | None
) -> Trial:
    clear(dst)
    partial = Path(str(dst) + PARTIAL)
    proc = subprocess.Popen(
        [*onward, "copy", url, str(dst)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 600
    seen = 0
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            seen = partial.stat().st_size
        if seen >= at * size:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait(timeout=60)
    killed = proc.returncode == -signal.SIGKILL
    killed_at = seen / size if size else 1.0
    settle()
    wall, cpu, rss, done = timed([*onward, "copy", "--json", url, str(dst)], rss_file)
    if done.returncode != 0:
        raise SystemExit(f"resume failed: {done.stderr}")
    result = next(json.loads(line) for line in done.stdout.splitlines() if '"event": "done"' in line)
    return Trial(killed, killed_at, result["copied"] / size if size else 0.0, wall, cpu, rss)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("2G"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--dir", default=None, help="where the file and the downloads go (default: $TMPDIR)")
    parser.add_argument("--resume-at", type=float, default=0.9)
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--smoke", action="store_true", help="4 MiB, 1 round: checks the bench runs")
    args = parser.parse_args()
    if args.smoke:
        global SYNC
        args.size, args.runs, SYNC = 4 * MiB, 1, False
    if nginx_binary() is None:
        print("http_bench: nginx is not installed (scripts/test installs it); nothing measured")
        return 0 if args.smoke else 1
    onward = onward_command()
    print(precompile())
    n = args.connections
    tools = [
        Tool("curl", ["curl", "-s", "-S", "-o", "{dst}", "{url}"]),
        Tool("curl && sync", ["sh", "-c", 'curl -s -S -o "$1" "$2" && sync', "sh", "{dst}", "{url}"]),
        Tool("onward", [*onward, "copy", "{url}", "{dst}"], anchor="curl"),
        # Durable too, without reading every chunk back from the disk (curl reads nothing back).
        Tool("onward --verify none", [*onward, "copy", "--verify", "none", "{url}", "{dst}"], anchor="curl"),
        Tool(f"aria2c -x{n} -s{n}", ["aria2c", "-q", f"-x{n}", f"-s{n}", *ARIA2_OUT, "{url}"]),
        Tool(f"onward --connections {n}", [*onward, "copy", "--connections", str(n), "{url}", "{dst}"]),
        Tool(
            f"onward --connections {n} --verify none",
            [*onward, "copy", "--connections", str(n), "--verify", "none", "{url}", "{dst}"],
        ),
    ]
    tools[-1].anchor = tools[-2].anchor = tools[-3].name
    missing = [t.name for t in tools if shutil.which(t.argv[0]) is None and not Path(t.argv[0]).exists()]
    tools = [t for t in tools if t.name not in missing]
    rss_ok = os.access(GNU_TIME, os.X_OK)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="onward-http-bench-", dir=args.dir) as scratch:
        base = Path(scratch)
        www, out = base / "www", base / "out"
        www.mkdir()
        out.mkdir()
        source = www / "file.bin"
        with open(source, "wb") as fh:
            left = args.size
            while left > 0:
                fh.write(os.urandom(min(left, 64 * MiB)))
                left -= min(left, 64 * MiB)
        rss_file = base / "rss.txt" if rss_ok else None
        trials: list[Trial] = []
        with Nginx(www, base / "nginx") as server:
            url = server.url("file.bin")
            for round_ in range(args.runs):
                order = tools[round_ % len(tools) :] + tools[: round_ % len(tools)]
                for tool in order:
                    dst = out / "file.bin"
                    clear(dst)
                    fill = {"dst": dst, "url": url, "dir": out, "name": dst.name}
                    argv = [a.format(**fill) if "{" in a else a for a in tool.argv]
                    wall, cpu, rss, proc = timed(argv, rss_file)
                    if proc.returncode != 0:
                        raise SystemExit(f"{tool.name} failed ({proc.returncode}): {proc.stderr.strip()}")
                    if round_ == 0 and not filecmp.cmp(source, dst, shallow=False):
                        raise SystemExit(f"{tool.name}: the download differs from the file")
                    tool.samples.append({"wall": wall, "cpu": cpu, "rss_mib": rss or float("nan")})
                if not args.no_resume:
                    trials.append(
                        resume_trial(onward, url, out / "file.bin", args.size, args.resume_at, rss_file)
                    )
                clear(out / "file.bin")
    report(args, tools, trials, missing, rss_ok, time.monotonic() - started)
    return 0


def report(
    args: argparse.Namespace,
    tools: list[Tool],
    trials: list[Trial],
    missing: list[str],
    rss_ok: bool,
    elapsed: float,
) -> None:
    size_mib = args.size / MiB
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"kernel {platform.release()}"
    )
    print(f"file: {size_mib:.0f} MiB from nginx on 127.0.0.1, {args.runs} round(s); medians")
    if missing:
        print(f"not installed, skipped: {', '.join(missing)}")
    if not rss_ok:
        print("peak RSS not measured (no /usr/bin/time)")
    head = f"{'tool':38} {'wall s':>7} {'min-max s':>12} {'MiB/s':>7} {'CPU s':>6} {'RSS MiB':>8}  ratio"
    print(head)
    print("-" * len(head))
    walls = {t.name: median([s["wall"] for s in t.samples]) for t in tools}
    for tool in tools:
        w = [s["wall"] for s in tool.samples]
        ratio = ""
        if tool.anchor in walls:
            ratio = f"{walls[tool.name] / walls[tool.anchor]:.2f} x {tool.anchor}"
        if tool.name.startswith("onward") and "curl && sync" in walls and tool.anchor == "curl":
            ratio += f", {walls[tool.name] / walls['curl && sync']:.2f} x curl && sync"
        print(
            f"{tool.name:38} {median(w):7.3f} {min(w):5.2f}-{max(w):<6.2f} {size_mib / median(w):7.0f} "
            f"{median([s['cpu'] for s in tool.samples]):6.2f} "
            f"{median([s['rss_mib'] for s in tool.samples]):8.1f}  {ratio}"
        )
    print("wall time of every run, in round order:")
    for tool in tools:
        print(f"  {tool.name:36} " + " ".join(f"{s['wall']:.2f}" for s in tool.samples))
    if trials and not all(t.killed for t in trials):
        print("resume: the copy finished before the kill (file too small to catch mid-way)")
    elif trials:
        print(
            f"resume: killed at {100 * median([t.killed_at for t in trials]):.1f}% of the partial (median), "
            f"the re-run moved {100 * median([t.moved for t in trials]):.1f}% of the bytes in "
            f"{median([t.wall for t in trials]):.3f} s (CPU {median([t.cpu for t in trials]):.2f} s, "
            f"peak RSS {median([t.rss_mib or float('nan') for t in trials]):.1f} MiB)"
        )
    print(f"total time: {elapsed:.0f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "argv": sys.argv,
                    "size": args.size,
                    "runs": args.runs,
                    "tools": [asdict(t) for t in tools],
                    "resume": [asdict(t) for t in trials],
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    sys.exit(main())

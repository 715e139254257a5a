#!/usr/bin/env python3
"""Side-by-side timing of a resumable upload to @tus/server (Node, @tus/file-store) on loopback.

Usage::

    python bench/upload_bench.py [--size 1G] [--runs 6] [--warmup 1] [--chunk-size 4M]
                                 [--store disk|tmpfs] [--dir DIR] [--json FILE]
    python bench/upload_bench.py --smoke     # 4 MiB, 1 round: checks the bench still runs

One random file is written once under ``--dir``. Each client has its own @tus/server with
@tus/file-store (tests/peers, ``npm ci --prefix tests/peers``), on a free port of 127.0.0.1,
storing under ``--dir`` (``--store disk``, the default) or on a tmpfs (``--store tmpfs``:
/dev/shm, so the server's disk is out of the measurement): one server shared by the three
clients slowed down as the rounds went on (its CPU for the same upload more than doubled
over nine rounds), which favoured whichever client ran in the early rounds. Every round
runs every client once, round-robin (the first one rotates, so with a multiple of 3 rounds
each client runs as often first as last), all with the same chunk size (one PATCH per chunk):

- ``onward copy FILE tus+http://127.0.0.1:PORT/files/ --chunk-size CS``;
- tuspy (PyPI ``tuspy``, the Python tus client):
  ``TusClient(URL).uploader(FILE, chunk_size=CS, metadata=...).upload()``;
- tus-js-client (npm, the reference client) in Node: ``tests/peers/tus_upload.mjs --chunk-size CS``.

Every client is treated the same, and nothing it does not do itself is timed:

- before every run, untimed: the previous upload is checked (size and SHA-256 against the
  file's) and removed, then ``sync``, so no run pays for the write-back of another's data
  (the source file, too, is synced once after it is written);
- ``--warmup`` rounds (default 1) run first, untimed: the server's JIT, the page cache of
  every program and of the file, and the bytecode caches are warm before a timed run;
- onward runs from bytecode (``benchlib.precompile``), as an installed onward does and as
  tuspy does from its installed package (an editable install under ``PYTHONDONTWRITEBYTECODE``
  would compile every module again on every run).

Printed per client: the median wall time, min-max, MiB/s, the median CPU of the client (user
+ system, with its children) and of the server during its runs, and the CPU the rest of the
machine used meanwhile (``other``: anything above a few tenths of a second means something
else ran). The ratios onward / tuspy and onward / tus-js-client are given two ways: of the
medians, and the median of the per-round ratios (the two ran in the same round, seconds
apart, so a slow stretch of a shared machine falls on both). Timings never decide a test.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from benchlib import precompile

from peers.servers import PEERS, TusNode, missing

MiB = 1 << 20
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
TUSPY = """
import sys
from tusclient import client
path, size = sys.argv[2], int(sys.argv[3])
meta = {"filename": path.rsplit("/", 1)[-1]}  # without it tuspy sends an empty Upload-Metadata (400)
client.TusClient(sys.argv[1]).uploader(path, chunk_size=size, metadata=meta).upload()
"""


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = text[-1] if text and text[-1] in UNITS else ""
    try:
        return int(float(text[: len(text) - len(unit)]) * UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 4M or 1G)") from None


def onward_command() -> list[str]:
    beside = Path(sys.executable).with_name("onward")
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "onward"]


@dataclass
class Tool:
    name: str
    argv: list[str]
    server: TusNode
    env: dict[str, str] = field(default_factory=dict)
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    server_cpus: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)


def process_cpu(pid: int) -> float:
    """User + system seconds of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds the whole machine has spent working since boot (user, nice, system, irq,
    softirq: not idle, I/O wait or time stolen by the hypervisor)."""
    user, nice, system, _idle, _iowait, irq, softirq = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]
    )
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(8 * MiB):
            digest.update(block)
    return digest.hexdigest()


def run_once(tool: Tool, size: int, expected: str, timeout: float, *, timed: bool = True) -> None:
    server = tool.server
    os.sync()  # untimed: no run pays for the write-back of what an earlier one left
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before, busy_before = process_cpu(server.pid), machine_busy()
    started = time.perf_counter()
    done = subprocess.run(
        tool.argv,
        env={**os.environ, **tool.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu, busy = process_cpu(server.pid) - server_before, machine_busy() - busy_before
    if done.returncode != 0:
        raise SystemExit(
            f"{tool.name} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-500:]}"
        )
    uploads = list(server.uploads().values())
    if len(uploads) != 1 or uploads[0].stat().st_size != size or sha256_of(uploads[0]) != expected:
        raise SystemExit(f"{tool.name}: the server does not hold the file's bytes after the run")
    for path in list(server.store.iterdir()):
        path.unlink()
    if not timed:
        return
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    tool.walls.append(wall)
    tool.cpus.append(cpu)
    tool.server_cpus.append(server_cpu)
    tool.others.append(max(0.0, busy - cpu - server_cpu))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"))
    parser.add_argument("--runs", type=int, default=6, help="timed rounds (a multiple of 3 is fairest)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--chunk-size", type=parse_size, default=parse_size("4M"))
    parser.add_argument("--dir", type=Path, default=None, help="where the file (and a disk store) go")
    parser.add_argument(
        "--store",
        choices=("disk", "tmpfs"),
        default="disk",
        help="the server's store: under --dir (disk), or on /dev/shm (tmpfs: no disk in the measurement)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the samples here")
    parser.add_argument("--smoke", action="store_true", help="4 MiB, 1 round: checks the bench runs")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.runs, args.warmup, args.chunk_size = 4 * MiB, 1, 0, 1 * MiB
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be at least 1 and --warmup at least 0")
    if args.store == "tmpfs" and not Path("/dev/shm").is_dir():
        parser.error("--store tmpfs needs /dev/shm")
    why = missing()
    if why is not None:
        print(f"upload_bench: {why}", file=sys.stderr)
        return 1
    try:
        import tusclient  # noqa: F401
    except ImportError:
        print("upload_bench: tuspy is not installed (pip install -e '.[test]')", file=sys.stderr)
        return 1
    print(precompile())
    work = Path(tempfile.mkdtemp(prefix="onward-upload-bench-", dir=args.dir))
    store = work / "store"
    if args.store == "tmpfs":
        store = Path(tempfile.mkdtemp(prefix="onward-upload-bench-store-", dir="/dev/shm"))
    try:
        return measure(args, work, store)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(store, ignore_errors=True)


def measure(args: argparse.Namespace, work: Path, store: Path) -> int:
    src = work / "file.bin"
    with src.open("wb") as fh:
        left = args.size
        while left:
            block = os.urandom(min(left, 16 * MiB))
            fh.write(block)
            left -= len(block)
    os.sync()  # the file's own write-back is over before anything is timed
    expected = sha256_of(src)
    cs = str(args.chunk_size)
    timeout = 60 + args.size / MiB  # at least 1 MiB/s, or something is wrong
    node = shutil.which("node") or "node"
    with contextlib.ExitStack() as stack:
        # One server per client: a server shared by the three slowed down as the rounds went on.
        tools: list[Tool] = []
        for name in ("onward copy", "tuspy", "tus-js-client"):
            server = stack.enter_context(TusNode(store / name.split()[0]).start())
            if name == "onward copy":
                argv = [*onward_command(), "copy", str(src), server.endpoint, "--chunk-size", cs, "-q"]
                tools.append(Tool(name, argv, server, {"XDG_STATE_HOME": str(work / "state")}))
            elif name == "tuspy":
                tools.append(Tool(name, [sys.executable, "-c", TUSPY, server.url, str(src), cs], server))
            else:
                js = [node, str(PEERS / "tus_upload.mjs"), "--endpoint", server.url, "--file", str(src)]
                tools.append(Tool(name, [*js, "--chunk-size", cs], server))
        for _ in range(args.warmup):
            for tool in tools:
                run_once(tool, args.size, expected, timeout, timed=False)
        for round_ in range(args.runs):
            order = tools[round_ % len(tools) :] + tools[: round_ % len(tools)]
            for tool in order:
                run_once(tool, args.size, expected, timeout)
    report(args, tools)
    return 0


def report(args: argparse.Namespace, tools: list[Tool]) -> None:
    size_mib = args.size / MiB
    med = {t.name: statistics.median(t.walls) for t in tools}
    print(
        f"upload of {size_mib:.0f} MiB to @tus/server (@tus/file-store, store on {args.store}) on "
        f"127.0.0.1, chunk {args.chunk_size // 1024} KiB, {args.runs} round(s) after {args.warmup} "
        f"warm-up; {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(
        f"{'client':16} {'median s':>9} {'min-max':>13} {'MiB/s':>7} {'CPU s':>6} {'server':>7} {'other':>6}"
    )
    for tool in tools:
        w = tool.walls
        print(
            f"{tool.name:16} {med[tool.name]:9.3f} {min(w):6.2f}-{max(w):<6.2f} "
            f"{size_mib / med[tool.name]:7.0f} {statistics.median(tool.cpus):6.2f} "
            f"{statistics.median(tool.server_cpus):7.2f} {statistics.median(tool.others):6.2f}"
        )
    ours = tools[0]
    for anchor in tools[1:]:
        per_round = [a / b for a, b in zip(ours.walls, anchor.walls, strict=True)]
        label = f"ratio onward / {anchor.name}:"
        print(
            f"{label:30} {med[ours.name] / med[anchor.name]:.3f} (medians), "
            f"{statistics.median(per_round):.3f} (median per round; "
            f"rounds {' '.join(f'{r:.2f}' for r in per_round)})"
        )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "size": args.size,
                    "chunk_size": args.chunk_size,
                    "runs": args.runs,
                    "warmup": args.warmup,
                    "store": args.store,
                    "tools": {
                        t.name: {
                            "walls": t.walls,
                            "cpus": t.cpus,
                            "server_cpus": t.server_cpus,
                            "others": t.others,
                        }
                        for t in tools
                    },
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    sys.exit(main())

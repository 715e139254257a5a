#!/usr/bin/env python3
"""Side-by-side timing of a resumable upload to @tus/server (Node, @tus/file-store) on loopback.

Usage::

    python bench/upload_bench.py [--size 1G] [--runs 3] [--chunk-size 4M] [--dir DIR] [--json FILE]
    python bench/upload_bench.py --smoke     # 4 MiB, 1 round: checks the bench still runs

One random file is written once; @tus/server with @tus/file-store (tests/peers,
``npm ci --prefix tests/peers``) stores uploads under ``--dir`` and listens on a free
port of 127.0.0.1. Every round runs every client once, round-robin (the first one
rotates), all with the same chunk size (one PATCH per chunk):

- ``onward copy FILE tus+http://127.0.0.1:PORT/files/ --chunk-size CS``;
- tuspy (PyPI ``tuspy``, the Python tus client):
  ``TusClient(URL).uploader(FILE, chunk_size=CS, metadata=...).upload()``;
- tus-js-client (npm, the reference client) in Node: ``tests/peers/tus_upload.mjs --chunk-size CS``.

After each run the stored upload is checked (size and SHA-256 against the file's,
untimed) and removed. Medians, min-max, CPU (user + system of the client and its
children) and the ratios onward / tuspy and onward / tus-js-client from the same
run are printed. Timings never decide a test.
"""

from __future__ import annotations

import argparse
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
    env: dict[str, str] = field(default_factory=dict)
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(8 * MiB):
            digest.update(block)
    return digest.hexdigest()


def run_once(tool: Tool, server: TusNode, size: int, expected: str, timeout: float) -> None:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
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
    if done.returncode != 0:
        raise SystemExit(
            f"{tool.name} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-500:]}"
        )
    uploads = list(server.uploads().values())
    if len(uploads) != 1 or uploads[0].stat().st_size != size or sha256_of(uploads[0]) != expected:
        raise SystemExit(f"{tool.name}: the server does not hold the file's bytes after the run")
    for path in list(server.store.iterdir()):
        path.unlink()
    tool.walls.append(wall)
    tool.cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunk-size", type=parse_size, default=parse_size("4M"))
    parser.add_argument("--dir", type=Path, default=None, help="where the file and the server's store go")
    parser.add_argument("--json", type=Path, default=None, help="also write the samples here")
    parser.add_argument("--smoke", action="store_true", help="4 MiB, 1 round: checks the bench runs")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.runs, args.chunk_size = 4 * MiB, 1, 1 * MiB
    why = missing()
    if why is not None:
        print(f"upload_bench: {why}", file=sys.stderr)
        return 1
    try:
        import tusclient  # noqa: F401
    except ImportError:
        print("upload_bench: tuspy is not installed (pip install -e '.[test]')", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="onward-upload-bench-", dir=args.dir))
    try:
        return measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, work: Path) -> int:
    src = work / "file.bin"
    with src.open("wb") as fh:
        left = args.size
        while left:
            block = os.urandom(min(left, 16 * MiB))
            fh.write(block)
            left -= len(block)
    expected = sha256_of(src)
    cs = str(args.chunk_size)
    timeout = 60 + args.size / MiB  # at least 1 MiB/s, or something is wrong
    with TusNode(work / "store").start() as server:
        tools = [
            Tool(
                "onward copy",
                [*onward_command(), "copy", str(src), server.endpoint, "--chunk-size", cs, "-q"],
                {"XDG_STATE_HOME": str(work / "state")},
            ),
            Tool("tuspy", [sys.executable, "-c", TUSPY, server.url, str(src), cs]),
            Tool(
                "tus-js-client",
                [
                    shutil.which("node") or "node",
                    str(PEERS / "tus_upload.mjs"),
                    "--endpoint",
                    server.url,
                    "--file",
                    str(src),
                    "--chunk-size",
                    cs,
                ],
            ),
        ]
        for round_ in range(args.runs):
            order = tools[round_ % len(tools) :] + tools[: round_ % len(tools)]
            for tool in order:
                run_once(tool, server, args.size, expected, timeout)
    report(args, tools)
    return 0


def report(args: argparse.Namespace, tools: list[Tool]) -> None:
    size_mib = args.size / MiB
    med = {t.name: statistics.median(t.walls) for t in tools}
    print(
        f"upload of {size_mib:.0f} MiB to @tus/server (@tus/file-store) on 127.0.0.1, chunk "
        f"{args.chunk_size // 1024} KiB, {args.runs} round(s); {platform.node()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )
    print(f"{'client':16} {'median s':>9} {'min-max':>13} {'MiB/s':>7} {'CPU s':>6}")
    for tool in tools:
        w = tool.walls
        print(
            f"{tool.name:16} {med[tool.name]:9.3f} {min(w):6.2f}-{max(w):<6.2f} "
            f"{size_mib / med[tool.name]:7.0f} {statistics.median(tool.cpus):6.2f}"
        )
    ours = med["onward copy"]
    print(f"ratio onward / tuspy:         {ours / med['tuspy']:.3f}")
    print(f"ratio onward / tus-js-client: {ours / med['tus-js-client']:.3f}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "size": args.size,
                    "chunk_size": args.chunk_size,
                    "runs": args.runs,
                    "tools": {t.name: {"walls": t.walls, "cpus": t.cpus} for t in tools},
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""tus-js-client uploading to ``onward serve`` against the same client uploading to @tus/server.

Usage::

    python bench/tus_bench.py [--size 1G] [--runs 3] [--chunk 64M] [--concurrent 8] [--dir DIR]
    python bench/tus_bench.py --smoke        # 4 MiB, 1 round, 2 concurrent: checks the bench runs

One random file is written once. Two servers run side by side on 127.0.0.1, each storing on
``--dir``'s disk: ``onward serve`` and @tus/server with @tus/file-store
(tests/peers/tus_node_server.mjs). Every round uploads the file once to each (the starting
server alternates) with tus-js-client (tests/peers/tus_upload.mjs) in tus-v1 mode and the same
``--chunk`` size, checks the stored file is byte-identical, and deletes it. Printed: the
median and min-max time of each, and the ratio onward / @tus/server from the same run.

Then ``--concurrent`` uploads of the file run at once against ``onward serve`` while its
resident memory is sampled every 50 ms (VmRSS; VmHWM, the kernel's peak, at the end), and the
same for @tus/server. Timings never decide a test. Needs ``npm ci --prefix tests/peers``.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "tests" / "peers"
sys.path.insert(0, str(ROOT / "tests"))
from http_servers import HOST, free_port, onward_serve_argv, wait_for_port  # noqa: E402

MiB = 1 << 20
NODE = shutil.which("node") or "/usr/bin/node"


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(text)


class Server:
    def __init__(self, name: str, argv: list[str], store: Path, port: int, cwd: Path | None = None) -> None:
        self.name, self.store, self.port = name, store, port
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
        wait_for_port(port, self.proc)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/files/"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stored(self, url: str) -> Path:
        return self.store / url.rsplit("/", 1)[1]

    def clear(self) -> None:
        for path in self.store.iterdir():
            if path.is_file():
                path.unlink()
        staging = self.store / ".onward-uploads"
        if staging.is_dir():
            for path in staging.iterdir():
                if path.name != ".lock":
                    path.unlink()

    def memory(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in bytes."""
        fields = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0]) * 1024
        return fields["VmRSS"], fields["VmHWM"]


def upload(server: Server, src: Path, chunk: int) -> tuple[float, str]:
    argv = [NODE, str(PEERS / "tus_upload.mjs"), "--endpoint", server.url, "--file", str(src)]
    started = time.perf_counter()
    done = subprocess.run([*argv, "--chunk-size", str(chunk)], capture_output=True, timeout=3600, cwd=PEERS)
    elapsed = time.perf_counter() - started
    last = json.loads(done.stdout.decode().splitlines()[-1])
    if done.returncode != 0 or last["event"] != "done":
        raise SystemExit(f"{server.name}: upload failed: {last} {done.stderr[-500:]!r}")
    return elapsed, last["url"]


def concurrent(server: Server, src: Path, chunk: int, count: int) -> dict[str, float]:
    """``count`` uploads at once; the server's peak memory while they run."""
    results: list[tuple[float, str]] = []
    peak = 0
    threads = [
        threading.Thread(target=lambda: results.append(upload(server, src, chunk))) for _ in range(count)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, server.memory()[0])
        time.sleep(0.05)
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if len(results) != count:
        raise SystemExit(f"{server.name}: {count - len(results)} concurrent uploads failed")
    for _, url in results:
        if server.stored(url).stat().st_size != src.stat().st_size:
            raise SystemExit(f"{server.name}: a concurrent upload stored the wrong size")
    hwm = server.memory()[1]
    server.clear()
    return {"seconds": elapsed, "peak_rss": peak, "vm_hwm": hwm}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="1G")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunk", default="64M", help="tus-js-client chunkSize, the same for both servers")
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--dir", help="where the file and both stores live (default: a temporary directory)")
    parser.add_argument("--http", default="auto", help="onward serve --http (auto, h11, httptools)")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.runs, args.chunk, args.concurrent = "4M", 1, "1M", 2
    if not (PEERS / "node_modules" / "tus-js-client").is_dir():
        raise SystemExit("tus_bench: run npm ci --prefix tests/peers first")
    size, chunk = parse_size(args.size), parse_size(args.chunk)
    work = Path(tempfile.mkdtemp(prefix="tus-bench-", dir=args.dir))
    servers: list[Server] = []
    try:
        src = work / "source.bin"
        with open(src, "wb") as f:
            for _ in range(0, size, 16 * MiB):
                f.write(os.urandom(min(16 * MiB, size - f.tell())))
        ours_store, node_store = work / "onward", work / "tus-node"
        ours_store.mkdir()
        node_store.mkdir()
        port = free_port()
        ours_argv = onward_serve_argv(ours_store, port, "--http", args.http)
        servers.append(Server("onward serve", ours_argv, ours_store, port))
        port = free_port()
        node_argv = [NODE, str(PEERS / "tus_node_server.mjs"), str(node_store), str(port)]
        servers.append(Server("@tus/server", node_argv, node_store, port, cwd=PEERS))
        times: dict[str, list[float]] = {s.name: [] for s in servers}
        for run in range(args.runs):
            order = servers if run % 2 == 0 else servers[::-1]
            for server in order:
                subprocess.run(["sync"], check=False)
                elapsed, url = upload(server, src, chunk)
                if not filecmp.cmp(src, server.stored(url), shallow=False):
                    raise SystemExit(f"{server.name}: the stored file differs from the source")
                times[server.name].append(elapsed)
                server.clear()
        mem = {s.name: concurrent(s, src, chunk, args.concurrent) for s in servers}
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    ours, anchor = (statistics.median(times[s.name]) for s in servers)
    print(
        f"tus_bench: {args.size} file, chunk {args.chunk}, {args.runs} runs, tus-js-client tus-v1, loopback"
    )
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}"
    print(f"  machine: {machine}, node {node_version()}, uvicorn --http {args.http}")
    for name, values in times.items():
        rate = size / statistics.median(values) / MiB
        print(f"  {name:13} median {statistics.median(values):7.2f} s  ({min(values):.2f}-{max(values):.2f})"
              f"  {rate:7.1f} MiB/s")  # fmt: skip
    print(f"  ratio onward / @tus/server: {ours / anchor:.2f}")
    for name, m in mem.items():
        print(f"  {args.concurrent} x {args.size} at once to {name}: {m['seconds']:.1f} s, "
              f"peak RSS {m['peak_rss'] / MiB:.0f} MiB (VmHWM {m['vm_hwm'] / MiB:.0f} MiB)")  # fmt: skip
    if args.json:
        figures = {"size": size, "chunk": chunk, "times": times, "ratio": ours / anchor, "memory": mem}
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


def node_version() -> str:
    return subprocess.run([NODE, "--version"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The server's memory under HEADs of ids that do not exist: ``onward serve`` beside @tus/server.

Usage::

    python bench/serve_memory_bench.py [--heads 100000] [--connections 4] [--dir DIR]
    python bench/serve_memory_bench.py --smoke     # 2,000 HEADs: checks the bench runs

Each server gets a warm-up of 2,000 HEADs of random well-formed unknown ids (so allocator
pools and caches are filled), then its resident memory (VmRSS) is read, then ``--heads``
more HEADs are sent over ``--connections`` keep-alive connections, and VmRSS is read again.
Every answer must be 404. Printed: RSS before and after, the growth, and the rate. A server
that keeps a slot per id asked about grows without bound; one that does not stays flat.
To measure another onward, put its ``src`` first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from tus_bench import (  # tus_bench puts tests/ on sys.path
    HOST,
    NODE,
    PEERS,
    Server,
    free_port,
    onward_serve_argv,
)

MiB = 1 << 20
WARM_UP = 2000


def heads(port: int, count: int) -> int:
    """``count`` HEADs of random unknown ids on one keep-alive connection; how many were 404."""
    found = 0
    with socket.create_connection((HOST, port), timeout=30) as sock:
        reader = sock.makefile("rb")
        for _ in range(count):
            ghost = secrets.token_urlsafe(24)
            sock.sendall(f"HEAD /files/{ghost} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n\r\n".encode())
            status = reader.readline()
            found += b" 404 " in status
            while reader.readline() not in (b"\r\n", b""):
                pass  # a HEAD answer has headers only
    return found


def flood(port: int, total: int, connections: int) -> tuple[int, float]:
    counts = [0] * connections
    share = [total // connections + (i < total % connections) for i in range(connections)]

    def one(i: int) -> None:
        counts[i] = heads(port, share[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(connections)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--heads", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--dir", help="where the servers store (default: a temporary directory)")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.heads = 2000
    work = Path(tempfile.mkdtemp(prefix="serve-memory-", dir=args.dir))
    servers: list[Server] = []
    try:
        ours, node = work / "onward", work / "tus-node"
        ours.mkdir()
        node.mkdir()
        port = free_port()
        servers.append(Server("onward serve", onward_serve_argv(ours, port), ours, port))
        if (PEERS / "node_modules" / "@tus" / "server").is_dir():
            port = free_port()
            argv = [NODE, str(PEERS / "tus_node_server.mjs"), str(node), str(port)]
            servers.append(Server("@tus/server", argv, node, port, cwd=PEERS))
        else:
            print("  (@tus/server not installed: npm ci --prefix tests/peers; onward alone)")
        print(f"serve_memory_bench: {args.heads} HEADs of unknown ids over {args.connections} connections")
        for server in servers:
            flood(server.port, WARM_UP, args.connections)
            before = server.memory()[0]
            found, seconds = flood(server.port, args.heads, args.connections)
            after = server.memory()[0]
            if found != args.heads:
                raise SystemExit(f"{server.name}: {args.heads - found} HEADs were not answered 404")
            print(
                f"  {server.name:13} RSS {before / MiB:6.1f} -> {after / MiB:6.1f} MiB "
                f"(+{(after - before) / MiB:.1f} MiB), {args.heads / seconds:,.0f} HEADs/s"
            )
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"  machine: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

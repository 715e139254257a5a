#!/usr/bin/env python3
"""Does one slow completion hook stall everyone? ``onward serve`` beside @tus/server.

Usage::

    python bench/serve_stall_bench.py [--finishing 8] [--hook 6] [--runs 3] [--dir DIR]
    python bench/serve_stall_bench.py --smoke      # 2 finishing, a 1 s hook, 1 run

Each server runs a completion hook that takes ``--hook`` seconds (``onward serve --on-complete``
a command that sleeps; @tus/server an ``onUploadFinish`` that runs ``sleep`` as a child
process, tests/peers/tus_node_server.mjs). Each round, ``--finishing`` uploads of 1 KiB finish
at once, so that many hooks run; one second later an unrelated client creates an upload and
sends it a 1 KiB PATCH (of 2 KiB: no hook). Printed: the median and max latency of that
creation and that PATCH for each server, servers alternating, and the ratio. To measure
another onward, put its ``src`` first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from tus_bench import NODE, PEERS, Server, free_port, onward_serve_argv

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}


def finish_one(url: str, results: list[int]) -> None:
    with httpx.Client(timeout=600) as c:
        location = c.post(url, headers={**TUS, "Upload-Length": "1024"}).headers["location"]
        done = c.patch(
            httpx.URL(url).join(location), headers={**OCTETS, "Upload-Offset": "0"}, content=b"f" * 1024
        )
        results.append(done.status_code)


def round_trip(url: str, finishing: int) -> tuple[float, float]:
    """``finishing`` uploads finish (their hooks start); then an unrelated creation and PATCH, timed."""
    results: list[int] = []
    threads = [threading.Thread(target=finish_one, args=(url, results)) for _ in range(finishing)]
    for t in threads:
        t.start()
    time.sleep(1.0)  # the finishing uploads have reached their hooks
    with httpx.Client(timeout=600) as c:
        started = time.perf_counter()
        created = c.post(url, headers={**TUS, "Upload-Length": "2048"})
        create_s = time.perf_counter() - started
        location = httpx.URL(url).join(created.headers["location"])
        started = time.perf_counter()
        patched = c.patch(location, headers={**OCTETS, "Upload-Offset": "0"}, content=b"u" * 1024)
        patch_s = time.perf_counter() - started
    for t in threads:
        t.join()
    if created.status_code != 201 or patched.status_code != 204 or results != [204] * finishing:
        raise SystemExit(f"{url}: a request failed ({created.status_code}, {patched.status_code}, {results})")
    return create_s, patch_s


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--finishing", type=int, default=8)
    parser.add_argument("--hook", type=float, default=6.0, help="seconds each completion hook takes")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.finishing, args.hook, args.runs = 2, 1.0, 1
    if not (PEERS / "node_modules" / "@tus" / "server").is_dir():
        raise SystemExit("serve_stall_bench: run npm ci --prefix tests/peers first")
    work = Path(tempfile.mkdtemp(prefix="serve-stall-", dir=args.dir))
    servers: list[Server] = []
    try:
        ours, node = work / "onward", work / "tus-node"
        ours.mkdir()
        node.mkdir()
        hook = f"{sys.executable} -c 'import time; time.sleep({args.hook})'"
        port = free_port()
        servers.append(
            Server("onward serve", onward_serve_argv(ours, port, "--on-complete", hook), ours, port)
        )
        port = free_port()
        os.environ["FINISH_HOOK_SECONDS"] = f"{args.hook:g}"
        argv = [NODE, str(PEERS / "tus_node_server.mjs"), str(node), str(port)]
        servers.append(Server("@tus/server", argv, node, port, cwd=PEERS))
        creates: dict[str, list[float]] = {s.name: [] for s in servers}
        patches: dict[str, list[float]] = {s.name: [] for s in servers}
        for run in range(args.runs):
            for server in servers if run % 2 == 0 else servers[::-1]:
                create_s, patch_s = round_trip(server.url, args.finishing)
                creates[server.name].append(create_s)
                patches[server.name].append(patch_s)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"serve_stall_bench: {args.finishing} uploads finishing under a {args.hook:g} s hook, "
        f"then an unrelated creation and 1 KiB PATCH; {args.runs} runs"
    )
    for name in creates:
        c_ms, p_ms = statistics.median(creates[name]) * 1000, statistics.median(patches[name]) * 1000
        print(
            f"  {name:13} creation median {c_ms:7.1f} ms (max {max(creates[name]) * 1000:.1f}), "
            f"PATCH median {p_ms:7.1f} ms (max {max(patches[name]) * 1000:.1f})"
        )
    ours_total = statistics.median(
        a + b for a, b in zip(creates["onward serve"], patches["onward serve"], strict=True)
    )
    node_total = statistics.median(
        a + b for a, b in zip(creates["@tus/server"], patches["@tus/server"], strict=True)
    )
    print(f"  ratio onward / @tus/server (creation + PATCH): {ours_total / node_total:.2f}")
    print(f"  machine: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

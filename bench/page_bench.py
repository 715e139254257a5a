#!/usr/bin/env python3
"""The upload page in headless Chromium against tus-js-client in Node, both to one ``onward serve``.

Usage::

    python bench/page_bench.py [--size 1G] [--runs 3] [--dir DIR]
    python bench/page_bench.py --smoke        # 16 MiB, 1 round: checks the bench runs

One random file is written once and one ``onward serve`` runs on 127.0.0.1 (page on), storing on
``--dir``'s disk. Each round uploads the file once with each client, in turn:

- ``page``: the upload page (GET /) in Debian's Chromium, headless, driven by Playwright: the
  file is chosen with the page's file input, the clock stops when the page lists it as finished.
  16 MiB chunks, each with ``Upload-Checksum: sha256`` computed by SubtleCrypto.
- ``page, no checksum``: the same page with SubtleCrypto hidden (as on a plain-http origin), to
  show what the per-chunk checksums cost the browser and the server.
- ``tus-js-client``: tests/peers/tus_upload.mjs in Node, the same 16 MiB chunks, no checksum.

Each stored file is compared with the source and deleted. Printed per client: the median and
min-max wall time, and the server's CPU time (user + system, from /proc) for the upload; then the
ratios to tus-js-client from the same run, and the size of the page's script. Timings never
decide a test. Needs ``npm ci --prefix tests/peers`` and the test extra (Playwright).
"""

from __future__ import annotations

import argparse
import filecmp
import gzip
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import browser  # noqa: E402
from http_servers import free_port, onward_serve_argv, stop_process, wait_for_port  # noqa: E402
from peers.servers import missing, tus_js_upload  # noqa: E402

if TYPE_CHECKING:
    from playwright.sync_api import Playwright, Request

MiB = 1 << 20
CHUNK = 16 * MiB  # the page's (page/src/main.js)
SCRIPT = ROOT / "src" / "onward" / "server" / "static" / "upload.js"
NO_SUBTLE = "Object.defineProperty(Crypto.prototype, 'subtle', { get: () => undefined })"


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(text)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Serve:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(onward_serve_argv(directory, self.port), stdin=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc, timeout=30)

    def take(self, src: Path) -> None:
        """Check the one finished upload is ``src``, then remove it."""
        done = [p for p in self.directory.iterdir() if p.is_file() and p.suffix != ".json"]
        assert len(done) == 1 and filecmp.cmp(done[0], src, shallow=False), done
        for p in self.directory.iterdir():
            if p.is_file():
                p.unlink()

    def measure(self, upload: Callable[[], object]) -> tuple[float, float]:
        cpu = cpu_seconds(self.proc.pid)
        start = time.perf_counter()
        upload()
        return time.perf_counter() - start, cpu_seconds(self.proc.pid) - cpu


def page_upload(
    playwright: Playwright, serve: Serve, src: Path, profile: Path, checksums: bool
) -> Callable[[], None]:
    """A fresh browser on the page, ready; the returned call chooses the file and waits for the end."""
    context = browser.launch(playwright, profile)
    if not checksums:
        context.add_init_script(NO_SUBTLE)
    page = context.pages[0] if context.pages else context.new_page()
    page.goto(serve.origin + "/")
    sent: list[Request] = []
    page.on("request", lambda r: sent.append(r) if r.method == "PATCH" else None)

    def run() -> None:
        try:
            page.set_input_files("#files", str(src))
            page.wait_for_selector("#done li", timeout=600_000)
        finally:
            context.close()
        with_sum = sum(1 for r in sent if "upload-checksum" in r.headers)
        assert with_sum == (len(sent) if checksums else 0), (with_sum, len(sent))

    return run


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="1G")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the file and the server's directory go")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.runs = "16M", 1
    why = browser.missing() or missing()
    if why:
        print(f"page_bench: skipped: {why}")
        return 0
    from playwright.sync_api import sync_playwright

    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="page-bench-", dir=args.dir)).resolve()
    try:
        src = work / "payload.bin"
        with open(src, "wb") as f:
            for _ in range(size // MiB):
                f.write(os.urandom(MiB))
        store = work / "incoming"
        store.mkdir()
        serve = Serve(store)
        results: dict[str, list[tuple[float, float]]] = {
            "page": [],
            "page, no checksum": [],
            "tus-js-client": [],
        }
        try:
            with sync_playwright() as playwright:
                for run in range(args.runs):
                    order = list(results)
                    order = order[run % 3 :] + order[: run % 3]  # who goes first rotates
                    for name in order:
                        upload: Callable[[], object]
                        if name == "tus-js-client":
                            upload = lambda: tus_js_upload(  # noqa: E731
                                serve.origin + "/files/", src, "--chunk-size", str(CHUNK), timeout=900
                            )
                        else:
                            profile = work / f"profile-{run}-{len(results[name])}-{name[-3:]}"
                            upload = page_upload(playwright, serve, src, profile, name == "page")
                        results[name].append(serve.measure(upload))
                        serve.take(src)
        finally:
            stop_process(serve.proc)
        report(results, size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(results: dict[str, list[tuple[float, float]]], size: int) -> None:
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"page_bench: {size / MiB:.0f} MiB, {len(results['page'])} run(s), 16 MiB chunks, one onward serve")
    print(f"  {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, node {node}")
    anchor_time = statistics.median(t for t, _ in results["tus-js-client"])
    anchor_cpu = statistics.median(c for _, c in results["tus-js-client"])
    for name, runs in results.items():
        times = [t for t, _ in runs]
        cpus = [c for _, c in runs]
        t, c = statistics.median(times), statistics.median(cpus)
        print(
            f"  {name:<18} {t:7.2f} s ({min(times):.2f}-{max(times):.2f}) {size / MiB / t:7.1f} MiB/s"
            f"   server CPU {c:6.2f} s   x{t / anchor_time:.2f} time, x{c / max(anchor_cpu, 1e-9):.2f} CPU"
        )
    script = SCRIPT.read_bytes()
    print(f"  page script: {len(script)} bytes, {len(gzip.compress(script, 9))} gzipped")


if __name__ == "__main__":
    sys.exit(main())

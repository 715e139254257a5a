#!/usr/bin/env python3
"""``onward serve`` under load and kills: many concurrent uploads through tus-js-client and tuspy,
random clients SIGKILLed and resumed, and the server SIGKILLed once in the middle.

Usage::

    python bench/serve_load_bench.py [--uploads 200] [--size 8M] [--chunk 1M] [--client-kills 30]
                                     [--dir DIR] [--seed 1]
    python bench/serve_load_bench.py --smoke     # 6 uploads of 2 MiB, 2 client kills

Every upload has its own random source file; half go through tus-js-client
(tests/peers/tus_upload.mjs, tus-v1, ``--chunk`` per PATCH), half through tuspy
(tests/peers/tuspy_upload.py, its URL storage). All start at once. ``--client-kills`` of them,
chosen at random, are SIGKILLed once when their acknowledged bytes pass a random point, and
started again on the same upload (tus-js-client given its URL, tuspy finding it in its
storage). When the server's disk holds 40 % of all the bytes, the server is
SIGKILLed: every client then fails, the server is started again on the same directory and
port, and every unfinished upload is resumed. Each upload gets at most 6 attempts.

The ledger: for every upload, the highest offset its client saw acknowledged before each
kill; after the kill, ``HEAD`` must report at least that much (anything less is *bytes lost*).
At the end every finished file must equal its source. Printed: uploads started, finished,
bytes lost (must be 0), files that differ (must be 0), extra uploads the server created for
clients killed before they learned their URL, the server's peak RSS (VmRSS sampled every
50 ms, both server processes) and its CPU time (user + system, both processes), wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tus_bench import HOST, NODE, PEERS, free_port, onward_serve_argv, parse_size, wait_for_port

MiB = 1 << 20
ATTEMPTS = 6
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Upload:
    index: int
    client: str  # "tus-js-client" or "tuspy"
    source: Path
    store: Path  # tuspy's URL storage
    kill_at: int | None  # acknowledged bytes past which the client is killed once
    url: str | None = None
    acked: dict[str, int] = field(default_factory=dict)  # upload URL -> highest offset acknowledged
    done: bool = False
    attempts: int = 0
    proc: subprocess.Popen[bytes] | None = None
    reader: threading.Thread | None = None
    busy: bool = False  # a kill-and-resume thread owns the client

    def reached(self) -> int:
        return self.acked.get(self.url, 0) if self.url else 0


class ServerProc:
    def __init__(self, directory: Path, port: int) -> None:
        self.directory, self.port = directory, port
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_rss = 0
        self.cpu: dict[int, float] = {}  # pid -> user + system seconds, last seen
        self.sampling = True
        self.sampler = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            onward_serve_argv(self.directory, self.port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port, self.proc)
        if not self.sampler.is_alive():
            self.sampler.start()

    def kill(self) -> None:
        assert self.proc is not None
        self._read(self.proc.pid)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        self.sampling = False
        if self.proc is not None and self.proc.poll() is None:
            self._read(self.proc.pid)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)

    def _read(self, pid: int) -> None:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        self.peak_rss = max(self.peak_rss, int(line.split()[1]) * 1024)
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            self.cpu[pid] = (int(fields[11]) + int(fields[12])) / TICKS
        except (OSError, ValueError, IndexError):
            pass

    def _sample(self) -> None:
        while self.sampling:
            if self.proc is not None and self.proc.poll() is None:
                self._read(self.proc.pid)
            time.sleep(0.05)


def start_client(up: Upload, endpoint: str, chunk: int) -> None:
    up.attempts += 1
    if up.client == "tus-js-client":
        argv = [NODE, str(PEERS / "tus_upload.mjs"), "--endpoint", endpoint, "--file", str(up.source)]
        argv += ["--chunk-size", str(chunk)]
        if up.url is not None:
            argv += ["--upload-url", up.url]
        cwd: Path | None = PEERS
    else:
        argv = [sys.executable, str(PEERS / "tuspy_upload.py"), "--endpoint", endpoint]
        argv += ["--file", str(up.source), "--store", str(up.store), "--chunk-size", str(chunk)]
        cwd = None
    up.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=cwd)
    up.reader = threading.Thread(target=read_events, args=(up, up.proc), daemon=True)
    up.reader.start()


def read_events(up: Upload, proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("url"):
            up.url = str(event["url"])
        if event.get("event") == "chunk" and up.url is not None:
            up.acked[up.url] = max(up.acked.get(up.url, 0), int(event["accepted"]))
        elif event.get("event") == "done":
            up.done = True


def held(directory: Path) -> int:
    """Bytes of upload data on the server's disk, finished (``DIR/ID``) or not (``ID.part``), read
    from the directory rather than from the clients' events, which lag on a loaded machine."""
    finished = [e for e in os.scandir(directory) if e.is_file() and not e.name.endswith(".json")]
    parts = [e for e in os.scandir(directory / ".onward-uploads") if e.name.endswith(".part")]
    total = 0
    for entry in finished + parts:
        with contextlib.suppress(FileNotFoundError):  # promoted or removed meanwhile
            total += entry.stat().st_size
    return total


def server_offset(origin: str, url: str) -> int | None:
    """The upload's offset by HEAD (-1: any answer but 200 or 423); None when the server is down.
    423 (the killed client's request is still making its bytes durable) is asked again."""
    deadline = time.monotonic() + 60
    while True:
        try:
            response = httpx.head(httpx.URL(origin).join(url), headers={"Tus-Resumable": "1.0.0"}, timeout=30)
        except httpx.HTTPError:
            return None
        if response.status_code != 423 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if response.status_code != 200:
        print(f"  HEAD {url}: {response.status_code}")
        return -1
    return int(response.headers["upload-offset"])


def shortfall(origin: str, up: Upload, when: str) -> int:
    """Bytes acknowledged to ``up``'s client that the server no longer reports (must be 0)."""
    lost = 0
    for url, acked in up.acked.items():
        offset = server_offset(origin, url)
        if offset is not None and offset < acked:
            print(f"  LOST after {when}: upload {up.index} ({up.client}) {url}: acknowledged {acked}, "
                  f"HEAD says {offset}")  # fmt: skip
            lost += acked - max(offset, 0)
    return lost


def kill_client(up: Upload) -> None:
    if up.proc is not None and up.proc.poll() is None:
        up.proc.send_signal(signal.SIGKILL)
    if up.proc is not None:
        up.proc.wait(timeout=30)
    if up.reader is not None:
        up.reader.join(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--size", default="8M")
    parser.add_argument("--chunk", default="1M")
    parser.add_argument("--client-kills", type=int, default=30)
    parser.add_argument("--dir")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900, help="give up after this many seconds")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.uploads, args.size, args.client_kills = 6, "2M", 2
    if not (PEERS / "node_modules" / "tus-js-client").is_dir():
        raise SystemExit("serve_load_bench: run npm ci --prefix tests/peers first")
    size, chunk = parse_size(args.size), parse_size(args.chunk)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="serve-load-", dir=args.dir))
    server = ServerProc(work / "served", free_port())
    uploads: list[Upload] = []
    lost = 0
    started_at = time.monotonic()
    try:
        server.directory.mkdir()
        (work / "sources").mkdir()
        victims = set(rng.sample(range(args.uploads), min(args.client_kills, args.uploads)))
        for i in range(args.uploads):
            source = work / "sources" / f"{i:04d}.bin"
            source.write_bytes(rng.randbytes(size))
            kill_at = rng.randrange(chunk, size) if i in victims and size > chunk else None
            client = "tus-js-client" if i % 2 == 0 else "tuspy"
            uploads.append(Upload(i, client, source, work / "sources" / f"{i:04d}.tuspy.json", kill_at))
        print(f"  {args.uploads} sources written in {time.monotonic() - started_at:.1f} s", flush=True)
        started_at = time.monotonic()
        server.start()
        endpoint = f"http://{HOST}:{server.port}/files/"
        origin = f"http://{HOST}:{server.port}"
        losses: list[int] = []
        dead = threading.Event()

        def watch() -> None:  # its own thread: the main loop is slow on a loaded machine
            while not dead.is_set() and time.monotonic() < deadline:
                if held(server.directory) >= 0.4 * size * len(uploads):
                    running = sum(u.proc is not None and u.proc.poll() is None for u in uploads)
                    now, done = time.monotonic() - started_at, sum(u.done for u in uploads)
                    print(f"  server SIGKILLed after {now:.1f} s: {running} clients running, {done} done")
                    server.kill()
                    dead.set()
                time.sleep(0.05)

        def kill_and_resume(up: Upload) -> None:
            kill_client(up)
            losses.append(shortfall(origin, up, "its client was killed"))
            start_client(up, endpoint, chunk)
            up.busy = False

        deadline = started_at + args.timeout
        threading.Thread(target=watch, daemon=True).start()
        for up in uploads:
            start_client(up, endpoint, chunk)
        restarted = False
        report = started_at + 10
        while time.monotonic() < deadline and not all(u.done for u in uploads):
            time.sleep(0.05)
            if time.monotonic() >= report:
                report = time.monotonic() + 10
                running = sum(u.proc is not None and u.proc.poll() is None for u in uploads)
                now, mib, done = (
                    time.monotonic() - started_at,
                    held(server.directory) / MiB,
                    sum(u.done for u in uploads),
                )
                print(
                    f"  {now:5.1f} s: server holds {mib:.0f} MiB, {running} clients running, {done} done",
                    flush=True,
                )
            for up in uploads:
                if up.kill_at is not None and up.reached() >= up.kill_at and not up.done and not up.busy:
                    up.kill_at, up.busy = None, True
                    threading.Thread(target=kill_and_resume, args=(up,), daemon=True).start()
            if dead.is_set() and not restarted:
                for up in uploads:  # every client fails on the dead server (bounded by kill_client)
                    if up.proc is not None and up.proc.poll() is None:
                        try:
                            up.proc.wait(timeout=20)
                        except subprocess.TimeoutExpired:
                            kill_client(up)
                    if up.reader is not None:
                        up.reader.join(timeout=30)
                server.start()
                restarted = True
                for up in uploads:
                    losses.append(shortfall(origin, up, "the server was killed"))
            for up in uploads:
                finished = up.proc is not None and up.proc.poll() is not None
                if finished and not up.done and not up.busy and up.attempts < ATTEMPTS:
                    if up.reader is not None:
                        up.reader.join(timeout=30)
                    if not up.done:
                        start_client(up, endpoint, chunk)
        lost = sum(losses)
        for up in uploads:
            kill_client(up)
        wall = time.monotonic() - started_at
        finished_files = differ = 0
        for up in uploads:
            if up.done and up.url is not None:
                stored = server.directory / up.url.rsplit("/", 1)[1]
                if stored.exists() and filecmp.cmp(stored, up.source, shallow=False):
                    finished_files += 1
                else:
                    differ += 1
                    have = stored.stat().st_size if stored.exists() else None
                    print(f"  differs: upload {up.index} ({up.client}) {up.url}: stored {have} bytes, "
                          f"runs {up.attempts}, urls {sorted(up.acked)}")  # fmt: skip
        created = len(list((server.directory / ".onward-uploads").glob("*.info")))
        extra = created - len({url for u in uploads for url in u.acked} | {u.url for u in uploads if u.url})
    finally:
        for up in uploads:
            if up.proc is not None and up.proc.poll() is None:
                up.proc.kill()
                up.proc.wait(timeout=30)
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    attempts = sum(u.attempts for u in uploads)
    print(
        f"serve_load_bench: {args.uploads} uploads of {args.size} (half tus-js-client, half tuspy, "
        f"{args.chunk} per PATCH), {args.client_kills} clients SIGKILLed and resumed, the server SIGKILLed "
        f"once at 40 % of the bytes"
    )
    done = sum(u.done for u in uploads)
    print(f"  uploads started {len(uploads)}, finished {done} ({finished_files} files equal to their "
          f"source), client runs {attempts}")  # fmt: skip
    print(f"  bytes lost {lost} (must be 0), files that differ {differ} (must be 0), uploads created for "
          f"clients killed before they learned their URL {extra}")  # fmt: skip
    cpu = sum(server.cpu.values())
    print(f"  server peak RSS {server.peak_rss / MiB:.0f} MiB, server CPU {cpu:.1f} s (user + system, both "
          f"processes), wall {wall:.1f} s")  # fmt: skip
    print(f"  machine: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    return 0 if lost == 0 and differ == 0 and finished_files == len(uploads) else 1


if __name__ == "__main__":
    sys.exit(main())

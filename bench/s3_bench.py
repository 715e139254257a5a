#!/usr/bin/env python3
"""Side-by-side timing of S3 uploads and downloads against a local S3 server (moto) on loopback.

Usage::

    python bench/s3_bench.py [--size 1G] [--runs 3] [--dir DIR] [--aws PATH]
    python bench/s3_bench.py --smoke     # 16 MiB, 1 round: checks the bench still runs

One moto ``ThreadedMotoServer`` (the tests' server) runs in its own process on a free port of
127.0.0.1. One random file is written once under ``--dir``. Every round runs, in rotating
order, each client for each case (upload, download; one connection and four):

- ``onward copy FILE s3://b/key --connections N`` (and back), from bytecode;
- ``aws s3 cp`` (awscli from PyPI; ``--aws``, else bench/out/awscli-venv, made with
  ``pip install awscli`` when missing), with ``max_concurrent_requests = N``;
- ``rclone copyto`` (Debian's rclone) with ``--s3-upload-concurrency N`` / ``--multi-thread-streams N``.

All use 8 MiB parts. Before every run, untimed: a fresh server (moto slows down as it
serves more), the object to download put there, ``sync``. Then a resume: each client is
SIGKILLed at 90 % of an upload and of a download and run again; onward is killed at its own
90 % progress event, the others at 90 % of their median full time (they print no progress a
program can read). Printed: the re-run's time and the bytes it sent again (onward's from its
``done`` event; the others start over, so the whole file), next to a full transfer. The
server is a Python program on the same two cores: it, not the clients, bounds most of these
figures; read the ratios, not the rates.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import precompile

MiB = 1 << 20
ACCESS, SECRET = "AKIABENCH", "bench-secret"
SERVER = """
import sys, time
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server._server.server_port, flush=True)
sys.stdin.read()
"""


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def find_aws(given: str | None) -> str | None:
    """``--aws``, else awscli in bench/out/awscli-venv, installed there from PyPI when missing."""
    venv = Path(__file__).resolve().parent / "out" / "awscli-venv"
    for candidate in (given, str(venv / "bin/aws")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    print("installing awscli from PyPI into", venv, flush=True)
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True)
    if made.returncode == 0:
        subprocess.run([str(venv / "bin/pip"), "install", "-q", "awscli"], capture_output=True)
    aws = venv / "bin/aws"
    return str(aws) if aws.exists() else None


class Bench:
    def __init__(self, args: argparse.Namespace, scratch: Path) -> None:
        self.size = args.size
        self.scratch = scratch
        self.server: subprocess.Popen[str] | None = None
        self.endpoint = ""
        self.s3: Any = None
        self.file = scratch / "data.bin"
        with open(self.file, "wb") as fh:
            for _ in range(0, self.size, 64 * MiB):
                fh.write(os.urandom(min(64 * MiB, self.size - fh.tell())))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
        self.env.update(
            AWS_ACCESS_KEY_ID=ACCESS,
            AWS_SECRET_ACCESS_KEY=SECRET,
            AWS_DEFAULT_REGION="us-east-1",
            XDG_STATE_HOME=str(scratch / "state"),
            RCLONE_CONFIG_MOTO_TYPE="s3",
            RCLONE_CONFIG_MOTO_PROVIDER="Other",
            RCLONE_CONFIG_MOTO_ACCESS_KEY_ID=ACCESS,
            RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY=SECRET,
            RCLONE_CONFIG_MOTO_FORCE_PATH_STYLE="true",
        )
        self.aws = find_aws(args.aws)
        self.down = scratch / "down.bin"

    def start_server(self, with_source: bool) -> None:
        """A fresh server for every run (moto slows down as it serves more: docs/PERFORMANCE.md),
        with the bucket and, for a download, the object in 8 MiB parts, put there untimed."""
        self.close()
        self.server = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.server.stdout is not None
        self.endpoint = f"http://127.0.0.1:{int(self.server.stdout.readline())}"
        self.env.update(AWS_ENDPOINT_URL=self.endpoint, RCLONE_CONFIG_MOTO_ENDPOINT=self.endpoint)
        import boto3
        from boto3.s3.transfer import TransferConfig

        self.s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )
        self.s3.create_bucket(Bucket="bench")
        if with_source:
            parts = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB)
            self.s3.upload_file(str(self.file), "bench", "source", Config=parts)

    def close(self) -> None:
        if self.server is not None:
            if self.server.stdin is not None:
                self.server.stdin.close()
            self.server.wait(timeout=30)
            self.server = None

    def onward(self, src: str, dst: str, n: int) -> list[str]:
        return [sys.executable, "-m", "onward", "copy", "-q", src, dst, "--connections", str(n)]

    def aws_cmd(self, src: str, dst: str, n: int) -> list[str]:
        config = self.scratch / f"aws-config-{n}"
        config.write_text(
            f"[default]\nregion = us-east-1\ns3 =\n  max_concurrent_requests = {n}\n"
            "  multipart_chunksize = 8MB\n  multipart_threshold = 8MB\n"
        )
        self.env["AWS_CONFIG_FILE"] = str(config)
        assert self.aws is not None
        return [self.aws, "s3", "cp", "--only-show-errors", "--no-progress", src, dst]

    def rclone(self, src: str, dst: str, n: int) -> list[str]:
        return [
            "rclone", "copyto", "-q", src, dst, "--s3-chunk-size", "8M", "--s3-upload-concurrency", str(n),
            "--multi-thread-streams", str(n), "--multi-thread-cutoff", "8M", "--transfers", "1",
            "--s3-disable-checksum",
        ]  # fmt: skip

    def command(self, client: str, direction: str, n: int) -> list[str]:
        local, key = str(self.down if direction == "down" else self.file), f"{client}-{direction}"
        remote = {"rclone": f"moto:bench/{key}"}.get(client, f"s3://bench/{key}")
        source = {"rclone": "moto:bench/source"}.get(client, "s3://bench/source")
        src, dst = (local, remote) if direction == "up" else (source, local)
        build: dict[str, Callable[[str, str, int], list[str]]] = {
            "onward": self.onward,
            "aws": self.aws_cmd,
            "rclone": self.rclone,
        }
        return build[client](src, dst, n)

    def reset(self, client: str, direction: str) -> None:
        for path in self.scratch.glob("down.bin*"):
            path.unlink()
        shutil.rmtree(self.scratch / "state", ignore_errors=True)
        self.start_server(with_source=direction == "down")
        subprocess.run(["sync"], check=True)

    def timed(self, cmd: list[str]) -> float:
        start = time.perf_counter()
        subprocess.run(cmd, env=self.env, check=True, stdin=subprocess.DEVNULL)
        return time.perf_counter() - start

    def check(self, client: str, direction: str) -> None:
        if direction == "down":
            assert self.down.stat().st_size == self.size, f"{client}: wrong download size"
        else:
            head = self.s3.head_object(Bucket="bench", Key=f"{client}-{direction}")
            assert head["ContentLength"] == self.size, f"{client}: wrong upload size"

    def resume(self, client: str, direction: str, full: float) -> tuple[float, int]:
        """Kill at 90 % and run again: (seconds of the re-run, bytes it sent again)."""
        self.reset(client, direction)
        cmd = self.command(client, direction, 1)
        proc: subprocess.Popen[str] | subprocess.Popen[bytes]
        if client == "onward":
            cmd = [c for c in cmd if c != "-q"] + ["--json"]
            # A one-page pipe: the copy blocks on it once full, so it is killed within a few
            # events of the 90 % one, not a pipe's worth of progress later.
            read_end, write_end = os.pipe()
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
            proc = subprocess.Popen(cmd, env=self.env, stdout=write_end)
            os.close(write_end)
            with os.fdopen(read_end, "r") as out:
                for line in out:
                    event = json.loads(line)
                    if event["event"] == "progress" and event["done"] >= 0.9 * self.size:
                        break
                proc.send_signal(signal.SIGKILL)
        else:
            proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.9 * full)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        start = time.perf_counter()
        again = subprocess.run(cmd, env=self.env, check=True, capture_output=True, text=True)
        took = time.perf_counter() - start
        self.check(client, direction)
        if client == "onward":
            (done,) = [e for e in map(json.loads, again.stdout.splitlines()) if e["event"] == "done"]
            return took, int(done["copied"])
        return took, self.size


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=parse_size, default=1 << 30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the file and downloads go (default: a temp dir)")
    parser.add_argument("--aws", default=None, help="the aws executable (awscli v1 from PyPI)")
    parser.add_argument("--smoke", action="store_true", help="16 MiB, 1 round: checks the bench runs")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.runs = 16 * MiB, 1
    print(precompile())
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="s3-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            return report(bench, args)
        finally:
            bench.close()


def report(bench: Bench, args: argparse.Namespace) -> int:
    clients = ["onward", "rclone"] + (["aws"] if bench.aws else [])
    if not bench.aws:
        print("aws s3 cp: not measured (awscli could not be installed)")
    if not shutil.which("rclone"):
        clients.remove("rclone")
        print("rclone: not measured (not installed)")
    cases = [(d, n) for d in ("up", "down") for n in (1, 4)]
    times: dict[tuple[str, str, int], list[float]] = {}
    for run in range(args.runs):
        order = clients[run % len(clients) :] + clients[: run % len(clients)]
        for direction, n in cases:
            for client in order:
                bench.reset(client, direction)
                took = bench.timed(bench.command(client, direction, n))
                bench.check(client, direction)
                times.setdefault((client, direction, n), []).append(took)
                print(f"round {run + 1}: {direction} x{n} {client} {took:.2f} s", flush=True)
    size_mib = bench.size / MiB
    print(f"\n{size_mib:.0f} MiB, {args.runs} round(s), moto on 127.0.0.1; medians (min-max)")
    print(f"{'case':14} {'client':8} {'median s':>9} {'MiB/s':>7} {'min-max':>13} {'onward/this':>11}")
    for direction, n in cases:
        ours = statistics.median(times[("onward", direction, n)])
        for client in clients:
            runs = times[(client, direction, n)]
            med = statistics.median(runs)
            print(
                f"{direction + ' x' + str(n):14} {client:8} {med:9.2f} {size_mib / med:7.1f} "
                f"{min(runs):6.2f}-{max(runs):<6.2f} {ours / med:11.2f}"
            )
    print("\nresume after a kill at 90 % (one connection)")
    print(f"{'case':8} {'client':8} {'re-run s':>9} {'re-sent MiB':>12} {'re-run/full':>12}")
    for direction in ("up", "down"):
        for client in clients:
            full = statistics.median(times[(client, direction, 1)])
            took, sent = bench.resume(client, direction, full)
            print(f"{direction:8} {client:8} {took:9.2f} {sent / MiB:12.1f} {took / full:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

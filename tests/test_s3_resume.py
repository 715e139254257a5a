"""S3 resume details through the real CLI against moto (tests/s3_server.py).

A killed upload's journal names every part the store acknowledged (so a resume reads none of
them again), even with checkpoints far apart; a store that rejects the clock gives one clear
line; a download from a versioned bucket resumes on the version it began with, and an object
replaced between runs is fetched again from its start, never stitched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import xxhash

from onward.core.s3 import read_s3_records
from s3_server import Store, done_event, kill_when, progress_at, run, s3_env, s3_store

__all__ = ["s3_store"]  # the session fixture, used by name

PART = 32 * 1024
SIZE = 191 * PART + 1234


def test_every_acknowledged_part_is_journaled_before_a_checkpoint(tmp_path: Path, s3_store: Store) -> None:
    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    src = tmp_path / "f.bin"
    data = os.urandom(SIZE)
    src.write_bytes(data)
    # Checkpoints far apart (the default 256 MiB): only the part records can say what was sent.
    args = [str(src), f"s3://{bucket}/k", "--part-size", str(PART)]
    kill_when(env, args, progress_at(SIZE // 8))
    (journal,) = sorted((tmp_path / "state").rglob("*.onward-journal"))
    binding, parts = read_s3_records(journal.read_bytes())
    assert binding is not None
    listed = s3_store.client.list_parts(Bucket=bucket, Key="k", UploadId=binding.upload_id)["Parts"]
    held = {int(item["PartNumber"]) for item in listed}
    assert len(held) >= SIZE // 8 // PART - 1
    assert len(held - set(parts)) <= 1  # at most the part whose answer the kill cut off
    for number, part in parts.items():
        assert part.digest == xxhash.xxh3_128_hexdigest(data[(number - 1) * PART : number * PART])
    result = run(env, "copy", "--json", *args)
    assert result.returncode == 0, result.stderr
    assert done_event(result.stdout)["resumed_from"] >= len(held - {max(held)}) * PART
    assert s3_store.get(bucket, "k") == data


def test_clock_skew_is_one_clear_line(tmp_path: Path, s3_store: Store) -> None:
    """moto does not check request times; a clock the store rejects is played by one that
    answers every request with RequestTimeTooSkewed (403), as AWS does."""
    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    (tmp_path / "f").write_bytes(b"x" * 100)
    skewed = Path(tmp_path / "skew.py")
    skewed.write_text(SKEW_SERVER)
    server = subprocess.Popen(
        [sys.executable, str(skewed)], stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
        for args in ([str(tmp_path / "f"), f"s3://{bucket}/k"], [f"s3://{bucket}/k", str(tmp_path / "g")]):
            result = run(env, "copy", *args, "--retries", "0")
            assert result.returncode != 0
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, result.stderr
            assert "clock" in lines[0] and f"s3://{bucket}/k" in lines[0], lines[0]
            assert "Traceback" not in result.stderr
    finally:
        server.kill()
        server.wait()
    assert not (tmp_path / "g").exists()


def checkpoint_at(done: int) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["event"] == "checkpoint" and event["committed"] >= done


SKEW_SERVER = """
import http.server, sys, threading
BODY = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>RequestTimeTooSkewed</Code>'
        b'<Message>The difference between the request time and the current time is too large.</Message>'
        b'<MaxAllowedSkewMilliseconds>900000</MaxAllowedSkewMilliseconds></Error>')
class Skewed(http.server.BaseHTTPRequestHandler):
    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(BODY)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(BODY)
    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = answer
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Skewed)
print(server.server_address[1], flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.read()
"""


def test_versioned_download_resumes_on_its_version_and_never_stitches(
    tmp_path: Path, s3_store: Store
) -> None:
    env, bucket = s3_env(tmp_path, s3_store), s3_store.bucket()
    s3_store.client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = os.urandom(24 * 1024 * 1024)
    version = s3_store.client.put_object(Bucket=bucket, Key="o", Body=first)["VersionId"]
    dst = tmp_path / "o"
    args = [f"s3://{bucket}/o", str(dst), "--chunk-size", "512K", "--checkpoint-bytes", "512K"]
    kill_when(env, args, checkpoint_at(4 << 20))
    (journal,) = tmp_path.glob("o.onward-journal")
    assert version.encode() in journal.read_bytes()  # the identity names the version
    # Resumed on the same version: the bytes already there are kept.
    result = run(env, "copy", "--json", *args)
    assert result.returncode == 0, result.stderr
    assert done_event(result.stdout)["resumed_from"] >= 4 << 20
    assert dst.read_bytes() == first
    # Replaced by a new version (same size) between runs: fetched again from the start.
    dst.unlink()
    kill_when(env, args, checkpoint_at(4 << 20))
    second = os.urandom(len(first))
    s3_store.client.put_object(Bucket=bucket, Key="o", Body=second)
    result = run(env, "copy", "--json", *args)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert done_event(result.stdout)["resumed_from"] == 0, events
    assert dst.read_bytes() == second

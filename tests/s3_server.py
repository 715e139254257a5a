"""A real S3 wire-protocol server for the tests: moto's ``ThreadedMotoServer`` on 127.0.0.1.

It runs in the test process, on an ephemeral port, and is reached through signed HTTP by
the real CLI in a subprocess. Its state is in memory, which lets a test play the store that
loses or replaces a part, expires an upload or completes one after its client was killed.
Credentials given to the CLI are distinctive strings, so a test can prove they never leak.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ACCESS_KEY = "AKIAONWARDTESTKEY777"
SECRET_KEY = "onward-test-secret-Zq9vX3kP0wL8"
SECRETS = (ACCESS_KEY, SECRET_KEY)
PART_MIN = 4096  # the store's minimum part size in the tests (S3's is 5 MiB)


class Store:
    """The running server and a boto3 client to arrange and inspect its state."""

    def __init__(self, endpoint: str) -> None:
        import boto3

        self.endpoint = endpoint
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="arrange",
            aws_secret_access_key="arrange",
            region_name="us-east-1",
        )

    def bucket(self) -> str:
        name = "b-" + uuid.uuid4().hex[:12]
        self.client.create_bucket(Bucket=name)
        return name

    def get(self, bucket: str, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())

    def uploads(self, bucket: str) -> list[dict[str, Any]]:
        return list(self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))

    def backend_upload(self, bucket: str, upload_id: str) -> Any:
        """moto's own record of a multipart upload (to lose a part, as a store might)."""
        from moto.s3.models import s3_backends

        return s3_backends["123456789012"]["aws"].buckets[bucket].multiparts[upload_id]


@pytest.fixture(scope="session")
def s3_store() -> Iterator[Store]:
    server_module = pytest.importorskip("moto.server", reason="moto (the test extra) is not installed")
    import moto.s3.models

    moto.s3.models.S3_UPLOAD_PART_MIN_SIZE = PART_MIN  # type: ignore[attr-defined]
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        port = server._server.server_port
        yield Store(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


def s3_env(tmp_path: Path, store: Store, **extra: str) -> dict[str, str]:
    """The environment of an onward run: credentials and endpoint as AWS CLI users set them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_STATE_HOME=str(tmp_path / "state"),
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_ENDPOINT_URL=store.endpoint,
        AWS_DEFAULT_REGION="us-east-1",
        ONWARD_S3_MIN_PART_SIZE=str(PART_MIN),
    )
    env.update(extra)
    return env


def run(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real CLI; its output never holds a credential."""
    proc = subprocess.run(
        [sys.executable, "-m", "onward", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert_no_secret(proc.stdout + proc.stderr)
    return proc


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a credential leaked: {text[-500:]}"


def kill_when(env: dict[str, str], args: list[str], stop: Callable[[dict[str, Any]], bool]) -> None:
    """Run ``onward copy --json ARGS`` and SIGKILL it at the first event ``stop`` accepts.

    stdout is a one-page pipe that the copy blocks on once full, so it cannot run more
    than a few events ahead of what the test has read: it is killed where the test says.
    """
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen(
        [sys.executable, "-m", "onward", "copy", "--json", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=write_end,
        stderr=subprocess.PIPE,
    )
    os.close(write_end)
    seen = False
    try:
        with os.fdopen(read_end, "r") as out:
            for line in out:
                assert_no_secret(line)
                if stop(json.loads(line)):
                    seen = True
                    break
            proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=30)
    assert_no_secret(err.decode())
    assert seen and proc.returncode == -signal.SIGKILL, f"the copy ended before the kill: {err.decode()}"


def progress_at(done: int) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["event"] == "progress" and event["done"] >= done


def done_event(stdout: str) -> dict[str, Any]:
    events = [json.loads(line) for line in stdout.splitlines()]
    done: dict[str, Any]
    (done,) = [e for e in events if e["event"] == "done"]
    return dict(done)

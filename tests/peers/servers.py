"""The servers and clients of the upload tests and benchmarks, as real processes on 127.0.0.1.

``OnwardServer`` runs ``onward serve`` (the real CLI) on a free port; ``TusNode`` runs
@tus/server with @tus/file-store (``tus_node_server.mjs``), the reference tus server our
upload client is tested and benchmarked against; ``tus_js_upload`` and ``start_tus_js`` run
tus-js-client (``tus_upload.mjs``); ``missing()`` says why the Node peers cannot run here
(``npm ci --prefix tests/peers`` not run, no node), or None. Every wait here is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

from http_servers import HOST, free_port, stop_process, wait_for_port

PEERS = Path(__file__).resolve().parent
NODE = shutil.which("node") or "/usr/bin/node"
NODE_PACKAGES = ("tus-js-client", "@tus/server", "@tus/file-store")


def missing() -> str | None:
    """Why the Node peers cannot run here, or None when they can."""
    if not os.access(NODE, os.X_OK):
        return "node is not installed"
    modules = PEERS / "node_modules"
    if not all((modules / name / "package.json").exists() for name in NODE_PACKAGES):
        return "tests/peers is not installed (npm ci --prefix tests/peers)"
    return None


def state_env(state: Path) -> dict[str, str]:
    """The environment of an onward run whose upload journals go to ``state``."""
    return {**os.environ, "XDG_STATE_HOME": str(state)}


def copy_command(src: Path, url: str, *extra: str) -> list[str]:
    """``onward copy SRC URL`` in 64 KiB chunks (an upload long enough to be stopped mid-way), --json."""
    return [sys.executable, "-m", "onward", "copy", str(src), url, "--chunk-size", "64K", "--json", *extra]


def start_copy(src: Path, url: str, state: Path, *extra: str, pipe: bool = False) -> subprocess.Popen[bytes]:
    """``copy_command`` in the background, its output discarded (or piped with ``pipe``)."""
    out = subprocess.PIPE if pipe else subprocess.DEVNULL
    return subprocess.Popen(copy_command(src, url, *extra), env=state_env(state), stdout=out, stderr=out)


def run_copy(
    src: Path, url: str, state: Path, *extra: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``copy_command`` to the end."""
    return subprocess.run(
        copy_command(src, url, *extra),
        env=state_env(state),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def events(out: str) -> list[dict[str, object]]:
    """The JSON events of a ``--json`` run's output."""
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def done_event(out: str) -> dict[str, Any]:
    found = [e for e in events(out) if e.get("event") == "done"]
    assert found, out
    return found[-1]


class ServerProcess:
    """A server process listening on ``port``; ``start()`` (again after ``kill()``, on the
    same port and directory) and ``stop()``, or use ``with ....start()``."""

    proc: subprocess.Popen[bytes] | None = None
    port = 0

    def start(self) -> Any:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/files/"

    @property
    def origin(self) -> str:
        return f"http://{HOST}:{self.port}"

    def kill(self) -> None:
        """SIGKILL: no chance to flush, sync or say goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        stop_process(self.proc)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def held(self) -> int:
        """Bytes of upload data the server's directory holds."""
        raise NotImplementedError

    def wait_for_bytes(self, at_least: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.held() >= at_least:
                return
            time.sleep(0.02)
        raise AssertionError(f"the server held only {self.held()} bytes after {timeout} s")

    def wait_until_still(self, quiet: float = 0.3, timeout: float = 10.0) -> None:
        """Until ``held()`` has not changed for ``quiet`` seconds: a request the server was
        handling when its client died may still be writing what arrived."""
        deadline = time.monotonic() + timeout
        last, since = self.held(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = self.held()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
        raise AssertionError(f"the server was still writing after {timeout} s")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class OnwardServer(ServerProcess):
    """``python -m onward serve DIR --port P`` with ``extra`` options."""

    def __init__(
        self, directory: Path, *extra: str, log: Path | None = None, prefix: tuple[str, ...] = ()
    ) -> None:
        self.directory = directory
        self.extra = list(extra)
        self.prefix = list(prefix)  # e.g. strace and its options
        self.port = free_port()
        self.log = log or directory.parent / f"onward-serve-{self.port}.log"

    def start(self) -> OnwardServer:
        argv = [sys.executable, "-m", "onward", "serve", str(self.directory), "--port", str(self.port)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, *argv, "--log-level", "warning", *self.extra],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        wait_for_port(self.port, self.proc, timeout=30)
        return self

    def endpoint(self, protocol: str) -> str:
        """The URL ``onward copy`` uploads to: ``tus+http://…`` or ``ietf+http://…``."""
        return f"{protocol}+{self.url}"

    def files(self) -> list[Path]:
        """Finished uploads (promoted as DIR/ID beside DIR/ID.json)."""
        return sorted(p for p in self.directory.iterdir() if p.is_file() and p.suffix != ".json")

    def held(self) -> int:
        """Bytes the directory holds, finished or not (anything under it but metadata)."""
        return sum(p.stat().st_size for p in self.directory.rglob("*") if p.is_file() and p.suffix != ".json")


class TusNode(ServerProcess):
    """@tus/server + @tus/file-store serving ``store`` at http://127.0.0.1:PORT/files/: one data
    file per upload (plus ``ID.json``); ``delay_ms`` holds every PATCH that long, so that a test
    can stop a client mid-way at a known pace."""

    def __init__(self, store: Path, *, delay_ms: int = 0, port: int | None = None) -> None:
        self.store = store
        self.delay_ms = delay_ms
        self.port = port or free_port()

    @property
    def endpoint(self) -> str:
        """The URL ``onward copy`` uploads to."""
        return f"tus+{self.url}"

    def start(self) -> TusNode:
        self.store.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [NODE, str(PEERS / "tus_node_server.mjs"), str(self.store), str(self.port), str(self.delay_ms)],
            cwd=PEERS,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc)
        return self

    def uploads(self) -> dict[str, Path]:
        """Upload id -> its data file."""
        out = {}
        for meta in sorted(self.store.glob("*.json")):
            data = self.store / meta.stem
            if data.exists():
                out[meta.stem] = data
        return out

    def held(self) -> int:
        return sum(p.stat().st_size for p in self.uploads().values())

    def info(self, upload_id: str) -> dict[str, Any]:
        with contextlib.suppress(OSError, ValueError):
            return dict(json.loads((self.store / f"{upload_id}.json").read_text()))
        return {}


def tus_js_argv(endpoint: str, path: Path, *options: str) -> list[str]:
    return [NODE, str(PEERS / "tus_upload.mjs"), "--endpoint", endpoint, "--file", str(path), *options]


def tus_js_upload(
    endpoint: str,
    path: Path,
    *options: str,
    timeout: float = 300,
) -> list[dict[str, Any]]:
    """Run tus-js-client to the end; its JSON events. Raises if it fails."""
    done = subprocess.run(
        tus_js_argv(endpoint, path, *options), capture_output=True, timeout=timeout, cwd=PEERS
    )
    events = [json.loads(line) for line in done.stdout.decode().splitlines() if line.startswith("{")]
    if done.returncode != 0 or not events or events[-1]["event"] != "done":
        raise AssertionError(
            f"tus-js-client failed ({done.returncode}): {events[-3:]} {done.stderr[-2000:]!r}"
        )
    return events


def start_tus_js(endpoint: str, path: Path, *options: str) -> subprocess.Popen[bytes]:
    argv = tus_js_argv(endpoint, path, *options)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=PEERS)


def read_events_until(
    proc: subprocess.Popen[bytes], wanted: str, timeout: float = 120
) -> list[dict[str, Any]]:
    """Read the client's JSON lines until one has event ``wanted``, the client ends, or ``timeout``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    events: list[dict[str, Any]] = []
    buffer = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
                if events[-1]["event"] == wanted:
                    return events
    return events

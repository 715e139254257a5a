"""Shared fixtures of the onward test suite."""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    import httpx

    from peers.servers import OnwardServer

# --- CLI subprocess fixtures (tests/test_cli.py, tests/test_bad_input.py) -------------------

ONWARD_CLI = [sys.executable, "-m", "onward"]

# What the CLI fixtures hand a test, named for the tests' annotations.
OnwardCli = Callable[..., subprocess.CompletedProcess[str]]
ParseEvents = Callable[[str], list[dict[str, Any]]]
KillMidway = Callable[..., int]


class RandomFile(Protocol):
    def __call__(self, path: Path, size: int, seed: int = 0) -> bytes: ...


@pytest.fixture
def onward_cli() -> OnwardCli:
    """Run the real CLI: ``onward_cli("copy", src, dst, prefix=[...], timeout=30)``."""

    def run(
        *args: str | os.PathLike[str],
        prefix: Sequence[str] = (),
        timeout: float = 60,
        stdin: Any = subprocess.DEVNULL,
        cwd: str | os.PathLike[str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, *ONWARD_CLI, *(os.fspath(arg) for arg in args)],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
        )

    return run


@pytest.fixture
def onward_random_file() -> RandomFile:
    """Write ``size`` reproducible random bytes to ``path``; returns them."""

    def make(path: Path, size: int, seed: int = 0) -> bytes:
        data = random.Random(f"{path.name}:{size}:{seed}").randbytes(size)
        path.write_bytes(data)
        return data

    return make


def onward_parse_events(stdout: str) -> list[dict[str, Any]]:
    """Every line of ``--json`` output as an object; each must carry an ``event`` field."""
    events = []
    for line in stdout.splitlines():
        obj = json.loads(line)
        assert isinstance(obj, dict) and isinstance(obj.get("event"), str), line
        events.append(obj)
    return events


@pytest.fixture
def onward_events() -> ParseEvents:
    return onward_parse_events


@pytest.fixture
def onward_kill_midway() -> KillMidway:
    """Start ``onward copy --json`` with 64 KiB chunks, each checkpointed, and SIGKILL it
    once ``at`` bytes are committed; returns the committed count last reported.

    stdout is a pipe shrunk to one page that the copy blocks on once it is full, so the
    copy cannot run more than a few dozen chunks ahead of what the test has read: it is
    killed mid-way every time, whatever the speed of the disk.
    """

    def kill(src: Path, dst: Path, *extra: str, at: int = 1 << 20) -> int:
        read_end, write_end = os.pipe()
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
        args: list[str | os.PathLike[str]]
        args = ["copy", "--json", "--chunk-size", "64K", "--checkpoint-bytes", "64K", *extra, src, dst]
        proc = subprocess.Popen(
            [*ONWARD_CLI, *(os.fspath(arg) for arg in args)],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
        )
        os.close(write_end)
        committed = -1
        try:
            with os.fdopen(read_end, "r") as out:
                for line in out:
                    event = json.loads(line)
                    if event["event"] == "checkpoint":
                        committed = event["committed"]
                        if committed >= at:
                            break
                proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, f"copy ended before the kill: {err.decode()}"
        assert committed >= at, f"no checkpoint reached {at} bytes: {err.decode()}"
        return committed

    return kill


@pytest.fixture(scope="session")
def onward_no_dac_prefix(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A command prefix under which file permission bits apply: nothing for a normal user;
    for root, ``setpriv`` dropping CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH. Skips when
    neither works (checked by reading a mode-000 file)."""
    probe = tmp_path_factory.mktemp("dac-probe") / "locked"
    probe.write_bytes(b"x")
    probe.chmod(0)
    prefix = [] if os.geteuid() != 0 else ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    try:
        proc = subprocess.run(
            [*prefix, sys.executable, "-c", f"open({str(probe)!r}).close()"], capture_output=True, timeout=30
        )
    except OSError as exc:
        pytest.skip(f"running as root and cannot drop DAC capabilities ({exc}): permission bits do not apply")
    finally:
        probe.chmod(0o600)
    if proc.returncode == 0 or b"PermissionError" not in proc.stderr:
        pytest.skip(
            "cannot run without CAP_DAC_OVERRIDE here (root without a working setpriv): "
            "permission bits do not apply"
        )
    return prefix


# --- end of CLI subprocess fixtures ---------------------------------------------------------


# --- upload server fixtures (tests/test_server*.py) --------------------------------------------


@pytest.fixture
def updir(tmp_path: Path) -> Path:
    """The directory ``onward serve`` stores uploads in."""
    path = tmp_path / "uploads"
    path.mkdir()
    return path


@pytest.fixture
def server(updir: Path) -> Iterator[OnwardServer]:
    """``onward serve updir`` on a free port (``peers.servers.OnwardServer``)."""
    from peers.servers import OnwardServer

    with OnwardServer(updir).start() as srv:
        yield srv


@pytest.fixture
def client(server: OnwardServer) -> Iterator[httpx.Client]:
    """An ``httpx.Client`` for ``server``."""
    import httpx

    with httpx.Client(base_url=server.origin, timeout=30) as c:
        yield c

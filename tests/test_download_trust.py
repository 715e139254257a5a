"""Issue 13 for downloads: a downloaded partial damaged between runs is found before the final
name appears, and only its damaged chunks are downloaded again (a real nginx on 127.0.0.1, the
real CLI killed with SIGKILL mid-download)."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from http_servers import Nginx, nginx_binary

if TYPE_CHECKING:
    from conftest import KillMidway, OnwardCli, ParseEvents

MiB = 1 << 20
SIZE = 4 * MiB
CHUNK = 64 * 1024  # what onward_kill_midway copies with


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (scripts/test installs it)")
    base = tmp_path_factory.mktemp("nginx-trust")
    (base / "www").mkdir()
    with Nginx(base / "www", base / "work", rate="8m") as server:
        yield server


@pytest.mark.parametrize("damage", ["none", "chunk-0", "touch"])
def test_a_download_damaged_between_runs_is_repaired_by_the_resume(
    nginx: Nginx,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    onward_kill_midway: KillMidway,
    onward_cli: OnwardCli,
    onward_events: ParseEvents,
    damage: str,
) -> None:
    for name in [k for k in os.environ if "proxy" in k.lower()]:  # requests go to 127.0.0.1 only
        monkeypatch.delenv(name)
    data = random.Random(f"trust:{damage}").randbytes(SIZE)
    (nginx.root / f"{damage}.bin").write_bytes(data)
    url, dst = nginx.url(f"slow/{damage}.bin"), tmp_path / "dst.bin"
    committed = onward_kill_midway(url, dst, at=MiB)
    partial = dst.with_name(dst.name + ".onward-partial")
    if damage != "none":
        before = partial.stat()
        with open(partial, "r+b") as fh:
            fh.seek(1000)
            fh.write(bytes(b ^ 0xFF for b in data[1000:1016]))
        if damage == "touch":
            os.utime(partial, ns=(before.st_atime_ns, before.st_mtime_ns))
    proc = onward_cli("copy", "--json", "--chunk-size", "64K", url, dst)
    assert proc.returncode == 0, proc.stderr
    events = onward_events(proc.stdout)
    notices = [e["message"] for e in events if e["event"] == "notice"]
    done = events[-1]
    assert done["event"] == "done"
    assert dst.read_bytes() == data
    if damage != "none":
        assert any("read back its" in n and "1 damaged" in n for n in notices), notices
        # Only the damaged chunk is downloaded again besides what was never committed.
        assert done["resumed_from"] >= committed - CHUNK
        assert done["rechecked"] >= committed

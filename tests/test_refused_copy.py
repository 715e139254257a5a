"""A copy that is refused leaves nothing new behind (issue 19), through the real CLI.

The partial copy beside the destination used to be created when the sink opened, before the
engine read the journal; a copy then refused because of that journal (a newer format, another
copy's) left an empty ``NAME.onward-partial`` that ``onward status`` and ``ls`` showed as an
unfinished copy. Now a partial this run created and never used is removed when it closes.
"""

from __future__ import annotations

import os
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

from onward.core.identity import Identity
from onward.core.journal import FORMAT_VERSION, MAGIC, Header, encode_start

Cli = Callable[..., subprocess.CompletedProcess[str]]


def names(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def refused(cli: Cli, root: Path, journal: bytes) -> subprocess.CompletedProcess[str]:
    """Copy ``root/src.bin`` to ``root/dst.bin`` beside ``journal``; check that it was refused
    with one clear line and that the directory holds exactly what it held before."""
    src, dst = root / "src.bin", root / "dst.bin"
    src.write_bytes(os.urandom(300_000))
    (root / "dst.bin.onward-journal").write_bytes(journal)
    before = names(root)
    proc = cli("copy", src, dst)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("onward:"), proc.stderr
    assert not (root / "dst.bin.onward-partial").exists()
    assert not dst.exists()
    assert names(root) == before
    assert (root / "dst.bin.onward-journal").read_bytes() == journal  # kept for a newer onward
    return proc


def test_a_journal_of_a_newer_format_leaves_no_partial_behind(tmp_path: Path, onward_cli: Cli) -> None:
    newer = MAGIC + struct.pack("<HH", FORMAT_VERSION + 1, 0) + b"records this onward cannot read"
    proc = refused(onward_cli, tmp_path, newer)
    assert "newer" in proc.stderr


def test_a_journal_of_a_copy_to_another_destination_leaves_no_partial_behind(
    tmp_path: Path, onward_cli: Cli
) -> None:
    other = Header(
        source=str(tmp_path / "src.bin"),
        destination=str(tmp_path / "elsewhere.bin"),
        identity=Identity("local", 300_000, {"dev": 1, "ino": 2, "mtime_ns": 3, "ctime_ns": 4}),
        chunk_size=1 << 20,
        total_size=300_000,
        created=0.0,
    )
    proc = refused(onward_cli, tmp_path, encode_start(other))
    assert "elsewhere.bin" in proc.stderr and "--restart" in proc.stderr

"""Bad input through the real CLI: one clear line on stderr, a non-zero exit, and nothing lost.

Every refusal is checked the same way: the exit code (1 for a failure, 2 for a usage
error), exactly one line on stderr that starts with ``onward:`` and names the path and
the cause, no traceback anywhere, and every file in the test directory exactly as it was
(the source, an existing destination, and a partial copy and journal holding progress).
Journal and partial damage that onward can repair must instead end in an identical copy.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from onward.core.journal import frames
from partials import intact_unclaimed

if TYPE_CHECKING:
    from conftest import KillMidway, OnwardCli, ParseEvents, RandomFile

MiB = 1 << 20
SIZE = 8 * MiB
CHUNK = 64 * 1024  # the chunk size onward_kill_midway copies with
PREAMBLE = 12  # magic (8) + version (u16) + reserved (u16)
CHUNK_RECORD = 4 + 1 + 28 + 4  # length, kind, (index u64, length u32, digest 16), crc32


def assert_one_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The exit code, and exactly one ``onward:`` line on stderr that contains every needle."""
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.returncode == code, f"exit {proc.returncode}, stderr: {proc.stderr!r}"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {proc.stderr!r}"
    line = lines[0]
    assert line.startswith("onward:"), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def snapshot(root: Path) -> dict[str, Any]:
    """Everything under ``root``: kind, mode, mtime and, for regular files, the bytes."""
    state: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
        state[str(path.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_mode, st.st_mtime_ns, content)
    return state


def journal_of(dst: Path) -> Path:
    return dst.with_name(dst.name + ".onward-journal")


def partial_of(dst: Path) -> Path:
    return dst.with_name(dst.name + ".onward-partial")


@pytest.fixture
def interrupted(
    tmp_path: Path, onward_random_file: RandomFile, onward_kill_midway: KillMidway
) -> tuple[Path, Path, bytes]:
    """An 8 MiB copy killed with SIGKILL after 1 MiB was committed: (source, destination, data)."""
    src, dst = tmp_path / "src.bin", tmp_path / "out" / "dst.bin"
    dst.parent.mkdir()
    data = onward_random_file(src, SIZE)
    onward_kill_midway(src, dst, at=MiB)
    assert partial_of(dst).stat().st_size >= MiB
    assert journal_of(dst).stat().st_size > PREAMBLE
    assert not dst.exists()
    return src, dst, data


# -- the source --------------------------------------------------------------------------


def test_missing_source(tmp_path: Path, onward_cli: OnwardCli) -> None:
    before = snapshot(tmp_path)
    proc = onward_cli("copy", tmp_path / "absent", tmp_path / "dst")
    assert_one_error(proc, 1, str(tmp_path / "absent"), "No such file or directory")
    assert snapshot(tmp_path) == before


def test_source_is_a_directory(tmp_path: Path, onward_cli: OnwardCli) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "file").write_bytes(b"content")
    before = snapshot(tmp_path)
    proc = onward_cli("copy", tmp_path / "tree", tmp_path / "dst")
    assert_one_error(proc, 1, str(tmp_path / "tree"), "is a directory")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("how", ["same path", "hard link", "symlink"])
def test_source_and_destination_are_the_same_file(
    tmp_path: Path, onward_cli: OnwardCli, onward_random_file: RandomFile, how: str
) -> None:
    src = tmp_path / "file.bin"
    onward_random_file(src, 100_000)
    dst = {"same path": src, "hard link": tmp_path / "hard", "symlink": tmp_path / "soft"}[how]
    if how == "hard link":
        os.link(src, dst)
    elif how == "symlink":
        dst.symlink_to(src.name)
    before = snapshot(tmp_path)
    proc = onward_cli("copy", src, dst)
    assert_one_error(proc, 1, str(src), str(dst), "same file")
    assert snapshot(tmp_path) == before


def test_copy_into_the_sources_own_directory_is_the_same_file(
    tmp_path: Path, onward_cli: OnwardCli, onward_random_file: RandomFile
) -> None:
    """``onward copy DIR/file DIR`` lands on DIR/file itself: the same file, refused."""
    src = tmp_path / "file.bin"
    onward_random_file(src, 10_000)
    before = snapshot(tmp_path)
    proc = onward_cli("copy", src, tmp_path)
    assert_one_error(proc, 1, str(src), "same file")
    assert snapshot(tmp_path) == before


def test_source_gone_after_an_interruption_keeps_the_progress(
    tmp_path: Path, interrupted: tuple[Path, Path, bytes], onward_cli: OnwardCli, onward_events: ParseEvents
) -> None:
    src, dst, data = interrupted
    away = tmp_path / "away.bin"
    src.rename(away)
    before = snapshot(tmp_path)
    proc = onward_cli("copy", src, dst)
    assert_one_error(proc, 1, str(src), "No such file or directory")
    assert snapshot(tmp_path) == before
    # Back under its name (its ctime changed): the committed chunks are re-checked and kept.
    away.rename(src)
    proc = onward_cli("copy", "--json", src, dst)
    assert proc.returncode == 0, proc.stderr
    done = onward_events(proc.stdout)[-1]
    assert done["event"] == "done" and done["resumed_from"] >= MiB
    assert dst.read_bytes() == data


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_character_device_source_is_refused(tmp_path: Path, onward_cli: OnwardCli, device: str) -> None:
    proc = onward_cli("copy", device, tmp_path / "dst", timeout=20)
    assert_one_error(proc, 1, device, "device", "regular files only")
    assert list(tmp_path.iterdir()) == []


def test_fifo_source_is_refused_without_hanging(tmp_path: Path, onward_cli: OnwardCli) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    before = snapshot(tmp_path)
    # Nobody ever writes to the FIFO: opening it for reading would block forever.
    proc = onward_cli("copy", fifo, tmp_path / "dst", timeout=20)
    assert_one_error(proc, 1, str(fifo), "FIFO", "regular files only")
    assert snapshot(tmp_path) == before


def test_unreadable_source(
    tmp_path: Path, onward_cli: OnwardCli, onward_random_file: RandomFile, onward_no_dac_prefix: list[str]
) -> None:
    src = tmp_path / "secret.bin"
    data = onward_random_file(src, 100_000)
    src.chmod(0)
    try:
        before = snapshot(tmp_path)
        proc = onward_cli("copy", src, tmp_path / "dst", prefix=onward_no_dac_prefix)
        assert_one_error(proc, 1, str(src), "Permission denied", "permissions")
        assert snapshot(tmp_path) == before
    finally:
        src.chmod(0o600)
    assert src.read_bytes() == data


# -- the destination ---------------------------------------------------------------------


@pytest.mark.parametrize("trailing_slash", [False, True])
def test_destination_directory_missing(
    tmp_path: Path, onward_cli: OnwardCli, onward_random_file: RandomFile, trailing_slash: bool
) -> None:
    src = tmp_path / "file.bin"
    onward_random_file(src, 10_000)
    missing = tmp_path / "no" / "such"
    target = f"{missing}/" if trailing_slash else f"{missing}/dst.bin"
    before = snapshot(tmp_path)
    proc = onward_cli("copy", src, target)
    assert_one_error(proc, 1, str(missing), "does not exist")
    assert snapshot(tmp_path) == before


def test_destination_name_taken_by_a_directory(
    tmp_path: Path, onward_cli: OnwardCli, onward_random_file: RandomFile
) -> None:
    """``onward copy file.bin into/`` where ``into/file.bin`` is a directory: not replaced."""
    src = tmp_path / "file.bin"
    onward_random_file(src, 10_000)
    (tmp_path / "into" / "file.bin").mkdir(parents=True)
    (tmp_path / "into" / "file.bin" / "keep").write_bytes(b"keep me")
    before = snapshot(tmp_path)
    proc = onward_cli("copy", src, tmp_path / "into")
    assert_one_error(proc, 1, str(tmp_path / "into" / "file.bin"), "is a directory")
    assert snapshot(tmp_path) == before


def test_destination_directory_not_writable(
    tmp_path: Path, onward_cli: OnwardCli, onward_random_file: RandomFile, onward_no_dac_prefix: list[str]
) -> None:
    src = tmp_path / "file.bin"
    onward_random_file(src, 100_000)
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "dst.bin").write_bytes(b"the old destination")
    locked.chmod(0o555)
    try:
        before = snapshot(tmp_path)
        proc = onward_cli("copy", src, locked / "dst.bin", prefix=onward_no_dac_prefix)
        assert_one_error(proc, 1, str(locked / "dst.bin"), "Permission denied", "permissions")
        assert snapshot(tmp_path) == before
    finally:
        locked.chmod(0o755)
    assert (locked / "dst.bin").read_bytes() == b"the old destination"


def test_destination_directory_not_writable_at_promotion_keeps_the_finished_partial(
    tmp_path: Path,
    interrupted: tuple[Path, Path, bytes],
    onward_cli: OnwardCli,
    onward_events: ParseEvents,
    onward_no_dac_prefix: list[str],
) -> None:
    """The partial and journal already exist, so every chunk is copied; only the final
    rename is refused. The error says so, and the re-run promotes without copying again."""
    src, dst, data = interrupted
    dst.parent.chmod(0o555)
    try:
        proc = onward_cli("copy", src, dst, prefix=onward_no_dac_prefix)
        # A kill that landed during a write makes this resume read the partial back first, and
        # say so in a notice (docs/RELIABILITY.md): a notice, not a second error.
        lines = proc.stderr.splitlines()
        notices = [line for line in lines[:-1] if "read back its" in line and "all intact" in line]
        proc.stderr = "\n".join(line for line in lines if line not in notices) + "\n"
        assert_one_error(proc, 1, str(dst), "Permission denied", "permissions")
        assert not dst.exists()
        assert partial_of(dst).read_bytes() == data
        assert journal_of(dst).exists()
    finally:
        dst.parent.chmod(0o755)
    assert src.read_bytes() == data
    proc = onward_cli("copy", "--json", src, dst, prefix=onward_no_dac_prefix)
    assert proc.returncode == 0, proc.stderr
    done = onward_events(proc.stdout)[-1]
    assert done["event"] == "done" and done["resumed_from"] == SIZE and done["copied"] == 0
    assert dst.read_bytes() == data
    assert not partial_of(dst).exists() and not journal_of(dst).exists()


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for the test; skips unless this process may mount one."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    if shutil.which("mount") is None:
        pytest.skip("no mount command to make a small tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_says_how_much_more_keeps_progress_and_resumes(
    tmp_path: Path,
    small_tmpfs: Path,
    onward_cli: OnwardCli,
    onward_random_file: RandomFile,
    onward_events: ParseEvents,
) -> None:
    size, capacity = 5 * MiB, 2 * MiB
    src = tmp_path / "big.bin"
    data = onward_random_file(src, size)
    dst = small_tmpfs / "big.bin"
    opts = ("--chunk-size", "256K", "--checkpoint-bytes", "256K")
    proc = onward_cli("copy", *opts, src, dst)
    line = assert_one_error(proc, 1, str(dst), "No space left on device", "re-run")
    match = re.search(r"(\d+(?:\.\d+)?) (B|KiB|MiB) more needed", line)
    assert match, f"the message does not say how much more space is needed: {line!r}"
    needed = float(match[1]) * {"B": 1, "KiB": 1 << 10, "MiB": MiB}[match[2]]
    # At least what does not fit, at most the whole file (less what was committed).
    assert size - capacity - 0.05 * MiB <= needed < size, line
    assert src.read_bytes() == data
    assert partial_of(dst).stat().st_size > 0
    assert journal_of(dst).stat().st_size > PREAMBLE
    assert not dst.exists()

    subprocess.run(["mount", "-o", "remount,size=16m", str(small_tmpfs)], check=True)
    proc = onward_cli("copy", "--json", *opts, src, dst)
    assert proc.returncode == 0, proc.stderr
    done = onward_events(proc.stdout)[-1]
    assert done["event"] == "done"
    assert done["resumed_from"] > 0, "the re-run did not resume from the progress kept"
    assert done["resumed_from"] + done["copied"] == size
    assert dst.read_bytes() == data
    assert not partial_of(dst).exists() and not journal_of(dst).exists()


# -- the journal -------------------------------------------------------------------------


def intact_chunks(data: bytes, partial: Path) -> int:
    """Bytes of the whole 64 KiB chunks ``partial`` holds equal to ``data``'s."""
    held = partial.read_bytes()
    return sum(
        min(CHUNK, len(data) - at)
        for at in range(0, len(data), CHUNK)
        if at + min(CHUNK, len(data) - at) <= len(held) and held[at : at + CHUNK] == data[at : at + CHUNK]
    )


def header_end(journal: bytes) -> int:
    length: int
    (length,) = struct.unpack_from("<I", journal, PREAMBLE)
    return PREAMBLE + 5 + length + 4


def garble(raw: bytes, how: str) -> bytes:
    if how == "zeroed":
        return bytes(len(raw))
    if how == "random":
        return os.urandom(len(raw))
    if how == "3-bytes":
        return raw[:3]
    if how == "cut-in-preamble":
        return raw[:6]
    if how == "cut-in-header":
        return raw[: header_end(raw) - 10]
    assert how == "header-crc"
    bad = bytearray(raw)
    bad[header_end(raw) - 1] ^= 0xFF  # the header's CRC
    return bytes(bad)


@pytest.mark.parametrize(
    "how", ["zeroed", "random", "3-bytes", "cut-in-preamble", "cut-in-header", "header-crc"]
)
def test_garbled_journal_is_set_aside_and_the_same_command_finishes(
    interrupted: tuple[Path, Path, bytes], onward_cli: OnwardCli, onward_events: ParseEvents, how: str
) -> None:
    """A cron job never needs a human to type --restart because a sidecar was damaged: the
    journal goes to NAME.bad with one notice, the partial's chunks that still equal the source
    are kept, and the copy ends identical."""
    src, dst, data = interrupted
    journal = journal_of(dst)
    raw = journal.read_bytes()
    journal.write_bytes(garble(raw, how))
    garbled = journal.read_bytes()
    intact = intact_chunks(data, partial_of(dst))
    assert intact >= MiB
    proc = onward_cli("copy", "--json", "--chunk-size", "64K", src, dst)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    events = onward_events(proc.stdout)
    [notice] = [e["message"] for e in events if e["event"] == "notice"]
    assert str(journal) in notice and "unreadable" in notice and f"{journal}.bad" in notice, notice
    assert events[-1]["event"] == "done" and events[-1]["resumed_from"] == intact
    assert dst.read_bytes() == data
    assert not journal.exists() and not partial_of(dst).exists()
    assert Path(f"{journal}.bad").read_bytes() == garbled  # kept for a post-mortem, untouched


def test_journal_cut_in_its_chunk_records_is_a_torn_tail_and_resumes(
    tmp_path: Path, interrupted: tuple[Path, Path, bytes], onward_cli: OnwardCli, onward_events: ParseEvents
) -> None:
    src, dst, data = interrupted
    journal = journal_of(dst)
    raw = journal.read_bytes()
    ends = [end for kind, _, end in frames(raw) if kind == 2]  # the CHUNK records
    assert len(ends) >= 16
    kept = len(ends) // 2
    journal.write_bytes(raw[: ends[kept - 1] + CHUNK_RECORD // 2])  # cut inside the next record
    intact = intact_unclaimed(data, journal, partial_of(dst))  # the chunks of the records cut off, too
    proc = onward_cli("copy", "--json", src, dst)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    events = onward_events(proc.stdout)
    notices = [e["message"] for e in events if e["event"] == "notice"]
    assert any("tail" in n for n in notices), notices
    done = events[-1]
    assert done["event"] == "done"
    assert done["resumed_from"] == kept * CHUNK + intact  # the intact records are all kept
    assert done["resumed_from"] + done["copied"] == SIZE
    assert dst.read_bytes() == data


def test_journal_of_a_copy_from_another_source_is_refused(
    tmp_path: Path,
    interrupted: tuple[Path, Path, bytes],
    onward_cli: OnwardCli,
    onward_random_file: RandomFile,
) -> None:
    src, dst, _ = interrupted
    other = tmp_path / "other.bin"
    onward_random_file(other, SIZE)
    before = snapshot(tmp_path)
    proc = onward_cli("copy", other, dst)
    line = assert_one_error(proc, 1, str(dst), str(src), "--restart")
    assert "unfinished copy" in line
    assert snapshot(tmp_path) == before


def test_journal_of_a_copy_to_another_destination_is_refused(
    tmp_path: Path, interrupted: tuple[Path, Path, bytes], onward_cli: OnwardCli
) -> None:
    src, dst, _ = interrupted
    moved = dst.with_name("moved.bin")
    partial_of(dst).rename(partial_of(moved))
    journal_of(dst).rename(journal_of(moved))
    before = snapshot(tmp_path)
    proc = onward_cli("copy", src, moved)
    assert_one_error(proc, 1, str(journal_of(moved)), str(dst), "--restart")
    assert snapshot(tmp_path) == before


def test_journal_written_by_a_newer_format_is_refused(
    tmp_path: Path, interrupted: tuple[Path, Path, bytes], onward_cli: OnwardCli
) -> None:
    src, dst, _ = interrupted
    journal = journal_of(dst)
    raw = bytearray(journal.read_bytes())
    struct.pack_into("<H", raw, 8, 99)
    journal.write_bytes(bytes(raw))
    before = snapshot(tmp_path)
    proc = onward_cli("copy", src, dst)
    assert_one_error(proc, 1, str(journal), "newer", "99")
    assert snapshot(tmp_path) == before


# -- the partial copy, changed behind the journal's back ----------------------------------


def test_partial_deleted_behind_the_journal_still_ends_identical(
    interrupted: tuple[Path, Path, bytes], onward_cli: OnwardCli, onward_events: ParseEvents
) -> None:
    src, dst, data = interrupted
    partial_of(dst).unlink()
    proc = onward_cli("copy", "--json", src, dst)
    assert proc.returncode == 0, proc.stderr
    events = onward_events(proc.stdout)
    assert any("gone" in e["message"] for e in events if e["event"] == "notice"), events
    done = events[-1]
    assert done["event"] == "done" and done["resumed_from"] == 0 and done["copied"] == SIZE
    assert dst.read_bytes() == data
    assert not partial_of(dst).exists() and not journal_of(dst).exists()


def test_partial_truncated_behind_the_journal_recopies_the_missing_chunks(
    interrupted: tuple[Path, Path, bytes], onward_cli: OnwardCli, onward_events: ParseEvents
) -> None:
    src, dst, data = interrupted
    cut = 3 * CHUNK + 100
    os.truncate(partial_of(dst), cut)
    proc = onward_cli("copy", "--json", src, dst)
    assert proc.returncode == 0, proc.stderr
    events = onward_events(proc.stdout)
    assert any("shorter" in e["message"] for e in events if e["event"] == "notice"), events
    done = events[-1]
    assert done["event"] == "done"
    assert done["resumed_from"] == 3 * CHUNK  # the whole chunks still present
    assert done["resumed_from"] + done["copied"] == SIZE
    assert dst.read_bytes() == data


# -- the command line --------------------------------------------------------------------


def test_unknown_option_is_a_usage_error(
    tmp_path: Path, onward_cli: OnwardCli, onward_random_file: RandomFile
) -> None:
    src = tmp_path / "file.bin"
    onward_random_file(src, 1000)
    before = snapshot(tmp_path)
    proc = onward_cli("copy", "--frobnicate", src, tmp_path / "dst")
    assert_one_error(proc, 2, "--frobnicate", "unrecognized")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "args, needles",
    [
        (("--chunk-size", "abc"), ("--chunk-size", "abc")),
        (("--checkpoint-bytes", "lots"), ("--checkpoint-bytes", "lots")),
        (("--chunk-size", "1"), ("chunk size", "4 KiB")),
        (("--checkpoint-seconds", "0"), ("checkpoint seconds", "positive")),
        (("--retries", "-1"), ("retries", "negative")),
        (("--no-preserve=colour",), ("--no-preserve", "colour")),  # owner is one since --preserve
        (("--preserve=context",), ("--preserve", "context")),
        (("--verify", "slow"), ("--verify", "slow")),
    ],
)
def test_bad_option_value_is_a_usage_error(
    tmp_path: Path,
    onward_cli: OnwardCli,
    onward_random_file: RandomFile,
    args: tuple[str, ...],
    needles: tuple[str, ...],
) -> None:
    src = tmp_path / "file.bin"
    onward_random_file(src, 1000)
    before = snapshot(tmp_path)
    proc = onward_cli("copy", *args, src, tmp_path / "dst")
    assert_one_error(proc, 2, *needles)
    assert snapshot(tmp_path) == before


def test_copy_with_only_one_path_is_a_usage_error(
    tmp_path: Path, onward_cli: OnwardCli, onward_random_file: RandomFile
) -> None:
    src = tmp_path / "file.bin"
    onward_random_file(src, 1000)
    before = snapshot(tmp_path)
    proc = onward_cli("copy", src)
    assert_one_error(proc, 2, "source and a destination")
    assert snapshot(tmp_path) == before


def test_copy_with_no_path_is_a_usage_error(tmp_path: Path, onward_cli: OnwardCli) -> None:
    proc = onward_cli("copy", cwd=tmp_path)
    assert_one_error(proc, 2, "copy needs a source and a destination", "onward copy SRC [SRC...] DST")
    assert list(tmp_path.iterdir()) == []


def test_unknown_command_is_a_usage_error(tmp_path: Path, onward_cli: OnwardCli) -> None:
    proc = onward_cli("frobnicate", cwd=tmp_path)
    assert_one_error(proc, 2, "frobnicate", "invalid choice")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target", ["a file", "missing"])
def test_several_sources_into_a_non_directory(
    tmp_path: Path, onward_cli: OnwardCli, onward_random_file: RandomFile, target: str
) -> None:
    one, two = tmp_path / "one.bin", tmp_path / "two.bin"
    onward_random_file(one, 1000)
    onward_random_file(two, 1000)
    dst = tmp_path / "dst"
    if target == "a file":
        dst.write_bytes(b"not a directory")
    before = snapshot(tmp_path)
    proc = onward_cli("copy", one, two, dst)
    assert_one_error(proc, 2, str(dst), "not a directory")
    assert snapshot(tmp_path) == before

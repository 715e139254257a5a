"""The real ``onward`` command line, run as a subprocess on real files.

Interrupted copies are made by SIGKILL (``onward_kill_midway`` in conftest.py), so a
resume here starts from exactly what a crash leaves behind.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from onward import __version__
from onward.core.journal import decode
from partials import intact_unclaimed

if TYPE_CHECKING:
    from conftest import KillMidway, OnwardCli, ParseEvents, RandomFile

MiB = 1 << 20
SIZE = 8 * MiB
CHUNK = 64 * 1024  # the chunk size onward_kill_midway copies with
MTIME_NS = 1_000_000_000_123_456_789  # 2001-09-09, with nanoseconds


def journal_of(dst: Path) -> Path:
    return dst.with_name(dst.name + ".onward-journal")


def partial_of(dst: Path) -> Path:
    return dst.with_name(dst.name + ".onward-partial")


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.fixture
def interrupted(
    tmp_path: Path, onward_random_file: RandomFile, onward_kill_midway: KillMidway
) -> tuple[Path, Path, bytes, int]:
    """An 8 MiB copy killed with SIGKILL after 1 MiB was committed:
    (source, destination, data, bytes committed as last reported)."""
    src, dst = tmp_path / "src.bin", tmp_path / "out" / "dst.bin"
    dst.parent.mkdir()
    data = onward_random_file(src, SIZE)
    committed = onward_kill_midway(src, dst, at=MiB)
    assert not dst.exists()
    assert partial_of(dst).exists() and journal_of(dst).exists()
    return src, dst, data, committed


def finished(dst: Path) -> bool:
    return dst.is_file() and not partial_of(dst).exists() and not journal_of(dst).exists()


# -- help and version ---------------------------------------------------------------------


def test_version(onward_cli: OnwardCli) -> None:
    proc = onward_cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"onward {__version__}\n"


def test_help(onward_cli: OnwardCli) -> None:
    proc = onward_cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: onward")
    for word in ("copy", "status", "clean", "130"):
        assert word in proc.stdout


def test_copy_help(onward_cli: OnwardCli) -> None:
    proc = onward_cli("copy", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: onward copy")
    options = ("--restart", "--verify", "--no-preserve", "--json", "--chunk-size", "--checkpoint-seconds")
    for option in options:
        assert option in proc.stdout


def test_no_arguments_prints_usage_and_exits_2(onward_cli: OnwardCli) -> None:
    proc = onward_cli()
    assert proc.returncode == 2
    assert "usage: onward" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


# -- where copies land -------------------------------------------------------------------


def test_copy_into_an_existing_directory(
    tmp_path: Path, onward_cli: OnwardCli, onward_random_file: RandomFile
) -> None:
    src = tmp_path / "file.bin"
    data = onward_random_file(src, 3 * MiB + 7)
    into = tmp_path / "into"
    into.mkdir()
    proc = onward_cli("copy", src, into)
    assert proc.returncode == 0, proc.stderr
    assert (into / "file.bin").read_bytes() == data
    assert sorted(p.name for p in into.iterdir()) == ["file.bin"]


def test_several_sources_into_a_directory(
    tmp_path: Path, onward_cli: OnwardCli, onward_random_file: RandomFile
) -> None:
    sources = {f"f{i}.bin": onward_random_file(tmp_path / f"f{i}.bin", 100_000 * i) for i in range(3)}
    into = tmp_path / "into"
    into.mkdir()
    proc = onward_cli("copy", *(tmp_path / name for name in sources), into)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in into.iterdir()) == sorted(sources)
    for name, data in sources.items():
        assert (into / name).read_bytes() == data


def test_options_may_come_between_sources_and_destination(
    tmp_path: Path, onward_cli: OnwardCli, onward_random_file: RandomFile, onward_events: ParseEvents
) -> None:
    sources = [tmp_path / "a.bin", tmp_path / "b.bin"]
    data = [onward_random_file(path, 200_000) for path in sources]
    into = tmp_path / "into"
    into.mkdir()
    proc = onward_cli("copy", sources[0], "--json", sources[1], "--chunk-size", "64K", into)
    assert proc.returncode == 0, proc.stderr
    assert [(into / p.name).read_bytes() for p in sources] == data
    starts = [e for e in onward_events(proc.stdout) if e["event"] == "start"]
    assert [e["chunk_size"] for e in starts] == [65536, 65536]  # the options applied to both


def test_double_dash_ends_the_options(
    tmp_path: Path, onward_cli: OnwardCli, onward_random_file: RandomFile
) -> None:
    data = onward_random_file(tmp_path / "-dash", 100_000)
    proc = onward_cli("copy", "--", "-dash", "-out", cwd=tmp_path)  # as cp -- -dash -out
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "-out").read_bytes() == data
    proc = onward_cli("copy", "--verify", "none", "--", "-dash", "-out2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "-out2").read_bytes() == data


def test_an_unknown_flag_points_to_the_verbs_own_help(tmp_path: Path, onward_cli: OnwardCli) -> None:
    proc = onward_cli("copy", "--no-such-flag", tmp_path / "a", tmp_path / "b")
    assert proc.returncode == 2
    assert proc.stderr == "onward: unrecognized arguments: --no-such-flag (see 'onward copy --help')\n"
    proc = onward_cli("status", "--no-such-flag")
    assert proc.returncode == 2 and "(see 'onward status --help')" in proc.stderr


def test_capital_p_shows_progress_as_rsync_users_type_it(
    tmp_path: Path, onward_cli: OnwardCli, onward_random_file: RandomFile
) -> None:
    onward_random_file(tmp_path / "a.bin", 3 * MiB)
    proc = onward_cli("copy", "-P", tmp_path / "a.bin", tmp_path / "b.bin")
    assert proc.returncode == 0, proc.stderr
    assert "3.0 MiB of 3.0 MiB (100%)" in proc.stderr


def test_a_closed_stdout_does_not_stop_the_copy(tmp_path: Path, onward_random_file: RandomFile) -> None:
    data = onward_random_file(tmp_path / "a.bin", 32 * MiB)
    reader = subprocess.Popen(["head", "-n", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert reader.stdin is not None
    args = ["copy", "--json", "--chunk-size", "64K", "--checkpoint-bytes", "64K"]
    proc = subprocess.run(
        [sys.executable, "-m", "onward", *args, str(tmp_path / "a.bin"), str(tmp_path / "b.bin")],
        stdin=subprocess.DEVNULL,
        stdout=reader.stdin,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    reader.stdin.close()
    assert reader.stdout is not None
    assert json.loads(reader.stdout.read())["event"] == "start"
    assert reader.wait(timeout=10) == 0
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "b.bin").read_bytes() == data
    assert "standard output was closed; its lines stop here, the copy goes on" in proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


def test_expect_digest_and_the_old_checksum_spelling(
    tmp_path: Path, onward_cli: OnwardCli, onward_random_file: RandomFile
) -> None:
    import hashlib

    data = onward_random_file(tmp_path / "a.bin", 100_000)
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    proc = onward_cli("copy", "--expect-digest", digest, tmp_path / "a.bin", tmp_path / "b.bin")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    wrong = f"sha256:{hashlib.sha256(b'other').hexdigest()}"
    for old in (["--checksum", wrong], [f"--checksum={wrong}"]):  # still the expected digest
        proc = onward_cli("copy", *old, tmp_path / "a.bin", tmp_path / "c.bin")
        assert proc.returncode == 1, proc.stderr
        assert "--checksum ALG:HEX is now --expect-digest ALG:HEX" in proc.stderr
        assert not (tmp_path / "c.bin").exists()


def test_dry_run_of_a_file_says_copy_or_resume_and_writes_nothing(
    interrupted: tuple[Path, Path, bytes, int], onward_cli: OnwardCli, onward_events: ParseEvents
) -> None:
    src, dst, _, committed = interrupted
    listing = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in dst.parent.iterdir())
    proc = onward_cli("copy", "-n", "--json", src, dst)
    assert proc.returncode == 0, proc.stderr
    [plan, total] = onward_events(proc.stdout)
    assert (plan["action"], plan["path"]) == ("resume", str(dst))
    kept = int(plan["note"].split()[1])  # "at N of SIZE bytes": what the journal holds
    assert kept >= committed and plan["bytes"] == SIZE - kept == total["bytes"]
    fresh = dst.parent / "fresh.bin"
    proc = onward_cli("copy", "--dry-run", src, fresh)
    assert proc.returncode == 0 and proc.stdout == f"copy {fresh} (8.0 MiB)\n", proc.stderr
    assert sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in dst.parent.iterdir()) == listing


def test_dry_run_of_a_download_or_an_upload_sends_nothing(tmp_path: Path, onward_cli: OnwardCli) -> None:
    import socket

    (tmp_path / "a.bin").write_bytes(b"a" * 1000)
    with socket.socket() as closed:  # bound, not listening: any request would fail
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        down = onward_cli("copy", "-n", f"http://127.0.0.1:{port}/dir/x.iso", tmp_path)
        up = onward_cli("copy", "-n", tmp_path / "a.bin", f"tus+http://u:secret@127.0.0.1:{port}/files/")
    assert down.returncode == 0, down.stderr
    assert down.stdout.startswith(f"download {tmp_path / 'x.iso'} (from http://127.0.0.1:{port}/dir/x.iso")
    assert up.returncode == 0, up.stderr
    assert up.stdout.startswith("upload tus+http://") and "secret" not in up.stdout + up.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_bandwidth_limits_are_taken_as_rsync_and_curl_write_them(
    tmp_path: Path, onward_cli: OnwardCli, onward_random_file: RandomFile
) -> None:
    data = onward_random_file(tmp_path / "a.bin", 2 * MiB)
    for flag, value in (("--bwlimit", "1G"), ("--bwlimit", "1048576"), ("--limit-rate", "1000000000")):
        proc = onward_cli("copy", flag, value, tmp_path / "a.bin", tmp_path / "b.bin")
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "b.bin").read_bytes() == data
    for flag, value, why in (
        ("--bwlimit", "fast", "--bwlimit: not a size"),
        ("--limit-rate", "0", "the bandwidth limit must be at least 1 byte a second"),
    ):
        proc = onward_cli("copy", flag, value, tmp_path / "a.bin", tmp_path / "c.bin")
        assert proc.returncode == 2 and why in proc.stderr, proc.stderr
        assert not (tmp_path / "c.bin").exists()


# -- attributes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, keeps_mode, keeps_times",
    [
        (None, True, True),
        ("--no-preserve=mode", False, True),
        ("--no-preserve=timestamps", True, False),
        ("--no-preserve=mode,timestamps", False, False),
        ("--no-preserve=all", False, False),
    ],
)
def test_mode_and_mtime_preserved_unless_told_not_to(
    tmp_path: Path,
    onward_cli: OnwardCli,
    onward_random_file: RandomFile,
    flag: str | None,
    keeps_mode: bool,
    keeps_times: bool,
) -> None:
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    data = onward_random_file(src, 300_000)
    src.chmod(0o751)
    os.utime(src, ns=(MTIME_NS, MTIME_NS))
    began = time.time()
    proc = onward_cli("copy", *([flag] if flag else []), src, dst)
    assert proc.returncode == 0, proc.stderr
    assert dst.read_bytes() == data
    st = dst.stat()
    if keeps_mode:
        assert stat.S_IMODE(st.st_mode) == 0o751
    else:
        assert stat.S_IMODE(st.st_mode) == 0o666 & ~current_umask()
    if keeps_times:
        assert st.st_mtime_ns == MTIME_NS
    else:
        assert st.st_mtime_ns != MTIME_NS
        assert began - 5 <= st.st_mtime <= time.time() + 5


# -- interrupted copies ------------------------------------------------------------------


def test_existing_destination_is_replaced_only_at_the_end(
    tmp_path: Path, onward_cli: OnwardCli, onward_random_file: RandomFile, onward_kill_midway: KillMidway
) -> None:
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    data = onward_random_file(src, SIZE)
    old = onward_random_file(dst, 2 * MiB, seed=1)
    onward_kill_midway(src, dst, at=MiB)
    assert dst.read_bytes() == old, "the destination changed before the copy was complete"
    assert partial_of(dst).stat().st_size >= MiB
    proc = onward_cli("copy", src, dst)
    assert proc.returncode == 0, proc.stderr
    assert dst.read_bytes() == data
    assert finished(dst)


def test_json_fresh_copy(
    tmp_path: Path, onward_cli: OnwardCli, onward_random_file: RandomFile, onward_events: ParseEvents
) -> None:
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    data = onward_random_file(src, 3 * MiB + 12_345)
    proc = onward_cli("copy", "--json", "--chunk-size", "256K", "--checkpoint-bytes", "1M", src, dst)
    assert proc.returncode == 0, proc.stderr
    events = onward_events(proc.stdout)  # every line is a JSON object with an "event"
    kinds = [e["event"] for e in events]
    assert {"start", "progress", "checkpoint", "done"} <= set(kinds), kinds
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("done") == 1
    start, done = events[0], events[-1]
    assert start["total"] == len(data) and start["resumed_from"] == 0
    committed = [e["committed"] for e in events if e["event"] == "checkpoint"]
    assert committed == sorted(committed) and committed[-1] == len(data)
    assert done["resumed_from"] == 0
    assert done["copied"] == done["size"] == len(data)
    assert done["source"] == str(src) and done["destination"] == str(dst)
    assert dst.read_bytes() == data


def test_json_resume_after_kill(
    interrupted: tuple[Path, Path, bytes, int], onward_cli: OnwardCli, onward_events: ParseEvents
) -> None:
    src, dst, data, committed = interrupted
    proc = onward_cli("copy", "--json", src, dst)
    assert proc.returncode == 0, proc.stderr
    events = onward_events(proc.stdout)
    # Notices about the partial (a read-back after a kill mid-write) come before the start.
    [start], done = [e for e in events if e["event"] == "start"], events[-1]
    assert done["event"] == "done"
    assert done["resumed_from"] == start["resumed_from"]
    # Everything a checkpoint event reported before the kill is still there.
    assert done["resumed_from"] >= committed > 0
    assert done["resumed_from"] + done["copied"] >= SIZE
    assert done["copied"] < SIZE, "the resumed copy sent the whole file again"
    assert dst.read_bytes() == data
    assert finished(dst)


def test_restart_discards_the_partial(
    interrupted: tuple[Path, Path, bytes, int], onward_cli: OnwardCli, onward_events: ParseEvents
) -> None:
    src, dst, data, _ = interrupted
    proc = onward_cli("copy", "--json", "--restart", src, dst)
    assert proc.returncode == 0, proc.stderr
    done = onward_events(proc.stdout)[-1]
    assert done["event"] == "done"
    assert done["resumed_from"] == 0 and done["copied"] == SIZE
    assert dst.read_bytes() == data
    assert finished(dst)


@pytest.mark.parametrize("output", ["text", "json"])
def test_changed_source_between_runs_is_not_stitched(
    interrupted: tuple[Path, Path, bytes, int], onward_cli: OnwardCli, onward_events: ParseEvents, output: str
) -> None:
    src, dst, data, committed = interrupted
    changed = bytearray(data)
    at = committed // 2  # inside a committed chunk
    changed[at : at + 4096] = bytes(b ^ 0xFF for b in changed[at : at + 4096])
    with open(src, "r+b") as fh:  # same file, same size, new bytes
        fh.seek(at)
        fh.write(changed[at : at + 4096])
    os.utime(src, ns=(MTIME_NS, MTIME_NS))
    proc = onward_cli("copy", "--progress" if output == "text" else "--json", src, dst)
    assert proc.returncode == 0, proc.stderr
    # The change is noticed on resume, before a single byte is copied on top of old chunks.
    # (A notice that the partial was read back may come first: the kill may have cut a write.)
    if output == "text":
        [line] = [x for x in proc.stderr.splitlines() if "source changed since the last run" in x]
        assert line.startswith(f"onward: {dst}: "), proc.stderr
    else:
        events = onward_events(proc.stdout)
        changed_at = next(i for i, e in enumerate(events) if "source changed" in e.get("message", ""))
        assert changed_at < [e["event"] for e in events].index("progress")
    assert dst.read_bytes() == bytes(changed)
    assert finished(dst)


@pytest.mark.parametrize("verify", ["fast", "full"])
def test_damaged_partial_is_repaired(
    interrupted: tuple[Path, Path, bytes, int], onward_cli: OnwardCli, onward_events: ParseEvents, verify: str
) -> None:
    """A resume re-checks the last committed chunks (where a crash does its damage); --verify
    full re-checks every one. (Chunks were read back from the device after their sync.)"""
    src, dst, data, committed = interrupted
    assert committed >= 8 * CHUNK
    # full: chunk 1, far from the end; fast: the last chunk the journal claims, one it re-checks
    last = max(decode(journal_of(dst).read_bytes()).chunks)
    at = (1 if verify == "full" else last) * CHUNK + 1000
    with open(partial_of(dst), "r+b") as fh:
        fh.seek(at)
        fh.write(bytes(b ^ 0xFF for b in data[at : at + 16]))
    proc = onward_cli("copy", "--json", "--verify", verify, src, dst)
    assert proc.returncode == 0, proc.stderr
    events = onward_events(proc.stdout)
    assert any("damaged" in e["message"] for e in events if e["event"] == "notice"), events
    assert events[-1]["event"] == "done"
    assert dst.read_bytes() == data
    assert finished(dst)


# -- status and clean --------------------------------------------------------------------


def test_status_lists_the_unfinished_copy(
    interrupted: tuple[Path, Path, bytes, int], onward_cli: OnwardCli
) -> None:
    src, dst, _, committed = interrupted
    proc = onward_cli("status", dst.parent)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if str(dst) in line]
    assert len(lines) == 1, proc.stdout
    [item] = status_json(onward_cli, dst.parent)
    percent = 100 * item["done"] / SIZE
    assert 0 < percent < 100 and item["done"] >= committed
    assert str(src) in lines[0]
    assert f"{percent:.1f}%" in lines[0]


def status_json(onward_cli: OnwardCli, path: Path) -> list[dict[str, Any]]:
    proc = onward_cli("status", "--json", path)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_status_json(
    interrupted: tuple[Path, Path, bytes, int], onward_cli: OnwardCli, onward_events: ParseEvents
) -> None:
    src, dst, data, committed = interrupted
    [item] = status_json(onward_cli, dst.parent)
    assert item["source"] == str(src)
    assert item["destination"] == str(dst)
    assert item["size"] == SIZE
    assert item["journal"] == str(journal_of(dst)) and item["partial"] == str(partial_of(dst))
    assert item["problem"] is None
    assert committed <= item["done"] < SIZE
    assert item["percent"] == pytest.approx(100 * item["done"] / SIZE)
    # The next run resumes from what status reported, plus the intact chunks the killed run
    # wrote after its last checkpoint (status reports what the journal claims).
    intact = intact_unclaimed(data, journal_of(dst), partial_of(dst))
    proc = onward_cli("copy", "--json", src, dst)
    assert proc.returncode == 0, proc.stderr
    assert onward_events(proc.stdout)[-1]["resumed_from"] == item["done"] + intact
    assert dst.read_bytes() == data
    assert status_json(onward_cli, dst.parent) == []


def test_clean_yes_removes_partial_and_journal(
    interrupted: tuple[Path, Path, bytes, int], onward_cli: OnwardCli
) -> None:
    src, dst, data, _ = interrupted
    proc = onward_cli("clean", dst.parent, "--yes")
    assert proc.returncode == 0, proc.stderr
    assert str(dst) in proc.stdout
    assert not partial_of(dst).exists() and not journal_of(dst).exists() and not dst.exists()
    assert src.read_bytes() == data
    assert "no unfinished copies" in onward_cli("status", dst.parent).stdout


def test_clean_json_reports_the_bytes_freed(
    interrupted: tuple[Path, Path, bytes, int], onward_cli: OnwardCli, onward_events: ParseEvents
) -> None:
    _, dst, _, _ = interrupted
    size = partial_of(dst).stat().st_size + journal_of(dst).stat().st_size
    proc = onward_cli("clean", "--json", "--yes", dst.parent)
    assert proc.returncode == 0, proc.stderr
    [event] = onward_events(proc.stdout)
    assert event == {"event": "removed", "destination": str(dst), "freed": size}
    assert not partial_of(dst).exists() and not journal_of(dst).exists()


def test_clean_without_a_terminal_refuses_and_removes_nothing(
    interrupted: tuple[Path, Path, bytes, int], onward_cli: OnwardCli
) -> None:
    _, dst, _, _ = interrupted
    before = {p: p.read_bytes() for p in (partial_of(dst), journal_of(dst))}
    proc = onward_cli("clean", dst.parent)  # stdin is /dev/null: nobody to ask
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onward:") and "--yes" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert {p: p.read_bytes() for p in before} == before


def test_serve_help_says_the_completion_command_runs_without_a_shell(onward_cli: OnwardCli) -> None:
    proc = onward_cli("serve", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "runs without a shell: no pipes, redirections or variables" in " ".join(proc.stdout.split())

"""Issue 13: a resume trusts the partial only on proof; damage made between runs is always found.

A copy is SIGKILLed (strace ``inject=...:signal=KILL``, as method 1) at a sync of the partial,
at a write to it, or between the two (the SEAL record after a write), or the power is cut
under it (a loop-mounted ext4 or xfs shut down without flushing its log, as method 4); then the
partial is damaged while onward is not running: bytes of chunk 0, of a middle chunk or of the
last committed chunk, a truncation, or bytes of chunk 0 with the mtime put back (``touch -d``).
Every case must end, in one plain re-run, with exit 0 and an identical copy, never a wrong file
under the final name. Without damage, a kill at a sync must read back no more than a resume
always did: the last 4 committed chunks and the chunks written after the last checkpoint
(the ``rechecked`` bytes of the ``done`` event).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from faults import test_power_cut as power
from onward.core.journal import decode

KiB = 1024
CHUNK = 64 * KiB
SIZE = 48 * CHUNK + 1234
RECHECK = 4  # Options.recheck_chunks: what a resume has always read back of the committed chunks
FLAGS = ["--json", "--chunk-size", "64K", "--checkpoint-bytes", "256K", "--checkpoint-seconds", "3600"]
KILLS = ("sync", "write", "between")
DAMAGES = ("none", "chunk-0", "middle", "last", "truncate", "touch")


def kill_point(calls: list[Any], kill: str) -> str:
    """The strace inject expression for ``kill``, around the 6th sync of the partial (5
    checkpoints, 20 chunks, committed before it)."""
    syncs = [
        i for i, c in enumerate(calls) if c.name == "fdatasync" and c.paths[0].endswith(".onward-partial")
    ]
    at = syncs[5]
    if kill == "sync":
        return str(calls[at].kill())
    write = max(i for i in range(at) if calls[i].name == "pwrite64")
    if kill == "write":
        return str(calls[write].kill())
    seal = next(c for c in calls[write + 1 :] if c.name == "write" and c.paths[0].endswith(".onward-journal"))
    return str(seal.kill())  # the data is written, its SEAL record is not


def damage(how: str, partial: Path, journal: Path, data: bytes) -> None:
    """Change the partial as another program (or a bad disk) would, while onward is not running."""
    if how == "none":
        return
    chunks = sorted(decode(journal.read_bytes()).chunks)
    assert len(chunks) >= 8, chunks
    if how == "truncate":
        os.truncate(partial, chunks[len(chunks) // 2] * CHUNK + 123)
        return
    index = {"chunk-0": 0, "touch": 0, "middle": chunks[len(chunks) // 2], "last": chunks[-1]}[how]
    before = partial.stat()
    at = index * CHUNK + 1000
    with open(partial, "r+b") as fh:
        fh.seek(at)
        fh.write(bytes(b ^ 0x5A for b in data[at : at + 16]))
    if how == "touch":  # what `touch -d` does: the mtime put back, the ctime moves on regardless
        os.utime(partial, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert partial.stat().st_mtime_ns == before.st_mtime_ns


def unclaimed_bytes(partial: Path, journal: Path) -> int:
    """Bytes of whole chunks the partial holds beyond those the journal claims (a resume reads
    them back to adopt them)."""
    loaded = decode(journal.read_bytes())
    held = partial.stat().st_size
    whole = [i for i in range(-(-SIZE // CHUNK)) if min((i + 1) * CHUNK, SIZE) <= held]
    return sum(min(CHUNK, SIZE - i * CHUNK) for i in whole if i not in loaded.chunks)


def resume_and_check(faultlib: Any, src: Path, data: bytes, dest: Any, damaged: bool, cwd: Path) -> Any:
    run = faultlib.run_cli(faultlib.copy_args(src, dest, FLAGS), cwd=cwd)
    faultlib.check(run.returncode == 0, f"the re-run failed: {run.describe()}")
    faultlib.check("Traceback" not in run.stderr, f"traceback: {run.stderr}")
    faultlib.check(dest.path.read_bytes() == data, "a wrong file under the final name")
    faultlib.check(not faultlib.leftovers(dest), f"left {faultlib.leftovers(dest)}")
    notices = [e["message"] for e in run.events() if e["event"] == "notice"]
    if damaged:
        faultlib.check(
            any("damaged" in n or "shorter" in n for n in notices), f"damage not reported: {notices}"
        )
    return run


@pytest.mark.parametrize("kill", KILLS)
def test_damage_after_a_kill_is_found_and_repaired(
    kill: str, tmp_path: Path, faultlib: Any, strace_ok: str
) -> None:
    data = faultlib.random_bytes(SIZE, "proven-trust")
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    inject = kill_point(faultlib.trace_reference(src, data, FLAGS, tmp_path, runs=1), kill)

    def one(how: str) -> None:
        dest = faultlib.make_dest(tmp_path / f"{kill}-{how}")
        killed = faultlib.run_cli(
            faultlib.copy_args(src, dest, FLAGS),
            dest=dest,
            trace=tmp_path / f"{kill}-{how}.trace",
            inject=[inject],
            cwd=tmp_path,
        )
        faultlib.check(killed.killed, f"not killed at {inject}: {killed.describe()}")
        faultlib.check_state(data, dest, CHUNK)
        kept = unclaimed_bytes(dest.partial, dest.journal)
        damage(how, dest.partial, dest.journal, data)
        run = resume_and_check(faultlib, src, data, dest, how != "none", tmp_path)
        done = run.done()
        notices = [e["message"] for e in run.events() if e["event"] == "notice"]
        if how == "none" and kill == "sync":  # proof holds: no more read back than a resume ever did
            faultlib.check(done["rechecked"] <= RECHECK * CHUNK + kept, f"read back {done['rechecked']}")
            faultlib.check(not any("read back its" in n for n in notices), f"read back all: {notices}")
        if kill != "sync" or how != "none":  # no proof: every committed chunk is read back
            faultlib.check(any("read back its" in n for n in notices), f"nothing read back: {notices}")

    faultlib.run_cases(list(DAMAGES), one, str, tally=f"proven-trust kills at a {kill}")


# --- power cuts, then damage ---------------------------------------------------------------------


@pytest.fixture
def scratch() -> Iterator[Path]:
    """On tmpfs when there is one, as method 4's images (their flushes are then cheap)."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    root = Path(tempfile.mkdtemp(prefix="onward-proven-trust-", dir=base))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("fs", ["ext4", "xfs"])
def test_damage_after_a_power_cut_is_found_and_repaired(fs: str, scratch: Path, faultlib: Any) -> None:
    root = scratch
    problem = power.power_cut_problem(fs, root)
    if problem:
        pytest.skip(problem)
    data = faultlib.random_bytes(SIZE, "proven-trust-power")
    src = root / "src.bin"
    src.write_bytes(data)
    disk = power.Disk(fs, root / fs)
    disk.make()
    disk.mount()
    try:
        for how in ("none", "chunk-0", "last", "truncate", "touch"):
            dest = faultlib.make_dest(disk.mnt / how)
            os.sync()
            cut_mid_copy(faultlib, disk, src, dest, at=12 * CHUNK)
            disk.recover()
            if not dest.journal.exists() or not decode(dest.journal.read_bytes()).chunks:
                faultlib.count("proven-trust power cuts before a durable chunk")
                resume_and_check(faultlib, src, data, dest, False, root)
                continue
            faultlib.check_state(data, dest, CHUNK)
            damaged = how != "none" and len(decode(dest.journal.read_bytes()).chunks) >= 8
            if damaged:
                damage(how, dest.partial, dest.journal, data)
            resume_and_check(faultlib, src, data, dest, damaged, root)
            faultlib.count(f"proven-trust power cuts on {fs}, then {how if damaged else 'no damage'}")
    finally:
        disk.destroy()


def cut_mid_copy(faultlib: Any, disk: Any, src: Path, dest: Any, at: int) -> None:
    """Copy ``src`` onto the disk and cut the power once a checkpoint reports ``at`` bytes; the
    copy blocks on its one-page stdout until the test reads, so it cannot run far ahead."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen(
        [*faultlib.ONWARD, "copy", *FLAGS, os.fspath(src), os.fspath(dest.path)],
        stdin=subprocess.DEVNULL,
        stdout=write_end,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end, "r") as out:
            for line in out:
                event = json.loads(line)
                if event["event"] == "checkpoint" and event["committed"] >= at:
                    break
            disk.cut()
            proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)


# --- Ctrl-C: a stop that seals --------------------------------------------------------------------


def test_a_resume_after_ctrl_c_trusts_the_partial(tmp_path: Path, faultlib: Any) -> None:
    """Ctrl-C ends the write in progress and seals it: the resume reads back no more than the
    last 4 committed chunks and the chunks it adopts, however far the copy had got."""
    data = faultlib.random_bytes(SIZE, "proven-trust-sigint")
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    dest = faultlib.make_dest(tmp_path / "dst")
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen(
        faultlib.copy_args(src, dest, FLAGS),
        stdin=subprocess.DEVNULL,
        stdout=write_end,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end, "r") as out:
            for line in out:
                if json.loads(line).get("committed", 0) >= 12 * CHUNK:
                    proc.send_signal(signal.SIGINT)
                    break
            for _ in out:  # let it finish its salvage checkpoint
                pass
    finally:
        if proc.poll() is None:
            proc.wait(timeout=60)
    assert proc.returncode == 130
    kept = unclaimed_bytes(dest.partial, dest.journal)
    run = resume_and_check(faultlib, src, data, dest, False, tmp_path)
    notices = [e["message"] for e in run.events() if e["event"] == "notice"]
    assert not any("read back its" in n for n in notices), notices
    assert run.done()["rechecked"] <= RECHECK * CHUNK + kept

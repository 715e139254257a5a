"""Method 5 of issue 3: fsync failure semantics.

After a failed ``fsync`` the kernel may drop the dirty pages and mark them clean, so a
retried ``fsync`` succeeds with the data lost ("fsyncgate", PostgreSQL 2018). onward must
never treat that as durable: an fsync error is fatal for the run and nothing written since
the last good checkpoint is trusted.

Each case injects EIO into exactly one ``fsync``/``fdatasync`` of a real copy (strace
``error=EIO:when=N``: a retried call *would* succeed, so a retry would go unnoticed), at
every such call a copy makes: the partial's sync at each checkpoint, the journal's sync
after each append, the temporary journal's, the directory's, and the partial's final fsync
before the rename. Each must:

- exit 1 with one line ``onward: PATH: ... fsync ...: Input/output error; ...``;
- append nothing to the journal and rename nothing after the failure;
- for the partial's checkpoint sync: leave the journal claiming exactly the chunks of the
  checkpoints before it (not one of that checkpoint's chunks);
- resume, on a plain re-run, from exactly the last good checkpoint and end identical.

Verification and the page cache: ``Transfer.checkpoint`` reads each chunk back right after
the partial's ``fdatasync``. A read served by the page cache would return what was written
whatever reached the device, so the local sink writes and reads the partial through a second
descriptor opened with ``O_DIRECT`` (``endpoints/direct.py``). The last tests check that, and
show on a loop-mounted ext4 image whose blocks are corrupted under a cached chunk that the
read-back catches it (docs/RELIABILITY.md, "Verification and the page cache").
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

KiB = 1024
CHUNK = 64 * KiB
FLAGS = ["--json", "--chunk-size", "64K", "--checkpoint-bytes", "64K"]
SIZES = {"chunk-plus-1": CHUNK + 1, "5-chunks": 5 * CHUNK + 1234}
LONG_SIZES = {"empty": 0, "17-chunks": 17 * CHUNK - 1}  # long mode only
SYNCS = ("fsync", "fdatasync")
EIO = os.strerror(errno.EIO)


def written_chunks(calls: list[Any], partial: str) -> list[int]:
    return [c.offset // CHUNK for c in calls if c.name == "pwrite64" and c.paths == (partial,)]


@pytest.mark.parametrize(
    "size_name", [*SIZES, *(pytest.param(n, marks=pytest.mark.slow) for n in LONG_SIZES)]
)
@pytest.mark.parametrize("flags", [FLAGS, [*FLAGS, "--verify", "full"]], ids=["fast-verify", "full-verify"])
def test_one_failed_sync_is_fatal_and_nothing_since_the_last_checkpoint_is_claimed(
    size_name: str, flags: list[str], tmp_path: Path, faultlib: Any, strace_ok: str
) -> None:
    if size_name in LONG_SIZES and not faultlib.LONG:
        pytest.skip("long mode only (ONWARD_FAULTS=long)")
    size = {**SIZES, **LONG_SIZES}[size_name]
    src = tmp_path / "src.bin"
    data = faultlib.random_bytes(size, "fsync")
    src.write_bytes(data)
    reference = faultlib.trace_reference(src, data, flags, tmp_path)
    points = [k for k, c in enumerate(reference) if c.name in SYNCS]

    def body(k: int) -> None:
        target = reference[k]
        what = f"size {size} {' '.join(flags[5:])} EIO once at {target}"
        dest = faultlib.make_dest(tmp_path / f"s{k}")
        run = faultlib.run_cli(
            faultlib.copy_args(src, dest, flags),
            dest=dest,
            trace=tmp_path / f"s{k}.trace",
            inject=[target.fail("EIO", persistent=False)],
            cwd=tmp_path,
        )
        try:
            at = next((i for i, c in enumerate(run.calls) if c.injected), None)
            faultlib.check(at is not None, f"the fault did not land: {run.describe()}")
            assert at is not None
            failed = run.calls[at]
            line = faultlib.check_one_error_line(run, EIO)
            named = failed.paths[0].removesuffix(".tmp")
            faultlib.check(named in line, f"{named} not named in {line!r}")
            if failed.paths[0] != str(dest.journal_tmp):  # that one reads "write journal"
                faultlib.check("fsync" in line, f"the message does not say fsync failed: {line!r}")
            after = run.calls[at + 1 :]
            appended = [c for c in after if c.name == "write" and c.paths == (str(dest.journal),)]
            faultlib.check(not appended, f"journal appended to after the failed sync: {appended}")
            renamed = [c for c in after if c.name in ("rename", "renameat", "renameat2")]
            faultlib.check(not renamed, f"renamed after the failed sync: {[str(c) for c in renamed]}")
            claims = faultlib.check_state(data, dest, CHUNK)
            if failed.name == "fdatasync" and failed.paths == (str(dest.partial),):
                # Exactly the chunks of the earlier checkpoints: those synced before this sync.
                syncs = [
                    i
                    for i, c in enumerate(run.calls[:at])
                    if c.name in SYNCS and c.paths == (str(dest.partial),)
                ]
                good = set(written_chunks(run.calls[: syncs[-1]], str(dest.partial))) if syncs else set()
                lost = set(written_chunks(run.calls[:at], str(dest.partial))) - good
                faultlib.check(
                    not (claims.chunks & lost),
                    f"claims chunk(s) {sorted(claims.chunks & lost)} of the failed checkpoint",
                )
                faultlib.check(
                    claims.chunks == good,
                    f"claims {sorted(claims.chunks)}, the good checkpoints had {sorted(good)}",
                )
            faultlib.check_finishes(src, data, dest, flags, claims, cwd=tmp_path)
        except AssertionError as exc:
            raise faultlib.Broken(f"{what}: {exc}") from None

    faultlib.run_cases(points, body, lambda k: f"{size}/{reference[k]}", tally="failed syncs (EIO once)")


def test_a_failed_sync_is_never_retried_into_success(tmp_path: Path, faultlib: Any, strace_ok: str) -> None:
    """EIO on the third fdatasync only (the partial's second checkpoint), every later sync
    succeeding: the run still fails, and the partial is never synced again (a retry would
    'succeed')."""
    size = SIZES["5-chunks"]
    src = tmp_path / "src.bin"
    data = faultlib.random_bytes(size, "fsync-retry")
    src.write_bytes(data)
    dest = faultlib.make_dest(tmp_path / "out")
    flags = [*FLAGS, "--retries", "5"]
    run = faultlib.run_cli(
        faultlib.copy_args(src, dest, flags),
        dest=dest,
        trace=tmp_path / "trace",
        inject=["fdatasync:error=EIO:when=3"],
        cwd=tmp_path,
    )
    faultlib.count("failed syncs (EIO once)")
    at = next(i for i, c in enumerate(run.calls) if c.injected)
    assert run.calls[at].paths == (str(dest.partial),), run.describe()
    faultlib.check_one_error_line(run, str(dest.partial), "fsync failed", EIO, "re-run")
    later = [c for c in run.calls[at + 1 :] if c.name in SYNCS and c.paths == (str(dest.partial),)]
    assert not later, f"the partial was synced again after a failed sync: {[str(c) for c in later]}"
    claims = faultlib.check_state(data, dest, CHUNK)
    assert claims.chunks == {0}, claims  # sync 1: chunk 0, sync 2 is the journal's, sync 3 fails
    faultlib.check_finishes(src, data, dest, flags, claims, cwd=tmp_path)


# --- the read-back after a sync, and the page cache ----------------------------------------------


def direct_descriptors(trace: str) -> set[tuple[str, int]]:
    """(thread, fd) of every descriptor the trace shows opened with ``O_DIRECT``."""
    found = set()
    for line in trace.splitlines():
        m = re.match(r"(\d+)\s+openat\(.*O_DIRECT.*\)\s+=\s+(\d+)<", line)
        if m:
            found.add((m.group(1), int(m.group(2))))
    return found


@pytest.mark.parametrize("verify", ["fast", "full"])
def test_every_read_back_after_a_sync_comes_from_the_device(
    verify: str, tmp_path: Path, faultlib: Any, strace_ok: str
) -> None:
    """After every fdatasync of the partial, its chunks are read back through a descriptor
    opened with ``O_DIRECT`` (on the same inode), never through the page cache."""
    size = SIZES["5-chunks"]
    src = tmp_path / "src.bin"
    src.write_bytes(faultlib.random_bytes(size, "readback"))
    dest = faultlib.make_dest(tmp_path / "out")
    trace = tmp_path / "trace"
    cmd = [
        strace_ok,
        "-f",
        "-qq",
        "-y",
        "-o",
        os.fspath(trace),
        "-e",
        "trace=openat,fdatasync,preadv2,pread64",
    ]
    proc = subprocess.run(
        [*cmd, *faultlib.copy_args(src, dest, [*FLAGS, "--verify", verify])],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    text = trace.read_text()
    direct = {fd for _, fd in direct_descriptors(text)}
    partial = f"<{dest.partial}>"
    calls = [
        line for line in text.splitlines() if partial in line and ("fdatasync" in line or "pread" in line)
    ]
    syncs = [i for i, line in enumerate(calls) if "fdatasync(" in line]
    assert len(syncs) >= 6, calls
    for i in syncs:
        reads = list(itertools.takewhile(lambda line: "fdatasync(" not in line, calls[i + 1 :]))
        assert reads, f"no read-back after {calls[i]}"
        for line in reads:
            fd = int(re.search(r"pread\w*\((\d+)<", line).group(1))  # type: ignore[union-attr]
            assert fd in direct, f"read back through the page cache: {line}"


# The end-to-end proof needs a block device under the page cache: a loop-mounted ext4 image.

IMAGE_SIZE = 16 << 20


@pytest.fixture
def ext4_loop(tmp_path: Path) -> Any:
    """A 16 MiB ext4 image, loop-mounted (buffered loop I/O); yields (mountpoint, image)."""
    if os.geteuid() != 0:
        pytest.skip("loop-mounting an ext4 image needs root")
    for tool in ("mkfs.ext4", "mount", "filefrag"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (e2fsprogs / util-linux)")
    image, mnt = tmp_path / "ext4.img", tmp_path / "mnt"
    with image.open("wb") as fh:
        fh.truncate(IMAGE_SIZE)
    mnt.mkdir()
    proc = subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", str(image)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"mkfs.ext4 failed: {proc.stderr.strip()}")
    proc = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot loop-mount an ext4 image here: {proc.stderr.strip()}")
    try:
        yield mnt, image
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def physical_offset(path: Path, logical: int) -> int:
    """Byte offset in the file system image of ``path``'s byte ``logical`` (filefrag -e)."""
    out = subprocess.run(
        ["filefrag", "-e", "-b4096", str(path)], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        parts = line.replace(":", " ").replace("..", " ").split()
        if len(parts) >= 5 and parts[0].isdigit():
            first, last, phys = int(parts[1]), int(parts[2]), int(parts[3])
            block = logical // 4096
            if first <= block <= last:
                return (phys + block - first) * 4096 + logical % 4096
    raise AssertionError(f"no extent holds byte {logical} of {path}:\n{out}")


def corrupt_under_the_cache(
    faultlib: Any, ext4_loop: Any, tmp_path: Path, flags: list[str]
) -> tuple[bytes, Any]:
    """Copy 5 chunks onto ext4; stop the copy right after the partial's 3rd fdatasync (chunk 2
    is on the device, its pages still cached, its read-back not yet made), corrupt that
    chunk's first block in the image (the device) without touching the page cache, let the
    copy go on; return (source bytes, (exit status, stdout, stderr, destination)).

    strace delivers an injected SIGSTOP as the call returns, so the fdatasync is done first.
    """
    mnt, image = ext4_loop
    size = 5 * CHUNK
    src = tmp_path / "src.bin"
    data = faultlib.random_bytes(size, "under-cache")
    src.write_bytes(data)
    dest = faultlib.Dest(mnt / "copy")
    trace = tmp_path / "trace"
    # fdatasync calls alternate: the partial's (chunk 0), the journal's, the partial's (chunk 1), ...
    cmd = faultlib.strace_command(dest, trace, ["fdatasync:signal=SIGSTOP:when=5"])
    proc = subprocess.Popen(
        [*cmd, *faultlib.copy_args(src, dest, flags)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        while "stopped by SIGSTOP" not in (trace.read_text() if trace.exists() else ""):
            assert time.monotonic() < deadline and proc.poll() is None, "the copy did not stop"
            time.sleep(0.01)
        calls = faultlib.parse_trace(trace.read_text())
        stopped = [c for c in calls if c.name == "fdatasync"][-1]
        assert stopped.paths == (str(dest.partial),) and stopped.result == "0", stopped
        assert sorted(written_chunks(calls, str(dest.partial))) == [0, 1, 2], [str(c) for c in calls]
        at = physical_offset(dest.partial, 2 * CHUNK)
        with image.open("r+b") as fh:  # the device's bytes; the file system's page cache keeps its own
            fh.seek(at)
            fh.write(bytes(b ^ 0xFF for b in data[2 * CHUNK : 2 * CHUNK + 4096]))
            fh.flush()
            os.fsync(fh.fileno())
        os.kill(stopped.tid, signal.SIGCONT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return data, (proc.returncode, out, err, dest)


def device_bytes(path: Path) -> bytes:
    """What the device holds for ``path`` (the page cache dropped first)."""
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    return path.read_bytes()


def test_device_read_back_catches_a_chunk_corrupted_under_the_page_cache(
    ext4_loop: Any, tmp_path: Path, faultlib: Any, strace_ok: str
) -> None:
    data, (rc, out, err, dest) = corrupt_under_the_cache(
        faultlib, ext4_loop, tmp_path, [*FLAGS, "--verify", "full"]
    )
    faultlib.count("page-cache read-back cases")
    assert rc == 0, err
    assert "read back wrong after writing" in out, out  # the JSON notice: chunk 2 was copied again
    assert device_bytes(dest.path) == data


def test_default_read_back_catches_a_chunk_corrupted_under_the_page_cache(
    ext4_loop: Any, tmp_path: Path, faultlib: Any, strace_ok: str
) -> None:
    data, (rc, out, err, dest) = corrupt_under_the_cache(faultlib, ext4_loop, tmp_path, FLAGS)
    faultlib.count("page-cache read-back cases")
    assert rc == 0, err
    assert "read back wrong after writing" in out, out
    assert device_bytes(dest.path) == data, "promoted a copy whose bytes on the device differ"

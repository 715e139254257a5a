"""Method 3 of issue 3: I/O errors at every file-changing call, real short writes and a
really full disk.

Three sources of errors, all through the real CLI:

1. strace ``-e inject=CALL:error=ERRNO:when=N+``: the N-th call of that kind on the
   destination's files, and every later one, fails with ENOSPC, EIO, EACCES, EROFS or
   EDQUOT (a disk that stays full, a device that stays broken, a file system remounted
   read-only). Plus EIO on the N-th call only, which a retry may overcome.
2. ``prlimit --fsize=BYTES``: RLIMIT_FSIZE makes the write that crosses the limit short and
   the next one fail. Python ignores SIGXFSZ, so onward is not killed: it gets EFBIG and
   must report it like any other error (decided here, checked below).
3. A small tmpfs mounted by the test and filled to leave exactly so many bytes (or inodes)
   free, then space freed (or the tmpfs grown) and the copy resumed.

Every failing run must: exit 1; print exactly one stderr line ``onward: ...`` that names
the file the failing call acted on, the cause (strerror) and what to do; no traceback;
leave no destination unless identical to the source; leave a journal that claims only
chunks whose bytes are in the partial (never the failing chunk or any after it). Then a
clean re-run exits 0, resumes from every chunk the journal claimed and leaves an identical
copy with nothing beside it. A run that survives the fault (a retried EIO, a failing
``sync_file_range`` hint) must exit 0 with an identical copy and, for a retry, say so.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

KiB = 1024
CHUNK = 64 * KiB
FLAGS = ["--json", "--chunk-size", "64K", "--checkpoint-bytes", "64K", "--retries", "1"]
HUMAN = FLAGS[1:]  # without --json: what a person sees (odd-numbered fault points run this way)
RETRY_NOTICE = re.compile(r"^onward: .*; retry \d+ in [\d.]+s$")
ERRNOS = ("ENOSPC", "EIO", "EACCES", "EROFS", "EDQUOT")
HINT_WORDS = ("re-run", "--restart", "free space", "fix the permissions")
SIZES = {"empty": 0, "chunk-plus-1": CHUNK + 1, "5-chunks": 5 * CHUNK + 1234}
LONG_SIZES = {"one-byte": 1, "chunk": CHUNK, "17-chunks": 17 * CHUNK - 1}  # long mode only
# Fast mode: how many (call, errno) pairs of each size, drawn with the suite's seed.
FAST_SAMPLE = {"empty": 8, "chunk-plus-1": 10, "5-chunks": 36}


def strerror(name: str) -> str:
    return os.strerror(getattr(errno, name))


def check_failed_run(faultlib: Any, run: Any, paths: tuple[str, ...], cause: str) -> str:
    """The one-line error: names one of ``paths``, the ``cause`` and what to do. The journal's
    temporary file is named by the journal it becomes."""
    if "--json" not in run.cmd:  # retry notices come first in human mode: progress, not errors
        kept = [line for line in run.stderr.splitlines() if not RETRY_NOTICE.match(line)]
        run.stderr = "".join(line + "\n" for line in kept)
    line: str = faultlib.check_one_error_line(run, cause)
    paths = (*paths, *(p.removesuffix(".tmp") for p in paths))
    faultlib.check(any(p in line for p in paths), f"none of {paths} named in {line!r}")
    faultlib.check(any(w in line for w in HINT_WORDS), f"no advice on what to do in {line!r}")
    return line


def check_not_past(faultlib: Any, call: Any, claims: Any) -> None:
    """A failed chunk write: that chunk is not claimed, nor any after it."""
    if call.offset is None:
        return
    failed = call.offset // CHUNK
    beyond = sorted(i for i in claims.chunks if i >= failed)
    faultlib.check(
        not beyond, f"journal claims chunk(s) {beyond} at or past the failed write of chunk {failed}"
    )


# --- 1. strace error injection at every mutating call ------------------------------------------


@pytest.mark.parametrize(
    "size_name", [*SIZES, *(pytest.param(n, marks=pytest.mark.slow) for n in LONG_SIZES)]
)
def test_injected_errno_at_every_mutating_call(
    size_name: str, tmp_path: Path, faultlib: Any, strace_ok: str
) -> None:
    if size_name in LONG_SIZES and not faultlib.LONG:
        pytest.skip("long mode only (ONWARD_FAULTS=long)")
    size = {**SIZES, **LONG_SIZES}[size_name]
    src = tmp_path / "src.bin"
    data = faultlib.random_bytes(size, "errors")
    src.write_bytes(data)
    reference = faultlib.trace_reference(src, data, FLAGS, tmp_path)
    points = [(k, name) for k in range(len(reference)) for name in ERRNOS]
    rng = faultlib.rng_for("errno", size_name)
    points = faultlib.sample(points, None if faultlib.LONG else FAST_SAMPLE.get(size_name), rng)

    def body(point: tuple[int, str]) -> None:
        k, name = point
        call = reference[k]
        what = f"size {size} {name} from {call} on"
        dest = faultlib.make_dest(tmp_path / f"e{k}-{name}")
        run = faultlib.run_cli(
            faultlib.copy_args(src, dest, FLAGS if k % 2 == 0 else HUMAN),
            dest=dest,
            trace=tmp_path / f"e{k}-{name}.trace",
            inject=[call.fail(name, persistent=True)],
            cwd=tmp_path,
        )
        try:
            injected = [c for c in run.calls if c.injected]
            faultlib.check(
                injected and (injected[0].name, injected[0].nth) == (call.name, call.nth),
                f"the fault did not land at {call}: {run.describe()}",
            )
            if call.name in faultlib.HINTS:
                # A hint's failure may be ignored: then the copy must simply succeed.
                faultlib.check(run.returncode == 0, f"a failed hint broke the copy: {run.describe()}")
                faultlib.check(dest.path.read_bytes() == data and not faultlib.leftovers(dest), "bad copy")
                return
            check_failed_run(faultlib, run, injected[0].paths, strerror(name))
            claims = faultlib.check_state(data, dest, CHUNK)
            check_not_past(faultlib, call, claims)
            faultlib.check_finishes(src, data, dest, FLAGS, claims, cwd=tmp_path)
        except AssertionError as exc:
            raise faultlib.Broken(f"{what}: {exc}") from None

    faultlib.run_cases(
        points, body, lambda p: f"{size}/{reference[p[0]]}/{p[1]}", tally="injected errno faults"
    )


# Faults that found bugs (fixed in src/onward/endpoints/local.py); run in fast mode too.
REGRESSIONS = [
    # The partial's open denied while no partial exists: the error blamed the chmod meant for a
    # read-only partial left by a crash ("No such file or directory"), not the real cause.
    ("openat", 1, "EACCES"),
    ("openat", 1, "EROFS"),
    # No space (or inodes) to create the partial, before the engine runs: no advice was given.
    ("openat", 2, "ENOSPC"),
    ("openat", 2, "EDQUOT"),
    # The journal unreadable: no advice was given.
    ("openat", 3, "EIO"),
    ("openat", 3, "EACCES"),
]


@pytest.mark.parametrize(
    ("name", "nth", "errname"), REGRESSIONS, ids=[f"{n}{i}-{e}" for n, i, e in REGRESSIONS]
)
def test_regression_fault_points(
    name: str, nth: int, errname: str, tmp_path: Path, faultlib: Any, strace_ok: str
) -> None:
    size = SIZES["5-chunks"]
    src = tmp_path / "src.bin"
    data = faultlib.random_bytes(size, "regressions")
    src.write_bytes(data)
    reference = faultlib.trace_reference(src, data, FLAGS, tmp_path, runs=1)
    call = next(c for c in reference if (c.name, c.nth) == (name, nth))
    dest = faultlib.make_dest(tmp_path / "out")
    run = faultlib.run_cli(
        faultlib.copy_args(src, dest, FLAGS),
        dest=dest,
        trace=tmp_path / "fault.trace",
        inject=[call.fail(errname)],
        cwd=tmp_path,
    )
    faultlib.count("injected errno faults (regressions)")
    injected = [c for c in run.calls if c.injected]
    assert injected, run.describe()
    check_failed_run(faultlib, run, injected[0].paths, strerror(errname))
    claims = faultlib.check_state(data, dest, CHUNK)
    faultlib.check_finishes(src, data, dest, FLAGS, claims, cwd=tmp_path)


@pytest.mark.parametrize("size_name", ["5-chunks"])
def test_one_eio_is_retried_or_reported_never_silent(
    size_name: str, tmp_path: Path, faultlib: Any, strace_ok: str
) -> None:
    """EIO on one call only (a retried call would succeed): onward either retries and says so,
    ending with an identical copy, or fails with the one-line error; never a silent success
    with a bad copy, and never success after a failed sync (method 5 has those in detail)."""
    size = SIZES[size_name]
    src = tmp_path / "src.bin"
    data = faultlib.random_bytes(size, "eio-once")
    src.write_bytes(data)
    reference = faultlib.trace_reference(src, data, FLAGS, tmp_path)
    points = list(range(len(reference)))
    points = faultlib.sample(points, None if faultlib.LONG else 12, faultlib.rng_for("eio-once", size_name))

    def body(k: int) -> None:
        call = reference[k]
        what = f"size {size} one EIO at {call}"
        dest = faultlib.make_dest(tmp_path / f"o{k}")
        run = faultlib.run_cli(
            faultlib.copy_args(src, dest, FLAGS if k % 2 == 0 else HUMAN),
            dest=dest,
            trace=tmp_path / f"o{k}.trace",
            inject=[call.fail("EIO", persistent=False)],
            cwd=tmp_path,
        )
        try:
            injected = [c for c in run.calls if c.injected]
            faultlib.check(injected, f"the fault did not land: {run.describe()}")
            if run.returncode == 0:
                faultlib.check(call.name not in ("fsync", "fdatasync"), "success after a failed sync")
                faultlib.check(dest.path.read_bytes() == data and not faultlib.leftovers(dest), "bad copy")
                retried = any(e.get("event") == "retry" for e in run.events()) or "; retry 1 in" in run.stderr
                faultlib.check(
                    retried or call.name in faultlib.HINTS,
                    f"an I/O error passed in silence: {run.describe()}",
                )
                return
            check_failed_run(faultlib, run, injected[0].paths, strerror("EIO"))
            claims = faultlib.check_state(data, dest, CHUNK)
            check_not_past(faultlib, call, claims)
            faultlib.check_finishes(src, data, dest, FLAGS, claims, cwd=tmp_path)
        except AssertionError as exc:
            raise faultlib.Broken(f"{what}: {exc}") from None

    faultlib.run_cases(points, body, lambda k: f"{size}/{reference[k]}", tally="single EIO faults")


# --- 2. real short writes: RLIMIT_FSIZE ----------------------------------------------------------

SIZE = 5 * CHUNK + 1234
JOURNAL_HEAD = 300  # about the preamble and header of a new journal (a limit below fails it)
LIMITS = [0, 1, 100, 400, 4096, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 5, 5 * CHUNK, SIZE - 1]
LONG_LIMITS = [333, 370, 450, 8191, 3 * CHUNK - 4096, 4 * CHUNK + 17, 5 * CHUNK + 1]


@pytest.fixture(scope="session")
def prlimit() -> str:
    path = shutil.which("prlimit")
    if path is None:
        pytest.skip("prlimit is not installed (util-linux)")
    return path


@pytest.mark.parametrize("limit", LIMITS + [pytest.param(x, marks=pytest.mark.slow) for x in LONG_LIMITS])
def test_file_size_limit_short_write_is_reported_and_resumed(
    limit: int, tmp_path: Path, faultlib: Any, prlimit: str
) -> None:
    """RLIMIT_FSIZE: the write that crosses the limit is short, the next gets EFBIG (Python
    ignores SIGXFSZ, so the process is not killed). The limit applies to the journal as well:
    the smallest limits make its header or a record the short write."""
    if limit in LONG_LIMITS and not faultlib.LONG:
        pytest.skip("long mode only (ONWARD_FAULTS=long)")
    src = tmp_path / "src.bin"
    data = faultlib.random_bytes(SIZE, "fsize")
    src.write_bytes(data)
    dest = faultlib.make_dest(tmp_path / "out")
    run = faultlib.run_cli(
        faultlib.copy_args(src, dest, FLAGS), prefix=[prlimit, f"--fsize={limit}"], cwd=tmp_path
    )
    faultlib.count("file-size limits (short writes)")
    faultlib.check(run.returncode != -25, "killed by SIGXFSZ: onward must get EFBIG and report it")
    check_failed_run(faultlib, run, (str(dest.path),), os.strerror(errno.EFBIG))
    claims = faultlib.check_state(data, dest, CHUNK)
    if dest.partial.exists():
        faultlib.check(dest.partial.stat().st_size <= max(limit, 0), "the partial grew past the limit")
    faultlib.check(claims.bytes <= limit, f"journal claims {claims.bytes} bytes, more than the limit {limit}")
    faultlib.check_finishes(src, data, dest, FLAGS, claims, cwd=tmp_path)


def test_file_size_limit_at_the_file_size_succeeds(tmp_path: Path, faultlib: Any, prlimit: str) -> None:
    src = tmp_path / "src.bin"
    data = faultlib.random_bytes(SIZE, "fsize")
    src.write_bytes(data)
    dest = faultlib.make_dest(tmp_path / "out")
    run = faultlib.run_cli(
        faultlib.copy_args(src, dest, FLAGS), prefix=[prlimit, f"--fsize={SIZE}"], cwd=tmp_path
    )
    faultlib.check(run.returncode == 0, run.describe())
    faultlib.check(dest.path.read_bytes() == data and not faultlib.leftovers(dest), "bad copy")


# --- 3. a really full disk: a small tmpfs --------------------------------------------------------

TMPFS_SIZE = 1 << 20
PAGE = 4096


@pytest.fixture
def tmpfs(tmp_path: Path) -> Any:
    """A 1 MiB tmpfs mounted for the test (2048 inodes); skips unless this process may mount."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    if shutil.which("mount") is None:
        pytest.skip("no mount command to make a small tmpfs")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    proc = subprocess.run(
        [
            "mount",
            "-t",
            "tmpfs",
            "-o",
            f"size={TMPFS_SIZE},nr_inodes=2048,mode=0755",
            "onward-faults",
            str(mnt),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt: Path, leave: int) -> Path:
    """A filler file that leaves exactly ``leave`` bytes (a multiple of a page) free on ``mnt``."""
    filler = mnt / "filler"
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    assert leave <= free, (leave, free)
    with filler.open("wb") as fh:
        fh.write(b"\0" * (free - leave))
    st = os.statvfs(mnt)
    assert st.f_bavail * st.f_frsize == leave, (st.f_bavail * st.f_frsize, leave)
    return filler


# Free space left for the copy of a 5-chunk file (about 321 KiB and a journal page).
FREE = [
    0,
    PAGE,
    2 * PAGE,
    CHUNK - PAGE,
    CHUNK,
    CHUNK + PAGE,
    CHUNK + 2 * PAGE,
    2 * CHUNK + 2 * PAGE,
    3 * CHUNK,
    5 * CHUNK,
    5 * CHUNK + PAGE,
    5 * CHUNK + 2 * PAGE,
    6 * CHUNK,
]


@pytest.mark.parametrize("how", ["delete-filler", "grow-tmpfs"])
def test_real_disk_full_at_many_points_then_space_freed_resumes(
    how: str, tmpfs: Path, tmp_path: Path, faultlib: Any
) -> None:
    src = tmp_path / "src.bin"
    data = faultlib.random_bytes(SIZE, "tmpfs")
    src.write_bytes(data)
    failures = []
    for leave in FREE if how == "delete-filler" or faultlib.LONG else FREE[::3]:
        if how == "grow-tmpfs":
            subprocess.run(["mount", "-o", f"remount,size={TMPFS_SIZE}", str(tmpfs)], check=True)
        dest = faultlib.make_dest(tmpfs / f"free-{leave}")
        filler = fill(tmpfs, leave)
        run = faultlib.run_cli(faultlib.copy_args(src, dest, FLAGS), cwd=tmp_path)
        faultlib.count("real ENOSPC points (tmpfs)")
        try:
            if run.returncode == 0:
                # Enough room after all: then it is simply a good copy.
                faultlib.check(dest.path.read_bytes() == data and not faultlib.leftovers(dest), "bad copy")
                faultlib.check(leave >= SIZE, f"a copy of {SIZE} bytes fitted in {leave} bytes?")
            else:
                line = check_failed_run(faultlib, run, (str(dest.path),), strerror("ENOSPC"))
                faultlib.check("more needed" in line, f"the error does not say how much space: {line!r}")
                claims = faultlib.check_state(data, dest, CHUNK)
                if how == "delete-filler":
                    filler.unlink()
                else:
                    subprocess.run(["mount", "-o", f"remount,size={4 * TMPFS_SIZE}", str(tmpfs)], check=True)
                faultlib.check_finishes(src, data, dest, FLAGS, claims, cwd=tmp_path)
        except AssertionError as exc:
            failures.append(f"{leave} bytes free: {exc}")
        finally:
            filler.unlink(missing_ok=True)
            shutil.rmtree(dest.dir)
    assert not failures, "\n".join(failures)


def test_real_out_of_inodes_then_freed_resumes(tmpfs: Path, tmp_path: Path, faultlib: Any) -> None:
    """ENOSPC from ``openat(O_CREAT)`` itself: no inode left for the partial, or for the
    journal's temporary file once the partial took the last one."""
    src = tmp_path / "src.bin"
    data = faultlib.random_bytes(SIZE, "inodes")
    src.write_bytes(data)
    for spare in (0, 1, 2):
        dest = faultlib.make_dest(tmpfs / f"inodes-{spare}")
        fillers = tmpfs / "fillers"
        fillers.mkdir()
        made = 0
        while True:
            try:
                (fillers / str(made)).touch()
                made += 1
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        for i in range(spare):
            (fillers / str(made - 1 - i)).unlink()
        run = faultlib.run_cli(faultlib.copy_args(src, dest, FLAGS), cwd=tmp_path)
        faultlib.count("real ENOSPC points (tmpfs inodes)")
        if spare >= 2:
            # Partial and journal (its temporary file becomes it): that is all a copy needs.
            faultlib.check(run.returncode == 0, f"{spare} inodes free: {run.describe()}")
        else:
            check_failed_run(faultlib, run, (str(dest.path),), strerror("ENOSPC"))
            claims = faultlib.check_state(data, dest, CHUNK)
            shutil.rmtree(fillers)
            faultlib.check_finishes(src, data, dest, FLAGS, claims, cwd=tmp_path)
        shutil.rmtree(fillers, ignore_errors=True)
        dest.path.unlink()
        shutil.rmtree(dest.dir)


def test_real_disk_full_cuts_a_journal_append_short_then_resumes(
    tmpfs: Path, tmp_path: Path, faultlib: Any
) -> None:
    """4 KiB chunks, three records each: the journal needs its second page at about the 35th
    chunk. Leaving free exactly the pages the partial and the journal's first page need by
    then makes that append a real short write (part of a record, then ENOSPC). The torn
    record must read as a damaged tail, never as a claim; the re-run resumes."""
    flags = ["--json", "--chunk-size", "4K", "--checkpoint-bytes", "4K"]
    size = 130 * PAGE
    src = tmp_path / "src.bin"
    data = faultlib.random_bytes(size, "journal-page")
    src.write_bytes(data)
    # The header's length (paths in it) decides where the second page starts: measure it on a
    # copy that fails at once (one free page: the journal's), same path lengths as below.
    probe = faultlib.make_dest(tmpfs / "p0001")
    filler = fill(tmpfs, PAGE)
    faultlib.run_cli(faultlib.copy_args(src, probe, flags), cwd=tmp_path)
    header = probe.journal.stat().st_size
    filler.unlink()
    shutil.rmtree(probe.dir)
    # Per chunk: an IN-FLIGHT record (17 bytes) before its write, a SEAL (57) after it, a CHUNK
    # (37: length u32, kind u8, index u64, length u32, digest 16, crc u32) at its checkpoint.
    record = 17 + 57 + 37
    cut = (PAGE - header) // record + 2  # pages: the partial's by then and the journal's first
    torn = 0
    for pages in range(cut - 6, cut + 7) if faultlib.LONG else range(cut - 1, cut + 2):
        dest = faultlib.make_dest(tmpfs / f"p{pages:04d}")
        filler = fill(tmpfs, pages * PAGE)
        run = faultlib.run_cli(faultlib.copy_args(src, dest, flags), cwd=tmp_path)
        faultlib.count("real ENOSPC points (tmpfs)")
        line = check_failed_run(faultlib, run, (str(dest.path),), strerror("ENOSPC"))
        faultlib.check("more needed" in line, f"the error does not say how much space: {line!r}")
        claims = faultlib.check_state(data, dest, 4096)
        raw = dest.journal.read_bytes()
        if faultlib.decode(raw).damaged_tail:
            torn += 1
        filler.unlink()
        faultlib.check_finishes(src, data, dest, flags, claims, cwd=tmp_path)
        shutil.rmtree(dest.dir)
    assert torn, "no point cut a journal append short: the page arithmetic is off"

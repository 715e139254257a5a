"""Method 4 of issue 3: real power cuts on loop-mounted ext4 and xfs.

A file system image is made (``truncate`` + ``mkfs``) and loop-mounted; the real CLI copies
a file onto it; at a chosen moment the file system is shut down with its "going down"
ioctl *without flushing its log* (``EXT4_IOC_SHUTDOWN`` / ``XFS_IOC_GOINGDOWN``, both
``_IOR('X', 125, __u32)``, flag ``NOLOGFLUSH`` = 2): from that instant nothing more reaches
the disk, and whatever the log had not committed is lost, as in a power cut. Then the
process is killed, the file system unmounted, mounted again (log recovery), unmounted and
checked (``e2fsck -fn`` / ``xfs_repair -n``), and mounted once more for the checks:

- the destination name holds nothing, its old bytes, or bytes identical to the source;
- the journal, if present, decodes, and every chunk it claims holds the source's bytes,
  with the claimed xxh3-128 digest, in the partial: after a power cut the journal may lag
  the data, never lead it;
- when onward had exited 0 (before the cut, or even after it), the finished copy is there;
- a re-run (itself sometimes cut again, up to twice) ends with an identical copy, resumed
  from every byte the journal claimed, and nothing left beside it.

The moments of the cut: when the partial reaches a random size; after a random delay
(start-up, journal creation, mid-copy); in the window just before the rename into place
(the PROMOTE record is durable, the rename held back by ``strace -e inject=...:delay_enter``);
in the window after the rename but before the directory fsync (``delay_exit``), where
ext4 and xfs differ; and just after onward exited 0.

Fast mode (CI): a seeded sample of cuts on each file system. Long mode
(``ONWARD_FAULTS=long``): at least 150 cuts on each. Skipped, with the reason, when not
root, when loop devices or a tool (``mkfs.ext4``, ``mkfs.xfs``) are missing.
"""

from __future__ import annotations

import fcntl
import os
import queue
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from onward.core.journal import DecodeError, decode

if TYPE_CHECKING:
    from faults.conftest import Claims, Dest

KiB, MiB = 1024, 1024 * 1024
GOINGDOWN = 0x8004587D  # _IOR('X', 125, __u32): EXT4_IOC_SHUTDOWN == XFS_IOC_GOINGDOWN
NOLOGFLUSH = 2  # EXT4_GOING_FLAGS_NOLOGFLUSH == XFS_FSOP_GOING_FLAGS_NOLOGFLUSH
FILE_SYSTEMS = {
    # name: (image size, mkfs command, check command); xfs wants at least 300 MiB.
    "ext4": ("128M", ["mkfs.ext4", "-q", "-F"], ["e2fsck", "-f", "-n"]),
    "xfs": ("320M", ["mkfs.xfs", "-q", "-f"], ["xfs_repair", "-n"]),
}
CUTS = {"fast": 20, "long": 160}  # per file system
TRIGGERS = ("size", "delay", "before-rename", "after-rename", "after-exit")
WINDOW = 0.3  # seconds strace holds the rename back (the before/after-rename windows)
WAIT = 60.0  # seconds any one wait may take before the case fails


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def scratch_root() -> Iterator[Path]:
    """Images and sources live on tmpfs when there is one (the loop device's flushes are then
    cheap; durability inside the image does not depend on it), else in a temporary dir."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    root = Path(tempfile.mkdtemp(prefix="onward-power-cut-", dir=base))
    yield root
    for mnt in root.glob("*/mnt"):
        if os.path.ismount(mnt):
            run(["umount", "-l", os.fspath(mnt)])
    shutil.rmtree(root, ignore_errors=True)


def power_cut_problem(fs: str, root: Path) -> str | None:
    """Why power cuts on ``fs`` cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (mount, loop devices, the shutdown ioctl)"
    _size, mkfs, check = FILE_SYSTEMS[fs]
    for tool in (mkfs[0], check[0], "mount", "umount"):
        if shutil.which(tool) is None:
            package = {"mkfs.xfs": "xfsprogs", "xfs_repair": "xfsprogs"}.get(tool, "e2fsprogs/mount")
            return f"{tool} is not installed (scripts/test installs it: apt-get install {package})"
    probe = Disk(fs, root / f"probe-{fs}")
    try:
        probe.make()
        probe.mount()
        probe.cut()
        probe.umount()
    except (OSError, subprocess.SubprocessError, AssertionError) as exc:
        return f"cannot loop-mount and shut down {fs} here: {exc}"
    finally:
        probe.destroy()
    return None


class Disk:
    """A file-system image, loop-mounted at ``mnt``."""

    def __init__(self, fs: str, where: Path) -> None:
        self.fs, self.where = fs, where
        self.image, self.mnt = where / f"{fs}.img", where / "mnt"
        self.checks = 0

    def make(self) -> None:
        size, mkfs, _check = FILE_SYSTEMS[self.fs]
        self.mnt.mkdir(parents=True, exist_ok=True)
        done = run(["truncate", "-s", size, os.fspath(self.image)])
        assert done.returncode == 0, done.stderr
        done = run([*mkfs, os.fspath(self.image)])
        assert done.returncode == 0, f"{' '.join(mkfs)} failed: {done.stderr.strip()}"

    def mount(self) -> None:
        done = run(["mount", "-o", "loop", os.fspath(self.image), os.fspath(self.mnt)])
        assert done.returncode == 0, f"mount -o loop ({self.fs}) failed: {done.stderr.strip()}"

    def umount(self) -> None:
        for _ in range(50):
            done = run(["umount", os.fspath(self.mnt)])
            if done.returncode == 0:
                return
            time.sleep(0.1)  # a killed process may still hold a file for a moment
        raise AssertionError(f"umount {self.mnt} failed: {done.stderr.strip()}")

    def cut(self) -> None:
        """The power cut: shut the file system down without flushing its log."""
        fd = os.open(self.mnt, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.ioctl(fd, GOINGDOWN, struct.pack("I", NOLOGFLUSH))
        finally:
            os.close(fd)

    def recover(self) -> None:
        """After a cut: unmount, mount (log recovery), unmount, check read-only, mount again."""
        self.umount()
        self.mount()
        self.umount()
        _size, _mkfs, check = FILE_SYSTEMS[self.fs]
        done = run([*check, os.fspath(self.image)])
        # e2fsck -n: 0 clean; xfs_repair -n: 0 clean, 1 corruption found.
        assert done.returncode == 0, (
            f"{check[0]} found damage after the cut: {done.stdout[-1500:]}{done.stderr[-500:]}"
        )
        self.checks += 1
        self.mount()

    def destroy(self) -> None:
        if os.path.ismount(self.mnt):
            run(["umount", "-l", os.fspath(self.mnt)])
        shutil.rmtree(self.where, ignore_errors=True)


@dataclass(frozen=True)
class Case:
    n: int
    fs: str
    size: int
    chunk: int
    checkpoint: int
    old: bool  # a destination exists before the copy
    triggers: tuple[str, ...]  # one per cut; the run after the last cut finishes
    fraction: tuple[float, ...]  # where in its run each cut lands (size or delay trigger)

    @property
    def flags(self) -> list[str]:
        return [
            "--json",
            "--chunk-size",
            str(self.chunk),
            "--checkpoint-bytes",
            str(self.checkpoint),
            "--checkpoint-seconds",
            "3600",
        ]

    def __str__(self) -> str:
        cuts = ", ".join(f"{t}@{f:.2f}" for t, f in zip(self.triggers, self.fraction, strict=True))
        old = " over an old destination" if self.old else ""
        plan = f"{self.size} B, chunk {self.chunk}, checkpoint {self.checkpoint}{old}"
        return f"{self.fs} case {self.n}: {plan}; cuts: {cuts}"


def draw_cases(faultlib: Any, fs: str) -> list[Case]:
    rng = faultlib.rng_for("power-cut", fs)
    cases = []
    for n in range(CUTS[faultlib.MODE]):
        chunk = rng.choice((64 * KiB, 256 * KiB, 1 * MiB))
        size = rng.choice((0, 1, chunk - 1, chunk + 1, 3 * MiB + 17, 12 * MiB + 5, 24 * MiB))
        cuts = 2 if rng.random() < 0.2 else 1  # a second cut lands in the recovery run
        triggers = tuple(
            TRIGGERS[(n + k) % len(TRIGGERS)] if k == 0 else rng.choice(TRIGGERS) for k in range(cuts)
        )
        cases.append(
            Case(
                n,
                fs,
                size,
                chunk,
                chunk * rng.choice((1, 2, 4)),
                rng.random() < 0.25,
                triggers,
                tuple(rng.random() for _ in range(cuts)),
            )
        )
    return cases


def left_behind(dest: Dest, data: bytes, claims: Claims) -> str:
    """What a cut left, for the tally: how far a re-run can pick up."""
    finished = dest.path.exists() and dest.path.read_bytes() == data
    if finished:
        return "the finished copy" + (" and its journal (PROMOTE)" if claims.journal else "")
    if claims.bytes:
        return "a partial and a journal with chunks (resume)"
    if claims.journal:
        return "a journal without chunks (start over)"
    return "no journal (start over)"


@dataclass
class Cut:
    returncode: int | None  # onward's exit status (None: killed)
    exited_before: bool  # onward had exited 0 before the cut


def journal_promoted(path: Path) -> bool:
    try:
        return decode(path.read_bytes()).promote is not None
    except (OSError, DecodeError):
        return False


def start(
    faultlib: Any, case: Case, src: Path, dest: Dest, trigger: str, out: Path, strace: str | None
) -> Any:
    cmd = faultlib.copy_args(src, dest, case.flags)
    if strace is not None and trigger in ("before-rename", "after-rename"):
        delay = "delay_enter" if trigger == "before-rename" else "delay_exit"
        cmd = [
            strace,
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-P",
            os.fspath(dest.partial),  # -P matches the rename by its first path
            "-e",
            "trace=rename,renameat,renameat2",
            "-e",
            f"inject=rename,renameat,renameat2:{delay}={int(WINDOW * 1e6)}",
            *cmd,
        ]
    with open(out, "w") as fh:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=out.parent,
        )


def wait_for(proc: Any, ready: Any) -> None:
    deadline = time.monotonic() + WAIT
    while not ready() and proc.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the moment of the cut")
        time.sleep(0.0002)


def cut_once(
    faultlib: Any,
    disk: Disk,
    case: Case,
    k: int,
    src: Path,
    dest: Dest,
    old_ino: int | None,
    strace: str | None,
    log: Path,
) -> Cut:
    """Run the copy and cut the power at the ``k``-th moment of ``case``; recover the disk."""
    trigger, fraction = case.triggers[k], case.fraction[k]
    proc = start(faultlib, case, src, dest, trigger, log, strace)
    try:
        if trigger == "size":
            target = int(fraction * case.size)

            def reached() -> bool:
                try:
                    return dest.partial.stat().st_size >= target
                except FileNotFoundError:
                    return False

            wait_for(proc, reached)
        elif trigger == "delay":
            # A full run here takes about 0.15 s of start-up plus the copy itself. The sleep places
            # the cut at a chosen moment of the run (the behaviour under test), it awaits nothing.
            time.sleep(fraction * (0.15 + case.size / (120 * MiB)))
        elif trigger == "before-rename":
            wait_for(proc, lambda: journal_promoted(dest.journal))
            time.sleep(fraction * WINDOW * 0.8)  # the cut's moment inside the window, not a wait
        elif trigger == "after-rename":

            def renamed() -> bool:
                try:
                    return dest.path.stat().st_ino != old_ino
                except FileNotFoundError:
                    return False

            wait_for(proc, renamed)
            time.sleep(fraction * WINDOW * 0.8)  # the cut's moment inside the window, not a wait
        else:  # after-exit
            proc.wait(timeout=WAIT)
        exited_before = proc.poll() == 0
        disk.cut()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=WAIT)
    faultlib.count(f"power cuts on {case.fs} ({trigger})")
    faultlib.count(f"power cuts on {case.fs}")
    rc = proc.returncode
    disk.recover()
    return Cut(rc if rc >= 0 else None, exited_before)


@pytest.mark.parametrize("fs", sorted(FILE_SYSTEMS))
def test_real_power_cuts_never_tear_the_copy_nor_let_the_journal_lead(
    fs: str, scratch_root: Path, faultlib: Any
) -> None:
    problem = power_cut_problem(fs, scratch_root)
    if problem:
        pytest.skip(problem)
    strace = faultlib.STRACE if faultlib.strace_problem() is None else None
    cases = draw_cases(faultlib, fs)
    sources: dict[int, tuple[Path, bytes]] = {}
    for size in sorted({c.size for c in cases}):
        path = scratch_root / f"src-{fs}-{size}.bin"
        data = faultlib.random_bytes(size, "power-cut")
        path.write_bytes(data)
        sources[size] = (path, data)
    old_bytes = faultlib.random_bytes(2 * MiB + 3, "power-cut-old")

    disks: queue.Queue[Disk] = queue.Queue()
    made = []
    for w in range(faultlib.WORKERS):
        disk = Disk(fs, scratch_root / f"{fs}-{w}")
        disk.make()
        disk.mount()
        made.append(disk)
        disks.put(disk)

    def body(case: Case) -> None:
        disk = disks.get()
        try:
            one_case(faultlib, disk, case, sources, old_bytes, strace, scratch_root)
        finally:
            disks.put(disk)

    try:
        faultlib.run_cases(cases, body, str, tally=f"power-cut cases on {fs}")
    finally:
        faultlib.count(f"file-system checks clean after a cut ({fs})", sum(d.checks for d in made))
        for disk in made:
            disk.destroy()


def one_case(
    faultlib: Any,
    disk: Disk,
    case: Case,
    sources: dict[int, tuple[Path, bytes]],
    old_bytes: bytes,
    strace: str | None,
    root: Path,
) -> None:
    src, data = sources[case.size]
    for stale in disk.mnt.iterdir():  # the previous cases' directories
        if stale.name != "lost+found":
            shutil.rmtree(stale)
    dest = faultlib.make_dest(disk.mnt / f"case{case.n}")
    old = None
    if case.old:
        dest.path.write_bytes(old_bytes)
        old = old_bytes
    os.sync()  # everything before the copy is durable: only onward's own writes are at stake
    old_ino = dest.path.stat().st_ino if case.old else None
    log = root / f"{case.fs}-{case.n}.out"
    for k in range(len(case.triggers)):
        cut = cut_once(faultlib, disk, case, k, src, dest, old_ino, strace, log)
        what = f"after cut {k + 1} ({case.triggers[k]}; onward rc={cut.returncode})"
        try:
            claims = faultlib.check_state(data, dest, case.chunk, old)
            if cut.exited_before or cut.returncode == 0:
                faultlib.check(
                    dest.path.exists() and dest.path.read_bytes() == data,
                    f"onward exited 0{' before the cut' if cut.exited_before else ''}, yet the copy is "
                    f"{'missing' if not dest.path.exists() else 'different'} after it",
                )
        except AssertionError as exc:
            raise faultlib.Broken(f"{what}: {exc}; onward said: {log.read_text()[-600:]!r}") from None
        faultlib.count(f"power cuts on {case.fs} that left: {left_behind(dest, data, claims)}")
        if k == len(case.triggers) - 1:
            try:
                faultlib.check_finishes(
                    src, data, dest, case.flags, claims, cwd=root, what="the re-run after the cut"
                )
            except AssertionError as exc:
                raise faultlib.Broken(f"{what}: {exc}") from None


def test_a_copy_renamed_into_place_is_recognised_when_the_device_number_changed(
    scratch_root: Path, faultlib: Any, strace_ok: str
) -> None:
    """Regression (found by the xfs power cuts): a power cut after the rename into place but
    before the journal's removal leaves a journal whose PROMOTE record names the partial by
    device and inode. After the reboot the file system may come back under another device
    number (loop devices, device-mapper, USB disks are numbered in the order they appear);
    the re-run must still see that the copy is finished, not copy it all again."""
    problem = power_cut_problem("ext4", scratch_root)
    if problem:
        pytest.skip(problem)
    disk = Disk("ext4", scratch_root / "renumbered")
    blocker = Disk("ext4", scratch_root / "blocker")
    try:
        disk.make()
        blocker.make()
        disk.mount()
        src = scratch_root / "renumbered.bin"
        data = faultlib.random_bytes(3 * MiB + 5, "renumbered")
        src.write_bytes(data)
        dest = faultlib.make_dest(disk.mnt / "d")
        flags = ["--json", "--chunk-size", "256K"]
        # Killed on entering the journal's unlink: renamed into place and the directory synced.
        killed = faultlib.run_cli(
            faultlib.copy_args(src, dest, flags),
            prefix=[
                *(strace_ok, "-f", "-qq", "-o", "/dev/null", "-P", os.fspath(dest.journal)),
                *("-e", "trace=unlink,unlinkat", "-e", "inject=unlink,unlinkat:signal=KILL"),
            ],
            cwd=scratch_root,
        )
        assert killed.returncode != 0, killed.describe()
        assert dest.journal.exists() and journal_promoted(dest.journal)
        before = dest.path.stat().st_dev
        disk.umount()
        blocker.mount()  # takes the loop device the disk had
        disk.mount()
        after = dest.path.stat().st_dev
        if after == before:
            pytest.skip("the loop device number did not change; cannot show the renumbering")
        claims = faultlib.check_state(data, dest, 256 * KiB)
        assert claims.promoted and claims.bytes == len(data)
        rerun = faultlib.check_finishes(src, data, dest, flags, claims, cwd=scratch_root)
        assert rerun.done()["copied"] == 0, rerun.describe()
    finally:
        disk.destroy()
        blocker.destroy()

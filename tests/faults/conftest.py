"""Shared helpers of the fault-injection suite (issue 3): strace runs, traces and the checks
every method makes after a crash or an error.

The helpers are plain functions of this module, handed to tests by the session fixture
``faultlib`` (a conftest cannot be imported by name: ``tests/conftest.py`` is a
``conftest`` too). Sections are owned by the methods that use them; add to this file,
never rewrite it.

Modes: ``ONWARD_FAULTS=long`` runs every case (thousands); anything else runs the fast
subset CI runs on every submission. ``ONWARD_FAULT_SEED`` seeds every sample drawn (it is
printed in the summary and in every failure); ``scripts/faults-long`` runs the long mode.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import xxhash

from faults.crashsim import MUTATING  # every call that can change a file (kill and inject points)
from onward.core.journal import DecodeError, decode
from partials import intact_unclaimed

MODE = "long" if os.environ.get("ONWARD_FAULTS", "").strip().lower() == "long" else "fast"
LONG = MODE == "long"
SEED = int(os.environ.get("ONWARD_FAULT_SEED", "20241125"))
WORKERS = max(1, min(4, os.cpu_count() or 1))  # cases run side by side, each in its own directory
ONWARD = [sys.executable, "-m", "onward"]
TIMEOUT = 120  # seconds for one run of the CLI, strace included


# Calls whose first argument is a path (or dirfd + path), not a file descriptor.
PATH_CALLS = frozenset(
    {
        "open",
        "openat",
        "creat",
        "truncate",
        "rename",
        "renameat",
        "renameat2",
        "link",
        "linkat",
        "unlink",
        "unlinkat",
        "chmod",
        "fchmodat",
    }
)
# Hints whose failure onward may ignore: a copy with such a call failing may still succeed.
HINTS = frozenset({"sync_file_range"})

T = TypeVar("T")


# --- modes, seeds and the tally printed at the end ---------------------------------------------

TALLY: Counter[str] = Counter()
_TALLY_LOCK = threading.Lock()


def count(key: str, n: int = 1) -> None:
    with _TALLY_LOCK:
        TALLY[key] += n


def rng_for(*parts: object) -> random.Random:
    """A reproducible RNG per test: the suite seed plus the test's own key."""
    return random.Random(":".join(map(str, (SEED, *parts))))


def sample(items: Sequence[T], k: int | None, rng: random.Random) -> list[T]:
    """All of ``items`` when ``k`` is None or large enough, else ``k`` of them, in order."""
    if k is None or k >= len(items):
        return list(items)
    picked = sorted(rng.sample(range(len(items)), k))
    return [items[i] for i in picked]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TALLY:
        return
    terminalreporter.section("onward fault injection")
    terminalreporter.write_line(f"mode {MODE} (ONWARD_FAULTS), seed {SEED} (ONWARD_FAULT_SEED)")
    for key, value in sorted(TALLY.items()):
        terminalreporter.write_line(f"  {key}: {value}")


@pytest.fixture(scope="session")
def faultlib() -> Any:
    """This module: the helpers below, for the tests of ``tests/faults``."""
    return sys.modules[__name__]


# --- strace: availability, command lines, traces -----------------------------------------------

STRACE = shutil.which("strace")


def strace_problem() -> str | None:
    """Why strace fault injection cannot run here, or None when it can."""
    if STRACE is None:
        return "strace is not installed (scripts/test installs it; apt-get install strace)"
    probe = subprocess.run(
        [STRACE, "-f", "-qq", "-o", "/dev/null", "-e", "inject=getppid:error=EPERM", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return f"strace cannot trace here (ptrace refused?): {probe.stderr.strip()[:200]}"
    return None


@pytest.fixture(scope="session")
def strace_ok() -> str:
    """The strace path; skips the test with the reason when strace cannot inject faults."""
    problem = strace_problem()
    if problem:
        pytest.skip(problem)
    assert STRACE is not None
    return STRACE


@dataclass(frozen=True)
class Dest:
    """A destination and the files onward keeps beside it."""

    path: Path

    @property
    def dir(self) -> Path:
        return self.path.parent

    @property
    def partial(self) -> Path:
        return self.path.with_name(self.path.name + ".onward-partial")

    @property
    def journal(self) -> Path:
        return self.path.with_name(self.path.name + ".onward-journal")

    @property
    def journal_tmp(self) -> Path:
        return self.path.with_name(self.path.name + ".onward-journal.tmp")

    def watched(self) -> list[Path]:
        """Every path whose system calls count as onward's file changes (strace ``-P``)."""
        return [self.path, self.partial, self.journal, self.journal_tmp, self.dir]


def make_dest(root: Path, name: str = "copy") -> Dest:
    """A fresh, empty destination directory under ``root`` (resolved: strace matches exact paths)."""
    directory = root.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    return Dest(directory / name)


def strace_command(dest: Dest, trace: Path, inject: Sequence[str] = ()) -> list[str]:
    """strace, following threads, recording onward's mutating calls on ``dest``'s files to
    ``trace`` (fds shown with their paths), with each ``inject`` expression applied.

    ``-P`` restricts tracing, and so the ``when=N`` counting of injections, to the calls on
    the destination, its partial, journal, temporary journal and directory: Python's own
    ``openat`` calls (imports) and writes to stdout/stderr never count as kill points.
    """
    assert STRACE is not None
    cmd = [STRACE, "-f", "-qq", "-y", "-o", os.fspath(trace), "-e", "trace=" + ",".join(MUTATING)]
    for path in dest.watched():
        cmd += ["-P", os.fspath(path)]
    for expr in inject:
        cmd += ["-e", f"inject={expr}"]
    return cmd


@dataclass(frozen=True)
class Call:
    """One traced system call: the ``nth`` call of ``name`` made by thread ``tid``."""

    tid: int
    name: str
    nth: int
    paths: tuple[str, ...]  # the file(s) it acted on
    result: str  # what strace printed after '=' ("?" when the process died in it)
    args: str = ""  # the arguments as strace printed them (strings cut short)

    @property
    def injected(self) -> bool:
        return "(INJECTED)" in self.result

    def kill(self) -> str:
        """The strace inject expression that SIGKILLs the process on entering this call."""
        return f"{self.name}:signal=KILL:when={self.nth}"

    def fail(self, errname: str, persistent: bool = True) -> str:
        """The inject expression that fails this call (and, if ``persistent``, every later one
        of the same name) with ``errname``."""
        return f"{self.name}:error={errname}:when={self.nth}{'+' if persistent else ''}"

    @property
    def offset(self) -> int | None:
        """The file offset of a ``pwrite64`` (its last argument)."""
        if self.name != "pwrite64":
            return None
        return int(self.args.rstrip(") ").rsplit(",", 1)[1])

    def __str__(self) -> str:
        where = " -> ".join(os.path.basename(p) or p for p in self.paths)
        return f"{self.name}#{self.nth}({where})"


_LINE = re.compile(r"^(\d+) +(\w+)\((.*)$")
_RESUMED = re.compile(r"^(\d+) +<\.\.\. (\w+) resumed>(.*)$")
_FD_PATH = re.compile(r"^-?\d+<([^>]*)>")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def parse_trace(text: str) -> list[Call]:
    """The calls of an ``strace -f -y -o`` trace, in the order they were entered."""
    calls: list[Call] = []
    seen: Counter[tuple[int, str]] = Counter()
    pending: dict[tuple[int, str], int] = {}  # unfinished call -> its index in ``calls``
    for line in text.splitlines():
        resumed = _RESUMED.match(line)
        if resumed:
            tid, name = int(resumed[1]), resumed[2]
            at = pending.pop((tid, name), None)
            if at is not None:
                c = calls[at]
                result = resumed[3].rpartition(" = ")[2].strip() if " = " in resumed[3] else "?"
                calls[at] = Call(c.tid, c.name, c.nth, c.paths, result, c.args)
            continue
        m = _LINE.match(line)
        if not m:
            continue  # signals, exits
        tid, name, args = int(m[1]), m[2], m[3]
        seen[tid, name] += 1
        if name in PATH_CALLS:
            paths = tuple(_QUOTED.findall(args.split("<unfinished", 1)[0]))[:2]
        else:
            fd = _FD_PATH.match(args)
            paths = (fd[1],) if fd else ()
        if args.endswith("<unfinished ...>"):
            pending[tid, name] = len(calls)
            result = "?"
        else:
            result = args.rpartition(" = ")[2].strip() if " = " in args else "?"
        calls.append(Call(tid, name, seen[tid, name], paths, result, args.rpartition(" = ")[0] or args))
    return calls


@dataclass
class Run:
    """One CLI run: exit status (negative: killed by that signal), output and its trace."""

    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str
    calls: list[Call] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def killed(self) -> bool:
        return self.returncode == -9

    def events(self) -> list[dict[str, Any]]:
        import json

        out = []
        for line in self.stdout.splitlines():
            with contextlib.suppress(ValueError):  # a line cut short by a kill
                out.append(json.loads(line))
        return out

    def done(self) -> dict[str, Any] | None:
        return next((e for e in reversed(self.events()) if e.get("event") == "done"), None)

    def describe(self) -> str:
        return (
            f"rc={self.returncode} cmd={' '.join(map(str, self.cmd))!r} stderr={self.stderr[-2000:]!r} "
            f"last calls={[str(c) for c in self.calls[-4:]]}"
        )


def copy_args(src: Path, dest: Dest, flags: Sequence[str]) -> list[str]:
    return [*ONWARD, "copy", *flags, os.fspath(src), os.fspath(dest.path)]


def run_cli(
    cmd: Sequence[str],
    *,
    dest: Dest | None = None,
    trace: Path | None = None,
    inject: Sequence[str] = (),
    prefix: Sequence[str] = (),
    cwd: Path | None = None,
    timeout: float = TIMEOUT,
) -> Run:
    """Run ``cmd`` (the CLI), under strace when ``trace`` is given, from ``cwd`` (never the
    destination directory: Python looks around its working directory at start-up)."""
    full = [*prefix, *cmd]
    if trace is not None:
        assert dest is not None
        full = [*prefix, *strace_command(dest, trace, inject), *cmd]
    began = time.monotonic()
    proc = subprocess.run(
        full,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        cwd=cwd,
    )
    run = Run(full, proc.returncode, proc.stdout, proc.stderr, seconds=time.monotonic() - began)
    if trace is not None:
        run.calls = parse_trace(trace.read_text(errors="replace"))
    return run


def trace_reference(
    src: Path, data: bytes, flags: Sequence[str], where: Path, *, old: bytes | None = None, runs: int = 2
) -> list[Call]:
    """The mutating calls of an un-killed, un-faulted copy of ``src``: ``runs`` traced copies
    (into ``where/reference<i>``) must all succeed and make the same calls in the same order,
    or a kill or fault point would not name the same moment from one run to the next."""
    seen: list[list[tuple[str, int, tuple[str, ...]]]] = []
    calls: list[Call] = []
    for i in range(runs):
        dest = make_dest(where / f"reference{i}")
        if old is not None:
            dest.path.write_bytes(old)
        run = run_cli(copy_args(src, dest, flags), dest=dest, trace=where / f"reference{i}.trace", cwd=where)
        check(run.returncode == 0, f"the un-faulted copy failed: {run.describe()}")
        check(dest.path.read_bytes() == data, "the un-faulted copy differs from its source")
        calls = run.calls
        seen.append([(c.name, c.nth, tuple(p.replace(str(dest.dir), "") for p in c.paths)) for c in calls])
    check(
        all(s == seen[0] for s in seen), "identical copies made different calls: fault points are not stable"
    )
    check(calls, "strace saw no file-changing call: the -P paths do not match onward's files")
    return calls


# --- what must hold after any crash or error ---------------------------------------------------


class Broken(AssertionError):
    """A property of the promise did not hold; the message says which and where."""


def check(condition: object, message: str) -> None:
    if not condition:
        raise Broken(message)


def digest(data: bytes) -> bytes:
    return xxhash.xxh3_128(data).digest()


@dataclass(frozen=True)
class Claims:
    """What a journal claims after a crash or an error."""

    chunks: frozenset[int]
    bytes: int
    promoted: bool  # a PROMOTE record is present
    journal: bool  # the journal file exists
    intact: int = 0  # bytes of the chunks the partial holds intact that the journal does not claim

    @property
    def resumable(self) -> int:
        """Where a re-run must resume: every claimed byte, and the intact unclaimed chunks it keeps."""
        return self.bytes + self.intact


def check_state(data: bytes, dest: Dest, chunk_size: int, old: bytes | None = None) -> Claims:
    """The state a crash or an error may leave, checked against the promise:

    - the destination name holds nothing, its old bytes (``old``, when it existed before),
      or bytes identical to the source: never a torn or stale copy;
    - the journal, when present, decodes (it is only ever replaced by a rename), belongs to
      this copy, and every chunk it claims holds exactly the source's bytes in the partial
      (or, once renamed, in the destination): the journal never runs ahead of the data.
    """
    if dest.path.exists():
        held = dest.path.read_bytes()
        fine = held == data or (old is not None and held == old)
        check(fine, f"destination {dest.path} is torn or stale ({len(held)} bytes, source {len(data)})")
    if not dest.journal.exists():
        return Claims(frozenset(), 0, False, False)
    raw = dest.journal.read_bytes()
    try:
        loaded = decode(raw)
    except DecodeError as exc:
        raise Broken(f"journal {dest.journal} unusable after the failure: {exc}") from None
    header = loaded.header
    check(header.total_size == len(data), f"journal plans {header.total_size} bytes, source has {len(data)}")
    check(header.chunk_size == chunk_size, f"journal chunk size {header.chunk_size} != {chunk_size}")
    check(header.destination == os.fspath(dest.path), f"journal names {header.destination}")
    holder = dest.partial
    if loaded.chunks:
        if loaded.promote is not None and dest.path.exists():
            st = dest.path.stat()
            # The inode decides: after a power cut and a re-mount the file system may come back
            # under another device number (test_power_cut.py, loop devices).
            if st.st_ino == loaded.promote.inode:
                # Renamed into place, the journal not yet removed: its chunks are in the
                # destination (a partial beside it, if any, is a new empty one).
                holder = dest.path
        check(holder.exists(), f"journal claims chunks {sorted(loaded.chunks)} but there is no partial")
        held = holder.read_bytes()
        for index, record in sorted(loaded.chunks.items()):
            start = index * chunk_size
            piece = held[start : start + record.length]
            check(
                piece == data[start : start + record.length] and digest(piece) == record.digest,
                f"journal claims chunk {index} but {holder.name} holds other bytes there "
                f"({len(piece)} of {record.length} present)",
            )
    total = sum(r.length for r in loaded.chunks.values())
    intact = intact_unclaimed(data, dest.journal, holder) if holder == dest.partial else 0
    return Claims(frozenset(loaded.chunks), total, loaded.promote is not None, True, intact)


def leftovers(dest: Dest) -> list[str]:
    return sorted(set(os.listdir(dest.dir)) - {dest.path.name})


def check_finishes(
    src: Path,
    data: bytes,
    dest: Dest,
    flags: Sequence[str],
    claims: Claims,
    *,
    cwd: Path | None = None,
    what: str = "the re-run",
) -> Run:
    """A plain re-run of the same command: exit 0, an identical copy, nothing left beside it,
    and it resumed from every byte the journal claimed (no durable progress thrown away)."""
    run = run_cli(copy_args(src, dest, flags), cwd=cwd)
    check(run.returncode == 0, f"{what} failed: {run.describe()}")
    check("Traceback" not in run.stderr, f"{what} printed a traceback: {run.stderr}")
    check(dest.path.exists() and dest.path.read_bytes() == data, f"{what} left a copy that differs")
    check(not leftovers(dest), f"{what} left {leftovers(dest)} beside the copy")
    done = run.done()
    if "--json" in flags:
        check(done is not None, f"{what} reported no done event: {run.stdout[-500:]!r}")
        assert done is not None
        check(
            done["resumed_from"] == claims.resumable,
            f"{what} resumed from {done['resumed_from']} but the journal claimed {claims.bytes} bytes "
            f"and the partial held {claims.intact} more intact",
        )
    return run


ERROR_LINE = re.compile(r"^onward: \S")


def check_one_error_line(run: Run, *needles: str) -> str:
    """Exit 1, no traceback, and exactly one stderr line ``onward: ...`` holding each needle."""
    check("Traceback" not in run.stderr + run.stdout, f"traceback: {run.stderr}")
    check(run.returncode == 1, f"expected exit 1: {run.describe()}")
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    check(len(lines) == 1, f"expected one line on stderr, got {lines!r}")
    line = lines[0]
    check(ERROR_LINE.match(line), f"not an 'onward: ...' line: {line!r}")
    for needle in needles:
        check(needle in line, f"{needle!r} missing from {line!r}")
    return line


# --- running many cases side by side -----------------------------------------------------------

FAILURE_LOG = os.environ.get("ONWARD_FAULT_LOG")  # every failing case, as it happens (long runs)


def log_failure(text: str) -> None:
    if FAILURE_LOG:
        with _TALLY_LOCK, open(FAILURE_LOG, "a") as fh:
            fh.write(f"[mode {MODE} seed {SEED}] {text}\n")


@dataclass
class Outcome:
    label: str
    error: BaseException | None
    seconds: float


def run_cases(
    cases: Iterable[T], body: Callable[[T], None], label: Callable[[T], str], *, tally: str
) -> list[Outcome]:
    """Run ``body`` for every case on ``WORKERS`` threads (each case spawns processes and
    works in its own directory); fail once at the end, listing the first failures."""
    items = list(cases)

    def one(case: T) -> Outcome:
        began = time.monotonic()
        try:
            body(case)
            return Outcome(label(case), None, time.monotonic() - began)
        except BaseException as exc:  # every failure is reported at the end
            log_failure(f"{label(case)}: {type(exc).__name__}: {exc}")
            return Outcome(label(case), exc, time.monotonic() - began)

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        outcomes = list(pool.map(one, items))
    count(tally, len(outcomes))
    failed = [o for o in outcomes if o.error is not None]
    if failed:
        count(f"{tally} FAILED", len(failed))
        shown = "\n".join(f"- {o.label}: {type(o.error).__name__}: {o.error}" for o in failed[:8])
        pytest.fail(
            f"{len(failed)} of {len(outcomes)} cases failed [mode {MODE}, ONWARD_FAULT_SEED={SEED}]:\n"
            f"{shown}",
            pytrace=False,
        )
    return outcomes


def random_bytes(size: int, key: object) -> bytes:
    return random.Random(f"onward-faults:{key}:{size}").randbytes(size)


def write_source(src: Path, data: bytes, holes: Iterable[tuple[int, int]] = ()) -> bytes:
    """Write ``data`` to ``src`` except the byte ranges ``holes`` (start, end; 4 KiB-aligned),
    left holes (a sparse source); returns the bytes it then holds."""
    with open(src, "wb") as fh:
        fh.truncate(len(data))
        at = 0
        for start, end in [*sorted(holes), (len(data), len(data))]:
            fh.seek(at)
            fh.write(data[at:start])
            at = end
    return src.read_bytes()

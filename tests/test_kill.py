"""Real crashes of the real CLI: SIGKILL at random moments, and Ctrl-C / SIGTERM.

Every test runs ``python -m onward copy`` as a subprocess on real files and
signals it for real. After each SIGKILL the destination name must hold nothing
or a byte-identical copy (or, when it existed before, its old bytes untouched);
the same command run again must finish (exit 0) with a byte-identical copy and
nothing left beside it; and the work lost — bytes the partial held at the kill
minus the ``resumed_from`` the resume reports — must stay within one checkpoint
interval plus the chunk in flight.

The kill moments come from a seeded RNG (``ONWARD_KILL_SEED`` overrides the
seed; it is printed with every failure). Kill delays are drawn from zero to the
measured duration of an un-killed run of the same copy, so they cover process
start-up, planning, copying, verification and promotion (half of them from its
second half, where the work is: for small files start-up is nearly all of it).
Scheduling still makes the exact moment vary from run to run, which is why the
tests count what they actually hit instead of trusting the delays. The narrow
windows random delays rarely hit (between sync and journal record, around the
rename) are killed at deterministically by a hook in the child process.

Run with ``pytest -s tests/test_kill.py`` to see the tallies; the largest work
lost is also written to ``<pytest basetemp>/onward-kill-work-lost.txt``.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

KiB, MiB = 1 << 10, 1 << 20
CHUNK = 64 * KiB
CHECKPOINT = 256 * KiB
BIG = 32 * MiB
# A checkpoint is taken as soon as CHECKPOINT bytes are written since the last one, so
# at a kill the partial holds less than CHECKPOINT + CHUNK bytes no journal record claims
# (the chunk that crossed the threshold included), and a SIGKILL leaves the page cache,
# hence the partial's bytes, intact: nothing already committed is thrown away on resume.
LOSS_BOUND = CHECKPOINT + CHUNK
SEED = int(os.environ.get("ONWARD_KILL_SEED", "20240611"))
INTERRUPT_DEADLINE = 1.0  # seconds from Ctrl-C / SIGTERM to exit 130
COPY_FLAGS = ["--json", "--chunk-size", "64K", "--checkpoint-bytes", "256K"]
ONWARD = [sys.executable, "-m", "onward"]
RESUME_HINT = re.compile(r"(same command again|re-?run)[^\n]*resume", re.IGNORECASE)


@dataclass(frozen=True)
class Case:
    name: str
    size: int
    kills: int  # single kills: killed once, then resumed to the end
    doubles: int  # killed, the resume killed too, then a third run finishes
    mid_copy: int = 0  # of the kills, how many must land while the partial is half-written


CASES = [
    Case("empty", 0, 4, 1),
    Case("one-byte", 1, 4, 1),
    Case("chunk-minus-1", CHUNK - 1, 4, 1),
    Case("chunk", CHUNK, 4, 1),
    Case("chunk-plus-1", CHUNK + 1, 4, 1),
    Case("40-chunks", 40 * CHUNK, 8, 2),
    # Big enough that most of an un-killed run is copying, not start-up: 512 chunks.
    Case("32MiB", BIG, 10, 3, mid_copy=8),
]


# --- the ledger: every kill, and the work each one lost -------------------------------------


@dataclass
class KillLedger:
    kills: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    worst: tuple[int, str] = (-1, "")  # (bytes lost, how)

    def lost(self, case: Case, lost: int, how: str) -> None:
        if lost > self.worst[0]:
            self.worst = (lost, f"{case.name} ({case.size} bytes): {how}")

    def summary(self) -> str:
        lost, how = self.worst
        return (
            f"onward kill tests (seed {SEED}, chunk {CHUNK}, checkpoint {CHECKPOINT}, "
            f"bound {LOSS_BOUND}): {self.kills} SIGKILLs landed; phases {dict(sorted(self.phases.items()))}; "
            f"largest work lost {max(lost, 0)} bytes ({max(lost, 0) / KiB:.0f} KiB)"
            + (f" at {how}" if how else "")
        )


@pytest.fixture(scope="module")
def onward_kill_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KillLedger]:
    ledger = KillLedger()
    yield ledger
    text = ledger.summary()
    print("\n" + text)
    (tmp_path_factory.getbasetemp() / "onward-kill-work-lost.txt").write_text(text + "\n")


@pytest.fixture(scope="module")
def onward_kill_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """One random source per size, made once (the big one takes a moment)."""
    root = tmp_path_factory.mktemp("kill-sources")
    sources = {}
    for case in CASES:
        path = root / f"src-{case.name}"
        path.write_bytes(os.urandom(case.size))
        sources[case.size] = path
    return sources


# --- helpers --------------------------------------------------------------------------------


@dataclass
class Run:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str
    seconds: float

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    def first(self, kind: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e["event"] == kind), None)

    def last(self, kind: str) -> dict[str, Any] | None:
        return next((e for e in reversed(self.events) if e["event"] == kind), None)


def parse_events(text: str) -> list[dict[str, Any]]:
    # A SIGKILL can land mid-line; only the last line may be cut short.
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines.pop()
    return [json.loads(line) for line in lines]


def copy_command(src: Path, dst: Path) -> list[str]:
    return [*ONWARD, "copy", *COPY_FLAGS, os.fspath(src), os.fspath(dst)]


def run_copy(src: Path, dst: Path, logs: Path, kill_after: float | None = None) -> Run:
    """Run the copy; with ``kill_after``, SIGKILL it after that many seconds unless it ended."""
    logs.mkdir(exist_ok=True)
    out, err = logs / "stdout", logs / "stderr"
    with out.open("wb") as fout, err.open("wb") as ferr:
        began = time.monotonic()
        proc = subprocess.Popen(copy_command(src, dst), stdin=subprocess.DEVNULL, stdout=fout, stderr=ferr)
        try:
            proc.wait(timeout=60 if kill_after is None else kill_after)
        except subprocess.TimeoutExpired:
            if kill_after is None:
                proc.kill()
                proc.wait()
                raise
            proc.send_signal(signal.SIGKILL)  # a zombie that just exited ignores it: rc tells
            proc.wait(timeout=30)
        seconds = time.monotonic() - began
    return Run(proc.returncode, parse_events(out.read_text()), err.read_text(), seconds)


def kill_delay(rng: random.Random, span: float) -> float:
    """Anywhere in an un-killed run's ``span``; half the time in its second half."""
    return rng.uniform(0.0, span) if rng.random() < 0.5 else rng.uniform(0.5 * span, 1.05 * span)


def same_bytes(a: Path, b: Path) -> str | None:
    """None when ``a`` and ``b`` hold the same bytes, else where they first differ."""
    if a.stat().st_size != b.stat().st_size:
        return f"sizes differ: {a.stat().st_size} != {b.stat().st_size}"
    with a.open("rb") as fa, b.open("rb") as fb:
        offset = 0
        while True:
            x, y = fa.read(MiB), fb.read(MiB)
            if x != y:
                at = next(i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q)
                return f"first difference at byte {offset + at}"
            if not x:
                return None
            offset += len(x)


def partial_of(dst: Path) -> Path:
    return dst.with_name(dst.name + ".onward-partial")


def journal_of(dst: Path) -> Path:
    return dst.with_name(dst.name + ".onward-journal")


def phase_after_kill(dst: Path, size: int, old: bytes | None) -> str:
    partial, journal = partial_of(dst), journal_of(dst)
    promoted = dst.exists() and (old is None or dst.stat().st_size != len(old))  # sizes always differ
    if promoted:
        return "promoting" if journal.exists() else "finished"
    if not journal.exists():
        return "starting"
    held = partial.stat().st_size if partial.exists() else 0
    if size and 0 < held < size:
        return "copying"
    return "planning" if held == 0 and size else "verifying"


# --- SIGKILL at random moments --------------------------------------------------------------


def kill_cycle(
    case: Case,
    src: Path,
    work: Path,
    rng: random.Random,
    span: float,
    kills: int,
    ledger: KillLedger,
    stats: Counter[str],
    tag: str,
) -> float | None:
    """Kill the copy up to ``kills`` times (each resume is the next victim), then finish it.

    Returns how long the first run took when it finished before its kill was due (None
    otherwise): a whole un-killed copy, which narrows the range of later kill delays.
    """
    dst_dir = work / "dst"
    dst_dir.mkdir()
    dst = dst_dir / "copy"
    # Half the cycles overwrite an older destination: it must stay untouched until the rename.
    old = os.urandom(min(case.size, 3 * CHUNK) + 7) if rng.random() < 0.5 else None
    if old is not None:
        dst.write_bytes(old)
    held_at_kill: int | None = None  # bytes the partial held at the latest kill
    committed_at_kill = 0  # the last checkpoint the killed run reported
    phase = "none"
    for attempt in range(kills + 1):
        final = attempt == kills
        delay = None if final else kill_delay(rng, span)
        run = run_copy(src, dst, work / f"run{attempt}", kill_after=delay)
        context = (
            f"[seed {SEED} {tag} case {case.name} size {case.size} run {attempt} "
            f"delay {delay if delay is None else round(delay, 4)} old-dst {old is not None} "
            f"previous kill while {phase}] "
            f"rc={run.returncode} stderr={run.stderr!r}"
        )
        start = run.first("start")
        if held_at_kill is not None and start is not None:
            # The loss of the previous kill, as this run saw it when it started.
            resumed = start["resumed_from"]
            assert resumed >= committed_at_kill, f"a reported checkpoint was lost: {context}"
            assert resumed >= held_at_kill - LOSS_BOUND, (
                f"lost {held_at_kill - resumed} bytes > bound {LOSS_BOUND}: {context}"
            )
            ledger.lost(case, held_at_kill - resumed, f"partial {held_at_kill}, resumed from {resumed}")
        if not run.killed:
            assert run.returncode == 0, f"the copy failed: {context}"
            done = run.last("done")
            assert done is not None and done["size"] == case.size, context
            assert start is not None and done["resumed_from"] == start["resumed_from"], context
            if attempt == 0:
                shutil.rmtree(dst_dir)
                return run.seconds
            break
        # Right after the kill: the final name is absent, old, or complete: never torn.
        ledger.kills += 1
        stats["kills"] += 1
        phase = phase_after_kill(dst, case.size, old)
        ledger.phases[phase] += 1
        stats[phase] += 1
        if dst.exists():
            if old is not None and phase not in ("promoting", "finished"):
                assert dst.read_bytes() == old, f"old destination touched before the rename: {context}"
            else:
                assert same_bytes(src, dst) is None, f"torn destination after SIGKILL: {context}"
        partial = partial_of(dst)
        held_at_kill = partial.stat().st_size if partial.exists() else 0
        checkpoint = run.last("checkpoint")
        committed_at_kill = checkpoint["committed"] if checkpoint else 0
        if phase == "finished":
            # Killed after the journal was removed: the copy is complete and nothing records it,
            # so a re-run is a new copy (as with cp) and starts from 0; no work of the killed
            # run was lost, its result is the destination checked above.
            committed_at_kill = 0
        assert held_at_kill <= case.size, context
    if attempt > 0:
        stats[f"cycles-killed-{attempt}x"] += 1
    # The finished copy: identical, and nothing left beside it.
    mismatch = same_bytes(src, dst)
    assert mismatch is None, f"resumed copy differs ({mismatch}): {context}"
    assert sorted(os.listdir(dst_dir)) == ["copy"], f"left behind: {sorted(os.listdir(dst_dir))}: {context}"
    if attempt > 0:
        assert held_at_kill is not None  # every killed attempt set it
        done = run.last("done")
        assert done is not None, context
        assert done["resumed_from"] >= committed_at_kill, f"a reported checkpoint was lost: {context}"
        assert done["resumed_from"] >= held_at_kill - LOSS_BOUND, context
    shutil.rmtree(dst_dir)
    return None


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_sigkill_at_random_moments_resumes_to_an_identical_copy_losing_at_most_one_checkpoint(
    case: Case,
    tmp_path: Path,
    onward_kill_sources: dict[int, Path],
    onward_kill_ledger: KillLedger,
) -> None:
    src = onward_kill_sources[case.size]
    rng = random.Random(f"{SEED}:{case.name}")
    # An un-killed run first: it must work, and its duration sets the range of kill delays.
    # The fastest of three, so that a moment of load elsewhere does not stretch the range;
    # every cycle whose first run finishes before its kill narrows it further.
    span = float("inf")
    for i in range(3):
        baseline = run_copy(src, tmp_path / "baseline", tmp_path / f"baseline-logs{i}")
        assert baseline.returncode == 0, baseline.stderr
        assert same_bytes(src, tmp_path / "baseline") is None
        span = min(span, baseline.seconds)
        (tmp_path / "baseline").unlink()

    stats: Counter[str] = Counter()
    singles = doubles = mid_copy = cycles = 0
    wanted_mid = case.mid_copy
    while singles < case.kills or doubles < case.doubles or mid_copy < wanted_mid:
        cycles += 1
        assert cycles <= 6 * (case.kills + case.doubles), (
            f"[seed {SEED}] too few kills landed in {cycles - 1} cycles: {dict(stats)} "
            f"(kill delays 0..{1.05 * span:.3f}s)"
        )
        want = 2 if doubles < case.doubles else 1
        before = stats.copy()
        work = tmp_path / f"cycle{cycles}"
        work.mkdir()
        took = kill_cycle(case, src, work, rng, span, want, onward_kill_ledger, stats, f"cycle {cycles}")
        span = min(span, took or span)
        landed = stats["kills"] - before["kills"]
        mid_copy += stats["copying"] - before["copying"]
        if landed == 2:
            doubles += 1
        elif landed == 1:
            singles += 1
        shutil.rmtree(work)
    print(
        f"\n{case.name}: {stats['kills']} SIGKILLs in {cycles} cycles (delays 0..{span:.3f}s): "
        f"{dict(sorted(stats.items()))}"
    )
    assert stats["kills"] >= case.kills + 2 * case.doubles


# --- Ctrl-C and SIGTERM: a clean stop, resumable ------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_and_sigterm_exit_130_at_once_and_the_rerun_resumes(
    signum: signal.Signals, tmp_path: Path, onward_kill_sources: dict[int, Path]
) -> None:
    src = onward_kill_sources[BIG]
    rng = random.Random(f"{SEED}:{signum.name}")
    dst = tmp_path / "dst" / "copy"
    dst.parent.mkdir()
    stops: list[dict[str, Any]] = []  # the error events of the interrupted runs
    for attempt in range(10):
        out, err = tmp_path / f"out{attempt}", tmp_path / f"err{attempt}"
        with out.open("wb") as fout, err.open("wb") as ferr:
            proc = subprocess.Popen(
                copy_command(src, dst), stdin=subprocess.DEVNULL, stdout=fout, stderr=ferr
            )
            try:
                # Signal once the copy is under way (its handlers are installed by then).
                deadline = time.monotonic() + 30
                while b'"event": "start"' not in out.read_bytes() and proc.poll() is None:
                    assert time.monotonic() < deadline, "no start event"
                    time.sleep(0.001)
                time.sleep(rng.uniform(0.0, 0.03))  # a random moment for the signal, not a wait
                sent = time.monotonic()
                proc.send_signal(signum)
                rc = proc.wait(timeout=30)
                took = time.monotonic() - sent
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        events = parse_events(out.read_text())
        context = f"[seed {SEED} {signum.name} attempt {attempt}] rc={rc} stderr={err.read_text()!r}"
        if any(e["event"] == "done" for e in events):
            # It finished before the signal: exit 0, or killed by the signal itself when that
            # came after the copy: 130 when onward caught it, or the signal itself in the last
            # moments of shutdown, once Python restored default handlers. The copy must be whole;
            # start over, this attempt proves nothing about stopping.
            assert rc in (0, 130, -signum), context
            assert same_bytes(src, dst) is None, context
            assert sorted(os.listdir(dst.parent)) == ["copy"], context
            dst.unlink()
            stops.clear()
            continue
        assert rc == 130, context
        assert took < INTERRUPT_DEADLINE, f"took {took:.2f}s to stop: {context}"
        assert RESUME_HINT.search(err.read_text()), context
        assert not dst.exists(), f"the final name appeared for an interrupted copy: {context}"
        start = next(e for e in events if e["event"] == "start")
        if stops:
            assert start["resumed_from"] >= stops[-1]["done"], f"the interrupted run lost progress: {context}"
        error = next(e for e in events if e["event"] == "error")
        assert error["exit_code"] == 130 and error["total"] == src.stat().st_size, context
        partial = partial_of(dst)
        held = partial.stat().st_size if partial.exists() else 0
        # A clean stop checkpoints everything written: at most the chunk being written is lost.
        assert error["done"] >= held - CHUNK, context
        stops.append(error)
        if len(stops) == 2:
            break
    assert len(stops) == 2, f"[seed {SEED}] the copy kept finishing before the {signum.name}"
    resume = run_copy(src, dst, tmp_path / "resume")
    assert resume.returncode == 0, resume.stderr
    done = resume.last("done")
    assert done is not None and done["resumed_from"] >= stops[-1]["done"], resume.events
    assert same_bytes(src, dst) is None
    assert sorted(os.listdir(dst.parent)) == ["copy"]


# --- SIGKILL at the narrow windows, deterministically -------------------------------------

# Runs the real CLI in a child that sends itself a signal on the n-th call of one endpoint
# method, before the call does anything: a real signal, at a moment chosen instead of drawn.
SIGNAL_HOOK = """
import os, signal, sys
from onward.endpoints import local, localjournal
home = localjournal if sys.argv[1] == "LocalJournal" else local
owner, method, nth = getattr(home, sys.argv[1]), sys.argv[2], int(sys.argv[3])
signum = getattr(signal, sys.argv[4])
original, calls = getattr(owner, method), [0]
def hooked(*args, **kwargs):
    calls[0] += 1
    if calls[0] == nth:
        os.kill(os.getpid(), signum)
    return original(*args, **kwargs)
setattr(owner, method, hooked)
from onward.cli.main import main
sys.exit(main(sys.argv[5:]))
"""


def run_hooked(
    owner: str, method: str, nth: int, signame: str, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SIGNAL_HOOK, owner, method, str(nth), signame, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


BOUNDARIES = {
    # id: (endpoint class, method killed at its n-th call, bytes the resume must start from:
    # what the journal claims and the intact chunks written after it, kept by the resume)
    "before-the-journal-exists": ("LocalJournal", "create", 1, 0),
    "written-not-synced": ("LocalSink", "sync", 3, 3 * CHECKPOINT),
    "synced-not-recorded": ("LocalJournal", "append", 3, 3 * CHECKPOINT),
    "recorded-not-renamed": ("LocalSink", "promote", 1, 40 * CHUNK),
    "renamed-dir-not-synced": ("LocalSink", "settle", 1, 40 * CHUNK),
    "renamed-journal-not-removed": ("LocalJournal", "remove", 1, 40 * CHUNK),
}


@pytest.mark.parametrize("old_destination", [False, True], ids=["new", "overwrite"])
@pytest.mark.parametrize("boundary", list(BOUNDARIES))
def test_sigkill_at_each_commit_boundary_resumes_from_the_last_durable_byte(
    boundary: str, old_destination: bool, tmp_path: Path, onward_kill_sources: dict[int, Path]
) -> None:
    owner, method, nth, resume_at = BOUNDARIES[boundary]
    src = onward_kill_sources[40 * CHUNK]
    dst = tmp_path / "dst" / "copy"
    dst.parent.mkdir()
    old = os.urandom(1000) if old_destination else None
    if old is not None:
        dst.write_bytes(old)
    args = ["copy", *COPY_FLAGS, "--checkpoint-seconds", "1000", os.fspath(src), os.fspath(dst)]
    killed = run_hooked(owner, method, nth, "SIGKILL", *args)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    renamed = boundary.startswith("renamed")
    if renamed:
        assert same_bytes(src, dst) is None, "torn destination after SIGKILL"
    elif old is not None:
        assert dst.read_bytes() == old, "the old destination was touched before the rename"
    else:
        assert not dst.exists()
    partial = partial_of(dst)
    held = partial.stat().st_size if partial.exists() else 0

    resume = run_copy(src, dst, tmp_path / "resume")
    assert resume.returncode == 0, resume.stderr
    done = resume.last("done")
    assert done is not None and done["resumed_from"] == resume_at, resume.events
    assert done["resumed_from"] >= held - LOSS_BOUND
    assert done["copied"] == src.stat().st_size - resume_at
    assert same_bytes(src, dst) is None
    assert sorted(os.listdir(dst.parent)) == ["copy"], f"left behind: {sorted(os.listdir(dst.parent))}"


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize(
    ("owner", "method", "nth", "resume_at"),
    [
        ("LocalSink", "open", 1, 0),
        ("LocalSink", "sync", 2, 2 * CHECKPOINT),
        ("LocalJournal", "append", 2, 2 * CHECKPOINT),
        ("LocalSink", "promote", 1, 40 * CHUNK),
    ],
    ids=["before-the-transfer", "mid-copy", "synced-not-recorded", "before-the-rename"],
)
def test_ctrl_c_and_sigterm_at_any_step_exit_130_and_say_that_a_rerun_resumes(
    owner: str,
    method: str,
    nth: int,
    resume_at: int,
    signame: str,
    tmp_path: Path,
    onward_kill_sources: dict[int, Path],
) -> None:
    src = onward_kill_sources[40 * CHUNK]
    dst = tmp_path / "dst" / "copy"
    dst.parent.mkdir()
    args = ["copy", *COPY_FLAGS, os.fspath(src), os.fspath(dst)]
    stopped = run_hooked(owner, method, nth, signame, *args)
    assert stopped.returncode == 130, stopped.stderr
    assert RESUME_HINT.search(stopped.stderr), stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert not dst.exists()
    resume = run_copy(src, dst, tmp_path / "resume")
    assert resume.returncode == 0, resume.stderr
    done = resume.last("done")
    # The stop checkpointed everything written before it: a clean stop loses nothing.
    assert done is not None and done["resumed_from"] == resume_at, resume.events
    assert same_bytes(src, dst) is None
    assert sorted(os.listdir(dst.parent)) == ["copy"]

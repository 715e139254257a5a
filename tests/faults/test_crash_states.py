"""Method 2 of issue 3: crash-state exploration (simulated power loss).

One real ``onward copy`` per scenario is traced with strace; ``crashsim`` turns the trace
into file-system operations with their persistence points (data at ``fsync``/``fdatasync``
of its file, directory operations at ``fsync`` of the directory, in order) and enumerates
the states a power cut could leave at every point: writes not yet synced kept, lost,
zero-filled or torn at 4 KiB; directory operations not yet synced lost from some point on.
Each distinct state is written out as real files at the destination, then:

- the destination name holds nothing, its old bytes, or bytes identical to the source;
- the journal decodes, and every chunk it claims holds exactly the source's bytes (and
  its digest) in the partial: the journal never runs ahead of the data;
- a state that a power cut *after* onward exited 0 can leave holds the finished copy;
- a plain re-run exits 0, resumes from every byte the journal claimed, and leaves an
  identical copy with nothing beside it.

Recovery runs are explored too: some crash states of a copy are taken as the starting
point of a traced re-run, and that re-run's own crash states are checked the same way
(a power cut while recovering from a power cut).

Fast mode (CI) checks a seeded sample of the distinct states of the fast scenarios; long
mode (``ONWARD_FAULTS=long``) checks every distinct state of every scenario, with random
combinations of fates added.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from faults import crashsim

KiB = 1024
CHUNK = 16 * KiB  # four pages: writes can be torn at three boundaries
# Byte ranges a sparse source leaves holes: chunk 1 whole, the start of chunk 2, the end of
# chunk 3 and the start of chunk 4: a hole chunk and three chunks written only in part.
SPARSE_HOLES = ((CHUNK, 2 * CHUNK + 4096), (4 * CHUNK - 8192, 4 * CHUNK + 8192))
FLAGS = ("--json", "--chunk-size", "16K", "--checkpoint-bytes", "32K", "--checkpoint-seconds", "3600")


@dataclass(frozen=True)
class Scenario:
    name: str
    size: int
    flags: tuple[str, ...] = ()
    old: bool = False  # a destination exists before the copy
    recoveries: int = 0  # crash states whose recovery run is traced and explored too
    sample: int | None = None  # fast mode: distinct states checked per run (None: all)
    long_only: bool = False
    holes: tuple[tuple[int, int], ...] = ()  # byte ranges the source leaves holes (a sparse source)


SCENARIOS = [
    Scenario("5-chunks", 5 * CHUNK + 1234, recoveries=2, sample=110),
    Scenario("empty", 0, sample=40),
    Scenario("5-chunks-sparse-source", 5 * CHUNK + 1234, recoveries=1, sample=60, holes=SPARSE_HOLES),
    Scenario("chunk-minus-1-over-old-destination", CHUNK - 1, old=True, sample=60),
    Scenario("one-byte", 1, long_only=True),
    Scenario("chunk", CHUNK, long_only=True),
    Scenario("chunk-plus-1", CHUNK + 1, long_only=True),
    Scenario("5-chunks-over-old-destination", 5 * CHUNK + 1234, old=True, recoveries=3, long_only=True),
    Scenario("17-chunks", 17 * CHUNK - 1, recoveries=4, long_only=True),
    Scenario(
        "checkpoint-every-chunk", 4 * CHUNK, ("--checkpoint-bytes", "16K"), recoveries=2, long_only=True
    ),
    Scenario("verify-full", 3 * CHUNK + 5, ("--verify", "full"), recoveries=2, long_only=True),
    Scenario("no-preserve", 2 * CHUNK + 5, ("--no-preserve", "all"), long_only=True),
]


@dataclass
class Setup:
    scenario: Scenario
    root: Path
    src: Path
    data: bytes
    old: bytes | None
    flags: list[str]
    dests: list[Any]  # one destination per worker, paths of equal length; runs are traced in the first

    @property
    def dest(self) -> Any:
        return self.dests[0]


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """Where states are written out: tmpfs when there is one (a simulated state needs no real
    durability, and the re-runs' fsyncs then cost nothing), else the test's tmp_path."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    root = Path(tempfile.mkdtemp(prefix="onward-crash-states-", dir=shm))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def traced_run(faultlib: Any, setup: Setup, strace: str, label: str) -> crashsim.Recording:
    """Trace one run of the copy from whatever the destination directory holds now."""
    dest = setup.dest
    initial = crashsim.snapshot(dest.dir)
    trace = setup.root / f"{label}.trace"
    run = faultlib.run_cli(
        faultlib.copy_args(setup.src, dest, setup.flags),
        prefix=crashsim.strace_command(strace, dest.watched(), trace),
        cwd=setup.root,
    )
    faultlib.check(run.returncode == 0, f"{label}: the traced run failed: {run.describe()}")
    faultlib.check(dest.path.read_bytes() == setup.data, f"{label}: the traced run's copy differs")
    try:
        rec = crashsim.record(trace.read_text(), dest.dir, initial, setup.data)
    except crashsim.NotModelled as exc:
        raise faultlib.Broken(f"{label}: {exc}") from None
    crashsim.learn_final_inodes(rec, dest.dir)
    faultlib.check(
        any(op.kind == "dirsync" for op in rec.ops) or rec.initial_names,
        f"{label}: no directory fsync in the trace: the -P paths do not match onward's files",
    )
    return rec


def check_one(
    faultlib: Any, setup: Setup, dest: Any, rec: crashsim.Recording, image: crashsim.Image, after_exit: bool
) -> None:
    crashsim.materialise(rec, image, dest.dir, traced_in=setup.dest.dir)
    claims = faultlib.check_state(setup.data, dest, CHUNK, setup.old)
    if after_exit:
        faultlib.check(
            dest.path.exists() and dest.path.read_bytes() == setup.data,
            "onward had exited 0, yet this power cut leaves no finished copy",
        )
    faultlib.check_finishes(setup.src, setup.data, dest, setup.flags, claims, cwd=setup.root)


def explore(
    faultlib: Any, setup: Setup, rec: crashsim.Recording, label: str, sample: int | None, rng: Any
) -> list[tuple[crashsim.CrashState, crashsim.Image, bool]]:
    """Check the distinct crash states of ``rec`` (a sample of ``sample`` of them in fast mode)."""
    found = list(crashsim.states(rec, thorough=faultlib.LONG, rng=rng))
    exits = [s for s in found if s[2]]
    chosen = list(found) if faultlib.LONG else faultlib.sample(found, sample, rng)
    chosen += [s for s in exits if s not in chosen]  # every after-exit state, in every mode
    free: queue.Queue[Any] = queue.Queue()
    for dest in setup.dests:
        free.put(dest)

    def body(item: tuple[crashsim.CrashState, crashsim.Image, bool]) -> None:
        _state, image, after_exit = item
        dest = free.get()
        try:
            check_one(faultlib, setup, dest, rec, image, after_exit)
        finally:
            free.put(dest)

    def name(item: tuple[crashsim.CrashState, crashsim.Image, bool]) -> str:
        state = item[0]
        where = rec.ops[state.point - 1].what if state.point else "before the first call"
        at = f"power cut after op {state.point}/{len(rec.ops)} ({where}; {state.label})"
        return f"{setup.scenario.name} {label}: {at}"

    faultlib.count("crash states (distinct, enumerated)", len(found))
    faultlib.run_cases(chosen, body, name, tally="crash states (distinct, checked)")
    return found


def unfinished(image: crashsim.Image) -> bool:
    """A state a re-run has real work to recover from: a journal and a partial."""
    return any(n.endswith(".onward-journal") for n in image.names) and any(
        n.endswith(".onward-partial") for n in image.names
    )


@pytest.mark.parametrize(
    "scenario",
    [pytest.param(s, id=s.name, marks=[pytest.mark.slow] if s.long_only else []) for s in SCENARIOS],
)
def test_every_crash_state_of_a_traced_copy_keeps_the_promise(
    scenario: Scenario, scratch: Path, faultlib: Any, strace_ok: str
) -> None:
    if scenario.long_only and not faultlib.LONG:
        pytest.skip("long mode only (ONWARD_FAULTS=long)")
    rng = faultlib.rng_for("crash-states", scenario.name)
    src = scratch / "src.bin"
    data = faultlib.write_source(src, faultlib.random_bytes(scenario.size, "crash"), scenario.holes)
    old = faultlib.random_bytes(2 * CHUNK + 99, "old") if scenario.old else None
    dests = [faultlib.make_dest(scratch / f"w{i}") for i in range(faultlib.WORKERS)]
    dest = dests[0]
    if old is not None:
        dest.path.write_bytes(old)
    setup = Setup(scenario, scratch, src, data, old, [*FLAGS, *scenario.flags], dests)

    rec = traced_run(faultlib, setup, strace_ok, "copy")
    found = explore(faultlib, setup, rec, "copy", scenario.sample, rng)

    starts = [image for _state, image, _exit in found if unfinished(image)]
    recoveries = scenario.recoveries * (3 if faultlib.LONG else 1)
    for n, image in enumerate(faultlib.sample(starts, recoveries, rng)):
        crashsim.materialise(rec, image, dest.dir)
        label = f"recovery {n + 1} (from {sorted(image.names)})"
        again = traced_run(faultlib, setup, strace_ok, f"recovery{n}")
        faultlib.count("recovery runs traced")
        explore(faultlib, setup, again, label, (scenario.sample or 60) // 2, rng)


def test_the_simulator_loses_what_was_not_synced(tmp_path: Path, faultlib: Any, strace_ok: str) -> None:
    """The model itself: a file written without fsync may be empty or missing after a power cut,
    a file synced and whose directory was synced survives whole, a rename without a directory
    fsync may be undone. Without this, a simulator that keeps everything would pass every test."""
    d = tmp_path / "d"
    d.mkdir()
    trace = tmp_path / "t.trace"
    script = (
        "import os\n"
        f"d = {os.fspath(d)!r}\n"
        "fd = os.open(d + '/synced', os.O_WRONLY | os.O_CREAT, 0o644)\n"
        "os.write(fd, b'a' * 9000); os.fsync(fd); os.close(fd)\n"
        "dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY); os.fsync(dfd)\n"
        "fd = os.open(d + '/loose', os.O_WRONLY | os.O_CREAT, 0o644)\n"
        "os.write(fd, b'b' * 9000); os.close(fd)\n"
        "os.rename(d + '/synced', d + '/moved')\n"
    )
    watched = [d, d / "synced", d / "loose", d / "moved"]
    initial = crashsim.snapshot(d)
    run = faultlib.run_cli(
        ["python3", "-c", script], prefix=crashsim.strace_command(strace_ok, watched, trace), cwd=tmp_path
    )
    assert run.returncode == 0, run.describe()
    rec = crashsim.record(trace.read_text(), d, initial, b"")
    found = list(crashsim.states(rec, thorough=True, rng=faultlib.rng_for("model")))

    def shape(image: crashsim.Image) -> tuple[tuple[str, bytes, int], ...]:
        return tuple(
            sorted((n, image.inodes[i][0][:1], len(image.inodes[i][0])) for n, i in image.names.items())
        )

    seen = {shape(image) for _s, image, _e in found}
    final = (("loose", b"b", 9000), ("moved", b"a", 9000))
    assert final in seen  # everything reached the disk
    assert (("synced", b"a", 9000),) in seen  # nothing after the directory fsync did
    assert (("loose", b"", 0), ("synced", b"a", 9000)) in seen  # created, data lost
    assert any(("loose", b"b", 4096) in s for s in seen)  # torn at a page boundary, rest dropped
    assert any(("loose", b"\x00", 9000) in s for s in seen)  # zero-filled
    synced_dir = next(op.seq for op in rec.ops if op.kind == "dirsync") + 1
    after = [shape(image) for state, image, _e in found if state.point > synced_dir]
    assert after and all(any(n in ("synced", "moved") and size == 9000 for n, _b, size in s) for s in after)
    # Directory operations persist in order: the rename never without the earlier create.
    assert not any(("moved", b"a", 9000) in s and not any(n == "loose" for n, _b, _z in s) for s in seen)
    faultlib.count("crash states (simulator self-test)", len(found))


# Known-bad versions of onward, made by patching it at start-up: each breaks one rule of the
# promise, and the exploration must catch each one. This is the proof that the checks above
# can fail at all (a simulator that loses nothing, or checks that look at the wrong file,
# would pass every real state too).
# Each with the failure the checks must report for it.
MUTANTS = {
    # The journal runs ahead of the data: chunks are journaled without the partial's fdatasync.
    "journal-before-data": ("L.LocalSink.sync = lambda self: None", "journal claims chunk"),
    # No fsync at all (only fdatasync): the renames into place are never made durable.
    "no-fsync": ("os.fsync = lambda fd: None", "exited 0"),
    # The partial is renamed into place before its data is synced (fdatasync and fsync gone).
    "rename-before-sync": (
        "L.LocalSink.sync = lambda self: None; os.fsync = lambda fd: None",
        "torn or stale",
    ),
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_the_exploration_catches_a_known_bad_onward(
    mutant: str, scratch: Path, faultlib: Any, strace_ok: str
) -> None:
    data = faultlib.random_bytes(3 * CHUNK + 77, "mutant")
    src = scratch / "src.bin"
    src.write_bytes(data)
    dest = faultlib.make_dest(scratch / "w0")
    setup = Setup(Scenario(mutant, len(data)), scratch, src, data, None, list(FLAGS), [dest])
    launcher = (
        "import os, runpy; import onward.endpoints.local as L; "
        f"{MUTANTS[mutant][0]}; runpy.run_module('onward', run_name='__main__', alter_sys=True)"
    )
    initial = crashsim.snapshot(dest.dir)
    trace = scratch / "mutant.trace"
    cmd = [faultlib.ONWARD[0], "-c", launcher, *faultlib.copy_args(src, dest, setup.flags)[3:]]
    run = faultlib.run_cli(cmd, prefix=crashsim.strace_command(strace_ok, dest.watched(), trace), cwd=scratch)
    assert run.returncode == 0 and dest.path.read_bytes() == data, run.describe()
    rec = crashsim.record(trace.read_text(), dest.dir, initial, data)
    crashsim.learn_final_inodes(rec, dest.dir)
    caught = []
    found = list(crashsim.states(rec, thorough=False, rng=faultlib.rng_for("mutant", mutant)))
    for _state, image, after_exit in found:
        try:
            check_one_without_rerun(faultlib, setup, dest, rec, image, after_exit)
        except AssertionError as exc:
            caught.append(str(exc))
    expected = MUTANTS[mutant][1]
    faultlib.count("mutants caught", 1 if any(expected in c for c in caught) else 0)
    assert any(expected in c for c in caught), (
        f"no crash state of the {mutant} mutant showed {expected!r} ({len(found)} states): {caught[:3]}"
    )


def check_one_without_rerun(
    faultlib: Any, setup: Setup, dest: Any, rec: crashsim.Recording, image: crashsim.Image, after_exit: bool
) -> None:
    crashsim.materialise(rec, image, dest.dir, traced_in=setup.dest.dir)
    faultlib.check_state(setup.data, dest, CHUNK, setup.old)
    if after_exit:
        faultlib.check(dest.path.exists() and dest.path.read_bytes() == setup.data, "exited 0 but no copy")

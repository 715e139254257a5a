"""Method 1 of issue 3: SIGKILL at every file-changing system call, then resume.

A reference run of ``onward copy`` is traced with strace to list every call it makes that
can change the destination's files or make a change durable (openat, write, pwrite64,
sync_file_range, ftruncate, fsync, fdatasync, rename, fchmod, utimensat, unlink on the
destination, its partial, journal, temporary journal and directory). Then, for each of
those calls, a fresh copy is run under ``strace -e inject=CALL:signal=KILL:when=N``: the
process dies on entering that call, before it takes effect. Random kills almost never land
in the microsecond windows between a write, a sync and a rename; this lands in each one.

After every kill:

- the kill landed exactly where planned (the trace of the killed run is the reference
  trace cut just before that call), so every kill point is really covered;
- the destination name holds nothing, or bytes identical to the source (or, when a
  destination existed before, its old bytes until the rename);
- the journal decodes and every chunk it claims holds the source's bytes in the partial
  (a SIGKILL keeps the page cache, so every claim must match, not just durable ones);
- a plain re-run of the same command exits 0, resumes from every byte the journal claimed,
  and leaves an identical copy with nothing beside it.

Double kills: the recovery run is itself killed at each of its own calls (sampled), and a
third run must finish. ``ONWARD_FAULTS=long`` runs every kill point of more sizes and
variants and many more double kills; the fast subset runs every single kill point of the
six sizes of the issue and a seeded sample of double kills.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

KiB = 1024
CHUNK = 64 * KiB
FLAGS = ["--json", "--chunk-size", "64K", "--checkpoint-bytes", "64K"]
SIZES = {
    "empty": 0,
    "one-byte": 1,
    "chunk-minus-1": CHUNK - 1,
    "chunk": CHUNK,
    "chunk-plus-1": CHUNK + 1,
    "5-chunks": 5 * CHUNK + 1234,  # five full chunks and a short sixth
}
LONG_SIZES = {"2-chunks": 2 * CHUNK, "17-chunks": 17 * CHUNK - 1}


# Byte ranges a sparse source leaves holes: chunk 1 whole, the start of chunk 2, the end of
# chunk 3 and the start of chunk 4: a hole chunk and three chunks written only in part.
SPARSE_HOLES = ((CHUNK, 2 * CHUNK + 3 * 4096), (4 * CHUNK - 8192, 4 * CHUNK + 8192))


@dataclass(frozen=True)
class Variant:
    name: str
    flags: tuple[str, ...] = ()
    old_destination: bool = False  # the destination exists before the copy
    long_only: bool = False
    sparse: bool = False  # the source has holes (SPARSE_HOLES), kept holes by the copy


VARIANTS = [
    Variant("plain"),
    Variant("over-old-destination", old_destination=True),
    Variant("sparse-source", sparse=True),
    # Several chunks per checkpoint (the time trigger pushed out of reach, so the trace is
    # deterministic): kills between the writes of one checkpoint and its sync.
    Variant(
        "3-chunk-checkpoints", ("--checkpoint-bytes", "192K", "--checkpoint-seconds", "3600"), long_only=True
    ),
    Variant("verify-full", ("--verify", "full"), long_only=True),
    Variant("no-preserve", ("--no-preserve", "all"), long_only=True),
]


def cases() -> list[Any]:
    out = []
    for variant in VARIANTS:
        for name, size in {**SIZES, **LONG_SIZES}.items():
            long_only = variant.long_only or name in LONG_SIZES
            # Fast mode: the plain copy of every size of the issue, and the old-destination
            # variant on the biggest (the other sizes run it in long mode).
            if (variant.old_destination or variant.sparse) and name != "5-chunks":
                long_only = True
            marks = [pytest.mark.slow] if long_only else []
            out.append(pytest.param(variant, size, long_only, id=f"{variant.name}-{name}", marks=marks))
    return out


@dataclass
class Setup:
    src: Path
    data: bytes
    flags: list[str]
    old: bytes | None
    reference: list[Any]  # the calls of an un-killed run
    cwd: Path


def prepare(faultlib: Any, tmp_path: Path, variant: Variant, size: int, long_only: bool) -> Setup:
    if long_only and not faultlib.LONG:
        pytest.skip("long mode only (ONWARD_FAULTS=long)")
    src = tmp_path / "src.bin"
    data = faultlib.random_bytes(size, "kill")
    data = faultlib.write_source(src, data, SPARSE_HOLES if variant.sparse else ())
    old = faultlib.random_bytes(3 * CHUNK + 7, "old") if variant.old_destination else None
    flags = [*FLAGS, *variant.flags]
    setup = Setup(src, data, flags, old, [], tmp_path)
    setup.reference = faultlib.trace_reference(src, data, flags, tmp_path, old=old)
    return setup


def fresh(faultlib: Any, setup: Setup, where: Path) -> Any:
    dest = faultlib.make_dest(where)
    if setup.old is not None:
        dest.path.write_bytes(setup.old)
    return dest


def kill_at(
    faultlib: Any, setup: Setup, dest: Any, expected: list[Any], k: int, trace: Path, what: str
) -> Any:
    """Run the copy and SIGKILL it on entering ``expected[k]``; check it died right there."""
    target = expected[k]
    run = faultlib.run_cli(
        faultlib.copy_args(setup.src, dest, setup.flags),
        dest=dest,
        trace=trace,
        inject=[target.kill()],
        cwd=setup.cwd,
    )
    faultlib.check(run.killed, f"{what}: the kill at {target} did not land: {run.describe()}")
    # As the process dies strace may show another thread entering a call too (with the
    # dying thread's arguments): ignore what follows the kill point once it did not complete.
    late = [c for c in run.calls[k + 1 :] if c.result != "?"]
    faultlib.check(not late, f"{what}: calls completed after the kill at {target}: {[str(c) for c in late]}")
    got = [(c.name, c.nth) for c in run.calls[: k + 1]]
    want = [(c.name, c.nth) for c in expected[: k + 1]]
    if got != want:
        at = next((i for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w), len(got))
        where = run.calls[len(got) - 1] if got else None
        raise faultlib.Broken(
            f"{what}: killed at {where} (call {len(got)}), planned {target} (call {k + 1}); first "
            f"difference at call {at + 1}: {run.calls[at] if at < len(got) else None} vs {expected[at]}"
        )
    faultlib.check(run.calls[k].result == "?", f"{what}: {target} completed before the kill")
    return run


@pytest.mark.parametrize(("variant", "size", "long_only"), cases())
def test_sigkill_at_every_mutating_call_then_resume(
    variant: Variant, size: int, long_only: bool, tmp_path: Path, faultlib: Any, strace_ok: str
) -> None:
    setup = prepare(faultlib, tmp_path, variant, size, long_only)
    points = list(range(len(setup.reference)))

    def body(k: int) -> None:
        what = f"{variant.name} size {size} kill at call {k + 1}/{len(points)} {setup.reference[k]}"
        dest = fresh(faultlib, setup, tmp_path / f"k{k}")
        kill_at(faultlib, setup, dest, setup.reference, k, tmp_path / f"k{k}.trace", what)
        try:
            claims = faultlib.check_state(setup.data, dest, CHUNK, setup.old)
            faultlib.check_finishes(setup.src, setup.data, dest, setup.flags, claims, cwd=tmp_path)
        except AssertionError as exc:
            raise faultlib.Broken(f"{what}: {exc}") from None

    faultlib.run_cases(
        points,
        body,
        lambda k: f"{variant.name}/{size}/{setup.reference[k]}",
        tally="kill points (single kills)",
    )


# Double kills: how many first kill points per size, and second ones per first.
FAST_DOUBLES = (3, 3)
LONG_DOUBLES = (None, 4)  # every first kill point, 4 second ones each


@pytest.mark.parametrize(
    ("variant", "size", "long_only"),
    [p for p in cases() if p.values[0].name in ("plain", "over-old-destination")],
)
def test_sigkill_twice_the_recovery_killed_too_then_a_third_run_finishes(
    variant: Variant, size: int, long_only: bool, tmp_path: Path, faultlib: Any, strace_ok: str
) -> None:
    setup = prepare(faultlib, tmp_path, variant, size, long_only)
    rng = faultlib.rng_for("double", variant.name, size)
    firsts, seconds = LONG_DOUBLES if faultlib.LONG else FAST_DOUBLES
    first_points = faultlib.sample(range(len(setup.reference)), firsts, rng)

    # Phase 1: for each first kill point, trace the recovery run to list its own calls.
    recoveries: dict[int, list[Any]] = {}

    def learn(k1: int) -> None:
        what = f"{variant.name} size {size} first kill {setup.reference[k1]}"
        dest = fresh(faultlib, setup, tmp_path / f"r{k1}")
        kill_at(faultlib, setup, dest, setup.reference, k1, tmp_path / f"r{k1}.kill", what)
        claims = faultlib.check_state(setup.data, dest, CHUNK, setup.old)
        run = faultlib.run_cli(
            faultlib.copy_args(setup.src, dest, setup.flags),
            dest=dest,
            trace=tmp_path / f"r{k1}.trace",
            cwd=tmp_path,
        )
        faultlib.check(run.returncode == 0, f"{what}: recovery failed: {run.describe()}")
        faultlib.check(dest.path.read_bytes() == setup.data, f"{what}: recovery copy differs")
        faultlib.check(
            run.done() and run.done()["resumed_from"] == claims.resumable, f"{what}: progress lost"
        )
        recoveries[k1] = run.calls

    faultlib.run_cases(first_points, learn, lambda k: f"recovery of {k}", tally="recovery runs traced")

    pairs = []
    for k1 in first_points:
        calls = recoveries[k1]
        for k2 in faultlib.sample(range(len(calls)), seconds, rng):
            pairs.append((k1, k2))

    def body(pair: tuple[int, int]) -> None:
        k1, k2 = pair
        calls = recoveries[k1]
        what = f"{variant.name} size {size} kill at {setup.reference[k1]}, then at recovery's {calls[k2]}"
        dest = fresh(faultlib, setup, tmp_path / f"d{k1}-{k2}")
        kill_at(faultlib, setup, dest, setup.reference, k1, tmp_path / f"d{k1}-{k2}.1", what)
        try:
            faultlib.check_state(setup.data, dest, CHUNK, setup.old)
        except AssertionError as exc:
            raise faultlib.Broken(f"{what}: after the first kill: {exc}") from None
        kill_at(faultlib, setup, dest, calls, k2, tmp_path / f"d{k1}-{k2}.2", what)
        try:
            claims = faultlib.check_state(setup.data, dest, CHUNK, setup.old)
            faultlib.check_finishes(
                setup.src, setup.data, dest, setup.flags, claims, cwd=tmp_path, what="the third run"
            )
        except AssertionError as exc:
            raise faultlib.Broken(f"{what}: {exc}") from None

    faultlib.run_cases(
        pairs,
        body,
        lambda p: f"{variant.name}/{size}/{setup.reference[p[0]]}+{recoveries[p[0]][p[1]]}",
        tally="double kills",
    )

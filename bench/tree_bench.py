#!/usr/bin/env python3
"""Directory trees side by side: ``onward copy -r`` against ``rsync -a`` (issue 5).

Usage::

    python bench/tree_bench.py [--files 10000] [--dirs 100] [--file-size 4K] [--big 2G]
                               [--runs 5] [--dir DIR] [--drop-caches] [--only full,noop,resume]
                               [--json FILE] [--no-bytecode]
    python bench/tree_bench.py --smoke        # a small tree, 1 round: checks the bench runs (< 5 s)

Three measurements, each against its anchor measured in the same run:

full     a tree of FILES files of FILE_SIZE in DIRS directories, copied durably:
         ``onward copy -r SRC/ DST`` (every file durable before the command returns)
         against ``rsync -a SRC/ DST/ && sync``. Before every run the destination is
         removed and ``sync`` run, and the source is read once (or, with
         ``--drop-caches``, the page cache is dropped), so each run starts alike.
noop     the same command again on a destination that is already complete:
         ``onward copy -r SRC/ DST`` against ``rsync -a SRC/ DST/``.
resume   a tree holding one BIG file (and a few small ones), interrupted with SIGKILL
         when the destination's partial (onward's ``.onward-partial``, rsync's
         ``.NAME.XXXXXX``) reaches 90 %, then the same command run again, durably
         (rsync ``&& sync``): wall time and bytes moved by the resume (onward's
         ``--json`` summary, rsync's ``--stats`` literal data).

onward runs with its modules' bytecode compiled once, before the rounds, beside them
(``__pycache__``), as an installed onward has it: with ``PYTHONDONTWRITEBYTECODE=1`` in
the environment (and a source checkout) every run would otherwise compile each module
again, tens of milliseconds that a no-op re-run of 10,000 files notices.
``--no-bytecode`` leaves onward's modules as they are.

Runs are interleaved round-robin, the first job rotating from round to round,
so drift of the machine spreads over all of them. Medians are printed with
min-max and the ratio to the anchor, then each target of issue 5 with PASS or
FAIL computed from this run's numbers. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from benchlib import precompile

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
ONWARD = [sys.executable, "-m", "onward"]
KEEP: dict[str, list[str]] = {"onward": [], "rsync": []}  # --preserve-all: each tool's flags
DROP_CACHES = "/proc/sys/vm/drop_caches"
FULL_VS_RSYNC = 1.5  # issue 5: 10,000 x 4 KiB, durable, <= 1.5 x (rsync -a && sync)
NOOP_VS_RSYNC = 2.0  # issue 5: re-run on a complete tree <= 2 x rsync's own re-run
RESUME_SHARE = 0.15  # issue 5: the resume moves "about 10 %" of the bytes: at most 15 %
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 4K, 8M or 2G)")
    number, unit = match.groups()
    return int(float(number) * {"": 1, "K": KiB, "M": MiB, "G": GiB, "T": GiB << 10}[unit.upper()])


def fmt_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@dataclass
class Sample:
    job: str
    wall: float
    cpu: float  # user + sys of the child processes
    moved: int | None = None  # bytes the run copied, when the tool says
    note: str = ""


@dataclass
class Results:
    samples: list[Sample] = field(default_factory=list)

    def of(self, job: str) -> list[Sample]:
        return [s for s in self.samples if s.job == job]

    def median(self, job: str) -> float:
        return statistics.median(s.wall for s in self.of(job))


# -- running things ------------------------------------------------------------------


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(job: str, argv: list[str], *, sync: bool = False) -> tuple[Sample, str]:
    """Run ``argv`` (then ``sync`` when ``sync``) and time the whole."""
    cpu, began = children_cpu(), time.monotonic()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode == 0 and sync:
        subprocess.run(["sync"], check=True)
    wall = time.monotonic() - began
    if proc.returncode != 0:
        raise SystemExit(f"{job}: {' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return Sample(job, wall, children_cpu() - cpu), proc.stdout


def settle(dest: str, *, drop: bool, warm: str | None) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    subprocess.run(["sync"], check=True)
    if drop:
        with open(DROP_CACHES, "w") as fh:
            fh.write("3\n")
    elif warm is not None:
        read_tree(warm)


def read_tree(root: str) -> None:
    """Read every file once, so each tool starts with the source in the page cache."""
    for directory, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(directory, name), "rb") as fh:
                while fh.read(8 * MiB):
                    pass


def make_small_tree(root: str, files: int, dirs: int, size: int) -> None:
    os.makedirs(root)
    block = os.urandom(size)
    for d in range(dirs):
        os.mkdir(os.path.join(root, f"d{d:03}"))
    for n in range(files):
        with open(os.path.join(root, f"d{n % dirs:03}", f"f{n:05}"), "wb") as fh:
            fh.write(block[n % 251 :] + block[: n % 251])  # every file distinct


def make_big_tree(root: str, big: int) -> None:
    os.makedirs(os.path.join(root, "notes"))
    for n in range(8):
        with open(os.path.join(root, "notes", f"n{n}"), "wb") as fh:
            fh.write(os.urandom(4 * KiB))
    chunk = os.urandom(8 * MiB)
    with open(os.path.join(root, "big.bin"), "wb") as fh:
        left = big
        while left:
            part = chunk[: min(len(chunk), left)]
            fh.write(part)
            left -= len(part)


def kill_when(
    argv: list[str], directory: str, match: Callable[[str], bool], target: int, smoke: bool
) -> float | None:
    """Start ``argv`` and SIGKILL it once a file in ``directory`` whose name ``match``es holds
    ``target`` bytes; returns the fraction the file held at the kill. A copy that finished
    first (a small --smoke file can be copied between two looks) returns None in --smoke mode,
    and ends the bench otherwise."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    held = 0
    try:
        while proc.poll() is None:
            try:
                sizes = [
                    os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory) if match(n)
                ]
            except OSError:
                sizes = []
            held = max(sizes, default=0)
            if held >= target:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    if proc.returncode == 0 and smoke:
        return None
    if proc.returncode != -signal.SIGKILL:
        raise SystemExit(f"{' '.join(argv)} ended before the kill ({proc.returncode}): {err.decode()}")
    return held / target


def killed_at(held: float | None) -> str:
    return "finished before the kill" if held is None else f"killed at {held * 90:.1f}%"


def rsync_literal(stats: str) -> int | None:
    found = re.search(r"Literal data: ([\d,.]+)", stats)
    return int(re.sub(r"[,.]", "", found.group(1))) if found else None


def onward_copied(out: str) -> int | None:
    for line in reversed(out.splitlines()):
        event = json.loads(line)
        if event.get("event") == "summary":
            return int(event["copied"])
    return None


# -- the measurements ----------------------------------------------------------------


def full_jobs(src: str, work: str, args: argparse.Namespace) -> dict[str, Callable[[], Sample]]:
    dest = os.path.join(work, "full-dst")
    warm = None if args.drop_caches else src

    def onward() -> Sample:
        settle(dest, drop=args.drop_caches, warm=warm)
        return timed("full onward", [*ONWARD, "copy", "-r", "-q", *KEEP["onward"], f"{src}/", dest])[0]

    def rsync() -> Sample:
        settle(dest, drop=args.drop_caches, warm=warm)
        argv = ["rsync", "-a", *KEEP["rsync"], f"{src}/", f"{dest}/"]
        return timed("full rsync -a && sync", argv, sync=True)[0]

    return {"full onward": onward, "full rsync -a && sync": rsync}


def noop_jobs(src: str, work: str) -> dict[str, Callable[[], Sample]]:
    ours, theirs = os.path.join(work, "noop-onward"), os.path.join(work, "noop-rsync")
    for argv in ([*ONWARD, "copy", "-r", "-q", f"{src}/", ours], ["rsync", "-a", f"{src}/", f"{theirs}/"]):
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)

    def onward() -> Sample:
        sample, out = timed("noop onward", [*ONWARD, "copy", "-r", "--json", f"{src}/", ours])
        sample.moved = onward_copied(out)
        return sample

    def rsync() -> Sample:
        sample, out = timed("noop rsync -a", ["rsync", "-a", "--stats", f"{src}/", f"{theirs}/"])
        sample.moved = rsync_literal(out)
        return sample

    return {"noop onward": onward, "noop rsync -a": rsync}


def resume_jobs(src: str, work: str, big: int, args: argparse.Namespace) -> dict[str, Callable[[], Sample]]:
    dest = os.path.join(work, "resume-dst")
    target = int(big * 0.9)

    def onward() -> Sample:
        settle(dest, drop=False, warm=None)
        argv = [*ONWARD, "copy", "-r", "--json", f"{src}/", dest]
        held = kill_when(argv, dest, lambda n: n == "big.bin.onward-partial", target, args.smoke)
        if args.drop_caches:
            settle(os.path.join(work, "nothing"), drop=True, warm=None)
        sample, out = timed("resume onward", argv)
        sample.moved, sample.note = onward_copied(out), killed_at(held)
        return sample

    def rsync() -> Sample:
        settle(dest, drop=False, warm=None)
        argv = ["rsync", "-a", "--stats", f"{src}/", f"{dest}/"]
        held = kill_when(argv, dest, lambda n: n.startswith(".big.bin."), target, args.smoke)
        if args.drop_caches:
            settle(os.path.join(work, "nothing"), drop=True, warm=None)
        sample, out = timed("resume rsync -a && sync", argv, sync=True)
        sample.moved, sample.note = rsync_literal(out), killed_at(held)
        return sample

    return {"resume onward": onward, "resume rsync -a && sync": rsync}


def run_rounds(jobs: dict[str, Callable[[], Sample]], runs: int, results: Results, quiet: bool) -> None:
    names = list(jobs)
    for round_ in range(runs):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            sample = jobs[name]()
            results.samples.append(sample)
            if not quiet:
                moved = f", moved {fmt_size(sample.moved)}" if sample.moved is not None else ""
                print(f"  round {round_ + 1}: {name}: {sample.wall:.3f} s{moved}", file=sys.stderr)


# -- reporting -----------------------------------------------------------------------


def table(results: Results, pairs: list[tuple[str, str]]) -> str:
    lines = [f"{'job':34} {'median s':>9} {'min-max s':>15} {'CPU s':>7} {'moved':>11}  ratio"]
    for ours, anchor in pairs:
        for job in (ours, anchor):
            samples = results.of(job)
            if not samples:
                continue
            walls = [s.wall for s in samples]
            moved = [s.moved for s in samples if s.moved is not None]
            ratio = results.median(job) / results.median(anchor) if results.of(anchor) else float("nan")
            lines.append(
                f"{job:34} {statistics.median(walls):9.3f} {min(walls):7.3f}-{max(walls):<7.3f} "
                f"{statistics.median(s.cpu for s in samples):7.2f} "
                f"{fmt_size(statistics.median(moved)) if moved else '-':>11}  {ratio:.2f}"
            )
    return "\n".join(lines)


def verdicts(results: Results, big: int, smoke: bool) -> list[str]:
    """Each target of issue 5 with PASS or FAIL (n/a for --smoke: start-up outweighs the work)."""
    out = []

    def line(ok: bool, text: str) -> None:
        out.append(f"{'n/a ' if smoke else 'PASS' if ok else 'FAIL'}  {text}")

    if results.of("full onward"):
        r = results.median("full onward") / results.median("full rsync -a && sync")
        line(
            r <= FULL_VS_RSYNC,
            f"full durable copy: onward / (rsync -a && sync) = {r:.2f} (<= {FULL_VS_RSYNC})",
        )
    if results.of("noop onward"):
        r = results.median("noop onward") / results.median("noop rsync -a")
        line(
            r <= NOOP_VS_RSYNC, f"re-run on a complete tree: onward / rsync -a = {r:.2f} (<= {NOOP_VS_RSYNC})"
        )
    if results.of("resume onward"):
        moved = statistics.median(s.moved or 0 for s in results.of("resume onward"))
        theirs = statistics.median(s.moved or 0 for s in results.of("resume rsync -a && sync"))
        line(
            moved <= RESUME_SHARE * big,
            f"resume after a kill at 90 %: onward moved {moved / big:.1%} of {fmt_size(big)} "
            f"(<= {RESUME_SHARE:.0%}); rsync moved {theirs / big:.1%}",
        )
    return out


def tag_tree(root: str) -> None:
    """--preserve-all: a user.* attribute and the ACL of a template (``setfacl``) on every file."""
    KEEP.update(onward=["--preserve=all"], rsync=["-AX"])
    template = os.path.join(root, ".acl")
    open(template, "w").close()
    subprocess.run(["setfacl", "-m", "u:1234:r", template], check=True)
    acl = os.getxattr(template, "system.posix_acl_access")
    os.unlink(template)
    for top, _, names in os.walk(root):
        for name in names:
            os.setxattr(os.path.join(top, name), "user.bench", name.encode())
            os.setxattr(os.path.join(top, name), "system.posix_acl_access", acl)


def describe_machine(directory: str) -> str:
    load = os.getloadavg()
    rsync = subprocess.run(["rsync", "--version"], capture_output=True, text=True).stdout.splitlines()
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, kernel {platform.release()}, "
        f"Python {platform.python_version()}, {rsync[0] if rsync else 'rsync ?'}\n"
        f"dir:     {directory}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--files", type=int, default=10_000, help="files in the small-file tree (10000)")
    p.add_argument("--dirs", type=int, default=100, help="directories they are spread over (100)")
    p.add_argument("--file-size", type=parse_size, default=4 * KiB, help="size of each (4K)")
    p.add_argument("--big", type=parse_size, default=2 * GiB, help="the big file of the resume tree (2G)")
    p.add_argument("--runs", type=int, default=5, help="rounds; every job runs once per round (5)")
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where sources and destinations live")
    p.add_argument("--drop-caches", action="store_true", help=f"write 3 to {DROP_CACHES} before every run")
    p.add_argument("--only", default="full,noop,resume", help="which measurements (full,noop,resume)")
    p.add_argument("--json", metavar="FILE", help="write every sample and the verdicts to FILE")
    p.add_argument("--quiet", action="store_true", help="no per-run lines on stderr")
    p.add_argument(
        "--no-bytecode",
        action="store_true",
        help="do not compile onward's modules to bytecode before the rounds",
    )
    p.add_argument(
        "--preserve-all",
        action="store_true",
        help="full: every file with a user.* xattr and an ACL, onward --preserve=all against rsync -aAX",
    )
    p.add_argument("--smoke", action="store_true", help="200 files, an 8 MiB big file, 1 round (CI)")
    args = p.parse_args(argv)
    if args.smoke:
        args.files, args.dirs, args.big, args.runs = 200, 10, 8 * MiB, 1
    if shutil.which("rsync") is None:
        p.error("rsync is not installed (apt-get install -y rsync)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only = {part.strip() for part in args.only.split(",")}
    work = tempfile.mkdtemp(prefix="onward-tree-bench-", dir=args.dir)
    results = Results()
    try:
        print(describe_machine(work))
        if not args.no_bytecode:
            print(precompile())
        small, bigtree = os.path.join(work, "small-src"), os.path.join(work, "big-src")
        make_small_tree(small, args.files, args.dirs, args.file_size)
        if args.preserve_all:
            tag_tree(small)
        jobs: dict[str, Callable[[], Sample]] = {}
        pairs = []
        if "full" in only:
            jobs |= full_jobs(small, work, args)
            pairs.append(("full onward", "full rsync -a && sync"))
        if "noop" in only:
            jobs |= noop_jobs(small, work)
            pairs.append(("noop onward", "noop rsync -a"))
        if "resume" in only:
            make_big_tree(bigtree, args.big)
            jobs |= resume_jobs(bigtree, work, args.big, args)
            pairs.append(("resume onward", "resume rsync -a && sync"))
        run_rounds(jobs, args.runs, results, args.quiet)
        print(
            f"\n{args.files} files of {fmt_size(args.file_size)} in {args.dirs} directories; "
            f"resume tree: one {fmt_size(args.big)} file and 8 small ones; {args.runs} rounds, medians"
        )
        print(table(results, pairs))
        found = verdicts(results, args.big, args.smoke)
        print("\n" + "\n".join(found))
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"samples": [asdict(s) for s in results.samples], "verdicts": found}, fh, indent=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

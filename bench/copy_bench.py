#!/usr/bin/env python3
"""Side-by-side timing of a local copy: ``cp``, ``cp && sync``, ``onward copy`` (and variants).

Usage::

    python bench/copy_bench.py [--size 1G] [--runs 5] [--dir DIR] [--drop-caches]
                               [--onward-variant "--checkpoint-bytes 16M"] ... [--json FILE]
    python bench/copy_bench.py --smoke        # 1 MiB, 1 run: checks the bench still runs

One random source file is written once; then every round runs every tool once,
round-robin (the starting tool rotates from round to round), so that drift of
the machine (other load, disk state) spreads over all tools alike. Before every
timed run the previous destination (and any partial/journal) is removed and
``sync`` is run; with ``--drop-caches`` the page cache is also dropped
(``echo 3 > /proc/sys/vm/drop_caches``) so every tool starts with a cold cache.

Each round also measures the cost of a resume: ``onward copy`` is started on a
fresh destination, SIGKILLed once its partial file reaches 90 % of the size,
and the re-run that finishes it is timed.

Only the standard library is used; ``onward`` is run as a separate process,
like the other tools. See bench/README.md for what each column means.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

MiB = 1 << 20
DROP_CACHES = "/proc/sys/vm/drop_caches"
PARTIAL_SUFFIX = ".onward-partial"  # onward.endpoints.local.PARTIAL_SUFFIX
JOURNAL_SUFFIX = ".onward-journal"  # onward.endpoints.local.JOURNAL_SUFFIX
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1M, 512M or 1G)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.upper()])


def fmt_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# -- the machine -------------------------------------------------------------


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def _mount_of(path: str) -> tuple[str, str, str]:
    """(mount point, device, fs type) of the longest /proc/mounts entry containing ``path``."""
    path = os.path.realpath(path)
    best = ("?", "?", "?")
    for line in _read("/proc/mounts").splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        dev, mnt, fstype = parts[0], parts[1].replace("\\040", " "), parts[2]
        inside = path == mnt or path.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) >= len(best[0] if best[0] != "?" else ""):
            best = (mnt, dev, fstype)
    return best


def machine(directory: str) -> dict[str, Any]:
    cpuinfo = _read("/proc/cpuinfo")
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?"
    )
    mem_kib = next(
        (int(ln.split()[1]) for ln in _read("/proc/meminfo").splitlines() if ln.startswith("MemTotal:")), 0
    )
    try:
        statfs_type = subprocess.run(
            ["stat", "-f", "-c", "%T", directory], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        statfs_type = "?"
    mnt, dev, fstype = _mount_of(directory)
    try:
        cp_version = subprocess.run(["cp", "--version"], capture_output=True, text=True).stdout.splitlines()[
            0
        ]
    except (OSError, IndexError):
        cp_version = "?"
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / (1 << 20), 1),
        "dir": os.path.realpath(directory),
        "mount": mnt,
        "device": dev,
        "fs_type": fstype,
        "statfs_type": statfs_type,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cp": cp_version,
        "dirty_ratio": _read("/proc/sys/vm/dirty_ratio").strip(),
        "dirty_background_ratio": _read("/proc/sys/vm/dirty_background_ratio").strip(),
    }


# -- running one child -------------------------------------------------------


@dataclass
class Sample:
    wall: float  # seconds, spawn to reaped
    cpu: float  # user + sys seconds of the child and everything it waited for
    user: float
    sys: float
    maxrss_kib: int  # peak RSS of the child (or of its largest waited-for descendant)
    rc: int


GNU_TIME = "/usr/bin/time"


def gnu_time() -> str | None:
    """GNU time, if present: it forks the measured command from its own small process."""
    try:
        out = subprocess.run([GNU_TIME, "--version"], capture_output=True, text=True)
    except OSError:
        return None
    return GNU_TIME if "GNU" in out.stdout + out.stderr else None


def run_child(argv: list[str], stderr_path: str, timer: str | None) -> Sample:
    """Run ``argv`` to completion: wall time, CPU from RUSAGE_CHILDREN deltas, peak RSS from wait4.

    Linux counts in a child's ru_maxrss the peak RSS of the address space it had
    before exec: for a child spawned straight from this Python process that is
    this process's own peak (tens of MiB), which would hide the RSS of ``cp``.
    So when GNU time is available the command runs under it, and the peak RSS is
    the ru_maxrss that GNU time gets from wait4 of its own child (%M); otherwise
    it is ru_maxrss from our os.wait4, and the report says it is floored.
    """
    rss_file = None
    if timer is not None:
        fd, rss_file = tempfile.mkstemp(prefix="rss-", suffix=".txt")
        os.close(fd)
        argv = [timer, "-f", "%M", "-o", rss_file, *argv]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(stderr_path, "ab") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waiting again
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    maxrss = usage.ru_maxrss
    if rss_file is not None:
        with open(rss_file) as fh:
            maxrss = int(fh.read().split()[-1])
        os.unlink(rss_file)
    user = after.ru_utime - before.ru_utime
    sys_ = after.ru_stime - before.ru_stime
    return Sample(wall, user + sys_, user, sys_, maxrss, proc.returncode)


# -- the tools ---------------------------------------------------------------


@dataclass
class Tool:
    name: str
    argv: list[str]  # SRC and DST substituted for the placeholders
    onward_args: list[str] | None = None  # extra onward options; None for non-onward tools
    samples: list[Sample] = field(default_factory=list)
    checkpoints: int | None = None

    def command(self, src: str, dst: str) -> list[str]:
        return [src if a == "{SRC}" else dst if a == "{DST}" else a for a in self.argv]


def onward_command() -> list[str]:
    """The onward beside this Python (a venv), else on PATH, else ``python -m onward``."""
    here = os.path.join(os.path.dirname(sys.executable), "onward")
    if os.access(here, os.X_OK):
        return [here]
    found = shutil.which("onward")
    return [found] if found else [sys.executable, "-m", "onward"]


def make_tools(onward: list[str], variants: list[str]) -> list[Tool]:
    tools = [
        Tool("cp", ["cp", "{SRC}", "{DST}"]),
        Tool("cp && sync", ["sh", "-c", 'cp "$1" "$2" && sync', "sh", "{SRC}", "{DST}"]),
        Tool("onward", [*onward, "copy", "{SRC}", "{DST}"], onward_args=[]),
    ]
    for variant in variants:
        extra = shlex.split(variant)
        tools.append(
            Tool(f"onward {variant}", [*onward, "copy", *extra, "{SRC}", "{DST}"], onward_args=extra)
        )
    return tools


# -- page cache and leftovers ------------------------------------------------


def remove_destination(dst: str) -> None:
    for path in (dst, dst + PARTIAL_SUFFIX, dst + JOURNAL_SUFFIX, dst + JOURNAL_SUFFIX + ".tmp"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def settle(drop: bool) -> None:
    """Same starting state for every tool: flush everything dirty, optionally drop the page cache."""
    os.sync()
    if drop:
        with open(DROP_CACHES, "w") as fh:
            fh.write("3\n")


def same_content(a: str, b: str) -> bool:
    return subprocess.run(["cmp", "-s", a, b]).returncode == 0


# -- the resume measurement --------------------------------------------------


@dataclass
class ResumeTrial:
    killed_at: int | None  # partial size when SIGKILL was sent; None if the copy finished first
    durable: int | None  # bytes the journal claimed after the kill (onward status), if known
    resume: Sample | None


def durable_after_kill(onward: list[str], directory: str) -> int | None:
    out = subprocess.run([*onward, "status", "--json", directory], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        for key in ("done", "committed", "durable"):
            if isinstance(item.get(key), int):
                return int(item[key])
    return None


def resume_trial(
    onward: list[str], src: str, dst: str, size: int, fraction: float, drop: bool, log: str, timer: str | None
) -> ResumeTrial:
    remove_destination(dst)
    settle(drop)
    partial = dst + PARTIAL_SUFFIX
    target = int(size * fraction)
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [*onward, "copy", src, dst], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
        killed_at = None
        while proc.poll() is None:
            try:
                now = os.stat(partial).st_size
            except FileNotFoundError:
                now = 0
            if now >= target:
                proc.send_signal(signal.SIGKILL)
                killed_at = now
                break
            time.sleep(0.0005)
        proc.wait()
    if killed_at is None or not os.path.exists(partial):
        return ResumeTrial(None, None, None)  # finished (or promoted) before the kill landed
    durable = durable_after_kill(onward, os.path.dirname(dst))
    settle(drop)
    sample = run_child([*onward, "copy", src, dst], log, timer)
    if sample.rc != 0 or not same_content(src, dst):
        raise SystemExit(f"resume run failed (rc={sample.rc}); see {log}")
    return ResumeTrial(killed_at, durable, sample)


# -- reporting ---------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summary(tool: Tool) -> dict[str, Any]:
    s = tool.samples
    return {
        "tool": tool.name,
        "runs": len(s),
        "wall_median": med([x.wall for x in s]),
        "wall_min": min(x.wall for x in s),
        "wall_max": max(x.wall for x in s),
        "cpu_median": med([x.cpu for x in s]),
        "user_median": med([x.user for x in s]),
        "sys_median": med([x.sys for x in s]),
        "maxrss_kib_median": med([x.maxrss_kib for x in s]),
        "maxrss_kib_max": max(x.maxrss_kib for x in s),
        "checkpoints": tool.checkpoints,
    }


def table(rows: list[dict[str, Any]], size: int) -> str:
    by_name = {r["tool"]: r for r in rows}
    sync_wall = by_name["cp && sync"]["wall_median"]
    cp_wall = by_name["cp"]["wall_median"]
    w = max(len("tool"), *(len(r["tool"]) for r in rows))
    head = (
        f"{'tool':<{w}} {'wall s':>8} {'min-max s':>13} {'MiB/s':>7} {'CPU s':>7} {'usr s':>6} {'sys s':>6} "
        f"{'RSS MiB':>8} {'ckpts':>5} {'/cp&&sync':>9} {'/cp':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        rate = size / MiB / r["wall_median"] if r["wall_median"] > 0 else float("nan")
        ckpts = "" if r["checkpoints"] is None else str(r["checkpoints"])
        lines.append(
            f"{r['tool']:<{w}} {r['wall_median']:>8.3f} "
            f"{r['wall_min']:>6.3f}-{r['wall_max']:<6.3f} {rate:>7.0f} "
            f"{r['cpu_median']:>7.3f} {r['user_median']:>6.3f} {r['sys_median']:>6.3f} "
            f"{r['maxrss_kib_median'] / 1024:>8.1f} {ckpts:>5} "
            f"{r['wall_median'] / sync_wall:>9.3f} {r['wall_median'] / cp_wall:>6.3f}"
        )
    return "\n".join(lines)


def count_checkpoints(tool: Tool, src: str, dst: str, log: str) -> int | None:
    """One extra, untimed run with --json to count checkpoint events."""
    remove_destination(dst)
    assert tool.onward_args is not None
    out = subprocess.run(
        [*onward_command(), "copy", *tool.onward_args, "--json", src, dst], capture_output=True, text=True
    )
    with open(log, "a") as fh:
        fh.write(out.stderr)
    remove_destination(dst)
    if out.returncode != 0:
        return None
    return sum(1 for line in out.stdout.splitlines() if '"event": "checkpoint"' in line)


# -- main --------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--size", type=parse_size, default=parse_size("1G"), help="source size (default 1G)")
    p.add_argument("--runs", type=int, default=5, help="rounds; every tool runs once per round (default 5)")
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where source and destinations live")
    p.add_argument(
        "--onward-variant",
        action="append",
        default=[],
        metavar="OPTS",
        help='extra onward run with these options, e.g. "--checkpoint-bytes 16M" (repeatable)',
    )
    p.add_argument("--drop-caches", action="store_true", help=f"write 3 to {DROP_CACHES} before every run")
    p.add_argument("--no-resume", action="store_true", help="skip the kill-at-90%%-and-resume measurement")
    p.add_argument("--resume-at", type=float, default=0.9, help="fraction of the size at which to kill (0.9)")
    p.add_argument("--no-gnu-time", action="store_true", help="take peak RSS from our own wait4 (floored)")
    p.add_argument("--json", metavar="FILE", help="write all samples and medians to FILE")
    p.add_argument("--smoke", action="store_true", help="1 MiB, 1 run, quick check that the bench works")
    args = p.parse_args(argv)
    if args.smoke:
        args.size, args.runs = MiB, 1
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.drop_caches and not os.access(DROP_CACHES, os.W_OK):
        p.error(f"--drop-caches: {DROP_CACHES} is not writable (needs root)")
    if not os.path.isdir(args.dir):
        p.error(f"--dir: {args.dir} is not a directory")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    onward = onward_command()
    tools = make_tools(onward, args.onward_variant)
    desc = machine(args.dir)
    timer = None if args.no_gnu_time else gnu_time()
    started = time.time()
    work = tempfile.mkdtemp(prefix="onward-bench-", dir=args.dir)
    src, dst = os.path.join(work, "src.bin"), os.path.join(work, "dst.bin")
    log = os.path.join(work, "stderr.log")
    try:
        with open(src, "wb") as fh:
            left = args.size
            while left:
                block = os.urandom(min(left, 4 * MiB))  # small blocks: keep our own RSS low
                fh.write(block)
                left -= len(block)
        os.sync()

        trials: list[ResumeTrial] = []
        for rnd in range(args.runs):
            shift = rnd % len(tools)
            for tool in tools[shift:] + tools[:shift]:
                remove_destination(dst)
                settle(args.drop_caches)
                sample = run_child(tool.command(src, dst), log, timer)
                if sample.rc != 0:
                    raise SystemExit(f"{tool.name} failed with exit code {sample.rc}; see {log}")
                if rnd == 0 and not same_content(src, dst):  # correctness, untimed, once per tool
                    raise SystemExit(f"{tool.name}: destination differs from source")
                tool.samples.append(sample)
            if not args.no_resume:
                trials.append(
                    resume_trial(onward, src, dst, args.size, args.resume_at, args.drop_caches, log, timer)
                )
        for tool in tools:
            if tool.onward_args is not None:
                tool.checkpoints = count_checkpoints(tool, src, dst, log)
        remove_destination(dst)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = [summary(t) for t in tools]
    given = sys.argv[1:] if argv is None else argv
    print(f"command: python {shlex.join([os.path.relpath(sys.argv[0]), *given])}")
    print(
        f"machine: {desc['cpu_model']}, {desc['cores']} cores, {desc['ram_gib']} GiB RAM, "
        f"kernel {desc['kernel']}, Python {desc['python']}, {desc['cp']}"
    )
    print(
        f"disk:    {desc['dir']} on {desc['device']} mounted at {desc['mount']}, type {desc['fs_type']} "
        f"(stat -f: {desc['statfs_type']}); vm.dirty_ratio {desc['dirty_ratio']}, "
        f"dirty_background_ratio {desc['dirty_background_ratio']}"
    )
    print(
        f"work:    {fmt_size(args.size)} random source, {args.runs} round(s), tools interleaved round-robin; "
        f"before each run: destination removed + sync; drop_caches: "
        f"{'yes (echo 3 before each run)' if args.drop_caches else 'no'}"
    )
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        "rss:     peak RSS = ru_maxrss from wait4 of the command, "
        + (
            f"run under {timer} (%M)"
            if timer
            else f"spawned by this script, so floored at this script's own peak RSS ({own / 1024:.1f} MiB)"
        )
    )
    print()
    print(table(rows, args.size))

    resume_out: dict[str, Any] = {"trials": [asdict(t) for t in trials]}
    done = [t for t in trials if t.resume is not None]
    if not args.no_resume:
        print()
        full = next(r for r in rows if r["tool"] == "onward")["wall_median"]
        if done:
            rwall = med([t.resume.wall for t in done if t.resume])
            killed = med([t.killed_at / args.size for t in done if t.killed_at])
            durable = [t.durable / args.size for t in done if t.durable is not None]
            resume_out.update(wall_median=rwall, ratio_to_full=rwall / full, killed_fraction_median=killed)
            print(
                f"resume:  killed at {killed:.1%} of the partial (median of {len(done)}), "
                + (f"journal durable at {med(durable):.1%}; " if durable else "")
                + f"resume wall {rwall:.3f} s (min {min(t.resume.wall for t in done if t.resume):.3f}, "
                f"max {max(t.resume.wall for t in done if t.resume):.3f}), "
                f"CPU {med([t.resume.cpu for t in done if t.resume]):.3f} s, "
                f"peak RSS {med([t.resume.maxrss_kib for t in done if t.resume]) / 1024:.1f} MiB; "
                f"resume / full onward copy = {rwall / full:.3f}"
            )
        else:
            print("resume:  not measured: every copy finished before the kill landed (file too small)")
        if len(done) < len(trials):
            print(f"         ({len(trials) - len(done)} of {len(trials)} trial(s) finished before the kill)")
    print(f"\ntotal bench time {time.time() - started:.1f} s")

    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "argv": sys.argv,
                    "size": args.size,
                    "runs": args.runs,
                    "drop_caches": args.drop_caches,
                    "rss_via": timer or "os.wait4 (floored at the bench's own peak RSS)",
                    "machine": desc,
                    "summary": rows,
                    "samples": {t.name: [asdict(s) for s in t.samples] for t in tools},
                    "commands": {t.name: t.command("SRC", "DST") for t in tools},
                    "resume": resume_out,
                },
                fh,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

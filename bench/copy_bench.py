#!/usr/bin/env python3
"""Side by side: onward against cp, cp && sync, dd, rsync, shutil and the recipe it descends from.

Usage::

    python bench/copy_bench.py [--sizes 1M,256M,2G] [--runs 5] [--dir DIR] [--drop-caches]
                               [--tools cp,cp-sync,dd,rsync,shutil,recipe,onward] [--recipe-bytes SIZE]
                               [--onward-ref REF]... [--ablate] [--onward-variant OPTS]...
                               [--startup-reps 40] [--max-load 1.0 --load-wait 300] [--json FILE]
    python bench/copy_bench.py --smoke        # 256 KiB, 1 round: checks the bench still runs (CI)

For every size one random source file is written; then every round runs every
job once: the full copy of every tool, and the resume after an interruption at
90 % of onward, ``rsync --append-verify`` and the recipe. The jobs run in a
fresh shuffled order every round (seeded), so drift of the machine, and any
after-effect of one job on the next, spreads over all of them alike. Before every timed run the destination
directory is emptied and ``sync`` is run; with ``--drop-caches`` the page cache
is dropped too, so every job starts with a cold cache. At the end it measures
the start-up time of ``onward --version`` and ``onward --help`` and prints each
target of issue 4 with PASS or FAIL, computed from this run's numbers.

Only the standard library is used; every tool runs as a separate process.
bench/README.md says what every column means.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from benchlib import precompile

MiB = 1 << 20
GiB = 1 << 30
HERE = os.path.dirname(os.path.abspath(__file__))
RECIPE = os.path.join(HERE, "recipe.py")
ABLATED = os.path.join(HERE, "onward_ablated.py")
DROP_CACHES = "/proc/sys/vm/drop_caches"
PARTIAL_SUFFIX = ".onward-partial"  # onward.endpoints.local.PARTIAL_SUFFIX
OFFSET_SUFFIX = ".offset"  # bench/recipe.py
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

# The targets of issue 4.
COPY_VS_SYNC = 1.05  # onward durable full copy of 2 GiB <= 1.05 x (cp && sync)
NO_READBACK = "variant:--verify none"  # key of the row of onward without the device read-back
COPY_TARGET_SIZE = 2 * GiB
RESUME_VS_FULL = 0.15  # resume at 90 % <= 0.15 x onward's own full copy
# Below this the resume's fixed cost (Python's start-up, the re-check, the final sync) is most
# of it (the figures: docs/PERFORMANCE.md, "Figures the code's choices rest on").
RESUME_MIN_SIZE = 2 * GiB
RSS_LIMIT_MIB = 64.0  # peak RSS, every size
RSS_SAME = (0.10, 2.0)  # "the same" for 256 MiB and 2 GiB: within 10 % or 2 MiB
CPU_VS_CP = 1.5  # user+sys <= 1.5 x cp's
CPU_MIN_SIZE = 256 * MiB  # below this, Python's start-up alone outweighs cp's whole copy
STARTUP_LIMIT = 0.150  # onward --version / --help


def parse_size(text: str) -> int:
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1M, 256M or 2G)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.upper()])


def parse_sizes(text: str) -> list[int]:
    return [parse_size(part) for part in text.split(",") if part.strip()]


def fmt_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            if unit == "B":
                return f"{n:.0f} B"
            return f"{n:.0f} {unit}" if n == int(n) else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# -- the machine and its load --------------------------------------------------


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True)
    except OSError:
        return "missing"
    lines = (out.stdout or out.stderr).splitlines()
    return lines[0].strip() if lines else "?"


def _mount_of(path: str) -> tuple[str, str, str]:
    """(mount point, device, fs type) of the longest /proc/mounts entry containing ``path``."""
    path = os.path.realpath(path)
    best = ("", "?", "?")
    for line in _read("/proc/mounts").splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        dev, mnt, fstype = parts[0], parts[1].replace("\\040", " "), parts[2]
        inside = path == mnt or path.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) >= len(best[0]):
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
    mnt, dev, fstype = _mount_of(directory)
    free = shutil.disk_usage(directory).free
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / (1 << 20), 1),
        "dir": os.path.realpath(directory),
        "mount": mnt,
        "device": dev,
        "fs_type": fstype,
        "free_gib": round(free / GiB, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cp": _first_line(["cp", "--version"]),
        "dd": _first_line(["dd", "--version"]),
        "rsync": _first_line(["rsync", "--version"]),
        "dirty_ratio": _read("/proc/sys/vm/dirty_ratio").strip(),
        "dirty_background_ratio": _read("/proc/sys/vm/dirty_background_ratio").strip(),
    }


def loadavg() -> tuple[float, float, float]:
    parts = _read("/proc/loadavg").split()
    if len(parts) < 3:
        return (float("nan"),) * 3
    return (float(parts[0]), float(parts[1]), float(parts[2]))


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat.

    busy is user, nice, system, irq and softirq; steal is time the hypervisor gave
    our virtual CPUs to something else (0 on bare metal).
    """
    first = _read("/proc/stat").splitlines()[:1]
    if not first or not first[0].startswith("cpu "):
        return float("nan"), float("nan")
    f = [int(x) for x in first[0].split()[1:]] + [0] * 8
    return (f[0] + f[1] + f[2] + f[5] + f[6]) / _TICK, f[7] / _TICK


def idle_busy(window: float) -> float:
    """Cores the machine keeps busy while this benchmark runs nothing, over ``window`` seconds."""
    busy0, _ = cpu_seconds()
    time.sleep(window)
    busy1, _ = cpu_seconds()
    return (busy1 - busy0) / window


@dataclass
class Quiet:
    """Bounded waiting for the rest of the machine to calm down; every wait is recorded."""

    max_load: float  # 1-min load average allowed before a size starts (0: don't check)
    max_busy: float  # cores busy while we are idle allowed before a round starts (0: don't check)
    budget: float  # seconds of waiting allowed per size
    say: Callable[[str], None]
    window: float = 2.0
    waited: float = 0.0

    def before_size(self) -> None:
        self.waited = 0.0
        step = 10.0
        while self.max_load > 0 and loadavg()[0] > self.max_load and self.waited < self.budget:
            self.say(
                f"load average {loadavg()[0]:.2f} > {self.max_load}: waiting ({self.waited:.0f} s so far)"
            )
            time.sleep(step)
            self.waited += step

    def before_round(self) -> float | None:
        """Wait while others keep more than ``max_busy`` cores busy; the last measurement."""
        if self.max_busy <= 0:
            return None
        while True:
            busy = idle_busy(self.window)
            if busy <= self.max_busy or self.waited >= self.budget:
                return busy
            self.say(
                f"others keep {busy:.2f} cores busy > {self.max_busy}: waiting ({self.waited:.0f} s so far)"
            )
            time.sleep(5.0)
            self.waited += 5.0 + self.window


# -- running one child -----------------------------------------------------------


@dataclass
class Sample:
    wall: float  # seconds, spawn to reaped
    cpu: float  # user + sys seconds of the child and everything it waited for
    user: float
    sys: float
    maxrss_kib: int  # peak RSS of the child (or of its largest waited-for descendant)
    rc: int
    outside_cpu: float  # CPU seconds the machine was busy during the run, not counted to the child
    steal: float  # CPU seconds stolen by the hypervisor during the run


GNU_TIME = "/usr/bin/time"


def gnu_time() -> str | None:
    """GNU time, if present: it forks the measured command from its own small process."""
    try:
        out = subprocess.run([GNU_TIME, "--version"], capture_output=True, text=True)
    except OSError:
        return None
    return GNU_TIME if "GNU" in out.stdout + out.stderr else None


def run_child(
    argv: list[str], log: str, timer: str | None, env: dict[str, str] | None = None, out: str | None = None
) -> Sample:
    """Run ``argv`` to completion: wall time, CPU from RUSAGE_CHILDREN deltas, peak RSS from wait4.

    Linux counts in a child's ru_maxrss the peak RSS of the address space it had
    before exec: for a child spawned straight from this Python process that is
    this process's own peak (tens of MiB), which would hide the RSS of ``cp``.
    So when GNU time is available the command runs under it, and the peak RSS is
    the ru_maxrss that GNU time gets from wait4 of its own child (%M); otherwise
    it is ru_maxrss from our os.wait4, and the report says it is floored. ``out``: a file that
    receives the child's stdout (else discarded).
    """
    rss_file = None
    if timer is not None:
        fd, rss_file = tempfile.mkstemp(prefix="rss-", suffix=".txt")
        os.close(fd)
        argv = [timer, "-f", "%M", "-o", rss_file, *argv]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, steal0 = cpu_seconds()
    with open(log, "ab") as err, open(out or os.devnull, "wb") as stdout:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err, env=env)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - t0
    busy1, steal1 = cpu_seconds()
    proc.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waiting again
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    maxrss = usage.ru_maxrss
    if rss_file is not None:
        with open(rss_file) as fh:
            maxrss = int(fh.read().split()[-1])
        os.unlink(rss_file)
    user = after.ru_utime - before.ru_utime
    sys_ = after.ru_stime - before.ru_stime
    outside = max(busy1 - busy0 - user - sys_, 0)
    return Sample(wall, user + sys_, user, sys_, maxrss, proc.returncode, outside, steal1 - steal0)


# -- the tools -----------------------------------------------------------------------


@dataclass
class Tool:
    """A full copy of SRC to DST by one command."""

    key: str
    name: str
    argv: list[str]  # "{SRC}" and "{DST}" are substituted
    durable: str  # what it makes durable before it exits
    onward: bool = False  # an onward CLI (accepts --json; its resume can be measured)
    env: dict[str, str] | None = None
    max_runs: int | None = None  # run in the first max_runs rounds only (the slow recipe)
    samples: list[Sample] = field(default_factory=list)
    checkpoints: int | None = None

    def command(self, src: str, dst: str, extra: Sequence[str] = ()) -> list[str]:
        out = substitute(self.argv, src, dst)
        if extra:
            at = out.index(src)
            out[at:at] = list(extra)
        return out


def substitute(argv: Sequence[str], src: str, dst: str) -> list[str]:
    return [a.replace("{SRC}", src).replace("{DST}", dst) for a in argv]


def onward_command() -> list[str]:
    """The onward beside this Python (a venv), else on PATH, else ``python -m onward``."""
    here = os.path.join(os.path.dirname(sys.executable), "onward")
    if os.access(here, os.X_OK):
        return [here]
    found = shutil.which("onward")
    return [found] if found else [sys.executable, "-m", "onward"]


ANCHORS = ("cp", "cp-sync", "dd", "rsync", "shutil", "recipe")
ALL_TOOLS = (*ANCHORS, "onward")


def make_tools(keys: Sequence[str], onward: list[str], recipe_runs: int | None = None) -> list[Tool]:
    py = sys.executable
    known = {
        "cp": Tool("cp", "cp", ["cp", "{SRC}", "{DST}"], "nothing (page cache)"),
        "cp-sync": Tool(
            "cp-sync",
            "cp && sync",
            ["sh", "-c", 'cp "$1" "$2" && sync', "sh", "{SRC}", "{DST}"],
            "everything dirty on the machine",
        ),
        "dd": Tool(
            "dd",
            "dd bs=4M conv=fsync",
            ["dd", "if={SRC}", "of={DST}", "bs=4M", "conv=fsync"],
            "the file (fsync)",
        ),
        "rsync": Tool("rsync", "rsync --partial", ["rsync", "--partial", "{SRC}", "{DST}"], "nothing"),
        "shutil": Tool(
            "shutil",
            "shutil.copyfile",
            [py, "-c", "import shutil, sys; shutil.copyfile(sys.argv[1], sys.argv[2])", "{SRC}", "{DST}"],
            "nothing",
        ),
        "recipe": Tool(
            "recipe", "recipe (1 KiB)", [py, RECIPE, "{SRC}", "{DST}"], "nothing", max_runs=recipe_runs
        ),
        "onward": Tool(
            "onward", "onward", [*onward, "copy", "{SRC}", "{DST}"], "file + dir (fsync)", onward=True
        ),
    }
    tools = [known[k] for k in keys]
    if "onward" in keys:  # the mode without the read-back from the device
        tools.append(variant_tool(onward, "--verify none"))
    return tools


def missing(tool: Tool) -> str | None:
    exe = tool.argv[0]
    if tool.key == "cp-sync":
        exe = "cp" if shutil.which("sync") else "sync"
    return None if shutil.which(exe) or os.access(exe, os.X_OK) else exe


def ref_tool(ref: str, repo: str, into: str) -> Tool:
    """onward's source at git ``ref``, unpacked into ``into`` and run from there with PYTHONPATH."""
    root = os.path.join(into, f"onward-{re.sub(r'[^A-Za-z0-9._-]', '_', ref)}")
    os.makedirs(root, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", repo, "archive", "--format=tar", ref, "src/onward"], capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise SystemExit(f"--onward-ref {ref}: git archive failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", root], input=archive.stdout, check=True)
    precompile(os.path.join(root, "src", "onward"))
    sha = subprocess.run(
        ["git", "-C", repo, "rev-parse", "--short", ref], capture_output=True, text=True, check=True
    ).stdout.strip()
    env = {**os.environ, "PYTHONPATH": os.path.join(root, "src")}
    argv = [sys.executable, "-m", "onward", "copy", "{SRC}", "{DST}"]
    return Tool(f"ref:{ref}", f"onward@{sha}", argv, "file + dir (fsync)", onward=True, env=env)


def snapshot(repo: str, into: str) -> str:
    """Copy the working tree's src/onward to ``into`` and make every child import it from there.

    The engine may be edited while a long benchmark runs; with a snapshot every
    run measures the same code. PYTHONPATH comes before the venv's editable-install
    path, so the venv's ``onward`` script imports the snapshot too. Returns a
    fingerprint of the copied files.
    """
    dst = os.path.join(into, "snapshot", "src", "onward")
    shutil.copytree(
        os.path.join(repo, "src", "onward"), dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    digest = hashlib.sha256()
    for directory, dirs, files in sorted(os.walk(dst)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(directory, name)
            digest.update(os.path.relpath(path, dst).encode() + b"\0")
            with open(path, "rb") as fh:
                digest.update(fh.read())
    os.environ["PYTHONPATH"] = os.path.dirname(dst)
    return digest.hexdigest()[:12]


def describe_code(repo: str) -> str:
    """Which onward the rows run: git HEAD, the files of src/ that differ from it, the module's path."""
    head = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    status = subprocess.run(
        ["git", "-C", repo, "status", "--porcelain", "--", "src"], capture_output=True, text=True
    )
    changed = [line[3:] for line in status.stdout.splitlines()]
    where = subprocess.run(
        [sys.executable, "-c", "import onward, sys; sys.stdout.write(onward.__file__)"],
        capture_output=True,
        text=True,
    ).stdout
    return (
        f"HEAD {head.stdout.strip() or '?'}"
        + (f" + {len(changed)} changed file(s) under src/ ({', '.join(changed)})" if changed else "")
        + f"; imported from {os.path.dirname(where) or '?'}"
    )


def ablated_tools() -> list[Tool]:
    return [
        Tool(
            f"ablate:{what}",
            f"onward -{label}",
            [sys.executable, ABLATED, f"--off={what}", "copy", "{SRC}", "{DST}"],
            "file + dir (fsync)",
            onward=True,
        )
        for what, label in (
            ("source-direct", "direct source reads"),
            ("sink-direct", "direct partial I/O"),
            ("readahead", "readahead"),
        )
    ]


def variant_tool(onward: list[str], options: str) -> Tool:
    extra = shlex.split(options)
    return Tool(
        f"variant:{options}",
        f"onward {options}",
        [*onward, "copy", *extra, "{SRC}", "{DST}"],
        "file + dir (fsync)",
        onward=True,
    )


# -- page cache and leftovers -----------------------------------------------------


def empty_dir(directory: str) -> None:
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


SETTLE_SYNC = True  # off in --smoke: there a global sync can take seconds on a busy machine


def settle(drop: bool) -> None:
    """Same starting state for every job: flush everything dirty, optionally drop the page cache."""
    if SETTLE_SYNC:
        os.sync()
    if drop:
        with open(DROP_CACHES, "w") as fh:
            fh.write("3\n")


def tail(path: str, lines: int = 20) -> str:
    return "\n".join(_read(path).splitlines()[-lines:])


def same_content(a: str, b: str) -> bool:
    return subprocess.run(["cmp", "-s", a, b]).returncode == 0


def write_prefix(src: str, dst: str, length: int) -> None:
    """``dst`` := the first ``length`` bytes of ``src`` (in the kernel, untimed)."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        left = length
        while left:
            n = os.copy_file_range(fin.fileno(), fout.fileno(), left)
            if n == 0:
                raise SystemExit(f"{src}: shorter than {length} bytes")
            left -= n


# -- resumes ---------------------------------------------------------------------------


@dataclass
class Resume:
    """A resume after an interruption at ``fraction`` of the size: prepare (untimed), then time."""

    key: str
    name: str
    argv: list[str]
    own_full: str  # key of the full-copy tool this resume is compared with
    how: str
    samples: list[Sample] = field(default_factory=list)
    started_at: list[float] = field(default_factory=list)  # fraction present before the timed run
    durable: list[float] = field(default_factory=list)  # fraction the journal had committed (onward)
    skipped: int = 0  # trials in which the copy had written every byte before the kill landed
    # onward only (issue 13): where the kill lands, whether the partial is damaged before the
    # resume, the bytes of earlier runs the resume read back (its done event's "rechecked"), and
    # how many kill attempts found a write in flight (SIGSTOP, look at the journal's last record).
    in_flight: bool | None = None  # True: killed mid-write; False: between writes; None: any moment
    damage: bool = False
    read_back: list[int] = field(default_factory=list)
    looks: list[tuple[int, int]] = field(default_factory=list)  # (attempts in flight, attempts)


def make_resumes(keys: Sequence[str], onward: list[str]) -> list[Resume]:
    out = []
    if "onward" in keys:
        resume = [*onward, "copy", "--json", "{SRC}", "{DST}"]
        out += [
            Resume(
                "onward",
                "onward",
                resume,
                "onward",
                "SIGKILL when its partial reaches the fraction, no write in flight (at a sync or "
                "between chunks: the partial is proven untouched)",
                in_flight=False,
            ),
            Resume(
                "onward-mid-write",
                "onward, kill mid-write",
                resume,
                "onward",
                "SIGKILL when its partial reaches the fraction, a chunk's write in flight (no proof: "
                "every committed chunk is read back)",
                in_flight=True,
            ),
            Resume(
                "onward-damaged",
                "onward, damaged",
                resume,
                "onward",
                "as the first, then 16 bytes of chunk 0 of the partial overwritten (every committed "
                "chunk is read back, the damaged one copied again)",
                in_flight=False,
                damage=True,
            ),
        ]
    if "rsync" in keys:
        out.append(
            Resume(
                "rsync",
                "rsync --append-verify",
                ["rsync", "--append-verify", "{SRC}", "{DST}"],
                "rsync",
                "destination holds the first bytes of the source",
            )
        )
    if "recipe" in keys:
        out.append(
            Resume(
                "recipe",
                "recipe (1 KiB)",
                [sys.executable, RECIPE, "{SRC}", "{DST}"],
                "recipe",
                f"destination holds the first bytes, DST{OFFSET_SUFFIX} says where they end",
            )
        )
    return out


def durable_after_kill(onward: list[str], directory: str) -> int | None:
    out = subprocess.run([*onward, "status", "--json", directory], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and isinstance(item.get("done"), int):
            return int(item["done"])
    return None


JOURNAL_SUFFIX = ".onward-journal"  # onward.endpoints.local.JOURNAL_SUFFIX
KIND_IN_FLIGHT = 8  # onward.core.journal: a write to the partial has begun, no SEAL after it yet


def last_record_kind(journal: str) -> int | None:
    """The kind of the last whole record of an onward journal (docs/JOURNAL.md), or None."""
    try:
        with open(journal, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    pos, kind = 12, None  # after the preamble
    while pos + 5 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "little")
        if pos + 9 + length > len(data):
            break
        kind, pos = data[pos + 4], pos + 9 + length
    return kind


def kill_at(
    argv: list[str], partial: str, target: int, log: str, in_flight: bool | None = None
) -> tuple[int, int, int] | None:
    """Run ``argv``; SIGKILL it once ``partial`` holds ``target`` bytes, and (``in_flight`` not
    None) only while a write to it is (True) or is not (False) in flight: it is stopped, its
    journal's last record looked at, and let go on for a moment when that is not the moment.
    Returns (size then, attempts that found a write in flight, attempts), or None if it finished."""
    journal = partial.removesuffix(PARTIAL_SUFFIX) + JOURNAL_SUFFIX
    flying = attempts = 0
    with open(log, "ab") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        while proc.poll() is None:
            try:
                now = os.stat(partial).st_size
            except FileNotFoundError:
                now = 0
            if now >= target:
                proc.send_signal(signal.SIGSTOP)
                attempts += 1
                try:
                    now = os.stat(partial).st_size
                except FileNotFoundError:  # renamed onto the final name meanwhile: it finished
                    proc.send_signal(signal.SIGCONT)
                    continue
                writing = last_record_kind(journal) == KIND_IN_FLIGHT
                flying += writing
                if in_flight is None or writing == in_flight or attempts >= 20000:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return now, flying, attempts
                proc.send_signal(signal.SIGCONT)
            time.sleep(0.0005 if now < target else 0.0001)
    return None


def corrupt(path: str, offset: int, length: int) -> None:
    """Overwrite ``length`` bytes at ``offset`` with their complement, as another program might."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        old = fh.read(length)
        fh.seek(offset)
        fh.write(bytes(b ^ 0xFF for b in old))


def read_back_of(out: str) -> int | None:
    """The ``rechecked`` bytes of the done event in a ``--json`` run's output."""
    with open(out) as fh:
        for line in fh:
            if '"event": "done"' in line:
                return int(json.loads(line).get("rechecked", 0))
    return None


def prepare_resume(job: Resume, src: str, dst: str, size: int, fraction: float, log: str) -> bool:
    """Leave ``dst`` as an interruption at ``fraction`` would; False if that could not be done."""
    target = int(size * fraction)
    if job.key.startswith("onward"):
        cmd = substitute(job.argv, src, dst)
        stopped = kill_at(cmd, dst + PARTIAL_SUFFIX, target, log, job.in_flight)
        if stopped is None or stopped[0] >= size or not os.path.exists(dst + PARTIAL_SUFFIX):
            job.skipped += 1
            return False
        killed, flying, attempts = stopped
        job.looks.append((flying, attempts))
        job.started_at.append(killed / size)
        done = durable_after_kill(cmd[: cmd.index("copy")], os.path.dirname(dst))
        if done is not None:
            job.durable.append(done / size)
        if job.damage:
            corrupt(dst + PARTIAL_SUFFIX, 1000, 16)
        return True
    write_prefix(src, dst, target)
    if job.key == "recipe":
        with open(dst + OFFSET_SUFFIX, "w") as fh:
            fh.write(str(target))
    job.started_at.append(target / size)
    return True


# -- one size -------------------------------------------------------------------------


@dataclass
class Block:
    size: int
    rounds: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    waited: float = 0.0  # seconds spent waiting for a quieter machine
    round_load: list[float] = field(default_factory=list)  # 1-min load average at each round's start
    round_busy: list[float] = field(default_factory=list)  # cores others kept busy just before each round
    notes: list[str] = field(default_factory=list)
    orders: list[list[str]] = field(default_factory=list)  # the order the jobs ran in, per round
    seconds: float = 0.0
    tools: list[Tool] = field(default_factory=list)
    resumes: list[Resume] = field(default_factory=list)


def write_source(path: str, size: int) -> None:
    with open(path, "wb") as fh:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MiB))  # small blocks: keep our own RSS low
            fh.write(block)
            left -= len(block)
    os.sync()


def count_checkpoints(tool: Tool, src: str, dst: str, log: str) -> int | None:
    """One extra, untimed run with --json to count checkpoint events."""
    out = subprocess.run(
        tool.command(src, dst, ["--json"]), capture_output=True, text=True, env=tool.env, check=False
    )
    with open(log, "a") as fh:
        fh.write(out.stderr)
    if out.returncode != 0:
        return None
    return sum(1 for line in out.stdout.splitlines() if '"event": "checkpoint"' in line)


def run_block(
    size: int,
    tools: list[Tool],
    resumes: list[Resume],
    args: argparse.Namespace,
    timer: str | None,
    work: str,
    say: Callable[[str], None],
) -> Block:
    quiet = Quiet(args.max_load, args.max_busy, args.load_wait, say, window=args.busy_window)
    quiet.before_size()
    block = Block(size, args.runs, loadavg(), tools=tools, resumes=resumes)
    started = time.perf_counter()
    srcdir, dstdir = os.path.join(work, "src"), os.path.join(work, "dst")
    os.makedirs(srcdir, exist_ok=True)
    os.makedirs(dstdir, exist_ok=True)
    src, dst = os.path.join(srcdir, "src.bin"), os.path.join(dstdir, "dst.bin")
    log = os.path.join(work, "stderr.log")
    say(f"{fmt_size(size)}: writing the source")
    write_source(src, size)
    jobs: list[Tool | Resume] = [*tools, *resumes]
    shuffle = random.Random(args.seed + size)
    for rnd in range(args.runs):
        busy = quiet.before_round()
        if busy is not None:
            block.round_busy.append(busy)
        block.round_load.append(loadavg()[0])
        say(
            f"{fmt_size(size)}: round {rnd + 1}/{args.runs} (load {block.round_load[-1]:.2f}"
            + (f", others busy {busy:.2f} cores)" if busy is not None else ")")
        )
        order = list(jobs)
        shuffle.shuffle(order)  # a fresh order every round: no job always follows the same one
        block.orders.append([j.name if isinstance(j, Tool) else f"{j.name} (resume)" for j in order])
        for job in order:
            empty_dir(dstdir)
            if isinstance(job, Tool):
                if job.max_runs is not None and rnd >= job.max_runs:
                    continue
                settle(args.drop_caches)
                sample = run_child(job.command(src, dst), log, timer, job.env)
                what = job.name
            else:
                if not prepare_resume(job, src, dst, size, args.resume_at, log):
                    continue
                settle(args.drop_caches)
                cmd = substitute(job.argv, src, dst)
                out = os.path.join(work, "resume.out") if job.key.startswith("onward") else None
                sample = run_child(cmd, log, timer, out=out)
                if out is not None:
                    got = read_back_of(out)
                    if got is not None:
                        job.read_back.append(got)
                what = f"{job.name} (resume)"
            if sample.rc != 0:
                raise SystemExit(f"{what} failed with exit code {sample.rc}:\n{tail(log)}")
            first = len(job.samples) == 0
            if first and not same_content(src, dst):  # correctness, untimed, once per job and size
                raise SystemExit(f"{what}: destination differs from source")
            job.samples.append(sample)
    for tool in tools:
        if tool.onward:
            empty_dir(dstdir)
            tool.checkpoints = count_checkpoints(tool, src, dst, log)
    empty_dir(dstdir)
    os.unlink(src)
    block.seconds = time.perf_counter() - started
    block.waited = quiet.waited
    block.load_after = loadavg()
    return block


# -- start-up time ----------------------------------------------------------------------


@dataclass
class Startup:
    name: str
    argv: list[str]
    walls: list[float] = field(default_factory=list)


def measure_startup(onward: list[str], reps: int) -> list[Startup]:
    """Wall time of ``onward --version`` / ``--help`` and of a bare interpreter, interleaved."""
    py = sys.executable
    rows = [
        Startup("python -c pass", [py, "-c", "pass"]),
        Startup("onward --version", [*onward, "--version"]),
        Startup("onward --help", [*onward, "--help"]),
    ]
    for _ in range(reps):
        for row in rows:
            t0 = time.perf_counter()
            subprocess.run(row.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            row.walls.append(time.perf_counter() - t0)
    return rows


# -- reporting ---------------------------------------------------------------------------


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def stats(samples: Sequence[Sample]) -> dict[str, float]:
    walls = [s.wall for s in samples]
    return {
        "runs": len(samples),
        "wall": med(walls),
        "wall_min": min(walls, default=float("nan")),
        "wall_max": max(walls, default=float("nan")),
        "cpu": med([s.cpu for s in samples]),
        "user": med([s.user for s in samples]),
        "sys": med([s.sys for s in samples]),
        "rss_mib": med([s.maxrss_kib for s in samples]) / 1024,
        "rss_max_mib": max((s.maxrss_kib for s in samples), default=0) / 1024,
        "outside_cpu": med([s.outside_cpu for s in samples]),
    }


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def spread(st: dict[str, float]) -> float:
    return ratio(st["wall_max"] - st["wall_min"], st["wall"])


def all_samples(block: Block) -> list[Sample]:
    return [s for t in block.tools for s in t.samples] + [s for r in block.resumes for s in r.samples]


def by_key(block: Block) -> dict[str, dict[str, float]]:
    return {t.key: stats(t.samples) for t in block.tools if t.samples}


def full_table(block: Block) -> str:
    rows = by_key(block)
    sync_wall = rows.get("cp-sync", {}).get("wall", float("nan"))
    cp_wall = rows.get("cp", {}).get("wall", float("nan"))
    cp_cpu = rows.get("cp", {}).get("cpu", float("nan"))
    w = max(len("full copy"), *(len(t.name) for t in block.tools))
    head = (
        f"{'full copy':<{w}} {'n':>2} {'wall s':>8} {'min-max s':>15} {'spread':>6} {'MiB/s':>6} "
        f"{'CPU s':>6} {'usr s':>6} {'sys s':>6} {'RSS MiB':>7} {'ckpt':>4} "
        f"{'/cp&&sync':>9} {'/cp':>6} {'CPU/cp':>6}  durable"
    )
    lines = [head, "-" * len(head)]
    for tool in block.tools:
        if not tool.samples:
            lines.append(f"{tool.name:<{w}} (not run)")
            continue
        r = rows[tool.key]
        rate = block.size / MiB / r["wall"] if r["wall"] > 0 else float("nan")
        ckpt = "" if tool.checkpoints is None else str(tool.checkpoints)
        lines.append(
            f"{tool.name:<{w}} {r['runs']:>2.0f} {r['wall']:>8.3f} "
            f"{r['wall_min']:>7.3f}-{r['wall_max']:<7.3f} {spread(r):>6.0%} {rate:>6.0f} "
            f"{r['cpu']:>6.3f} {r['user']:>6.3f} {r['sys']:>6.3f} {r['rss_max_mib']:>7.1f} {ckpt:>4} "
            f"{ratio(r['wall'], sync_wall):>9.3f} {ratio(r['wall'], cp_wall):>6.3f} "
            f"{ratio(r['cpu'], cp_cpu):>6.2f}  {tool.durable}"
        )
    return "\n".join(lines)


def resume_table(block: Block, fraction: float) -> str:
    rows = by_key(block)
    onward_full = rows.get("onward", {}).get("wall", float("nan"))
    w = max(len(f"resume at {fraction:.0%}"), *(len(r.name) for r in block.resumes))
    head = (
        f"{f'resume at {fraction:.0%}':<{w}} {'n':>2} {'wall s':>8} {'min-max s':>15} {'spread':>6} "
        f"{'CPU s':>6} {'RSS MiB':>7} {'present':>7} {'durable':>7} {'/own full':>9} {'/onward full':>12} "
        f"{'read back':>9}"
    )
    lines = [head, "-" * len(head)]
    for job in block.resumes:
        if not job.samples:
            why = (
                f"in {job.skipped} trial(s) every byte was written before the kill"
                if job.skipped
                else "not run"
            )
            lines.append(f"{job.name:<{w}} (not measured: {why})")
            continue
        r = stats(job.samples)
        own = rows.get(job.own_full, {}).get("wall", float("nan"))
        durable = f"{med(job.durable):>7.1%}" if job.durable else f"{'':>7}"
        read_back = fmt_size(med(job.read_back)) if job.read_back else "(all)" if job.key == "rsync" else ""
        lines.append(
            f"{job.name:<{w}} {r['runs']:>2.0f} {r['wall']:>8.3f} "
            f"{r['wall_min']:>7.3f}-{r['wall_max']:<7.3f} {spread(r):>6.0%} "
            f"{r['cpu']:>6.3f} {r['rss_max_mib']:>7.1f} {med(job.started_at):>7.1%} {durable} "
            f"{ratio(r['wall'], own):>9.3f} {ratio(r['wall'], onward_full):>12.3f} {read_back:>9}"
        )
    looks = [n for job in block.resumes for n in job.looks]
    if looks:
        flying, attempts = sum(f for f, _ in looks), sum(a for _, a in looks)
        lines.append(
            f"(a look at a stopped onward found a write in flight {flying} times in {attempts}: "
            f"{ratio(flying, attempts):.0%} of random kill moments would land mid-write)"
        )
    return "\n".join(lines)


def per_run(block: Block) -> str:
    jobs: list[tuple[str, list[Sample]]] = [(t.name, t.samples) for t in block.tools]
    jobs += [(f"{r.name} (resume)", r.samples) for r in block.resumes]
    w = max(len(name) for name, _ in jobs)
    return "\n".join(f"{name:<{w}} " + " ".join(f"{s.wall:6.2f}" for s in samples) for name, samples in jobs)


@dataclass
class Verdict:
    target: str
    status: str  # PASS, FAIL or n/a
    detail: str


def verdicts(blocks: list[Block], startup: list[Startup]) -> list[Verdict]:
    out = []
    # 1. durable full copy of 2 GiB vs cp && sync
    parts, status = [], "n/a"
    for b in blocks:
        rows = by_key(b)
        if "onward" in rows and "cp-sync" in rows:
            x = ratio(rows["onward"]["wall"], rows["cp-sync"]["wall"])
            parts.append(f"{fmt_size(b.size)} {x:.2f} x")
            if b.size == COPY_TARGET_SIZE:
                status = "PASS" if x <= COPY_VS_SYNC else "FAIL"
    out.append(
        Verdict(
            f"durable full copy of {fmt_size(COPY_TARGET_SIZE)}: onward <= {COPY_VS_SYNC} x cp && sync",
            status,
            "; ".join(parts) + ("" if status != "n/a" else f" (no {fmt_size(COPY_TARGET_SIZE)} run)"),
        )
    )
    parts, status = [], "n/a"
    for b in blocks:
        rows = by_key(b)
        if NO_READBACK in rows and "cp-sync" in rows:
            x = ratio(rows[NO_READBACK]["wall"], rows["cp-sync"]["wall"])
            parts.append(f"{fmt_size(b.size)} {x:.2f} x")
            if b.size == COPY_TARGET_SIZE:
                status = "PASS" if x <= COPY_VS_SYNC else "FAIL"
    if parts:
        out.append(
            Verdict(
                f"  the same, onward --verify none (durable, no read-back) <= {COPY_VS_SYNC} x cp && sync",
                status,
                "; ".join(parts) + ("" if status != "n/a" else f" (no {fmt_size(COPY_TARGET_SIZE)} run)"),
            )
        )
    # 2. resume at 90 % vs onward's own full copy
    parts, results = [], []
    for b in blocks:
        job = next((r for r in b.resumes if r.key == "onward"), None)
        rows = by_key(b)
        if job is None or not job.samples or "onward" not in rows:
            continue
        x = ratio(stats(job.samples)["wall"], rows["onward"]["wall"])
        counted = b.size >= RESUME_MIN_SIZE
        parts.append(f"{fmt_size(b.size)} {x:.2f}" + ("" if counted else " (not counted)"))
        if counted:
            results.append(x <= RESUME_VS_FULL)
    out.append(
        Verdict(
            f"resume at 90 %: onward <= {RESUME_VS_FULL} x its full copy, "
            f"sizes >= {fmt_size(RESUME_MIN_SIZE)}",
            ("PASS" if all(results) else "FAIL") if results else "n/a",
            "; ".join(parts) or "no resume measured (file too small for a kill at 90 %)",
        )
    )
    # 3. peak RSS, every size, and the same for 256 MiB and 2 GiB
    peak: dict[int, float] = {}
    for b in blocks:
        samples = [s for t in b.tools if t.key == "onward" for s in t.samples]
        samples += [s for r in b.resumes if r.key == "onward" for s in r.samples]
        if samples:
            peak[b.size] = max(s.maxrss_kib for s in samples) / 1024
    status = "n/a"
    if peak:
        ok = max(peak.values()) <= RSS_LIMIT_MIB
        small, big = peak.get(256 * MiB), peak.get(2 * GiB)
        same = None
        if small is not None and big is not None:
            same = big - small <= max(RSS_SAME[0] * small, RSS_SAME[1])
            ok = ok and same
        status = "PASS" if ok else "FAIL"
    detail = "; ".join(f"{fmt_size(k)} {v:.1f} MiB" for k, v in peak.items())
    out.append(
        Verdict(
            f"peak RSS of onward (copy and resume) <= {RSS_LIMIT_MIB:.0f} MiB, same at 256 MiB and 2 GiB",
            status,
            (detail or "onward not run")
            + ("" if not (256 * MiB in peak and 2 * GiB in peak) else " (same: within 10 % or 2 MiB)"),
        )
    )
    # 4. CPU vs cp
    parts, results = [], []
    for b in blocks:
        rows = by_key(b)
        if "onward" in rows and "cp" in rows:
            x = ratio(rows["onward"]["cpu"], rows["cp"]["cpu"])
            counted = b.size >= CPU_MIN_SIZE
            parts.append(f"{fmt_size(b.size)} {x:.2f} x" + ("" if counted else " (not counted)"))
            if counted:
                results.append(x <= CPU_VS_CP)
    out.append(
        Verdict(
            f"CPU (user+sys) of onward <= {CPU_VS_CP} x cp's, sizes >= {fmt_size(CPU_MIN_SIZE)}",
            ("PASS" if all(results) else "FAIL") if results else "n/a",
            "; ".join(parts) or "onward or cp not run",
        )
    )
    # 5. start-up
    floor = next((s for s in startup if s.name == "python -c pass"), None)
    for row in startup:
        if row.name == "python -c pass":
            continue
        m = med(row.walls)
        out.append(
            Verdict(
                f"{row.name} starts in < {STARTUP_LIMIT * 1000:.0f} ms",
                "PASS" if m < STARTUP_LIMIT else "FAIL",
                f"median {m * 1000:.0f} ms of {len(row.walls)}"
                + (f" (python -c pass: {med(floor.walls) * 1000:.0f} ms)" if floor else ""),
            )
        )
    return out


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--sizes",
        "--size",
        type=parse_sizes,
        default=parse_sizes("1M,256M,2G"),
        help="comma-separated source sizes (default 1M,256M,2G)",
    )
    p.add_argument("--runs", type=int, default=5, help="rounds per size; every job runs once per round")
    p.add_argument(
        "--dir",
        help="where source and destinations live (default: the temp dir; --smoke: /dev/shm if it exists)",
    )
    p.add_argument(
        "--tools",
        default=",".join(ALL_TOOLS),
        help=f"comma-separated subset of {','.join(ALL_TOOLS)} (default: all)",
    )
    p.add_argument(
        "--recipe-max-size",
        type=parse_size,
        metavar="SIZE",
        help="run the recipe (full copy and resume) only for sizes up to SIZE",
    )
    p.add_argument(
        "--recipe-bytes",
        type=parse_size,
        metavar="SIZE",
        help="full copies by the (slow) recipe per size: only as many rounds as fit in SIZE, at least 1",
    )
    p.add_argument(
        "--onward-ref",
        action="append",
        default=[],
        metavar="REF",
        help="also run onward as committed at git REF (unpacked to a temp dir, PYTHONPATH); repeatable",
    )
    p.add_argument(
        "--ablate",
        action="store_true",
        help="also run onward without direct I/O for the source, for the partial, and with readahead "
        "depth 1 (bench/onward_ablated.py)",
    )
    p.add_argument(
        "--onward-variant",
        action="append",
        default=[],
        metavar="OPTS",
        help='also run onward with these options, e.g. "--checkpoint-bytes 16M" (repeatable)',
    )
    p.add_argument("--drop-caches", action="store_true", help=f"write 3 to {DROP_CACHES} before every run")
    p.add_argument("--seed", type=int, default=1, help="seed of the per-round job order (1)")
    p.add_argument("--resume-at", type=float, default=0.9, help="interruption point, a fraction (0.9)")
    p.add_argument("--no-resume", action="store_true", help="skip the resume measurements")
    p.add_argument(
        "--resumes",
        default="onward,onward-mid-write,onward-damaged,rsync,recipe",
        help="comma-separated resume jobs to run, of those the chosen tools have (default: all)",
    )
    p.add_argument("--startup-reps", type=int, default=40, help="repetitions of each start-up command (40)")
    p.add_argument(
        "--max-load",
        type=float,
        default=0.0,
        help="before each size, wait while the 1-min load average is above this (0: don't wait)",
    )
    p.add_argument(
        "--max-busy",
        type=float,
        default=0.0,
        help="before each round, wait while other processes keep more than this many cores busy "
        "(measured over 2 s with the bench idle; 0: don't check)",
    )
    p.add_argument(
        "--load-wait",
        type=float,
        default=300,
        help="longest total wait per size for --max-load/--max-busy (s)",
    )
    p.add_argument(
        "--snapshot",
        action="store_true",
        help="run onward from a copy of the working tree's src/onward taken at the start",
    )
    p.add_argument("--skip-missing", action="store_true", help="skip anchors that are not installed")
    p.add_argument("--no-gnu-time", action="store_true", help="take peak RSS from our own wait4 (floored)")
    p.add_argument("--json", metavar="FILE", help="write all samples and summaries to FILE")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--smoke", action="store_true", help="256 KiB, 1 round, 3 start-ups: quick check (CI)")
    args = p.parse_args(argv)
    args.busy_window = 2.0
    if args.smoke:  # checks that every path of the bench still runs; its timings mean nothing
        args.sizes, args.runs, args.startup_reps, args.skip_missing = [256 << 10], 1, 3, True
        global SETTLE_SYNC
        SETTLE_SYNC = False
        if args.dir is None and os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
            args.dir = "/dev/shm"  # the recipe's per-KiB side-file rewrites crawl on a busy disk
    if args.dir is None:
        args.dir = tempfile.gettempdir()
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = sorted(set(args.tools) - set(ALL_TOOLS))
    if unknown:
        p.error(f"--tools: unknown {', '.join(unknown)}; known: {', '.join(ALL_TOOLS)}")
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if not 0 < args.resume_at < 1:
        p.error("--resume-at must be between 0 and 1")
    if args.drop_caches and not os.access(DROP_CACHES, os.W_OK):
        p.error(f"--drop-caches: {DROP_CACHES} is not writable (needs root)")
    if not os.path.isdir(args.dir):
        p.error(f"--dir: {args.dir} is not a directory")
    return args


def print_header(
    args: argparse.Namespace,
    argv: list[str] | None,
    desc: dict[str, Any],
    onward: list[str],
    timer: str | None,
) -> None:
    given = sys.argv[1:] if argv is None else argv
    print(f"command: python {shlex.join([os.path.relpath(sys.argv[0]), *given])}")
    print(
        f"machine: {desc['cpu_model']}, {desc['cores']} cores, {desc['ram_gib']} GiB RAM, "
        f"kernel {desc['kernel']}, Python {desc['python']}"
    )
    print(
        f"disk:    {desc['dir']} on {desc['device']} mounted at {desc['mount']}, type {desc['fs_type']}, "
        f"{desc['free_gib']} GiB free; vm.dirty_ratio {desc['dirty_ratio']}, "
        f"dirty_background_ratio {desc['dirty_background_ratio']}"
    )
    print(f"tools:   {desc['cp']}; {desc['dd']}; {desc['rsync']}; onward: {shlex.join(onward)}")
    print(
        f"method:  random source per size, jobs in a shuffled order every round (--seed {args.seed}); "
        "before each timed run: "
        + ("destination dir emptied + sync" if SETTLE_SYNC else "destination dir emptied (--smoke: no sync)")
        + (", page cache dropped (echo 3 > drop_caches)" if args.drop_caches else ", page cache NOT dropped")
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
    print(f"code:    {desc['code']}")
    print(
        "onward:  default mode, durable (fdatasync per checkpoint, fsync + rename), every chunk read back "
        "from the device; 'onward --verify none': as durable, without the read-back"
    )
    for note in desc["notes"]:
        print(f"note:    {note}")


def print_block(b: Block, args: argparse.Namespace) -> None:
    print()
    la, lb = b.load_before, b.load_after
    print(
        f"== {fmt_size(b.size)}: {b.rounds} round(s) in {b.seconds:.0f} s; load average (1/5/15 min) "
        f"{la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f} before, {lb[0]:.2f}/{lb[1]:.2f}/{lb[2]:.2f} after"
        + (f"; waited {b.waited:.0f} s for a quieter machine" if b.waited else "")
    )
    print(f"   1-min load at each round's start: {' '.join(f'{x:.2f}' for x in b.round_load)}")
    if b.round_busy:
        print(
            "   cores kept busy by others just before each round (bench idle, "
            f"{args.busy_window:.0f} s): {' '.join(f'{x:.2f}' for x in b.round_busy)}"
        )
    every = all_samples(b)
    outside, steal, walls = (sum(getattr(x, k) for x in every) for k in ("outside_cpu", "steal", "wall"))
    if every and walls > 0:
        print(
            f"   CPU busy outside the measured command during the runs: {outside / walls:.2f} "
            "cores on average (other processes, kernel write-back and I/O threads); "
            f"stolen by the hypervisor: {steal / walls:.3f} cores"
        )
    for note in b.notes:
        print(f"   note: {note}")
    print()
    print(full_table(b))
    if b.resumes:
        print()
        print(resume_table(b, args.resume_at))
    print()
    print("wall s of every run, in round order:")
    print(per_run(b))


def print_startup(startup: list[Startup]) -> None:
    if not startup:
        return
    print()
    w = max(len(s.name) for s in startup)
    print(f"{'start-up':<{w}} {'n':>3} {'median ms':>9} {'min ms':>7} {'max ms':>7}")
    for s in startup:
        print(
            f"{s.name:<{w}} {len(s.walls):>3} {med(s.walls) * 1000:>9.1f} "
            f"{min(s.walls) * 1000:>7.1f} {max(s.walls) * 1000:>7.1f}"
        )


def block_json(b: Block) -> dict[str, Any]:
    return {
        "size": b.size,
        "load_before": b.load_before,
        "load_after": b.load_after,
        "round_load": b.round_load,
        "round_busy": b.round_busy,
        "waited": b.waited,
        "seconds": b.seconds,
        "notes": b.notes,
        "orders": b.orders,
        "full": {
            t.name: {
                "command": t.command("SRC", "DST"),
                "durable": t.durable,
                "checkpoints": t.checkpoints,
                "summary": stats(t.samples) if t.samples else None,
                "samples": [asdict(s) for s in t.samples],
            }
            for t in b.tools
        },
        "resume": {
            r.name: {
                "command": r.argv,
                "how": r.how,
                "present": r.started_at,
                "durable": r.durable,
                "skipped": r.skipped,
                "read_back": r.read_back,
                "kill_looks": r.looks,
                "summary": stats(r.samples) if r.samples else None,
                "samples": [asdict(s) for s in r.samples],
            }
            for r in b.resumes
        },
    }


def write_json(
    path: str,
    args: argparse.Namespace,
    desc: dict[str, Any],
    timer: str | None,
    blocks: list[Block],
    startup: list[Startup],
    verdict: list[Verdict],
) -> None:
    with open(path, "w") as fh:
        json.dump(
            {
                "argv": sys.argv,
                "runs": args.runs,
                "drop_caches": args.drop_caches,
                "rss_via": timer or "os.wait4 (floored at the bench's own peak RSS)",
                "machine": desc,
                "blocks": [block_json(b) for b in blocks],
                "startup": {s.name: s.walls for s in startup},
                "targets": [asdict(v) for v in verdict],
            },
            fh,
            indent=2,
        )


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through the finally blocks: children killed, temp dir removed


def main(argv: list[str] | None = None) -> int:
    """Each size's tables are printed (and --json rewritten) as soon as that size is done."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)

    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    onward = onward_command()
    timer = None if args.no_gnu_time else gnu_time()
    desc = machine(args.dir)
    started = time.time()
    notes: list[str] = []
    work = tempfile.mkdtemp(prefix="onward-bench-", dir=args.dir)
    blocks: list[Block] = []
    startup: list[Startup] = []
    try:
        proto = make_tools(args.tools, onward)
        absent = {t.key: m for t in proto if (m := missing(t)) is not None}
        if absent and not args.skip_missing:
            raise SystemExit(
                "not installed: " + ", ".join(sorted(set(absent.values()))) + " (install, or --skip-missing)"
            )
        for key, exe in absent.items():
            notes.append(f"skipped {key}: {exe} is not installed")
        keys = [k for k in args.tools if k not in absent]
        repo = os.path.dirname(HERE)
        if args.snapshot:
            fingerprint = snapshot(repo, work)
            notes.append(f"onward rows run a copy of src/onward taken at the start (sha256 {fingerprint})")
        notes.append(precompile())
        desc.update(code=describe_code(repo), notes=notes)
        print_header(args, argv, desc, onward, timer)
        for size in args.sizes:
            here = list(keys)
            skipped = []
            if "recipe" in here and args.recipe_max_size is not None and size > args.recipe_max_size:
                here.remove("recipe")
                skipped.append(
                    f"recipe not run at this size (--recipe-max-size {fmt_size(args.recipe_max_size)})"
                )
            recipe_runs = None if args.recipe_bytes is None else max(1, args.recipe_bytes // size)
            tools = make_tools(here, onward, recipe_runs)
            tools += [ref_tool(ref, repo, work) for ref in args.onward_ref]
            if args.ablate:
                tools += ablated_tools()
            tools += [variant_tool(onward, v) for v in args.onward_variant]
            wanted = set(args.resumes.split(","))
            resumes = [] if args.no_resume else [r for r in make_resumes(here, onward) if r.key in wanted]
            block = run_block(size, tools, resumes, args, timer, os.path.join(work, "data"), say)
            block.notes += skipped
            blocks.append(block)
            print_block(block, args)
            sys.stdout.flush()
            if args.json:
                write_json(args.json, args, desc, timer, blocks, startup, [])
        if args.startup_reps > 0:
            say(f"start-up: {args.startup_reps} x 3 commands")
            startup = measure_startup(onward, args.startup_reps)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print_startup(startup)
    verdict = verdicts(blocks, startup)
    print()
    print("targets of issue 4, from this run's numbers:")
    for v in verdict:
        print(f"  [{v.status:>4}] {v.target}: {v.detail}")
    print(f"\ntotal bench time {time.time() - started:.1f} s")
    if args.json:
        write_json(args.json, args, desc, timer, blocks, startup, verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())

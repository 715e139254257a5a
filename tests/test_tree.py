"""``onward copy -r``: real trees, the real CLI in a subprocess, real SIGKILLs.

Every comparison is of the whole tree: for each entry its kind, permission bits and
mtime; the bytes of regular files; the target of symlinks; which names are hard links
of one another; empty directories included. Names are compared as bytes, so names that
are not UTF-8 must arrive byte-exact. The kill moments come from a seeded RNG
(``ONWARD_TREE_SEED`` overrides it; it is printed with every failure).
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from onward.units import format_size

KiB, MiB = 1 << 10, 1 << 20
CHUNK = 64 * KiB
FLAGS = ["--chunk-size", "64K", "--checkpoint-bytes", "256K"]
ONWARD = [sys.executable, "-m", "onward"]
SEED = int(os.environ.get("ONWARD_TREE_SEED", "5"))
WORKING = (b".onward-partial", b".onward-journal", b".onward-journal.tmp")
TREE_JOURNAL = "onward-tree.onward-journal"


def cli(
    *args: str | os.PathLike[str], prefix: list[str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), *ONWARD, *(os.fspath(arg) for arg in args)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def events(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.stdout.splitlines()]


def of_kind(evs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in evs if e["event"] == kind]


def make_tree(root: Path, *, big: int = 3 * MiB, small: int = 40, seed: int = 0) -> None:
    """Nested directories (one empty, one read-only), files of many sizes, a multi-chunk file,
    symlinks (relative, absolute, dangling), two hard-link groups, names that are not UTF-8,
    a FIFO (skipped), and old, distinct mtimes everywhere."""
    rng = random.Random(seed)
    root.mkdir()
    for d in ("a", "a/b", "a/b/c", "empty", "ro", "wide"):
        (root / d).mkdir()
    sizes = [0, 1, 4095, 4096, 4097, CHUNK - 1, CHUNK, CHUNK + 1]
    for i in range(small):
        where = ["a", "a/b", "a/b/c", "wide", "ro", ""][i % 6]
        size = sizes[i] if i < len(sizes) else rng.randrange(0, 40 * KiB)
        (root / where / f"f{i:03}").write_bytes(rng.randbytes(size))
    (root / "a" / "big.bin").write_bytes(rng.randbytes(big))
    raw = os.fsencode(root)
    with open(raw + b"/caf\xe9", "wb") as fh:
        fh.write(b"accented name")
    os.mkdir(raw + b"/dir\xff")
    with open(raw + b"/dir\xff/inside\xfe", "wb") as fh:
        fh.write(rng.randbytes(5000))
    (root / "a" / "ro-file").write_bytes(b"read only")
    (root / "a" / "ro-file").chmod(0o444)
    (root / "a" / "exec").write_bytes(b"#!/bin/sh\n")
    (root / "a" / "exec").chmod(0o750)
    os.symlink("b/c/f002", root / "a" / "rel-link")
    os.symlink("/etc/hostname", root / "abs-link")
    os.symlink("nowhere", root / "dangling")
    os.symlink("a/b", root / "dir-link")
    os.link(root / "a" / "f000", root / "hard-0")
    os.link(root / "a" / "b" / "f001", root / "wide" / "hard-1")
    os.link(root / "a" / "b" / "f001", root / "hard-1b")
    os.mkfifo(root / "fifo")
    for n, path in enumerate(sorted(root.rglob("*"), key=lambda p: -len(p.parts))):
        t = 1_500_000_000_123_456_789 + n * 1_000_000_007
        os.utime(path, ns=(t, t), follow_symlinks=False)
    (root / "ro").chmod(0o555)
    os.utime(root, ns=(1_400_000_000_000_000_001,) * 2)


def snapshot(root: Path, *, specials: bool = False) -> dict[bytes, Any]:
    """The whole tree below ``root`` (root's own bits and mtime included), names as bytes."""
    raw = os.fsencode(root)
    state: dict[bytes, Any] = {}
    groups: dict[tuple[int, int], list[bytes]] = {}
    st = os.lstat(raw)
    state[b"."] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    for directory, dirs, files in os.walk(raw):
        for name in dirs + files:
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, raw)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                state[rel] = ("link", os.readlink(path), st.st_mtime_ns)
            elif stat.S_ISDIR(st.st_mode):
                state[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as fh:
                    state[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, fh.read())
                groups.setdefault((st.st_dev, st.st_ino), []).append(rel)
            elif specials:
                state[rel] = ("special", stat.S_IFMT(st.st_mode))
    state[b"hard links"] = sorted(sorted(g) for g in groups.values() if len(g) > 1)
    return state


def inodes(root: Path) -> dict[bytes, tuple[int, int, int]]:
    """(inode, ctime, mtime) of everything: any rename, write, chmod or utime changes one."""
    raw = os.fsencode(root)
    out = {}
    for directory, dirs, files in os.walk(raw):
        for name in [b".", *dirs, *files]:
            st = os.lstat(os.path.join(directory, name))
            out[os.path.join(directory, name)] = (st.st_ino, st.st_ctime_ns, st.st_mtime_ns)
    return out


def working_files(root: Path) -> list[bytes]:
    found = []
    for directory, _, files in os.walk(os.fsencode(root)):
        found += [os.path.join(directory, f) for f in files if f.endswith(WORKING)]
    return found


def assert_copied(src: Path, dst: Path) -> None:
    assert snapshot(dst) == snapshot(src), "the trees differ"
    assert working_files(dst) == [], "working files left behind"


def assert_never_torn(src: Path, dst: Path) -> None:
    """After any kill: every final name holds a complete copy of its source, or nothing."""
    raw_src, raw_dst = os.fsencode(src), os.fsencode(dst)
    for directory, _, files in os.walk(raw_dst):
        for name in files:
            if name.endswith(WORKING) or name.startswith(TREE_JOURNAL.encode()):
                continue
            rel = os.path.relpath(os.path.join(directory, name), raw_dst)
            if not stat.S_ISREG(os.lstat(os.path.join(raw_dst, rel)).st_mode):
                continue
            with open(os.path.join(raw_dst, rel), "rb") as fh:
                copied = fh.read()
            with open(os.path.join(raw_src, rel), "rb") as fh:
                assert copied == fh.read(), f"{rel!r} holds a torn or wrong copy"


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "src"
    make_tree(src)
    return src, tmp_path / "out"


# -- the copy itself ----------------------------------------------------------------------


def test_copies_an_identical_tree_and_follows_rsyncs_slash_rule(tree: tuple[Path, Path]) -> None:
    src, out = tree
    proc = cli("copy", "-r", src, out)  # SRC: the tree lands as out/src (out made, as rsync does)
    assert proc.returncode == 0, proc.stderr
    assert_copied(src, out / "src")
    assert sorted(os.listdir(out)) == ["src"]
    # The notice names the destination entry that is not made, and the source it stands for.
    assert f"{out}/src/fifo: not copied: {src}/fifo is a FIFO; special files are not copied" in proc.stderr
    assert "Traceback" not in proc.stderr
    again = cli("copy", "-r", src, out)  # the same command again: the same copy, not out/src/src
    assert again.returncode == 0 and set(os.listdir(out / "src")) == set(os.listdir(src)) - {"fifo"}
    (out / "contents").mkdir()
    proc = cli("copy", "-r", f"{src}/", out / "contents")  # SRC/: the contents go into DST
    assert proc.returncode == 0, proc.stderr
    assert_copied(src, out / "contents")


def test_rerun_after_success_changes_nothing_and_reads_no_file(
    tree: tuple[Path, Path], onward_no_dac_prefix: list[str]
) -> None:
    src, out = tree
    assert cli("copy", "-r", *FLAGS, src, out).returncode == 0
    before, times = snapshot(out / "src"), inodes(out)
    proc = cli("copy", "-r", "--json", *FLAGS, src, out)
    assert proc.returncode == 0, proc.stderr
    evs = events(proc)
    assert of_kind(evs, "file") == [] and of_kind(evs, "checkpoint") == []
    [summary] = of_kind(evs, "summary")
    assert summary["copied_files"] == 0 and summary["copied"] == 0
    assert summary["unchanged_files"] == summary["files"] > 40
    assert snapshot(out / "src") == before and inodes(out) == times  # not even a ctime moved
    # Not one source file is opened: with every one of them unreadable it still succeeds
    # (--no-preserve mode, or the new bits would be mirrored: that is all it would do).
    files = [p for p in src.rglob("*") if p.is_file() and not p.is_symlink()]
    modes = {p: p.stat().st_mode for p in files}
    for p in files:
        p.chmod(0)
    try:
        args: list[str | os.PathLike[str]]
        args = ["copy", "-r", "--json", "--no-preserve", "mode", *FLAGS, src, out]
        proc = cli(*args, prefix=onward_no_dac_prefix)
    finally:
        for p, mode in modes.items():
            p.chmod(stat.S_IMODE(mode))
    assert proc.returncode == 0, proc.stderr
    assert of_kind(events(proc), "file") == [] and inodes(out) == times


def test_dash_c_judges_files_of_the_same_size_by_their_bytes_as_rsync_c(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for name in ("same", "edited", "touched"):
        (src / name).write_bytes(name.encode() * 1000)
        os.utime(src / name, ns=(10**18, 10**18))
    assert cli("copy", "-r", f"{src}/", out).returncode == 0
    # "edited": other bytes, same size and time (the quick check cannot see it);
    # "touched": the same bytes, another time (the quick check would copy it again).
    (out / "edited").write_bytes(b"x" * 6000)
    os.utime(out / "edited", ns=(10**18, 10**18))
    os.utime(out / "touched", ns=(2 * 10**18, 2 * 10**18))
    quick = cli("copy", "-r", "--json", f"{src}/", out)
    assert quick.returncode == 0, quick.stderr
    assert {e["path"] for e in of_kind(events(quick), "file") if e["action"] == "copied"} == {"touched"}
    assert (out / "edited").read_bytes() == b"x" * 6000  # rsync's quick check misses it too
    os.utime(out / "touched", ns=(2 * 10**18, 2 * 10**18))
    proc = cli("copy", "-r", "-c", "--json", f"{src}/", out)
    assert proc.returncode == 0, proc.stderr
    actions = {e["path"]: e["action"] for e in of_kind(events(proc), "file")}
    assert actions == {"same": "verified", "edited": "copied", "touched": "verified"}
    [summary] = of_kind(events(proc), "summary")
    assert summary["copied"] == 6000  # only "edited" was written
    for name in ("same", "edited", "touched"):
        assert (out / name).read_bytes() == (src / name).read_bytes()
        assert (out / name).stat().st_mtime_ns == 10**18  # the source's time, kept or restored
    assert "differs from the source" not in proc.stderr  # with -c a difference is the normal case


def test_dash_v_lists_each_entry_as_it_is_done(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_bytes(b"a" * 10)
    (src / "sub" / "b").write_bytes(os.urandom(3 * MiB))  # its own journal: not batched
    proc = cli("copy", "-r", "-v", "--chunk-size", "1M", f"{src}/", out)
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.splitlines()) == ["copied a", "copied sub/b"]
    (out / "extra").write_bytes(b"")
    proc = cli("copy", "-r", "-v", "--delete", f"{src}/", out)  # nothing to copy: only the removal
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["deleted extra"]
    proc = cli("copy", "-v", src / "a", tmp_path / "single")
    assert proc.returncode == 0 and proc.stdout == f"copied {tmp_path / 'single'}\n", proc.stderr


def test_status_never_shows_an_unfinished_tree_as_done(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for name in ("a", "b"):
        (src / name).write_bytes(b"x" * 1000)
    (src / "empty").write_bytes(b"")
    (out / "src" / "empty").mkdir(parents=True)  # a conflict: the empty file fails, 0 bytes missing
    assert cli("copy", "-r", src, out).returncode == 23
    [entry] = [json.loads(line) for line in cli("status", "--json", out).stdout.splitlines()]
    assert (entry["files_done"], entry["files"], entry["done"], entry["size"]) == (2, 3, 2000, 2000)
    assert entry["percent"] == 99.9
    assert "99.9%" in cli("status", out).stdout


def test_exclude_and_include_follow_rsyncs_rules_and_protect_what_they_leave_out(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    for rel in ("a.o", "b.c", "keep/y.o", "raw/x", "sub/cache/z", "sub/w", "sub/raw/v"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(rel.encode())
    (out / "src").mkdir(parents=True)
    (out / "src" / "old.o").write_bytes(b"excluded: --delete must leave it")
    (out / "src" / "old.txt").write_bytes(b"not excluded: --delete removes it")
    rules_file = tmp_path / "rules"
    rules_file.write_text("# build output\n\ncache/\n")
    args: list[str | os.PathLike[str]] = [
        "--include",
        "keep/***",
        "--exclude",
        "*.o",
        "--exclude",
        "/src/raw",
        "--exclude-from",
        rules_file,
    ]
    proc = cli("copy", "-r", "--delete", *args, src, out)  # SRC: anchored rules see "src/..."
    assert proc.returncode == 0, proc.stderr
    got = sorted(str(p.relative_to(out / "src")) for p in (out / "src").rglob("*") if p.is_file())
    assert got == ["b.c", "keep/y.o", "old.o", "sub/raw/v", "sub/w"]
    # SRC/: the same anchored rule now names nothing, and "/raw" is the one that matches.
    contents = tmp_path / "contents"
    proc = cli("copy", "-r", "--exclude", "/src/raw", "--filter", "- /sub/", f"{src}/", contents)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in contents.iterdir()) == ["a.o", "b.c", "keep", "raw"]
    bad = cli("copy", "-r", "--filter", "? x", src, out)
    assert bad.returncode == 2 and "--filter: not a rule: '? x'" in bad.stderr
    alone = cli("copy", "--exclude", "*.o", src / "b.c", tmp_path / "b.c")
    assert alone.returncode == 2
    assert alone.stderr == "onward: --exclude, --include or --filter applies to directory trees; add -r\n"


def test_dry_run_says_what_a_tree_copy_would_do_and_writes_nothing(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    make_tree(src)
    before = snapshot(tmp_path, specials=True)
    proc = cli("copy", "-r", "-n", src, out)
    assert proc.returncode == 0, proc.stderr
    assert snapshot(tmp_path, specials=True) == before  # not even the destination directory
    planned = proc.stdout.splitlines()
    assert (
        sum(line.startswith("copy ") for line in planned)
        == sum(1 for p in src.rglob("*") if p.is_file() and not p.is_symlink() and os.stat(p).st_nlink == 1)
        + 2
    )  # one file of each of the two hard-link groups; the rest are links
    assert any(line.startswith("link ") for line in planned) and any(
        line.startswith("symlink ") for line in planned
    )
    assert "dry run" in proc.stderr and "nothing was written" in proc.stderr
    assert cli("copy", "-r", src, out).returncode == 0
    (src / "new.txt").write_bytes(b"12345")
    (out / "src" / "extra").write_bytes(b"")
    before = snapshot(tmp_path, specials=True)
    proc = cli("copy", "-r", "--dry-run", "--delete", "--json", src, out)
    assert proc.returncode == 0, proc.stderr
    plans = [(e["action"], e["path"]) for e in events(proc) if e["event"] == "plan"]
    assert plans == [("delete", "extra"), ("copy", "new.txt"), ("skip", "fifo")]
    assert events(proc)[-1] == {"event": "dry_run", "bytes": 5}
    assert snapshot(tmp_path, specials=True) == before


def test_dash_c_without_r_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    proc = cli("copy", "-c", tmp_path / "a", tmp_path / "b")
    assert proc.returncode == 2
    assert proc.stderr == "onward: -c applies to directory trees; add -r\n"
    assert not (tmp_path / "b").exists()


def start_then_kill(args: list[str | os.PathLike[str]], work: float, rng: random.Random) -> tuple[int, bool]:
    """Start ``onward copy -r --json``; once it has listed the trees (its tree-start event),
    SIGKILL it after a random share of the work it has left (estimated from the files it
    reports done). Returns (exit status, whether it had got as far as copying)."""
    proc = subprocess.Popen(
        [*ONWARD, *(os.fspath(arg) for arg in args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline() or b'{"event": "none"}')
    left = 1.0
    if first["event"] == "tree-start" and first["files"]:
        left = max(0.1, 1 - first["files_done"] / first["files"])
    time.sleep(rng.uniform(0, work * left))  # a random moment for the kill, not a wait
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err, err.decode()
    assert proc.returncode in (0, -signal.SIGKILL), err.decode()
    return proc.returncode, first["event"] == "tree-start"


def test_sigkill_at_random_moments_then_resume_gives_an_identical_tree(tmp_path: Path) -> None:
    """30 SIGKILLs in sequences of up to 5 (each resume killed again), then a run to the end.
    After every kill each final name holds a complete copy or nothing; at the end the trees
    are identical and nothing of onward's is left."""
    rng = random.Random(SEED)
    src = tmp_path / "src"
    make_tree(src, big=4 * MiB, small=60, seed=SEED)
    flags = ["--chunk-size", "64K", "--checkpoint-bytes", "64K"]  # many batches and checkpoints
    works = []
    for n in range(2):
        timing = subprocess.Popen(
            [*ONWARD, "copy", "-r", "--json", *flags, os.fspath(src), os.fspath(tmp_path / f"timing{n}")],
            stdout=subprocess.PIPE,
        )
        assert timing.stdout is not None
        timing.stdout.readline()
        began = time.monotonic()
        timing.communicate(timeout=120)
        works.append(time.monotonic() - began)  # from the listing to the end
    work = min(works)
    killed = mid_copy = sequence = 0
    while killed < 30:
        assert sequence < 40, f"only {killed} kills in {sequence} sequences (seed {SEED})"
        out = tmp_path / f"out{sequence}"
        sequence += 1
        for _ in range(5):
            code, listed = start_then_kill(["copy", "-r", "--json", *flags, src, out], work, rng)
            if code == 0:
                break  # it finished before the kill came
            killed += 1
            mid_copy += listed and (out / "src" / TREE_JOURNAL).exists()
            if (out / "src").exists():
                assert_never_torn(src, out / "src")
            if killed == 30:
                break
        proc = cli("copy", "-r", *FLAGS, src, out)
        assert proc.returncode == 0, f"seed {SEED}, sequence {sequence}: {proc.stderr}"
        assert_copied(src, out / "src")
    print(f"seed {SEED}: {killed} kills in {sequence} sequences, {mid_copy} of them mid-copy")
    assert mid_copy >= 10, f"only {mid_copy} of {killed} kills landed mid-copy (seed {SEED})"


def kill_in_big_file(src: Path, out: Path, sig: int = signal.SIGKILL) -> subprocess.Popen[bytes]:
    """Stop the copy once the big file has committed at least 1 MiB (stdout is a one-page pipe,
    so the copy cannot run far ahead of what this test has read)."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen(
        [*ONWARD, "copy", "-r", "--json", *FLAGS, os.fspath(src), os.fspath(out)],
        stdin=subprocess.DEVNULL,
        stdout=write_end,
        stderr=subprocess.PIPE,
    )
    os.close(write_end)
    with os.fdopen(read_end) as lines:
        for line in lines:
            event = json.loads(line)
            big = event["event"] == "checkpoint" and event["destination"].endswith("big.bin")
            if big and event["committed"] >= MiB:
                proc.send_signal(sig)
                break
        for _ in lines:
            pass
    proc.wait(timeout=60)
    return proc


def test_the_file_in_flight_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    make_tree(src, big=8 * MiB, small=12)
    killed = kill_in_big_file(src, out)
    assert killed.returncode == -signal.SIGKILL
    status = cli("status", "--json", out)
    [entry] = [json.loads(line) for line in status.stdout.splitlines()]  # one entry for the tree
    assert entry["tree"] and entry["destination"] == str(out / "src") and entry["source"] == str(src)
    assert 0 < entry["files_done"] < entry["files"] and entry["done"] >= MiB
    human = cli("status", out).stdout.splitlines()
    assert len(human) == 2 and f"of {entry['files']} files" in human[1]
    proc = cli("copy", "-r", "--json", *FLAGS, src, out)
    assert proc.returncode == 0, proc.stderr
    [big] = [e for e in of_kind(events(proc), "file") if e["path"] == "a/big.bin"]
    assert big["resumed_from"] >= MiB and big["copied"] <= 8 * MiB - big["resumed_from"]
    copied_again = {e["path"] for e in of_kind(events(proc), "file")}
    assert len(copied_again) < entry["files"] - entry["files_done"] + 1  # done files were not redone
    assert_copied(src, out / "src")


def test_damage_to_the_partial_of_the_file_in_flight_is_found_by_the_resume(tmp_path: Path) -> None:
    """Issue 13 for trees: the partial of the file in flight, damaged between runs (its mtime
    put back), is read back in full on resume and its damaged chunk copied again."""
    src, out = tmp_path / "src", tmp_path / "out"
    make_tree(src, big=8 * MiB, small=12)
    assert kill_in_big_file(src, out).returncode == -signal.SIGKILL
    partial = out / "src" / "a" / "big.bin.onward-partial"
    before = partial.stat()
    with open(partial, "r+b") as fh:
        fh.seek(1000)
        fh.write(bytes(b ^ 0xFF for b in (src / "a" / "big.bin").read_bytes()[1000:1016]))
    os.utime(partial, ns=(before.st_atime_ns, before.st_mtime_ns))
    proc = cli("copy", "-r", "--json", *FLAGS, src, out)
    assert proc.returncode == 0, proc.stderr
    notices = [e["message"] for e in of_kind(events(proc), "notice")]
    assert any("read back its" in n and "1 damaged" in n for n in notices), notices
    assert_copied(src, out / "src")


@pytest.mark.parametrize("how", ["random", "3-bytes"])
def test_a_garbled_tree_journal_is_set_aside_and_the_same_command_finishes(tmp_path: Path, how: str) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    make_tree(src, big=8 * MiB, small=12)
    assert kill_in_big_file(src, out).returncode == -signal.SIGKILL
    journal = out / "src" / TREE_JOURNAL
    raw = journal.read_bytes()
    journal.write_bytes(os.urandom(len(raw)) if how == "random" else raw[:3])
    proc = cli("copy", "-r", "--json", *FLAGS, src, out)
    assert proc.returncode == 0, proc.stderr
    notices = [e["message"] for e in of_kind(events(proc), "notice")]
    assert any("unreadable" in n and f"{TREE_JOURNAL}.bad" in n for n in notices), notices
    root = (out / "src").stat()
    (out / "src" / f"{TREE_JOURNAL}.bad").unlink()  # kept for a post-mortem; the rest is the copy
    os.utime(out / "src", ns=(root.st_atime_ns, root.st_mtime_ns))  # as onward left it
    assert_copied(src, out / "src")


def test_ctrl_c_stops_with_130_and_the_same_command_resumes(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    make_tree(src, big=8 * MiB, small=12)
    proc = kill_in_big_file(src, out, signal.SIGINT)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert proc.returncode == 130, err
    assert "interrupted after" in err and "run the same command again to resume" in err
    assert "Traceback" not in err
    # What the message says is kept is what status finds: the done files and the file in flight.
    [entry] = [json.loads(line) for line in cli("status", "--json", out).stdout.splitlines()]
    assert entry["done"] >= MiB
    kept = f"({format_size(entry['done'])} of {format_size(entry['size'])} kept)"
    assert kept in err, err
    proc2 = cli("copy", "-r", *FLAGS, src, out)
    assert proc2.returncode == 0, proc2.stderr
    assert_copied(src, out / "src")


def test_status_and_clean_see_one_tree(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    make_tree(src, big=8 * MiB, small=6)
    kill_in_big_file(src, out)
    assert working_files(out)
    proc = cli("clean", "--yes", out)
    assert proc.returncode == 0, proc.stderr
    assert working_files(out) == [] and not (out / "src" / TREE_JOURNAL).exists()
    assert cli("status", out).stdout.startswith("no unfinished copies")
    assert cli("copy", "-r", *FLAGS, src, out).returncode == 0
    assert_copied(src, out / "src")


def test_status_and_clean_show_names_that_are_not_utf8(tmp_path: Path) -> None:
    """A tree and a lone partial whose names are not UTF-8, listed with stdout in strict UTF-8
    (as in any UTF-8 locale other than C): text shows the bytes as \\xNN, JSON as surrogate
    escapes that give the exact bytes back; nothing crashes."""
    src, out = tmp_path / os.fsdecode(b"src\xff"), tmp_path / "out"
    make_tree(src, big=8 * MiB, small=6)
    kill_in_big_file(src, out)
    with open(os.fsencode(out) + b"/lone\xfe.onward-partial", "wb") as fh:
        fh.write(b"orphan")
    strict = ["env", "PYTHONIOENCODING=utf-8", "LC_ALL=C.UTF-8"]
    human = cli("status", out, prefix=strict)
    assert human.returncode == 0 and "Traceback" not in human.stderr, human.stderr
    lines = human.stdout.splitlines()
    assert len(lines) == 3, human.stdout
    assert f"{tmp_path}/src\\xff -> {out}/src\\xff" in lines[1] and "files)" in lines[1]
    assert f"{out}/lone\\xfe  (partial without a journal)" in lines[2]
    listed = cli("status", "--json", out, prefix=strict)
    assert listed.returncode == 0, listed.stderr
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(os.fsencode(e["destination"]), e["tree"]) for e in entries] == [
        (os.fsencode(out) + b"/src\xff", True),
        (os.fsencode(out) + b"/lone\xfe", False),
    ]
    assert os.fsencode(entries[0]["source"]) == os.fsencode(src)
    cleaned = cli("clean", "--yes", out, prefix=strict)
    assert cleaned.returncode == 0 and "Traceback" not in cleaned.stderr, cleaned.stderr
    assert f"to {out}/src\\xff (" in cleaned.stdout and f"to {out}/lone\\xfe (" in cleaned.stdout
    assert working_files(out) == []


# -- the source changes between runs ---------------------------------------------------------


def test_new_changed_and_removed_source_files(tree: tuple[Path, Path]) -> None:
    src, out = tree
    assert cli("copy", "-r", src, out).returncode == 0
    (src / "a" / "new").write_bytes(b"new file")
    with open(src / "wide" / "f003", "ab") as fh:
        fh.write(b"grown")
    (src / "a" / "b" / "f007").unlink()
    (src / "a" / "b" / "c").rename(src / "a" / "b" / "c2")  # a directory moved: new in, old out
    proc = cli("copy", "-r", "--json", src, out)
    assert proc.returncode == 0, proc.stderr
    evs = events(proc)
    files = {e["path"]: e["action"] for e in of_kind(evs, "file")}
    assert {p for p, a in files.items() if a == "copied"} >= {"a/new", "wide/f003"}
    assert not {p for p in files if not p.startswith(("a/new", "wide/f003", "a/b/c2/"))}
    kept = {e["destination"] for e in of_kind(evs, "notice") if "not in the source" in e["message"]}
    assert kept == {str(out / "src" / "a" / "b" / "f007"), str(out / "src" / "a" / "b" / "c")}
    assert (out / "src" / "a" / "b" / "f007").exists()  # reported, not removed
    proc = cli("copy", "-r", "--json", "--delete", src, out)
    assert proc.returncode == 0, proc.stderr
    deleted = {e["path"] for e in of_kind(events(proc), "file") if e["action"] == "deleted"}
    assert deleted == {"a/b/f007", "a/b/c"}
    assert_copied(src, out / "src")


def test_unreadable_entries_fail_alone_and_a_rerun_copies_only_them(
    tree: tuple[Path, Path], onward_no_dac_prefix: list[str]
) -> None:
    src, out = tree
    (src / "a" / "f012").chmod(0)
    (src / "a" / "b" / "c").chmod(0)
    proc = cli("copy", "-r", *FLAGS, src, out, prefix=onward_no_dac_prefix)
    assert proc.returncode == 23, proc.stderr
    lines = proc.stderr.splitlines()
    failures = [line for line in lines if "Permission denied" in line]
    assert len(failures) == 2 and all(line.startswith("onward: ") for line in failures)
    assert any(str(src / "a" / "f012") in line and "cannot open source" in line for line in failures)
    assert any(str(src / "a" / "b" / "c") in line and "cannot list directory" in line for line in failures)
    assert "2 entries could not be copied" in lines[-1] and "Traceback" not in proc.stderr
    assert (out / "src" / "a" / "f018").exists() and (out / "src" / "a" / "big.bin").exists()
    assert (out / "src" / TREE_JOURNAL).exists()  # unfinished: kept for the re-run
    # While unfinished, a done file whose content changed but whose size and mtime were put
    # back (only its ctime tells) is copied again.
    done = src / "wide" / "f009"
    st = done.stat()
    done.write_bytes(bytes(b ^ 1 for b in done.read_bytes()))
    os.utime(done, ns=(st.st_atime_ns, st.st_mtime_ns))
    (src / "a" / "f012").chmod(0o644)
    (src / "a" / "b" / "c").chmod(0o755)
    proc = cli("copy", "-r", "--json", *FLAGS, src, out, prefix=onward_no_dac_prefix)
    assert proc.returncode == 0, proc.stderr
    copied = {e["path"] for e in of_kind(events(proc), "file") if e["action"] == "copied"}
    inside_c = {str(p.relative_to(src)) for p in (src / "a" / "b" / "c").iterdir()}
    assert copied == {"a/f012", "wide/f009"} | inside_c
    assert_copied(src, out / "src")


# -- bad input -----------------------------------------------------------------------------


def assert_one_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.returncode == code, f"exit {proc.returncode}: {proc.stderr!r}"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onward: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def untouched(root: Path) -> dict[bytes, Any]:
    return snapshot(root, specials=True)


@pytest.mark.parametrize(
    ("args", "code", "needles"),
    [
        (["{src}", "{src}/a"], 1, ["{src}/a/src", "inside the source tree"]),
        (["{src}/", "{src}"], 1, ["same directory"]),
        (["{src}", "{tmp}"], 1, ["same directory"]),
        (["{src}/a/", "{src}"], 1, ["{src}/a", "inside the destination"]),
        (["{tmp}/absent", "{tmp}/out"], 1, ["{tmp}/absent", "No such file or directory"]),
        (["{src}/", "{tmp}/plain"], 1, ["{tmp}/plain", "is not a directory"]),
        (["{src}/", "{tmp}/no/such/dir"], 1, ["{tmp}/no/such", "does not exist"]),
        (["http://127.0.0.1:9/x/", "{tmp}/out"], 2, ["URL cannot be copied recursively"]),
    ],
)
def test_bad_tree_input(tmp_path: Path, args: list[str], code: int, needles: list[str]) -> None:
    src = tmp_path / "src"
    make_tree(src, big=100 * KiB, small=14)
    (tmp_path / "plain").write_bytes(b"a file")
    before = untouched(tmp_path)
    fill = {"src": str(src), "tmp": str(tmp_path)}
    proc = cli("copy", "-r", *[a.format(**fill) for a in args])
    assert_one_error(proc, code, *[n.format(**fill) for n in needles])
    assert untouched(tmp_path) == before


def test_tree_flags_without_r_are_usage_errors(tree: tuple[Path, Path]) -> None:
    src, out = tree
    assert_one_error(cli("copy", "--delete", src, out), 2, "--delete", "-r")
    assert_one_error(cli("copy", "-L", src, out), 2, "-L", "-r")
    assert_one_error(cli("copy", src, out), 1, str(src), "is a directory", "-r")


def test_a_second_copy_into_the_same_tree_is_refused(tree: tuple[Path, Path]) -> None:
    src, out = tree
    (out / "src").mkdir(parents=True)
    fd = os.open(out / "src", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert_one_error(cli("copy", "-r", src, out), 1, str(out / "src"), "another onward")
    finally:
        os.close(fd)


def test_file_versus_directory_conflicts_lose_nothing(tree: tuple[Path, Path]) -> None:
    src, out = tree
    dst = out / "src"
    (dst / "a" / "b" / "f001").mkdir(parents=True)  # a directory where the source has a file
    (dst / "a" / "b" / "f001" / "precious").write_bytes(b"keep me")
    (dst / "wide").write_bytes(b"a file where the source has a directory")
    kept = {p: untouched(p) for p in (dst / "a" / "b" / "f001",)}
    wide = (dst / "wide").read_bytes()
    proc = cli("copy", "-r", src, out)
    assert proc.returncode == 23, proc.stderr
    failures = proc.stderr.splitlines()[:-1]
    failures = [line for line in failures if "in the destination but" in line]
    assert len(failures) == 2, proc.stderr
    assert any(
        str(dst / "a" / "b" / "f001") + ": is a directory in the destination but a file" in f
        for f in failures
    )
    assert any(str(dst / "wide") + ": is a file in the destination but a directory" in f for f in failures)
    assert "Traceback" not in proc.stderr
    assert {p: untouched(p) for p in kept} == kept and (dst / "wide").read_bytes() == wide
    assert (dst / "a" / "f000").exists() and (dst / "a" / "big.bin").exists()  # the rest is copied
    proc = cli("copy", "-r", "--delete", src, out)  # --delete: the destination mirrors the source
    assert proc.returncode == 0, proc.stderr
    assert_copied(src, dst)


def test_symlink_loops_with_L(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    (src / "d" / "e").mkdir(parents=True)
    (src / "d" / "e" / "file").write_bytes(b"data")
    os.symlink("..", src / "d" / "e" / "up")  # leads back to d
    os.symlink("self", src / "self")  # a link to itself
    (src / "plain").mkdir()
    (src / "plain" / "file").write_bytes(b"data")
    os.symlink("plain", src / "shortcut")  # not a loop: followed with -L
    proc = cli("copy", "-r", "-L", "--json", src, out)
    assert proc.returncode == 23, proc.stderr
    failed = {e["path"]: e["message"] for e in of_kind(events(proc), "file-error")}
    assert set(failed) == {str(src / "d" / "e" / "up"), str(src / "self")}
    assert "symbolic link loop: leads back to " + str(src / "d") in failed[str(src / "d" / "e" / "up")]
    assert "symbolic link loop" in failed[str(src / "self")]
    assert (out / "src" / "shortcut" / "file").read_bytes() == b"data"
    assert not (out / "src" / "shortcut").is_symlink()
    proc = cli("copy", "-r", src, tmp_path / "plain")  # without -L they are copied as symlinks
    assert proc.returncode == 0, proc.stderr
    assert_copied(src, tmp_path / "plain" / "src")


def test_non_utf8_names_are_copied_byte_exact(tree: tuple[Path, Path]) -> None:
    src, out = tree
    proc = cli("copy", "-r", "--json", src, out)
    assert proc.returncode == 0, proc.stderr
    names = {os.fsencode(e["path"]) for e in of_kind(events(proc), "file")}
    assert {b"caf\xe9", b"dir\xff/inside\xfe"} <= names
    raw = os.fsencode(out / "src")
    assert b"caf\xe9" in os.listdir(raw) and os.listdir(raw + b"/dir\xff") == [b"inside\xfe"]
    assert_copied(src, out / "src")


def test_a_name_too_long_for_the_destination(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    long_name = "n" * 250
    (src / long_name).write_bytes(b"long")
    (src / "short").write_bytes(b"fine")
    proc = cli("copy", "-r", src, out)
    assert proc.returncode == 23, proc.stderr
    [failure, last] = proc.stderr.splitlines()
    assert str(out / "src" / long_name) in failure and "255-byte limit" in failure
    assert "1 entry could not be copied" in last and "Traceback" not in proc.stderr
    assert (out / "src" / "short").read_bytes() == b"fine"
    assert sorted(os.listdir(out / "src")) == ["onward-tree.onward-journal", "short"]


def test_verify_full_finds_a_damaged_copy_that_looks_done(tree: tuple[Path, Path]) -> None:
    src, out = tree
    assert cli("copy", "-r", src, out).returncode == 0
    victim = out / "src" / "a" / "f006"
    st = victim.stat()
    victim.write_bytes(bytes(b ^ 0xFF for b in victim.read_bytes()))  # same size...
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and the same mtime
    proc = cli("copy", "-r", "--json", src, out)
    assert proc.returncode == 0 and of_kind(events(proc), "file") == []  # the quick check is fooled
    proc = cli("copy", "-r", "--json", "--verify", "full", src, out)
    assert proc.returncode == 0, proc.stderr
    actions = {e["path"]: e["action"] for e in of_kind(events(proc), "file")}
    assert actions.pop("a/f006") == "copied" and set(actions.values()) == {"verified"}
    assert_copied(src, out / "src")


def test_r_with_a_file_copies_that_file(tmp_path: Path) -> None:
    (tmp_path / "one.bin").write_bytes(b"just a file")
    (tmp_path / "out").mkdir()
    proc = cli("copy", "-r", tmp_path / "one.bin", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "one.bin").read_bytes() == b"just a file"


def test_the_library_call(tree: tuple[Path, Path]) -> None:
    import onward

    src, out = tree
    seen: list[str] = []
    result = onward.copy_tree(src, out, chunk_size=CHUNK, listeners=[lambda e: seen.append(e.kind)])
    assert isinstance(result, onward.TreeResult) and result.destination == str(out / "src")
    assert result.copied_files + result.linked == result.files and result.failed == ()
    assert seen[0] == "tree-start" and seen[-1] == "summary" and "file" in seen
    assert_copied(src, out / "src")
    (src / "a" / "new-dir").mkdir()
    (out / "src" / "a" / "new-dir").write_bytes(b"in the way")
    with pytest.raises(onward.PartialCopyError) as info:
        onward.copy_tree(f"{src}/", out / "src")
    assert info.value.exit_code == 23
    [(path, message)] = info.value.failures
    assert path == str(out / "src" / "a" / "new-dir") and "is a file in the destination" in message

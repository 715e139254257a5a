"""A simulator of what a power cut can leave on disk (method 2 of issue 3).

After Pillai et al., "All File Systems Are Not Created Equal" (OSDI 2014; the ALICE tool):
record the system calls of one real run of ``onward copy`` with strace, rebuild from them
the file-system operations onward asked for and the points where it made them durable,
then enumerate the states a power cut at each point may leave, and write each one out as
a real directory that the next ``onward copy`` runs on.

Recording. ``strace -f -y -xx -s 65536 -P <destination files> -e trace=<every call that
changes a file, plus close>``: every string is printed as hexadecimal escapes, so paths and
the bytes written can be decoded exactly. Journal writes are small and printed whole. A
write longer than ``-s`` is printed cut short; then its bytes are taken from the source
file at the same offset (a local copy writes the source's bytes at the source's offsets)
after checking that the printed head matches them, and a write whose head does not match
fails the test rather than being guessed.

Model. A directory (name -> inode) and inodes (bytes and mode). Every traced call becomes
operations of two kinds:

- directory operations: create a name (``openat`` with ``O_CREAT`` of a missing name),
  rename, unlink. They persist in the order they were made, and all of them up to an
  ``fsync`` of the directory are durable from that ``fsync`` on;
- inode operations: write (``write``/``pwrite64``/``pwritev``/``writev``, at the fd's
  position or the end for ``O_APPEND``), truncate (``ftruncate``, ``O_TRUNC``), chmod
  (``fchmod``). Writes and truncates of an inode are durable once it is ``fsync``ed or
  ``fdatasync``ed; a chmod only once it is ``fsync``ed.

``sync_file_range`` is a hint and makes nothing durable; ``utimensat`` changes only times,
which no check looks at. Any other file-changing call fails the test as "not modelled", so
that a rework of onward's I/O (fallocate, copy_file_range, ...) cannot go untested.

Crash states. At each point of the trace (before the first call, after each call, and
after the process exited) every durable operation is kept and every operation not yet
durable gets a fate:

- directory operations not yet durable: a prefix is kept, in order (0, 1, ... all);
- inode operations not yet durable: all kept, all lost, each one alone lost, each one
  alone kept, the first m kept (in order), and for each write: zero-filled (the size
  grew but the data never reached the disk), or torn at every 4 KiB page boundary inside
  it (the pages before the boundary reached the disk, the rest is zeros or still the old
  bytes). Long mode adds random combinations of all of these.

States that leave identical directories are run once. A state is written out as real
files; the inode numbers in the journal's PROMOTE records are renumbered to the inodes
the written-out files got (the traced ones are learnt by ``stat`` before and after the
traced run), so that "this partial was renamed onto the destination" means the same in
the written-out state as it did in the traced run.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

BLOCK = 4096  # the page size: the unit a write is torn at
STRING_LIMIT = 65536  # strace -s

# Every system call that can change a file or make a change durable. Only those onward
# really makes show up in a trace (see ``kill_points`` in conftest.py), so a rework that starts using,
# say, fallocate or copy_file_range is covered without touching the tests.
MUTATING = (
    "open",
    "openat",
    "creat",
    "write",
    "writev",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "ftruncate",
    "truncate",
    "fallocate",
    "fsync",
    "fdatasync",
    "sync_file_range",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "unlink",
    "unlinkat",
    "chmod",
    "fchmod",
    "fchmodat",
    "utimensat",
    "copy_file_range",
    "sendfile",
)

# System calls recorded. Those not modelled below fail loudly when onward makes them.
TRACED = (*MUTATING, "close", "mkdir", "mkdirat", "rmdir", "symlink", "symlinkat")
NO_EFFECT = frozenset({"sync_file_range", "utimensat"})


class NotModelled(Exception):
    """The trace holds a call this simulator cannot turn into operations."""


def strace_command(strace: str, watched: Sequence[Path], out: Path) -> list[str]:
    cmd = [strace, "-f", "-qq", "-y", "-xx", "-s", str(STRING_LIMIT), "-o", os.fspath(out)]
    cmd += ["-e", "trace=" + ",".join(TRACED)]
    for path in watched:
        cmd += ["-P", os.fspath(path)]
    return cmd


# --- parsing strace lines -------------------------------------------------------------------

_LINE = re.compile(r"^(\d+)\s+(\w+)\((.*)$", re.S)
_UNFINISHED = " <unfinished ...>"
_RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (\w+) resumed>(.*)$", re.S)
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|[0-7]{1,3}|.)")
_SIMPLE = {"n": 10, "t": 9, "r": 13, "v": 11, "f": 12, "\\": 92, '"': 34, "'": 39, "a": 7, "b": 8}


def unescape(text: str) -> bytes:
    """The bytes of a strace string literal's body (without quotes)."""
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(text):
        out += text[pos : m.start()].encode("latin-1")
        esc = m[1]
        if esc[0] == "x":
            out.append(int(esc[1:], 16))
        elif esc[0].isdigit():
            out.append(int(esc, 8))
        else:
            out.append(_SIMPLE.get(esc, ord(esc)))
        pos = m.end()
    out += text[pos:].encode("latin-1")
    return bytes(out)


def split_args(text: str) -> list[str]:
    """Top-level comma-separated arguments (strings, fd annotations, arrays, structs kept whole)."""
    args, depth, start, i, quoted = [], 0, 0, 0, False
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c in "[{<(":
            depth += 1
        elif c in "]}>)":
            depth -= 1
        elif c == "/" and text.startswith("/*", i):
            end = text.find("*/", i)
            i = len(text) if end < 0 else end + 1
        elif c == "," and depth == 0:
            args.append(text[start:i].strip())
            start = i + 1
        i += 1
    tail = text[start:].strip()
    if tail:
        args.append(tail)
    return args


@dataclass(frozen=True)
class Syscall:
    name: str
    args: list[str]
    result: int | None  # None: unfinished (the process died in it)
    line: str


def parse_calls(text: str) -> list[Syscall]:
    pending: dict[tuple[str, str], str] = {}
    calls: list[Syscall] = []
    for raw in text.splitlines():
        resumed = _RESUMED.match(raw)
        if resumed:
            start = pending.pop((resumed[1], resumed[2]), None)
            if start is None:
                continue
            raw = f"{resumed[1]} {resumed[2]}({start}{resumed[3]}"
        m = _LINE.match(raw)
        if not m:
            continue  # signals, exits
        pid, name, rest = m[1], m[2], m[3]
        if rest.endswith(_UNFINISHED):
            pending[pid, name] = rest[: -len(_UNFINISHED)]
            continue
        head, sep, result = rest.rpartition(") = ")
        if not sep:
            if rest.rstrip().endswith("= ?"):
                calls.append(Syscall(name, split_args(rest.rpartition(")")[0]), None, raw))
            continue
        number = re.match(r"-?\d+", result.strip())
        calls.append(Syscall(name, split_args(head), int(number[0]) if number else None, raw))
    for (_pid, name), start in pending.items():
        calls.append(Syscall(name, split_args(start), None, start))
    return calls


def _string(arg: str) -> tuple[bytes, bool]:
    """A string argument's bytes and whether strace printed it whole."""
    truncated = arg.endswith("...")
    body = arg[:-3] if truncated else arg
    if not (body.startswith('"') and body.endswith('"')):
        raise NotModelled(f"expected a string, got {arg[:80]!r}")
    return unescape(body[1:-1]), not truncated


def _fd(arg: str) -> int:
    m = re.match(r"(-?\d+|AT_FDCWD)", arg)
    if not m:
        raise NotModelled(f"expected a file descriptor, got {arg[:80]!r}")
    return -100 if m[1] == "AT_FDCWD" else int(m[1])


def _fd_path(arg: str) -> str | None:
    m = re.match(r"^(?:-?\d+|AT_FDCWD)<(.*)>$", arg)
    return os.fsdecode(unescape(m[1])) if m else None


def _flags(arg: str) -> set[str]:
    return set(arg.split("|"))


# --- operations --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One file-system operation onward asked for, in trace order."""

    seq: int
    kind: str  # create, rename, unlink | write, trunc, chmod | fsync, fdatasync, dirsync | exit
    call: int  # index of the system call it came from
    what: str  # the call, shortly, for messages
    inode: int = -1
    name: str = ""
    name2: str = ""
    offset: int = 0
    data: bytes = b""
    size: int = 0
    mode: int = 0

    @property
    def is_dir_op(self) -> bool:
        return self.kind in ("create", "rename", "unlink")

    @property
    def is_inode_op(self) -> bool:
        return self.kind in ("write", "trunc", "chmod")


@dataclass
class _Fd:
    inode: int  # -1: the directory
    append: bool
    pos: int = 0


@dataclass
class Recording:
    """The operations of a traced run, what the directory held before it, and the inodes."""

    ops: list[Op]
    initial_names: dict[str, int]  # name -> inode, before the run
    initial_inodes: dict[int, tuple[bytes, int]]  # inode -> (bytes, mode), before the run
    traced_ino: dict[int, tuple[int, int]] = field(default_factory=dict)  # inode -> traced (dev, ino)
    exited: bool = True  # the traced run exited (0): the last point is "after exit"

    @property
    def points(self) -> int:
        """Crash points: before the first operation, after each one."""
        return len(self.ops) + 1


def snapshot(
    directory: Path,
) -> tuple[dict[str, int], dict[int, tuple[bytes, int]], dict[int, tuple[int, int]]]:
    """The directory as the initial, durable state of a recording (regular files only)."""
    names: dict[str, int] = {}
    inodes: dict[int, tuple[bytes, int]] = {}
    traced: dict[int, tuple[int, int]] = {}
    by_ino: dict[tuple[int, int], int] = {}
    for entry in sorted(os.listdir(directory)):
        st = os.lstat(directory / entry)
        key = (st.st_dev, st.st_ino)
        if key not in by_ino:
            node = len(by_ino)
            by_ino[key] = node
            inodes[node] = ((directory / entry).read_bytes(), st.st_mode & 0o7777)
            traced[node] = key
        names[entry] = by_ino[key]
    return names, inodes, traced


def record(
    trace_text: str,
    directory: Path,
    initial: tuple[dict[str, int], dict[int, tuple[bytes, int]], dict[int, tuple[int, int]]],
    source: bytes,
) -> Recording:
    """Turn a trace of a run on ``directory`` into operations."""
    names0, inodes0, traced = initial
    names = dict(names0)
    next_inode = max(inodes0, default=-1) + 1
    sizes = {node: len(data) for node, (data, _mode) in inodes0.items()}
    fds: dict[int, _Fd] = {}
    ops: list[Op] = []
    dirname = os.fspath(directory)

    def rel(path: str) -> str | None:
        """The name inside ``directory``, "" for the directory itself, None for elsewhere."""
        path = os.path.normpath(path)
        if path == dirname:
            return ""
        head, tail = os.path.split(path)
        return tail if head == dirname else None

    def add(kind: str, call: int, what: str, **kw: object) -> None:
        ops.append(Op(len(ops), kind, call, what, **kw))  # type: ignore[arg-type]

    def write(node: int, offset: int, data: bytes, call: int, what: str) -> None:
        add("write", call, what, inode=node, offset=offset, data=data)
        sizes[node] = max(sizes[node], offset + len(data))

    def fd_of(arg: str) -> _Fd | None:
        fd = _fd(arg)
        if fd not in fds:
            # A second descriptor on a file the model has, opened by a path the trace does not
            # follow (onward's O_DIRECT descriptor, opened through /proc/self/fd): strace's -y
            # names the file it is on.
            path = _fd_path(arg)
            where = rel(path) if path is not None else None
            if not where or where not in names:
                return None
            fds[fd] = _Fd(names[where], False)
        return fds[fd]

    for i, c in enumerate(parse_calls(trace_text)):
        name = c.name
        if c.result is None:
            continue  # died inside it: the call had no effect (killed on entry)
        if c.result < 0:
            continue  # failed: no effect
        short = f"{name}#{i}"
        if name in ("open", "openat", "creat"):
            path_arg = c.args[1] if name == "openat" else c.args[0]
            path = os.fsdecode(_string(path_arg)[0])
            if name == "openat" and not path.startswith("/"):
                base = _fd_path(c.args[0])
                if base is None:
                    raise NotModelled(f"relative path without a known directory: {c.line[:200]}")
                path = os.path.join(base, path)
            where = rel(path)
            if where is None:
                continue
            flags = (
                {"O_CREAT", "O_WRONLY", "O_TRUNC"}
                if name == "creat"
                else _flags(c.args[2 if name == "openat" else 1])
            )
            shown = [where or "."] + [f for f in ("O_CREAT", "O_TRUNC") if f in flags]
            what = f"{name}({','.join(shown)})"
            if where == "":
                fds[c.result] = _Fd(-1, False)
                continue
            if where not in names:
                if "O_CREAT" not in flags:
                    raise NotModelled(f"{c.line[:200]}: opened a file the model does not have")
                node = next_inode
                next_inode += 1
                sizes[node] = 0
                add("create", i, what, inode=node, name=where)
                names[where] = node
            node = names[where]
            if "O_TRUNC" in flags and sizes[node]:
                add("trunc", i, what, inode=node, size=0)
                sizes[node] = 0
            fds[c.result] = _Fd(node, "O_APPEND" in flags)
        elif name == "close":
            fds.pop(_fd(c.args[0]), None)
        elif name in ("write", "pwrite64"):
            f = fd_of(c.args[0])
            if f is None:
                continue
            data, whole = _string(c.args[1])
            length = c.result
            offset = int(c.args[3]) if name == "pwrite64" else (sizes[f.inode] if f.append else f.pos)
            if not whole:
                if offset + length > len(source) or source[offset : offset + len(data)] != data:
                    raise NotModelled(
                        f"{short}: a long write whose bytes are not the source's: {c.line[:200]}"
                    )
                data = source[offset : offset + length]
            data = data[:length]
            if len(data) != length:
                raise NotModelled(f"{short}: wrote {length} bytes but {len(data)} are known")
            write(f.inode, offset, data, i, f"{name}({_label(names, f.inode)}, {length}B @{offset})")
            if name == "write":
                f.pos = offset + length
        elif name in ("pwritev", "pwritev2", "writev"):
            f = fd_of(c.args[0])
            if f is None:
                continue
            pieces = [_string(s) for s in re.findall(r'iov_base=("(?:[^"\\]|\\.)*"(?:\.\.\.)?)', c.args[1])]
            lengths = [int(n) for n in re.findall(r"iov_len=(\d+)", c.args[1])]
            offset = int(c.args[3]) if name != "writev" else (sizes[f.inode] if f.append else f.pos)
            data = b""
            for (piece, whole), length in zip(pieces, lengths, strict=True):
                at = offset + len(data)
                if not whole:
                    if source[at : at + len(piece)] != piece:
                        raise NotModelled(f"{short}: a long write whose bytes are not the source's")
                    piece = source[at : at + length]
                data += piece[:length]
            data = data[: c.result]
            write(f.inode, offset, data, i, f"{name}({_label(names, f.inode)}, {len(data)}B @{offset})")
            if name == "writev":
                f.pos = offset + len(data)
        elif name == "ftruncate":
            f = fd_of(c.args[0])
            if f is None:
                continue
            size = int(c.args[1])
            add("trunc", i, f"ftruncate({_label(names, f.inode)}, {size})", inode=f.inode, size=size)
            sizes[f.inode] = size
        elif name == "fchmod":
            f = fd_of(c.args[0])
            if f is None:
                continue
            mode = int(c.args[1], 8)
            add("chmod", i, f"fchmod({_label(names, f.inode)}, {mode:o})", inode=f.inode, mode=mode)
        elif name in ("fsync", "fdatasync"):
            f = fd_of(c.args[0])
            if f is None:
                continue
            if f.inode == -1:
                add("dirsync", i, f"{name}(.)")
            else:
                add(name, i, f"{name}({_label(names, f.inode)})", inode=f.inode)
        elif name in ("rename", "renameat", "renameat2"):
            if name == "rename":
                a, b = (os.fsdecode(_string(s)[0]) for s in c.args[:2])
            else:
                a, b = (os.fsdecode(_string(c.args[k])[0]) for k in (1, 3))
                if not (a.startswith("/") and b.startswith("/")):
                    raise NotModelled(f"relative {name}: {c.line[:200]}")
                if name == "renameat2" and len(c.args) > 4 and c.args[4] not in ("0",):
                    raise NotModelled(f"renameat2 with flags: {c.line[:200]}")
            ra, rb = rel(a), rel(b)
            if ra is None or rb is None or not ra or not rb:
                raise NotModelled(f"rename across directories: {c.line[:200]}")
            add("rename", i, f"rename({ra} -> {rb})", name=ra, name2=rb)
            names[rb] = names.pop(ra)
        elif name in ("unlink", "unlinkat"):
            arg = c.args[1] if name == "unlinkat" else c.args[0]
            where = rel(os.fsdecode(_string(arg)[0]))
            if where is None:
                continue
            if not where:
                raise NotModelled(f"unlink of the directory: {c.line[:200]}")
            add("unlink", i, f"unlink({where})", name=where)
            names.pop(where, None)
        elif name in NO_EFFECT:
            continue
        else:
            raise NotModelled(
                f"onward made a file-changing call the simulator does not model: {c.line[:200]}"
            )
    ops.append(Op(len(ops), "exit", -1, "exit"))
    return Recording(ops, names0, inodes0, dict(traced))


def _label(names: dict[str, int], node: int) -> str:
    return next((n for n, v in names.items() if v == node), f"inode {node}")


def learn_final_inodes(rec: Recording, directory: Path) -> None:
    """Map the inodes at the end of the traced run to their real (dev, ino)."""
    names = dict(rec.initial_names)
    for op in rec.ops:
        _apply_dir(names, op)
    for name, node in names.items():
        try:
            st = os.lstat(directory / name)
        except FileNotFoundError:
            continue
        rec.traced_ino[node] = (st.st_dev, st.st_ino)


def _apply_dir(names: dict[str, int], op: Op) -> None:
    if op.kind == "create":
        names[op.name] = op.inode
    elif op.kind == "rename":
        if op.name in names:
            names[op.name2] = names.pop(op.name)
    elif op.kind == "unlink":
        names.pop(op.name, None)


# --- crash states ------------------------------------------------------------------------------

KEEP, DROP, ZERO = "keep", "drop", "zero"


@dataclass(frozen=True)
class Torn:
    """A write of which only the pages before ``at`` reached the disk; ``rest`` is zeros
    ("zero": the size grew) or the old bytes ("old": the size, if it grew, stops at ``at``)."""

    at: int
    rest: str

    def __str__(self) -> str:
        return f"torn@{self.at}/{self.rest}"


Fate = str | Torn


@dataclass(frozen=True)
class CrashState:
    """The power cut after ``point`` operations, the first ``dir_kept`` directory operations not
    yet durable kept, and each inode operation not yet durable given a fate (``default`` unless
    overridden)."""

    point: int
    dir_kept: int
    default: str
    fates: tuple[tuple[int, Fate], ...] = ()
    label: str = ""

    def fate(self, seq: int) -> Fate:
        return dict(self.fates).get(seq, self.default)


@dataclass
class Pending:
    """What a crash at one point may still lose."""

    durable_dir: list[Op]
    pending_dir: list[Op]
    durable_inode: dict[int, list[Op]]  # inode -> its operations that are durable
    pending_inode: list[Op]  # in trace order


def pending_at(rec: Recording, point: int) -> Pending:
    done = rec.ops[:point]
    last_dirsync = max((op.seq for op in done if op.kind == "dirsync"), default=-1)
    dir_ops = [op for op in done if op.is_dir_op]
    durable_dir = [op for op in dir_ops if op.seq < last_dirsync]
    pending_dir = [op for op in dir_ops if op.seq > last_dirsync]
    last_fsync: dict[int, int] = {}
    last_datasync: dict[int, int] = {}
    for op in done:
        if op.kind == "fsync":
            last_fsync[op.inode] = op.seq
        if op.kind in ("fsync", "fdatasync"):
            last_datasync[op.inode] = op.seq
    durable: dict[int, list[Op]] = {}
    pending: list[Op] = []
    for op in done:
        if not op.is_inode_op:
            continue
        synced_at = last_fsync.get(op.inode, -1) if op.kind == "chmod" else last_datasync.get(op.inode, -1)
        if op.seq < synced_at:
            durable.setdefault(op.inode, []).append(op)
        else:
            pending.append(op)
    return Pending(durable_dir, pending_dir, durable, pending)


def _boundaries(op: Op) -> list[int]:
    first = (op.offset // BLOCK + 1) * BLOCK
    return list(range(first, op.offset + len(op.data), BLOCK))


def enumerate_states(rec: Recording, point: int, *, thorough: bool, rng: random.Random) -> list[CrashState]:
    """The crash states of a power cut after ``point`` operations (see the module's docstring)."""
    p = pending_at(rec, point)
    n_dir = len(p.pending_dir)
    ops = p.pending_inode
    out: list[CrashState] = []
    for kept in range(n_dir + 1):
        out.append(CrashState(point, kept, KEEP, label=f"dir {kept}/{n_dir}, data all kept"))
        if ops:
            out.append(CrashState(point, kept, DROP, label=f"dir {kept}/{n_dir}, data all lost"))
    dir_choices = sorted({n_dir, 0}) if thorough else [n_dir]
    for kept in dir_choices:
        for op in ops:
            variants: list[tuple[str, tuple[tuple[int, Fate], ...]]] = [
                (KEEP, ((op.seq, DROP),)),
                (DROP, ((op.seq, KEEP),)),
            ]
            if op.kind == "write":
                variants.append((KEEP, ((op.seq, ZERO),)))
                for at in _boundaries(op):
                    for rest in ("zero", "old"):
                        variants.append((KEEP, ((op.seq, Torn(at, rest)),)))
            for default, fates in variants:
                desc = ", ".join(f"{rec.ops[s].what}: {f}" for s, f in fates)
                out.append(
                    CrashState(point, kept, default, fates, f"dir {kept}/{n_dir}, rest {default}, {desc}")
                )
    for m in range(1, len(ops)):
        fates = tuple((op.seq, KEEP) for op in ops[:m])
        out.append(CrashState(point, n_dir, DROP, fates, f"dir all, first {m}/{len(ops)} data ops kept"))
    if thorough and ops:
        for _ in range(2 * len(ops)):
            fates_list: list[tuple[int, Fate]] = []
            for op in ops:
                choices: list[Fate] = [KEEP, DROP]
                if op.kind == "write":
                    choices.append(ZERO)
                    choices += [Torn(at, rng.choice(("zero", "old"))) for at in _boundaries(op)]
                fates_list.append((op.seq, rng.choice(choices)))
            kept = rng.randint(0, n_dir)
            desc = ", ".join(f"#{s}:{f}" for s, f in fates_list)
            out.append(CrashState(point, kept, KEEP, tuple(fates_list), f"dir {kept}/{n_dir}, random {desc}"))
    return out


@dataclass
class Image:
    """A crash state as files: name -> inode, inode -> (bytes, mode)."""

    names: dict[str, int]
    inodes: dict[int, tuple[bytes, int]]

    def signature(self) -> tuple[tuple[str, int, bytes, int], ...]:
        return tuple(
            sorted(
                (name, node, xxhash.xxh3_128(self.inodes[node][0]).digest(), self.inodes[node][1])
                for name, node in self.names.items()
            )
        )


def _apply_inode(buf: bytearray, mode: int, op: Op, fate: Fate) -> int:
    if fate == DROP:
        return mode
    if op.kind == "chmod":
        return op.mode
    if op.kind == "trunc":
        if op.size < len(buf):
            del buf[op.size :]
        else:
            buf.extend(bytes(op.size - len(buf)))
        return mode
    end = op.offset + len(op.data)
    if isinstance(fate, Torn):
        keep = fate.at - op.offset
        _put(buf, op.offset, op.data[:keep])
        if fate.rest == "zero":
            _put(buf, fate.at, bytes(end - fate.at))
        return mode
    _put(buf, op.offset, bytes(len(op.data)) if fate == ZERO else op.data)
    return mode


def _put(buf: bytearray, offset: int, data: bytes) -> None:
    if offset > len(buf):
        buf.extend(bytes(offset - len(buf)))
    buf[offset : offset + len(data)] = data


def build(rec: Recording, state: CrashState) -> Image:
    p = pending_at(rec, state.point)
    names = dict(rec.initial_names)
    for op in p.durable_dir + p.pending_dir[: state.dir_kept]:
        _apply_dir(names, op)
    pending_by_inode: dict[int, list[Op]] = {}
    for op in p.pending_inode:
        pending_by_inode.setdefault(op.inode, []).append(op)
    inodes: dict[int, tuple[bytes, int]] = {}
    fates = dict(state.fates)
    for node in set(names.values()):
        data, mode = rec.initial_inodes.get(node, (b"", 0o600))
        buf = bytearray(data)
        durable = p.durable_inode.get(node, [])
        done = {op.seq for op in durable}
        # Durable and pending operations interleave in trace order.
        for op in sorted(durable + pending_by_inode.get(node, []), key=lambda o: o.seq):
            fate = KEEP if op.seq in done else fates.get(op.seq, state.default)
            mode = _apply_inode(buf, mode, op, fate)
        inodes[node] = (bytes(buf), mode)
    return Image(names, inodes)


def states(rec: Recording, *, thorough: bool, rng: random.Random) -> Iterator[tuple[CrashState, Image, bool]]:
    """Every distinct crash state of a recording: (state, image, after_exit), the last true
    when the same directory can be left by a power cut after the traced run exited."""
    seen: dict[tuple[tuple[str, int, bytes, int], ...], int] = {}
    found: list[tuple[CrashState, Image, bool]] = []
    for point in range(rec.points):
        after_exit = rec.exited and point == rec.points - 1
        for state in enumerate_states(rec, point, thorough=thorough, rng=rng):
            image = build(rec, state)
            key = image.signature()
            if key in seen:
                if after_exit:
                    at = seen[key]
                    found[at] = (found[at][0], found[at][1], True)
                continue
            seen[key] = len(found)
            found.append((state, image, after_exit))
    yield from found


# --- writing a state out -------------------------------------------------------------------------

_FRAME = struct.Struct("<IB")
_CRC = struct.Struct("<I")
_PROMOTE = struct.Struct("<QQ")
KIND_PROMOTE = 3


KIND_HEADER = 1


def _rewrite_journal(
    raw: bytes, mapping: dict[tuple[int, int], tuple[int, int]], moved: tuple[bytes, bytes] | None
) -> bytes:
    """``raw`` (a journal) with every intact PROMOTE record's (dev, ino) mapped, and the
    destination in an intact HEADER moved from ``moved[0]`` to ``moved[1]`` (same length)."""
    out = bytearray(raw)
    pos = 12  # the preamble
    while pos + _FRAME.size <= len(out):
        length, kind = _FRAME.unpack_from(out, pos)
        end = pos + _FRAME.size + length + _CRC.size
        if end > len(out):
            break
        body = bytes(out[pos + _FRAME.size - 1 : end - _CRC.size])
        if zlib.crc32(body) != _CRC.unpack_from(out, end - _CRC.size)[0]:
            break
        new = body
        if kind == KIND_PROMOTE and length == _PROMOTE.size:
            key = _PROMOTE.unpack_from(body, 1)
            if key in mapping:
                new = bytes([kind]) + _PROMOTE.pack(*mapping[key])
        elif kind == KIND_HEADER and moved is not None:
            new = body.replace(moved[0], moved[1])
        if new != body:
            assert len(new) == len(body)
            out[pos + _FRAME.size : end - _CRC.size] = new[1:]
            _CRC.pack_into(out, end - _CRC.size, zlib.crc32(new))
        pos = end
    return bytes(out)


def materialise(rec: Recording, image: Image, directory: Path, traced_in: Path | None = None) -> None:
    """Write ``image`` into ``directory`` (emptied first). When the run was traced in another
    directory ``traced_in`` (whose path has the same length), the destination named in the
    journal's header is moved along, so the state means the same in ``directory``."""
    moved = None
    if traced_in is not None and traced_in != directory:
        old, new = (json.dumps(os.fspath(p))[1:-1].encode() for p in (traced_in, directory))
        if len(old) != len(new):
            raise ValueError(f"{traced_in} and {directory} must have paths of the same length")
        moved = (old + b"/", new + b"/")
    for entry in os.listdir(directory):
        path = directory / entry
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    first: dict[int, Path] = {}
    for name, node in sorted(image.names.items()):
        path = directory / name
        if node in first:
            os.link(first[node], path)
            continue
        data, mode = image.inodes[node]
        path.write_bytes(data)
        os.chmod(path, mode)
        first[node] = path
    mapping: dict[tuple[int, int], tuple[int, int]] = {}
    for node, path in first.items():
        if node in rec.traced_ino:
            st = os.lstat(path)
            mapping[rec.traced_ino[node]] = (st.st_dev, st.st_ino)
    if not mapping and moved is None:
        return
    for name in image.names:
        if ".onward-journal" in name:
            path = directory / name
            raw = path.read_bytes()
            fixed = _rewrite_journal(raw, mapping, moved)
            if fixed != raw:
                mode = os.lstat(path).st_mode
                os.chmod(path, 0o600)
                path.write_bytes(fixed)
                os.chmod(path, mode & 0o7777)

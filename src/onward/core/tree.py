"""Every decision of a directory-tree copy, as plain data and functions.

Given the source tree as listed, the destination as found and the tree
journal's DONE records, ``plan_tree`` says which entries are done, which files
to copy (or copy again), which directories to make, which symlinks and hard
links to (re)create, what to remove (``--delete``) or only report, which
conflicts to report, and which of onward's own working files are stale. The
orchestrator (``onward.jobs.treecopy``) carries the plan out; nothing here touches a
disk.

Paths are relative to the roots, ``/``-separated, as ``str`` with Python's
``surrogateescape`` convention, so names that are not UTF-8 keep their bytes.
The root itself is ``""``.
"""

from __future__ import annotations

import enum
import posixpath
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from .treejournal import Stamp

__all__ = [
    "Artefacts",
    "Conflict",
    "CopyFile",
    "CopyReason",
    "DestTree",
    "Kind",
    "MakeLink",
    "MakeSymlink",
    "Node",
    "SourceTree",
    "TreePlan",
    "dir_changes",
    "link_leaders",
    "parent",
    "plan_tree",
]

PERMISSIONS = 0o777  # the bits a copy preserves, as for single files (no set-id, no sticky)


class Kind(enum.Enum):
    FILE = "a file"
    DIR = "a directory"
    SYMLINK = "a symlink"
    SPECIAL = "a special file"


class CopyReason(enum.StrEnum):
    """Why a file is copied (shown by ``copy --dry-run``)."""

    NEW = "new"
    CHANGED = "changed"
    RESTART = "restart"  # --restart: whatever is there is not trusted
    RESUME = "resume"  # its unfinished copy is beside it
    DIFFERS = "differs"  # compared (--verify full, -c) and found different


class Node(NamedTuple):
    """One entry of a tree as listed (lstat, or stat with ``-L``). A tuple: tens of thousands
    are made per run."""

    kind: Kind
    mode: int  # permission bits
    size: int
    mtime_ns: int
    atime_ns: int
    stamp: Stamp | None = None  # regular files: device, inode, size, mtime, ctime
    nlink: int = 1
    target: str | None = None  # symlinks: what they point to (destination: only when compared)
    what: str = ""  # special files: "a FIFO", "a socket", "a device"


class SourceTree:
    """What listing the source found (``endpoints.localtree.scan_source`` fills it in)."""

    __slots__ = ("entries", "problems", "root", "skipped", "unlisted")

    def __init__(
        self,
        root: Node,
        entries: dict[str, Node],
        unlisted: Iterable[str] = (),
        problems: Iterable[tuple[str, str]] = (),
        skipped: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.root = root
        self.entries = entries  # every parent before its children
        self.unlisted = set(unlisted)  # directories whose contents could not be read
        self.problems = list(problems)  # (path, cause): failures
        self.skipped = list(skipped)  # (path, why): not copied by design


class Artefacts(NamedTuple):
    """onward's working files beside one destination path."""

    partial: Node | None = None  # NAME.onward-partial
    journal: bool = False  # NAME.onward-journal (or its .tmp)
    owner: str | None = None  # the source named by that file journal, when it could be read


class DestTree:
    """What listing the destination found (``endpoints.localtree.scan_destination``)."""

    __slots__ = ("artefacts", "entries", "listed", "root")

    def __init__(
        self,
        root: Node,
        entries: dict[str, Node],
        listed: Iterable[str] = (),
        artefacts: Mapping[str, Artefacts] | None = None,
    ) -> None:
        self.root = root
        self.entries = entries  # what the destination directories matching source directories hold
        self.listed = set(listed)  # destination directories that were listed
        self.artefacts = dict(artefacts or {})  # destination path -> working files


class CopyFile(NamedTuple):
    path: str
    size: int
    reason: CopyReason
    batched: bool  # small: copied without a file journal, made durable with its batch
    discard_journal: bool = False  # a file journal beside it that this copy must not use
    discard_partial: bool = False  # a "partial" that is not a plain file onward wrote


class MakeSymlink(NamedTuple):
    path: str
    target: str
    atime_ns: int
    mtime_ns: int


class MakeLink(NamedTuple):
    path: str
    leader: str  # the path, in both trees, of the file it is a hard link of


class Conflict(NamedTuple):
    path: str
    source: Kind
    destination: Kind
    hidden: int = 0  # entries below it that were not copied because of it

    @property
    def message(self) -> str:
        what = f"is {self.destination.value} in the destination but {self.source.value} in the source"
        below = f"; {self.hidden} entries below it were not copied" if self.hidden else ""
        return f"{what}{below}; move it away (or use --delete to replace it) and re-run"


class TreePlan:
    """What one run of a tree copy must do, in the order ``treecopy.TreeCopy`` does it."""

    __slots__ = (
        "attrs",
        "bytes",
        "conflicts",
        "copies",
        "deleted",
        "dirs",
        "extras",
        "files",
        "followers",
        "links",
        "mkdirs",
        "modes",
        "removals",
        "skipped",
        "stale",
        "symlinks",
        "unchanged_bytes",
        "unchanged_files",
        "verify",
    )

    def __init__(self) -> None:
        self.mkdirs: list[str] = []  # parents first
        self.removals: list[str] = []  # before anything is made: --delete, replacements
        self.deleted: list[str] = []  # the removals that are --delete extras
        self.copies: list[CopyFile] = []
        self.verify: list[CopyFile] = []  # done files compared first (--verify full, -c)
        self.attrs: dict[str, tuple[int | None, tuple[int, int] | None]] = {}  # verify: if same
        self.symlinks: list[MakeSymlink] = []
        self.links: list[MakeLink] = []
        self.followers: dict[str, list[str]] = {}  # a file -> its hard links
        self.modes: list[tuple[str, int]] = []  # unchanged files whose bits differ
        self.conflicts: list[Conflict] = []
        self.extras: list[str] = []  # only in the destination, kept
        self.skipped: list[tuple[str, str]] = []  # special files
        self.stale: list[str] = []  # paths whose working files are ours and unused
        self.dirs: list[str] = []  # source directories, deepest first
        self.files = 0  # regular files in the source
        self.bytes = 0  # their bytes (a hard-link group counted once)
        self.unchanged_files = 0
        self.unchanged_bytes = 0

    @property
    def idle(self) -> bool:
        """Nothing to make, copy, link, remove or fix: the destination already is the copy."""
        work = (self.mkdirs, self.removals, self.copies, self.verify, self.symlinks, self.links)
        return not any(work) and not self.modes and not self.stale

    @property
    def pending_bytes(self) -> int:
        return sum(c.size for c in self.copies)


def parent(path: str) -> str:
    return path.rpartition("/")[0]


def link_leaders(entries: Mapping[str, Node]) -> dict[str, str]:
    """Hard links inside the tree: each later path of a (device, inode) group -> the first path."""
    first: dict[tuple[int, int], str] = {}
    leaders: dict[str, str] = {}
    for path, node in entries.items():
        if node.kind is Kind.FILE and node.nlink > 1 and node.stamp is not None:
            key = (node.stamp.dev, node.stamp.ino)
            if key in first:
                leaders[path] = first[key]
            else:
                first[key] = path
    return leaders


def _same_content(
    path: str, src: Node, dst: Node | None, done: Mapping[str, Stamp], preserve_times: bool
) -> bool:
    """Whether the destination file already is the copy of ``src``, without reading either.

    With a DONE record, the source must still carry the recorded stamp (so a change that kept
    size and mtime but moved the ctime is caught) and the destination must still look like the
    copy. Without one, the quick check of ``rsync -a``: same size and same modification time.
    """
    if dst is None or dst.kind is not src.kind or dst.size != src.size:  # src is a file
        return False
    times_match = dst.mtime_ns == src.mtime_ns
    recorded = done.get(path)
    if recorded is not None:
        return recorded == src.stamp and (times_match or not preserve_times)
    return preserve_times and times_match


class PlanRules(NamedTuple):
    """How ``plan_tree`` judges: the options of one run."""

    small: int  # the size up to which a file is copied in a batch without a file journal
    delete: bool
    preserve_mode: bool
    preserve_times: bool
    verify_full: bool
    compare_content: bool
    restart: bool


def plan_tree(
    source: SourceTree,
    dest: DestTree,
    done: Mapping[str, Stamp],
    *,
    source_root: str,
    small: int,
    delete: bool = False,
    preserve_mode: bool = True,
    preserve_times: bool = True,
    verify_full: bool = False,
    compare_content: bool = False,
    restart: bool = False,
) -> TreePlan:
    """What a run must do to make ``dest`` a copy of ``source``.

    ``small`` is the size up to which a file is copied in a batch without a file journal;
    ``source_root`` tells onward's own unfinished copies (whose journals name a source
    under it) from other people's. ``compare_content`` is rsync's ``-c``: a destination file of
    the source's size is judged by its bytes (compared by the orchestrator), whatever its times
    say; with ``verify_full`` even a file the quick check finds unchanged is compared.
    """
    rules = PlanRules(small, delete, preserve_mode, preserve_times, verify_full, compare_content, restart)
    plan = TreePlan()
    blocked, copying = _plan_entries(plan, source, dest, done, rules)
    # Entries only in the destination, in directories that mirror a source directory whose
    # listing is complete (nothing is judged missing from a directory that could not be read).
    mirrored = {
        p
        for p in dest.listed
        if p not in source.unlisted and p not in blocked and (p == "" or p in source.entries)
    }
    unknown = {path for path, _ in source.problems}  # there, but could not be read: not missing
    for path in dest.entries:
        if path not in source.entries and path not in unknown and parent(path) in mirrored:
            if delete:
                plan.removals.append(path)
                plan.deleted.append(path)
            else:
                plan.extras.append(path)
    for path, found in dest.artefacts.items():
        if path not in copying and (not found.journal or found.owner == posixpath.join(source_root, path)):
            plan.stale.append(path)
    dirs = [p for p, n in source.entries.items() if n.kind is Kind.DIR and p not in blocked]
    plan.dirs = [*sorted(dirs, key=lambda p: p.count("/"), reverse=True), ""]
    return plan


def _plan_entries(
    plan: TreePlan, source: SourceTree, dest: DestTree, done: Mapping[str, Stamp], rules: PlanRules
) -> tuple[dict[str, str], set[str]]:
    """Walk the source: fill ``plan`` in for every entry; return the directories left alone below
    a conflict (-> the conflict's path) and the files to copy."""
    leaders = link_leaders(source.entries)
    blocked: dict[str, str] = {}  # directory below a conflict -> the conflict's path
    hidden: dict[str, int] = {}  # conflict path -> entries below it left alone
    copying: set[str] = set()
    found_entries = dest.entries
    FILE, DIR, SYMLINK, SPECIAL = Kind.FILE, Kind.DIR, Kind.SYMLINK, Kind.SPECIAL  # locals: hot loop
    files = total = 0
    for path, node in source.entries.items():
        if blocked:
            top = blocked.get(parent(path))
            if top is not None:
                hidden[top] += 1
                if node.kind is DIR:
                    blocked[path] = top
                continue
        dst = found_entries.get(path)
        kind = node.kind
        if kind is FILE:
            files += 1
            if path not in leaders:
                total += node.size
        elif kind is SPECIAL:
            plan.skipped.append((path, f"is {node.what}; special files are not copied"))
            continue
        if dst is not None and (dst.kind is DIR) != (kind is DIR):
            if not rules.delete:
                plan.conflicts.append(Conflict(path, kind, dst.kind))
                if kind is DIR:
                    blocked[path], hidden[path] = path, 0
                continue
            plan.removals.append(path)  # replaced: --delete makes the destination mirror the source
            dst = None
        if kind is FILE:
            leader = leaders.get(path)
            if leader is None:
                _plan_file(plan, path, node, dst, done, dest.artefacts.get(path), rules, copying)
                continue
            plan.followers.setdefault(leader, []).append(path)
            if _linked(dst, found_entries.get(leader)) and leader not in copying:
                plan.unchanged_files += 1
            else:
                plan.links.append(MakeLink(path, leader))
        elif kind is DIR:
            if dst is None:
                plan.mkdirs.append(path)
        elif dst is None or dst.kind is not SYMLINK or dst.target != node.target:  # a symlink
            assert node.target is not None
            plan.symlinks.append(MakeSymlink(path, node.target, node.atime_ns, node.mtime_ns))
    plan.files, plan.bytes = files, total
    plan.conflicts = [
        Conflict(c.path, c.source, c.destination, hidden.get(c.path, 0)) for c in plan.conflicts
    ]
    return blocked, copying


def _plan_file(
    plan: TreePlan,
    path: str,
    node: Node,
    dst: Node | None,
    done: Mapping[str, Stamp],
    found: Artefacts | None,
    rules: PlanRules,
    copying: set[str],
) -> None:
    """A regular file that is not a hard link of an earlier one: unchanged, to compare, or to copy."""
    same = not rules.restart and _same_content(path, node, dst, done, rules.preserve_times)
    if rules.compare_content and not rules.restart and dst is not None and dst.size == node.size:
        same = True  # by size only: the bytes decide (dst is a file: kinds were matched above)
        plan.attrs[path] = dir_changes(
            node,
            dst.mode,
            dst.mtime_ns,
            preserve_mode=rules.preserve_mode,
            preserve_times=rules.preserve_times,
        )
    if same and not (rules.verify_full or rules.compare_content):
        plan.unchanged_files += 1
        plan.unchanged_bytes += node.size
        assert dst is not None
        if rules.preserve_mode and (dst.mode & PERMISSIONS) != (node.mode & PERMISSIONS):
            plan.modes.append((path, node.mode & PERMISSIONS))
        return
    copy = _copy(path, node, dst, found, rules.small, CopyReason.RESTART if rules.restart else None)
    if same:
        plan.verify.append(copy)  # copied (and its hard links remade) only if the bytes differ
    else:
        plan.copies.append(copy)
        copying.add(path)


def _linked(dst: Node | None, leader: Node | None) -> bool:
    """Whether the destination already holds ``dst`` as a hard link of ``leader``'s copy."""
    if dst is None or leader is None or dst.stamp is None or leader.stamp is None:
        return False
    return dst.kind is Kind.FILE and (dst.stamp.dev, dst.stamp.ino) == (leader.stamp.dev, leader.stamp.ino)


def _copy(
    path: str, node: Node, dst: Node | None, found: Artefacts | None, small: int, reason: CopyReason | None
) -> CopyFile:
    batched = node.size <= small
    if reason is None:
        if found is not None and found.journal and not batched:
            reason = CopyReason.RESUME
        else:
            reason = CopyReason.NEW if dst is None else CopyReason.CHANGED
    partial = found.partial if found is not None else None
    return CopyFile(
        path,
        node.size,
        reason,
        batched,
        discard_journal=batched and found is not None and found.journal,
        discard_partial=partial is not None and (partial.kind is not Kind.FILE or partial.nlink > 1),
    )


def dir_changes(
    source: Node, mode: int, mtime_ns: int, *, preserve_mode: bool, preserve_times: bool
) -> tuple[int | None, tuple[int, int] | None]:
    """The (mode, (atime, mtime)) to apply to a destination directory, or to a file kept because
    its bytes are the source's, now at ``mode``, ``mtime_ns`` (None where nothing needs changing)."""
    want_mode = source.mode & PERMISSIONS if preserve_mode else None
    new_mode = want_mode if want_mode is not None and (mode & PERMISSIONS) != want_mode else None
    new_times = (source.atime_ns, source.mtime_ns) if preserve_times and mtime_ns != source.mtime_ns else None
    return new_mode, new_times

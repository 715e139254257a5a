"""Local directory trees: listing a source and a destination, and the operations on entries
that are not file data (directories, symlinks, hard links, metadata, removals, the tree lock).

Everything here is I/O carried out as ``onward.core.tree`` decided it. Errors leave as
``OSError`` only where the orchestrator turns them into one failed entry; what stops a
whole run leaves as an ``onward.errors`` type.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Callable, Iterator, Set
from operator import attrgetter

from ..core.filters import Filter
from ..core.journal import DecodeError, decode
from ..core.tree import Artefacts, DestTree, Kind, Node, SourceTree
from ..core.treejournal import Stamp
from ..errors import DestinationError
from .local import JOURNAL_SUFFIX, PARTIAL_SUFFIX, file_kind, lock_or_refuse, partial_path

__all__ = [
    "TREE_JOURNAL",
    "TreeLock",
    "apply_attrs",
    "cause",
    "display",
    "make_dir",
    "make_hardlink",
    "make_symlink",
    "node_of",
    "remove_entry",
    "remove_working_files",
    "same_bytes",
    "scan_destination",
    "scan_source",
    "working_base",
]

TREE_JOURNAL = "onward-tree.onward-journal"  # in the destination root: the tree journal
WORKING_SUFFIXES = (PARTIAL_SUFFIX, JOURNAL_SUFFIX, JOURNAL_SUFFIX + ".tmp")
BLOCK = 1 << 20


def display(path: str) -> str:
    """``path`` for a message: bytes that are not UTF-8 shown as ``\\xNN``, never a traceback
    (a lone surrogate that no file name decodes to, from a garbled journal say, as ``\\udNNN``)."""
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:
        raw = path.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def cause(exc: OSError, doing: str) -> str:
    """``doing: strerror`` plus what to do about it, for one failed entry."""
    code = exc.errno or 0
    text = f"{doing}: {os.strerror(code) if code else exc}"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        text += "; fix the permissions and re-run"
    elif code == errno.ENAMETOOLONG:
        text += " (longer than this file system allows, counting onward's .onward-partial suffix)"
    elif code == errno.ELOOP:
        text += " (a symbolic link loop)"
    return text


def working_base(name: str) -> str | None:
    """The name an onward working file (partial, journal) belongs to, or None."""
    for suffix in WORKING_SUFFIXES:
        if name.endswith(suffix) and name != suffix:
            return name[: -len(suffix)]
    return None


_KINDS = {stat.S_IFREG: Kind.FILE, stat.S_IFDIR: Kind.DIR, stat.S_IFLNK: Kind.SYMLINK}
_FILE, _DIR = Kind.FILE, Kind.DIR  # an enum member looked up on its class costs ten times a global
_S_IFMT, _S_IFREG, _S_IFLNK, _S_IFDIR = 0o170000, stat.S_IFREG, stat.S_IFLNK, stat.S_IFDIR
# Node and Stamp are NamedTuples: made straight from a tuple, without their Python-level
# __new__, they cost half as much (made for every entry of both trees, twice 10,000 a run).
_tuple = tuple.__new__


def node_of(st: os.stat_result, target: str | None = None) -> Node:
    """The ``Node`` of a stat result (made for every entry of both trees: kept lean)."""
    mode = st.st_mode
    if mode & _S_IFMT == _S_IFREG:
        size, mtime_ns = st.st_size, st.st_mtime_ns
        stamp: Stamp = _tuple(Stamp, (size, mtime_ns, st.st_ctime_ns, st.st_dev, st.st_ino))
        node: Node = _tuple(
            Node, (_FILE, mode & 0o7777, size, mtime_ns, st.st_atime_ns, stamp, st.st_nlink, None, "")
        )
        return node
    kind = _KINDS.get(mode & _S_IFMT, Kind.SPECIAL)
    what = file_kind(mode) if kind is Kind.SPECIAL else ""
    return Node(
        kind, mode & 0o7777, st.st_size, st.st_mtime_ns, st.st_atime_ns, None, st.st_nlink, target, what
    )


_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _listing(path: str, *, ordered: bool) -> tuple[int, list[os.DirEntry[str]]]:
    """A descriptor of the directory ``path`` (the caller closes it) and its entries (by name
    when ``ordered``). Their ``stat()`` is an ``fstatat`` on that descriptor: the kernel looks
    up one name, not the whole path again (a fifth less time for a listing of 10,000 files)."""
    fd = os.open(path, _DIRECTORY)
    try:
        with os.scandir(fd) as entries:
            return fd, sorted(entries, key=attrgetter("name")) if ordered else list(entries)
    except BaseException:
        os.close(fd)
        raise


def scan_source(
    root: str, *, follow: bool, avoid: Set[tuple[int, int]] = frozenset(), rules: Filter | None = None
) -> SourceTree:
    """Every entry below ``root`` (itself followed if a symlink), parents before children.
    ``follow`` (``-L``) lists what symlinks point to; a directory that leads back to one of its
    own ancestors is a loop, and one in ``avoid`` (device, inode: the destination root) leads
    into the copy itself: both are reported, not entered. Entries the ``rules`` exclude are
    left out, and an excluded directory is not entered."""
    st = os.stat(root)
    tree = SourceTree(node_of(st), {})
    stack: list[tuple[str, str, tuple[tuple[int, int], ...]]] = [("", root, ((st.st_dev, st.st_ino),))]
    while stack:
        rel, path, ancestors = stack.pop()
        try:
            fd, items = _listing(path, ordered=True)
        except OSError as exc:
            tree.unlisted.add(rel)
            tree.problems.append((rel, cause(exc, "cannot list directory")))
            continue
        try:
            found = _list_source(tree, root, rel, path, (fd, items), ancestors, (follow, avoid, rules))
            stack.extend(reversed(found))
        finally:
            os.close(fd)
    return tree


def _list_source(
    tree: SourceTree,
    root: str,
    rel: str,
    path: str,
    listing: tuple[int, list[os.DirEntry[str]]],
    ancestors: tuple[tuple[int, int], ...],
    how: tuple[bool, Set[tuple[int, int]], Filter | None],
) -> list[tuple[str, str, tuple[tuple[int, int], ...]]]:
    """Add one source directory's entries to ``tree``; returns its subdirectories to descend.
    ``how``: follow symlinks, (device, inode) pairs not to enter, the rules (scan_source)."""
    fd, items = listing
    follow, avoid, rules = how
    subdirs = []
    prefix = f"{rel}/" if rel else ""
    entries = tree.entries
    for item in items:
        name = item.name
        sub = prefix + name
        if ".onward-" in name and working_base(name) is not None:
            tree.skipped.append((sub, "is an onward working file (partial or journal); not copied"))
            continue
        try:
            if follow:
                try:
                    st = os.stat(name, dir_fd=fd)
                except FileNotFoundError:
                    if not item.is_symlink():
                        raise
                    dangling = display(os.readlink(name, dir_fd=fd))
                    tree.problems.append((sub, f"broken symbolic link: {dangling} does not exist"))
                    continue
            else:
                st = item.stat(follow_symlinks=False)
            fmt = st.st_mode & _S_IFMT
            if rules is not None and rules.excludes(sub, fmt == _S_IFDIR):
                continue
            if fmt == _S_IFREG:
                entries[sub] = node_of(st)
                continue
            target = os.readlink(name, dir_fd=fd) if fmt == _S_IFLNK else None
        except OSError as exc:
            tree.problems.append((sub, cause(exc, "cannot read")))
            continue
        node = node_of(st, target)
        if node.kind is _DIR:
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                back = ancestors.index(key)
                here = os.path.join(root, *sub.split("/")[:back])
                tree.problems.append(
                    (sub, f"symbolic link loop: leads back to {display(here)}; not followed")
                )
                continue
            if key in avoid:
                tree.problems.append((sub, "leads into the destination of this copy; not followed"))
                continue
            subdirs.append((sub, os.path.join(path, name), (*ancestors, key)))
        entries[sub] = node
    return subdirs


def _owner(journal: str) -> str | None:
    """The source a file journal names, or None when it cannot be read."""
    try:
        with open(journal, "rb") as fh:
            return decode(fh.read()).header.source
    except (OSError, DecodeError):
        return None


def scan_destination(root: str, source: SourceTree, rules: Filter | None = None) -> DestTree:
    """What the destination holds in the directories that mirror the source's, and onward's
    working files there. Entries only in the destination are listed, not descended into.
    Entries the ``rules`` exclude are left out: neither compared nor removed (--delete)."""
    dest = DestTree(node_of(os.stat(root)), {})
    entries, found_entries = source.entries, dest.entries
    directories = [""] + [p for p, n in entries.items() if n.kind is _DIR]
    for rel in directories:
        if rel:
            found = found_entries.get(rel)
            if found is None or found.kind is not _DIR:
                continue
        path = os.path.join(root, rel) if rel else root
        try:
            fd, items = _listing(path, ordered=False)
        except OSError:
            continue  # copying into it will fail with a clear message of its own
        try:
            _list_destination(dest, source, rel, path, (fd, items), rules)
        finally:
            os.close(fd)
    return dest


def _list_destination(
    dest: DestTree,
    source: SourceTree,
    rel: str,
    path: str,
    listing: tuple[int, list[os.DirEntry[str]]],
    rules: Filter | None,
) -> None:
    """Add one destination directory's entries and onward's working files there to ``dest``."""
    fd, items = listing
    entries, found_entries = source.entries, dest.entries
    dest.listed.add(rel)
    working: dict[str, list[os.DirEntry[str]]] = {}
    prefix = f"{rel}/" if rel else ""
    for item in items:
        name = item.name
        if ".onward-" in name:
            if not rel and name in (TREE_JOURNAL, TREE_JOURNAL + ".tmp"):
                continue
            base = working_base(name)
            if base is not None:
                working.setdefault(prefix + base, []).append(item)
                continue
        sub = prefix + name
        try:
            st = item.stat(follow_symlinks=False)
            target = None
            if st.st_mode & _S_IFMT == _S_IFLNK and sub in entries:
                target = os.readlink(name, dir_fd=fd)
        except OSError:
            continue  # vanished meanwhile
        if rules is not None and rules.excludes(sub, st.st_mode & _S_IFMT == _S_IFDIR):
            continue
        found_entries[sub] = node_of(st, target)
    for base, files in working.items():
        if rules is not None and rules.excludes(base, False):
            continue
        partial, journal = None, None
        for item in files:  # a journal's .tmp alone counts for nothing: it is always rewritten
            if item.name.endswith(PARTIAL_SUFFIX):
                with contextlib.suppress(OSError):
                    partial = node_of(item.stat(follow_symlinks=False))
            elif item.name.endswith(JOURNAL_SUFFIX):
                journal = os.path.join(path, item.name)
        owner = _owner(journal) if journal else None
        dest.artefacts[base] = Artefacts(partial, journal is not None, owner)


# -- operations on entries -------------------------------------------------------------------


def make_dir(path: str) -> None:
    """A new directory, owner-only until its own permission bits are applied after its contents."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path) or os.path.islink(path):
            raise


def _drop(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def make_symlink(
    final: str, target: str, times_ns: tuple[int, int] | None, extra: Callable[[str], None] | None = None
) -> None:
    """A symlink made beside ``final`` and renamed onto it: ``final`` never goes missing.
    ``extra`` (owner, xattrs: ``endpoints.metadata``) is applied to it before its times."""
    temp = partial_path(final)
    _drop(temp)
    os.symlink(target, temp)
    if extra is not None:
        extra(temp)
    if times_ns is not None:
        with contextlib.suppress(OSError):  # not every file system keeps a symlink's times
            os.utime(temp, ns=times_ns, follow_symlinks=False)
    os.rename(temp, final)


def make_hardlink(existing: str, final: str) -> None:
    """``final`` as one more name of ``existing``, made beside it and renamed onto it."""
    temp = partial_path(final)
    _drop(temp)
    os.link(existing, temp)
    os.rename(temp, final)
    _drop(temp)  # rename() does nothing when both names were already links of one file


def remove_entry(path: str) -> None:
    """Remove a file, a symlink or a whole directory (``--delete``)."""
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        import shutil

        shutil.rmtree(path)
    else:
        os.unlink(path)


def remove_working_files(destination: str) -> bool:
    """Remove the partial and journal beside ``destination``; False (nothing removed) when
    another onward holds the partial's lock, i.e. is copying to it right now. Raises
    ``OSError`` when one cannot be removed."""
    partial = partial_path(destination)
    fd = -1
    try:
        try:
            if stat.S_ISREG(os.lstat(partial).st_mode):
                fd = os.open(partial, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except FileNotFoundError:
            pass
        for path in (partial, destination + JOURNAL_SUFFIX, destination + JOURNAL_SUFFIX + ".tmp"):
            _drop(path)
    finally:
        if fd >= 0:
            os.close(fd)
    return True


def apply_attrs(path: str, mode: int | None, times_ns: tuple[int, int] | None) -> None:
    if mode is not None:
        os.chmod(path, mode)
    if times_ns is not None:
        os.utime(path, ns=times_ns)


def _chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb", buffering=0) as fh:
        while block := fh.read(BLOCK):
            yield block


def same_bytes(a: str, b: str) -> bool:
    """Whether two files hold the same bytes (read in full; ``--verify full`` of done files)."""
    import xxhash

    if os.stat(a).st_size != os.stat(b).st_size:
        return False
    ha, hb = xxhash.xxh3_128(), xxhash.xxh3_128()
    for block in _chunks(a):
        ha.update(block)
    for block in _chunks(b):
        hb.update(block)
    return ha.digest() == hb.digest()


class TreeLock:
    """An exclusive ``flock`` on the destination root: one tree copy into it at a time."""

    def __init__(self, root: str) -> None:
        self.root = root
        try:
            self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise DestinationError(f"{display(root)}: {cause(exc, 'cannot open')}", root) from None
        lock_or_refuse(
            self.fd,
            DestinationError(
                f"{display(root)}: another onward is copying into it right now; wait for it to finish", root
            ),
        )

    def close(self) -> None:
        os.close(self.fd)

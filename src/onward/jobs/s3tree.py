"""``onward copy -r DIR s3://bucket/prefix/`` and ``onward copy -r s3://bucket/prefix/ DIR``.

Each file is one resumable S3 copy (``onward.jobs.s3copy``: an upload's journal in the state
directory, a download's partial and journal beside it), so the file that was in flight when a
run stopped continues from its last part or chunk. The tree journal (``core/s3treejournal``,
in the state directory) records each finished file: a re-run skips a file whose local stamp
and listed object (size, ETag) are what the journal recorded, without reading it. A file the
journal does not know is skipped when its object has the same size and content (the stored
whole-object checksum, else the plain MD5 ETag, else the multipart ETag its parts make), which
reads it locally. Where the tree lands follows rsync's trailing-slash rule (``DIR`` makes
``prefix/DIR/...``, ``DIR/`` fills ``prefix/``). ``--delete`` removes, once every file is
copied, what the destination holds and the source does not. A file that fails does not stop
the tree; the run ends with ``PartialCopyError`` (exit 23) naming each. docs/S3.md.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from ..core import s3 as proto
from ..core.s3treejournal import Done, encode_s3_done, encode_s3_tree_start, read_s3_done
from ..core.treejournal import Stamp
from ..core.upload import state_dir
from ..endpoints.local import JOURNAL_SUFFIX, PARTIAL_SUFFIX
from ..endpoints.s3 import Store, connect, delete_objects, head, list_objects
from ..endpoints.uploadjournal import LOCK_SUFFIX
from ..errors import DestinationError, Interrupted, OnwardError, PartialCopyError, UsageError
from ..events import Listener, Notice, dispatch
from ..options import Options
from . import s3copy

__all__ = ["TreeCounts", "copy_tree"]

BLOCK = 1 << 20
Listing = dict[str, tuple[int, str]]  # key -> (size, ETag)


class TreeCounts(NamedTuple):
    copied: int = 0
    skipped: int = 0  # already there; ``journaled`` of them known from the tree journal
    journaled: int = 0
    deleted: int = 0

    def describe(self) -> str:
        text = f"{self.copied} file(s) copied, {self.skipped} already there"
        if self.journaled:
            text += f" ({self.journaled} known from the tree journal)"
        return text + (f", {self.deleted} deleted" if self.deleted else "")


class Entry(NamedTuple):
    local: str  # the local file's path
    rel: str  # its path under the local root, "/"-separated
    target: proto.S3Url  # its object
    size: int  # the source's size


class Tree(NamedTuple):
    """One tree copy: where each side is, what the remote side lists, how to tell the user."""

    upload: bool
    store: Store
    top: str  # the local root (the source directory, or where a download lands)
    landing: proto.S3Url  # the prefix the objects are under (ends with "/", or is empty)
    listing: Listing
    notify: Callable[[str, str], None]


def copy_tree(
    src: str,
    dst: str,
    opts: Options,
    listeners: Callable[[], Sequence[Listener]],
    *,
    delete: bool = False,
    follow: bool = False,
) -> TreeCounts:
    """Copy the tree; ``listeners()`` gives each file's listeners."""
    upload = proto.is_s3_url(dst)
    remote = s3copy.target_of(dst if upload else src)
    store = connect(s3copy.settings(opts), remote.name)
    tree = open_tree(src, dst, upload, store, remote, listeners)
    entries = list(local_files(tree, follow) if upload else remote_files(tree, dst))
    journal = TreeJournal.open(tree, follow)
    failures: list[tuple[str, str]] = []
    counts = TreeCounts()
    try:
        for entry in entries:
            try:
                counts = copy_one(tree, entry, journal, opts, listeners, counts)
            except Interrupted:
                raise
            except (OnwardError, OSError) as exc:
                failures.append((entry.local if upload else entry.target.name, str(exc)))
        if delete and not failures:
            deleted, failed = delete_extras(tree, entries)
            counts, failures = counts._replace(deleted=deleted), failed
        if not failures:
            journal.finish()
    finally:
        journal.close()
    if failures:
        raise PartialCopyError(
            f"{src}: {len(failures)} of {len(entries)} files could not be copied or deleted (the "
            "rest were); re-run to retry them: " + "; ".join(message for _, message in failures[:3]),
            src,
            tuple(failures),
        )
    return counts


def open_tree(
    src: str,
    dst: str,
    upload: bool,
    store: Store,
    remote: proto.S3Url,
    listeners: Callable[[], Sequence[Listener]],
) -> Tree:
    """Where the tree lands, by rsync's trailing-slash rule, and what is under it in the store."""
    root = remote.key if remote.is_prefix else remote.key + "/"
    if upload:
        if not os.path.isdir(src):
            raise UsageError(f"{src}: -r copies a directory; give a directory")
        base = "" if src.endswith("/") else os.path.basename(os.path.abspath(src)) + "/"
        top = os.path.abspath(src)
    else:
        base = "" if src.endswith("/") else root.rstrip("/").rsplit("/", 1)[-1]
        top = os.path.abspath(os.path.join(dst, base))
        base = ""
    landing = remote._replace(key=root + base)
    listing = {
        key: (size, etag) for key, size, etag in list_objects(store, remote.bucket, landing.key, remote.name)
    }

    def notify(where: str, message: str) -> None:
        for listener in listeners():
            dispatch(listener, Notice(where, message))

    return Tree(upload, store, top, landing, listing, notify)


def copy_one(
    tree: Tree,
    entry: Entry,
    journal: TreeJournal,
    opts: Options,
    listeners: Callable[[], Sequence[Listener]],
    counts: TreeCounts,
) -> TreeCounts:
    """Copy one file unless it is already there; the counts with it."""
    listed = tree.listing.get(entry.target.key)
    if listed is not None and journal.unchanged(entry, listed):
        return counts._replace(skipped=counts.skipped + 1, journaled=counts.journaled + 1)
    if listed is not None and same(tree.store, entry.target, entry.local, entry.size):
        journal.record(entry, listed[1])
        return counts._replace(skipped=counts.skipped + 1)

    def finished(etag: str) -> None:
        journal.record(entry, etag)

    each = s3copy.TreeFile(tree.store, finished)
    if tree.upload:
        s3copy.upload(entry.local, entry.target.name, opts, listeners(), each)
    else:
        if os.path.isdir(entry.local) and not os.path.islink(entry.local):
            raise DestinationError(
                f"{entry.local}: is a directory; cannot replace it with a file", entry.local
            )
        os.makedirs(os.path.dirname(entry.local), exist_ok=True)
        s3copy.download(entry.target.name, entry.local, opts, listeners(), each)
    return counts._replace(copied=counts.copied + 1)


def local_files(tree: Tree, follow: bool) -> Iterator[Entry]:
    """Every regular file under the local root (with ``follow``, what symlinks point to too);
    other entries are named in a notice and left out: a store has no symlinks or devices."""
    seen: set[str] = set()
    for directory, dirs, files in os.walk(tree.top, followlinks=follow):
        real = os.path.realpath(directory)
        if real in seen:  # a symlink loop under -L
            tree.notify(directory, "skipping a directory already copied (a symlink loop)")
            dirs.clear()
            continue
        seen.add(real)
        dirs.sort()
        if not follow:
            for name in [d for d in dirs if os.path.islink(os.path.join(directory, d))]:
                files.append(name)  # a symlink to a directory: skipped below, like one to a file
        for name in sorted(files):
            path = os.path.join(directory, name)
            if os.path.islink(path) and not follow:
                tree.notify(path, "skipping symlink: a store has no symlinks (-L uploads what it points to)")
            elif not os.path.isfile(path):
                tree.notify(path, "skipping: not a regular file (or a broken symlink)")
            else:
                rel = os.path.relpath(path, tree.top).replace(os.sep, "/")
                yield Entry(
                    path, rel, tree.landing._replace(key=tree.landing.key + rel), os.path.getsize(path)
                )


def remote_files(tree: Tree, dst: str) -> Iterator[Entry]:
    """Every object under the prefix, refusing keys that would leave ``dst``; a "directory"
    marker (a key ending in ``/``) makes its directory, empty or not."""
    for key, (size, _) in sorted(tree.listing.items()):
        rel = key[len(tree.landing.key) :]
        parts = rel.rstrip("/").split("/")
        path = os.path.abspath(os.path.join(tree.top, rel))
        if not rel.rstrip("/") or any(p in ("", ".", "..") for p in parts) or not path.startswith(tree.top):
            if rel.rstrip("/"):
                raise DestinationError(
                    f"s3://{tree.landing.bucket}/{key}: the key is not a safe file name under {dst}"
                )
            continue
        if rel.endswith("/"):
            os.makedirs(path, exist_ok=True)
            continue
        yield Entry(path, rel, tree.landing._replace(key=key), size)


def delete_extras(tree: Tree, entries: list[Entry]) -> tuple[int, list[tuple[str, str]]]:
    """--delete: remove what the destination has and the source does not; (how many, failures)."""
    wanted = {entry.rel for entry in entries}
    if tree.upload:
        extras = [
            key
            for key in sorted(tree.listing)
            if key[len(tree.landing.key) :] not in wanted
            and not (
                key.endswith("/") and os.path.isdir(os.path.join(tree.top, key[len(tree.landing.key) :]))
            )
        ]
        failed = delete_objects(tree.store, tree.landing.bucket, extras, tree.landing.name) if extras else []
        return len(extras) - len(failed), failed
    return delete_local(tree, wanted)


def delete_local(tree: Tree, wanted: set[str]) -> tuple[int, list[tuple[str, str]]]:
    """Remove the files (and symlinks) under the local root that name no object, then each
    directory no key lies under; onward's working files of wanted files stay."""
    rels = [key[len(tree.landing.key) :].rstrip("/") for key in tree.listing]
    kept = {"/".join(rel.split("/")[:n]) for rel in rels for n in range(1, rel.count("/") + 2)}
    deleted, failed = 0, []
    for directory, dirs, files in os.walk(tree.top, topdown=False):
        links = [d for d in dirs if os.path.islink(os.path.join(directory, d))]
        doomed = [os.path.join(directory, name) for name in files + links]
        if directory != tree.top:
            doomed.append(directory)
        for path in doomed:
            rel = os.path.relpath(path, tree.top).replace(os.sep, "/")
            if rel in wanted or rel in kept or working_file(rel) in wanted:
                continue
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    os.rmdir(path)  # emptied above, unless it holds what stays
                else:
                    os.unlink(path)
                deleted += 1
            except OSError as exc:
                failed.append((path, f"{path}: cannot delete: {exc.strerror}"))
    return deleted, failed


def working_file(rel: str) -> str:
    """The file whose partial, journal or lock ``rel`` is (else ``rel``)."""
    for suffix in (PARTIAL_SUFFIX, JOURNAL_SUFFIX + ".tmp", JOURNAL_SUFFIX, LOCK_SUFFIX):
        if rel.endswith(suffix):
            return rel.removesuffix(suffix)
    return rel


def same(store: Store, target: proto.S3Url, local: str, size: int) -> bool:
    """Whether the object and the local file hold the same bytes: same size, and the object's
    stored whole-object checksum, plain MD5 ETag or multipart ETag equal to the file's."""
    if not os.path.isfile(local) or os.path.getsize(local) != size:
        return False
    answer = head(store, target)
    if answer is None or answer.get("ContentLength") != size:
        return False
    etag = str(answer.get("ETag", ""))
    for algorithm, (suffix, _) in proto.CHECKSUMS.items():
        value = answer.get("Checksum" + suffix)
        if value and "-" not in etag and "-" not in str(value):
            return bool(digest_file(local, proto.Running(algorithm)) == value)
    if proto.md5_etag(etag) is not None:
        return digest_file(local, None) == proto.md5_etag(etag)
    count = etag.strip('"').rpartition("-")[2]
    if count.isdigit():
        first = head(store, target, part=1)  # the first part's size is the part size
        part = int(first.get("ContentLength", 0)) if first is not None else 0
        if part > 0 and -(-size // part) == int(count):
            return proto.composite_etag(part_md5s(local, part)) == etag
    return False


def digest_file(path: str, running: proto.Running | None) -> str:
    """The file's ``running`` checksum (base64), or its MD5 (hex) when None."""
    md5 = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK):
            (running or md5).update(block)
    return running.value() if running is not None else md5.hexdigest()


def part_md5s(path: str, part: int) -> list[str]:
    with open(path, "rb") as fh:
        return [f'"{hashlib.md5(block).hexdigest()}"' for block in iter(lambda: fh.read(part), b"")]


class TreeJournal:
    """The tree journal of one tree copy, in the state directory, locked for the run."""

    def __init__(self, path: str, fd: int, done: dict[str, Done]) -> None:
        self.path, self._fd, self.done = path, fd, done

    @classmethod
    def open(cls, tree: Tree, follow: bool) -> TreeJournal:
        remote = f"{tree.landing.name}\n{tree.store.endpoint}"
        source, destination = (tree.top, remote) if tree.upload else (remote, tree.top)
        header = json.dumps(
            {"source": source, "destination": destination, "follow_symlinks": follow}, sort_keys=True
        ).encode("utf-8", "surrogateescape")
        directory = state_dir(os.environ, os.path.expanduser("~"))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        path = os.path.join(directory, "s3tree-" + hashlib.sha256(header).hexdigest()[:32] + ".onward-s3tree")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(f"{tree.landing.name}: another onward run is copying this tree") from None
        found = read_s3_done(read_all(fd), header)
        if found is None:
            found = ({}, 0)
            os.ftruncate(fd, 0)
            os.pwrite(fd, encode_s3_tree_start(header), 0)
        else:
            os.ftruncate(fd, found[1])  # a torn last record
        os.lseek(fd, 0, os.SEEK_END)
        return cls(path, fd, found[0])

    def unchanged(self, entry: Entry, listed: tuple[int, str]) -> bool:
        """Whether the journal recorded this file done, and neither it nor its object changed since."""
        done = self.done.get(entry.rel)
        if done is None or listed[0] != done.stamp.size or not proto.same_etag(listed[1], done.etag):
            return False
        try:
            return Stamp.of(os.stat(entry.local)) == done.stamp
        except OSError:
            return False

    def record(self, entry: Entry, etag: str) -> None:
        """The file is done: its stamp now and the object's ETag, written durably."""
        if not etag:
            return
        done = Done(Stamp.of(os.stat(entry.local)), etag)
        os.write(self._fd, encode_s3_done(entry.rel, done))
        os.fsync(self._fd)
        self.done[entry.rel] = done

    def finish(self) -> None:
        """The whole tree is done: the journal goes (a re-run compares content, as a first run)."""
        os.unlink(self.path)

    def close(self) -> None:
        os.close(self._fd)


def read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, BLOCK, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)

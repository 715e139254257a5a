"""What one run of a directory-tree copy does to one entry, and how it reports it.

``TreeEntries`` holds a run's state (counters, failures, the batch of small files in
flight, the throttle shared by every file) and makes one entry at a time: a directory
entry removed, a symlink or hard link made, a done file compared with its source, a
regular file copied through ``engine.Transfer`` (big files with their own chunk journal
beside them, files of at most one chunk in batches made durable together by
``endpoints.batch``). ``treecopy.TreeCopy`` runs the whole plan with it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Sequence

from ..core.filters import Filter
from ..core.throttle import paced
from ..core.tree import CopyFile, CopyReason, TreePlan, parent
from ..core.treejournal import Stamp, encode_done
from ..endpoints.batch import Batch, BatchSink, MemoryJournal, Pending, Syncer
from ..endpoints.local import PARTIAL_SUFFIX, LocalSink, LocalSource, partial_path
from ..endpoints.localjournal import LocalJournal
from ..endpoints.localtree import (
    TREE_JOURNAL,
    apply_attrs,
    cause,
    display,
    make_hardlink,
    make_symlink,
    remove_entry,
    same_bytes,
)
from ..endpoints.metadata import Keeper, wanted
from ..errors import DurabilityError, Interrupted, NoSpaceError, OnwardError
from ..events import (
    Checkpoint,
    Event,
    FileAction,
    FileDone,
    FileFailed,
    Listener,
    Notice,
    Progress,
    Retry,
    Start,
    TreeProgress,
    dispatch,
)
from ..options import Options
from ..units import format_size

MAX_BATCH_FILES = 65536
LINK_UNSUPPORTED = frozenset({errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS})
PROGRESS_EVERY = 0.1  # seconds between TreeProgress events (and at the end of every big file)
STRETCH = 4  # a batch lasts at least this many times its predecessor's commit (see batch_due)


class TreeEntries:
    """The state of one run of a tree copy, how it reports, and what it does to one entry: a
    directory entry made or removed, a regular file copied through ``engine.Transfer``. The
    run itself (plan, order, journal, the end) is ``treecopy.TreeCopy``."""

    def __init__(
        self,
        src_root: str,
        dst_root: str,
        options: Options,
        listeners: Sequence[Listener],
        *,
        delete: bool,
        follow: bool,
        compare: bool = False,
        rules: Filter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.src_root, self.dst_root, self.opts = src_root, dst_root, options
        # os.path.join(root, rel), made once: src() and dst() run several times for every file
        self.src_prefix, self.dst_prefix = os.path.join(src_root, ""), os.path.join(dst_root, "")
        self.listeners, self.delete, self.follow, self.clock = listeners, delete, follow, clock
        self.compare, self.rules = compare, rules
        rate = options.bwlimit  # one limit for the whole tree, not one per file
        self.throttle = paced(rate, options.chunk_size, clock()) if rate else None
        self.failures: list[tuple[str, str]] = []
        self.failed_paths: set[str] = set()  # relative paths
        self.failed_dirs: set[str] = set()  # directories that could not be made: skip below them
        self.syncer = Syncer()
        self.batch = Batch(self.syncer)
        self.keeper = Keeper(wanted(options.preserve), self.notice)  # owner, xattrs, ACLs
        self.journal = LocalJournal(os.path.join(dst_root, TREE_JOURNAL.removesuffix(".onward-journal")))
        self.have_journal = False
        self.touched: set[str] = set()  # directories where entries were made or removed
        self.small_options: dict[int, Options] = {}
        self.name_max = 255
        # counters
        self.files = self.total = self.files_done = self.bytes_done = self.copied = 0
        self.copied_files = self.linked = self.symlinks = self.dirs_made = self.deleted = 0
        self.current = (0, 0)  # (done, copied) bytes of the file in flight
        self.kept = 0  # bytes of the file in flight (not batched) that its journal holds
        self.waiting = (0, 0)  # (done, copied) bytes of the files waiting in the batch
        self.last_progress = -PROGRESS_EVERY
        self.last_commit = 0.0  # seconds the last batch took to make durable

    # -- reporting ---------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        for listener in self.listeners:
            dispatch(listener, event)

    def notice(self, where: str, message: str) -> None:
        self.emit(Notice(where, message))

    def fail(self, path: str, message: str, rel: str | None = None) -> None:
        self.failures.append((path, message))
        if rel is not None:
            self.failed_paths.add(rel)
        self.emit(FileFailed(path, message))

    def progress(self, *, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self.last_progress < PROGRESS_EVERY:
            return
        self.last_progress = now
        done = self.bytes_done + self.current[0] + self.waiting[0]
        copied = self.copied + self.current[1] + self.waiting[1]
        self.emit(TreeProgress(self.files_done, self.files, done, self.total, copied))

    def file_done(
        self, rel: str, action: FileAction, size: int, copied: int = 0, resumed_from: int = 0
    ) -> None:
        if action in (FileAction.COPIED, FileAction.LINKED, FileAction.VERIFIED):
            self.files_done += 1
            self.bytes_done += size if action is not FileAction.LINKED else 0
        self.copied += copied
        self.current = (0, 0)
        self.emit(FileDone(rel, action, size, copied, resumed_from, self.files_done, self.files))
        self.progress()

    def src(self, rel: str) -> str:
        return self.src_prefix + rel if rel else self.src_root

    def dst(self, rel: str) -> str:
        return self.dst_prefix + rel if rel else self.dst_root

    def below_failed(self, rel: str) -> bool:
        if not self.failed_dirs:
            return False
        while rel:
            rel = parent(rel)
            if rel in self.failed_dirs:
                return True
        return False

    def mark_done(self, records: Sequence[tuple[str, Stamp]]) -> None:
        if records:
            self.journal.append(b"".join(encode_done(path, stamp) for path, stamp in records))

    # -- entries other than regular files ----------------------------------------------------

    def remove(self, rel: str, extra: bool) -> None:
        try:
            remove_entry(self.dst(rel))
        except FileNotFoundError:
            pass
        except OSError as exc:
            path = exc.filename if isinstance(exc.filename, str) else self.dst(rel)
            self.fail(path, f"{display(path)}: {cause(exc, 'cannot remove')}", rel)
            return
        self.touched.add(parent(rel))
        if extra:
            self.deleted += 1
            self.emit(FileDone(rel, FileAction.DELETED, 0, 0, 0, self.files_done, self.files))

    def name_too_long(self, rel: str) -> bool:
        base = rel.rpartition("/")[2]
        if 4 * len(base) + len(PARTIAL_SUFFIX) <= self.name_max:  # UTF-8: at most 4 bytes a character
            return False
        name = os.fsencode(base)
        if len(name) + len(PARTIAL_SUFFIX) <= self.name_max:
            return False
        self.fail(
            self.dst(rel),
            f"{display(self.dst(rel))}: the name is {len(name)} bytes; with the {PARTIAL_SUFFIX} suffix "
            f"onward writes under first it exceeds this file system's {self.name_max}-byte limit; "
            "rename it in the source and re-run",
            rel,
        )
        return True

    def symlink(self, rel: str, target: str, times: tuple[int, int]) -> None:
        if self.below_failed(rel) or self.name_too_long(rel):
            return
        try:
            keep = self.keeper.link(self.src(rel), display(self.dst(rel)))
            make_symlink(self.dst(rel), target, times if self.opts.preserve_times else None, keep)
        except OSError as exc:
            self.fail(self.dst(rel), f"{display(self.dst(rel))}: {cause(exc, 'cannot make symlink')}", rel)
            return
        self.symlinks += 1
        self.touched.add(parent(rel))
        self.emit(FileDone(rel, FileAction.SYMLINKED, 0, 0, 0, self.files_done, self.files))

    def hardlink(self, rel: str, leader: str, plan: TreePlan) -> None:
        if self.below_failed(rel) or self.name_too_long(rel):
            return
        if leader in self.failed_paths:
            self.fail(
                self.dst(rel),
                f"{display(self.dst(rel))}: not linked: the file it is a hard link of, "
                f"{display(self.src(leader))}, was not copied",
                rel,
            )
            return
        try:
            make_hardlink(self.dst(leader), self.dst(rel))
        except OSError as exc:
            if exc.errno not in LINK_UNSUPPORTED:
                self.fail(
                    self.dst(rel), f"{display(self.dst(rel))}: {cause(exc, 'cannot make hard link')}", rel
                )
                return
            self.notice(display(self.dst(rel)), "hard links are not possible here; copied as a separate file")
            try:
                size = os.stat(self.src(rel)).st_size
            except OSError as error:
                self.fail(self.src(rel), f"{display(self.src(rel))}: {cause(error, 'cannot read')}", rel)
                return
            self.copy(CopyFile(rel, size, CopyReason.NEW, size <= self.opts.chunk_size))
            self.commit()
            return
        self.linked += 1
        self.touched.add(parent(rel))
        self.file_done(rel, FileAction.LINKED, 0)

    def verify_done(
        self, copy: CopyFile, attrs: tuple[int | None, tuple[int, int] | None] | None = None
    ) -> bool:
        """Compare a done file with its source (--verify full, -c); False when it was copied again.
        A file found the same gets the source's ``attrs`` (mode, times) where they differ."""
        try:
            same = same_bytes(self.src(copy.path), self.dst(copy.path))
        except OSError as exc:
            path = exc.filename if isinstance(exc.filename, str) else self.src(copy.path)
            self.fail(path, f"{display(path)}: {cause(exc, 'cannot read to verify')}", copy.path)
            return True
        if same:
            if attrs is not None and attrs != (None, None):
                try:
                    apply_attrs(self.dst(copy.path), *attrs)
                except OSError as exc:
                    where = self.dst(copy.path)
                    self.fail(where, f"{display(where)}: {cause(exc, 'cannot set attributes')}", copy.path)
                    return True
                self.touched.add(parent(copy.path))
            self.file_done(copy.path, FileAction.VERIFIED, copy.size)
            return True
        if not self.compare:  # with -c a file whose bytes differ is simply copied, as by rsync -c
            self.notice(
                display(self.dst(copy.path)), "differs from the source (--verify full); copying it again"
            )
        self.copy(copy._replace(reason=CopyReason.DIFFERS))
        return False

    # -- regular files: one engine.Transfer each ---------------------------------------------

    def options_for(self, copy: CopyFile) -> Options:
        if not copy.batched:
            return self.opts
        chunk = 4096
        while chunk < copy.size:
            chunk *= 2
        chunk = min(chunk, self.opts.chunk_size)
        opts = self.small_options.get(chunk)
        if opts is None:
            opts = self.small_options[chunk] = self.opts._replace(chunk_size=chunk, restart=False)
        return opts

    def copy(self, copy: CopyFile) -> None:
        from ..engine import Transfer  # the copy loop (and its reader thread) only when something is copied

        rel = copy.path
        if self.below_failed(rel) or self.name_too_long(rel):
            return
        if not copy.batched:
            self.commit()  # the small files copied so far stay done even if this long copy is cut
        dst = self.dst(rel)
        if copy.discard_partial or copy.discard_journal:
            for path in [partial_path(dst)] * copy.discard_partial + [
                dst + ".onward-journal"
            ] * copy.discard_journal:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    self.fail(path, f"{display(path)}: {cause(exc, 'cannot remove')}", rel)
                    return
        relay = Relay(self, quiet=copy.batched)
        try:
            source = LocalSource.open(self.src(rel))
            try:
                if copy.batched:
                    sink: LocalSink = BatchSink.open(dst)
                    journal: LocalJournal | MemoryJournal = MemoryJournal(dst)
                else:
                    sink = LocalSink.open(dst)
                    journal = LocalJournal(dst)
            except BaseException:
                source.close()
                raise
            opts = self.options_for(copy)
            sink.extra = self.keeper.bind(source)
            Transfer(source, sink, journal, opts, [relay], throttle=self.throttle).run(lean=copy.batched)
        except (NoSpaceError, DurabilityError, Interrupted):
            raise  # these stop the whole tree: every later file would fail the same way
        except OnwardError as exc:
            self.current, self.kept = (0, 0), 0
            self.fail(exc.path or self.src(rel), exc.message, rel)
            return
        stamp = Stamp.of(source.stat)
        if copy.batched:
            pending = Pending(rel, sink.partial, dst, stamp, copy.size, relay.copied, relay.resumed_from)
            self.batch.add(pending, self.clock())
            self.current = (0, 0)
            self.waiting = (self.waiting[0] + copy.size, self.waiting[1] + relay.copied)
            if self.batch_due():
                self.commit()
            return
        self.kept = 0
        self.mark_done([(rel, stamp)])
        self.copied_files += 1
        self.file_done(rel, FileAction.COPIED, copy.size, relay.copied, relay.resumed_from)
        self.progress(force=True)

    def batch_due(self) -> bool:
        """A batch closes at the checkpoint interval (bytes or seconds), but never before it has
        taken STRETCH times as long as the last commit: syncing stays a fifth of the time at most,
        however slow the disk (or busy the file system) is."""
        batch, opts = self.batch, self.opts
        elapsed = self.clock() - (batch.started or 0)
        if elapsed < STRETCH * self.last_commit:
            return False
        return (
            batch.bytes >= opts.checkpoint_every(kept=False)  # a kill loses a batch
            or elapsed >= opts.checkpoint_seconds
            or len(batch.items) >= MAX_BATCH_FILES
        )

    def commit(self) -> None:
        """Make the batch durable under its names, then mark it done in the tree journal."""
        began = self.clock()
        results = self.batch.commit()
        if not results:
            return
        self.waiting = (0, 0)
        done = []
        for item, error in results:
            if error is None:
                done.append(item)
                continue
            reason = cause(error, "cannot rename into place")
            if error.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                reason = "is a directory in the destination but a file in the source; move it away and re-run"
            self.fail(item.final, f"{display(item.final)}: {reason}", item.path)
        self.mark_done([(item.path, item.stamp) for item in done])
        self.last_commit = self.clock() - began
        for item in done:
            self.touched.add(parent(item.path))
            self.copied_files += 1
            self.file_done(item.path, FileAction.COPIED, item.size, item.copied, item.resumed_from)

    def salvage(self) -> None:
        """On a stop: make the finished files of the batch durable and marked, if that still works."""
        with contextlib.suppress(OnwardError, KeyboardInterrupt, OSError):
            self.commit()

    def interrupted(self) -> Interrupted:
        """What is kept: the files done, and what the journal of the file in flight holds."""
        done, total = self.bytes_done + self.kept, self.total
        return Interrupted(
            f"{display(self.dst_root)}: interrupted after {self.files_done} of {self.files} files "
            f"({format_size(done)} of {format_size(total)} kept); run the same command again to resume",
            self.dst_root,
            done,
            total,
        )


class Relay:
    """Listens to one file's ``Transfer``: progress becomes the tree's, the rest is passed on."""

    def __init__(self, tree: TreeEntries, *, quiet: bool) -> None:
        self.tree, self.quiet = tree, quiet  # quiet: a batched file's checkpoint means nothing yet
        self.resumed_from = 0
        self.copied = 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, Progress):
            self.copied = event.copied
            self.tree.current = (event.done, event.copied)
            self.tree.progress()
        elif isinstance(event, Start):
            self.resumed_from = event.resumed_from
            self.tree.current = (event.resumed_from, 0)
            if not self.quiet:
                self.tree.kept = event.resumed_from
        elif isinstance(event, Retry | Notice) or (isinstance(event, Checkpoint) and not self.quiet):
            if isinstance(event, Checkpoint):
                self.tree.kept = event.committed
            self.tree.emit(event)

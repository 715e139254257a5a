"""``onward.copy_tree(src, dst)``: a resumable copy of a directory tree.

Where the tree lands follows rsync's trailing-slash rule: ``SRC`` makes
``DST/NAME_OF_SRC``, ``SRC/`` puts SRC's contents into ``DST``, so running the
same command again always resumes the same copy. One run: list both trees
(``endpoints.localtree``), let ``core.tree.plan_tree`` decide, then carry the
plan out. Every regular file goes through ``engine.Transfer``, the one copy
loop: big files with their own chunk journal beside them (so the file in flight
resumes from its last checkpoint), files of at most one chunk in one pass each
(``Transfer.run(lean=True)``), in batches made durable together
(``endpoints.batch``). The tree journal (``core.treejournal``) marks files done
only once their data, rename and directory entry are durable. A failed entry
does not stop the tree: the rest is copied and ``PartialCopyError`` (exit 23)
lists the failures at the end.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from .core.filters import Filter, Rule
from .core.journal import DecodeError, Garbled
from .core.throttle import paced
from .core.tree import CopyFile, DestTree, MakeLink, SourceTree, TreePlan, dir_changes, parent, plan_tree
from .core.treejournal import (
    Counts,
    Stamp,
    TreeDecoded,
    TreeHeader,
    decode_tree,
    encode_counts,
    encode_done,
    encode_tree_start,
)
from .endpoints.batch import Batch, BatchSink, MemoryJournal, Pending, Syncer
from .endpoints.local import PARTIAL_SUFFIX, LocalJournal, LocalSink, LocalSource, fsync_dir, partial_path
from .endpoints.localtree import (
    TREE_JOURNAL,
    TreeLock,
    apply_attrs,
    cause,
    display,
    make_dir,
    make_hardlink,
    make_symlink,
    remove_entry,
    remove_working_files,
    same_bytes,
    scan_destination,
    scan_source,
)
from .endpoints.metadata import Keeper, wanted
from .errors import (
    DestinationError,
    DurabilityError,
    Interrupted,
    JournalError,
    NoSpaceError,
    OnwardError,
    PartialCopyError,
    SourceError,
    UsageError,
    from_oserror,
)
from .events import (
    Checkpoint,
    Event,
    FileDone,
    FileFailed,
    Listener,
    Notice,
    Progress,
    Retry,
    Start,
    TreeDone,
    TreeProgress,
    TreeResult,
    TreeStart,
    dispatch,
)
from .options import Options
from .units import format_size

__all__ = ["copy_tree", "resolve_tree", "tree_roots"]

StrPath = str | os.PathLike[str]
MAX_BATCH_FILES = 65536
LINK_UNSUPPORTED = frozenset({errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS})
PROGRESS_EVERY = 0.1  # seconds between TreeProgress events (and at the end of every big file)
STRETCH = 4  # a batch lasts at least this many times its predecessor's commit (see batch_due)


def tree_roots(src: str, dst: str) -> tuple[str, str]:
    """(source root, destination root), both absolute, by rsync's rule: ``SRC/`` (or ``.``)
    copies SRC's contents into DST; ``SRC`` copies SRC itself, as ``DST/NAME_OF_SRC``."""
    name = os.path.basename(src.rstrip("/")) if src.strip("/") else ""
    contents = src.endswith("/") or name in ("", ".", "..")
    src_root, dst_abs = os.path.abspath(src), os.path.abspath(dst)
    return src_root, dst_abs if contents else os.path.join(dst_abs, name)


def copy_tree(
    src: StrPath,
    dst: StrPath,
    *,
    listeners: Sequence[Listener] = (),
    delete: bool = False,
    follow_symlinks: bool = False,
    compare_content: bool = False,
    rules: Sequence[Rule] = (),
    **options: Any,
) -> TreeResult:
    """Copy the directory tree ``src`` into ``dst`` (rsync's trailing-slash rule), resuming an
    unfinished copy of the same tree. ``delete`` removes destination entries the source does
    not have (``--delete``); ``follow_symlinks`` copies what symlinks point to (``-L``);
    ``compare_content`` judges a destination file of the source's size by its bytes, not its
    size and time (``-c``, as rsync's ``--checksum``); ``rules`` are rsync's include/exclude
    rules (``core.filters``), first match wins. Options
    are the fields of ``Options``; listeners get every event, the tree's included.

    Returns a ``TreeResult``; raises ``PartialCopyError`` (exit 23) when some entries failed
    and everything else was copied, ``Interrupted`` on Ctrl-C, another ``OnwardError`` when
    the tree as a whole cannot be copied.
    """
    opts = Options.build(**options)
    src_root, dst_root, keep = resolve_tree(src, dst, opts, rules)
    return TreeCopy(
        src_root,
        dst_root,
        opts,
        listeners,
        delete=delete,
        follow=follow_symlinks,
        compare=compare_content,
        rules=keep,
    ).run()


def resolve_tree(
    src: StrPath, dst: StrPath, opts: Options, rules: Sequence[Rule], *, make: bool = True
) -> tuple[str, str, Filter | None]:
    """(source root, destination root, the rules as a filter) of ``copy -r SRC DST``, after
    refusing what must not be copied; with ``make``, the destination root is made."""
    if opts.checksum:
        raise UsageError("--expect-digest checks one file; it cannot be used with -r")
    src_path, dst_path = os.fspath(src), os.fspath(dst)
    if not src_path:
        raise SourceError("source path is empty")
    if not dst_path:
        raise DestinationError("destination path is empty")
    if "://" in src_path:
        from .core.http import looks_like_url

        if looks_like_url(src_path):
            raise UsageError(f"{src_path}: a URL cannot be copied recursively; -r copies local directories")
    src_root, dst_root = tree_roots(src_path, dst_path)
    prepare_roots(src_path, src_root, dst_path, dst_root, make=make)
    # Anchored rules see the source's own name first when the tree lands as DST/NAME (rsync's rule).
    named = dst_root != os.path.abspath(dst_path)
    keep = Filter(rules, os.path.basename(dst_root) + "/" if named else "") if rules else None
    return src_root, dst_root, keep


def prepare_roots(src: str, src_root: str, dst: str, dst_root: str, *, make: bool = True) -> None:
    """Refuse what must not be copied, then make the destination root (and, for ``SRC DST``,
    DST itself when only it is missing, as rsync does); without ``make`` only refuse."""
    try:
        os.stat(src_root)
    except OSError as exc:
        raise from_oserror(exc, src, "cannot read source", source=True) from None
    if not os.path.isdir(src_root):
        raise SourceError(f"{display(src)}: is not a directory; -r copies directory trees", src)
    real_src, real_dst = os.path.realpath(src_root), os.path.realpath(dst_root)
    if real_src == real_dst:
        raise DestinationError(f"{display(src)} and {display(dst_root)} are the same directory", dst_root)
    if real_dst.startswith(real_src.rstrip("/") + "/"):
        raise DestinationError(
            f"{display(dst_root)}: is inside the source tree {display(src_root)}; "
            "a copy into itself would never end, choose a destination outside it",
            dst_root,
        )
    if real_src.startswith(real_dst.rstrip("/") + "/"):
        raise DestinationError(
            f"{display(src_root)}: is inside the destination {display(dst_root)}; "
            "choose a destination outside the source",
            dst_root,
        )
    for directory in dict.fromkeys([os.path.abspath(dst), dst_root]):
        if os.path.isdir(directory):
            continue
        if os.path.lexists(directory):
            raise DestinationError(
                f"{display(directory)}: is not a directory; move it away or choose another destination",
                directory,
            )
        up = os.path.dirname(directory)
        if not os.path.isdir(up) and (make or up != os.path.abspath(dst)):
            raise DestinationError(f"{display(up)}: destination directory does not exist", up)
        if not make:
            continue
        try:
            # The root gets its source's bits and times at the end; DST itself is an ordinary mkdir.
            os.mkdir(directory, 0o700 if directory == dst_root else 0o777)
        except OSError as exc:
            raise from_oserror(exc, directory, "cannot create directory", source=False) from None
        fsync_dir(directory, "creating the destination directory")


class TreeCopy:
    """One run of a tree copy; ``run()`` once."""

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

    # -- reporting -----------------------------------------------------------------------

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

    def file_done(self, rel: str, action: str, size: int, copied: int = 0, resumed_from: int = 0) -> None:
        if action in ("copied", "linked", "verified"):
            self.files_done += 1
            self.bytes_done += size if action != "linked" else 0
        self.copied += copied
        self.current = (0, 0)
        self.emit(FileDone(rel, action, size, copied, resumed_from, self.files_done, self.files))
        self.progress()

    def src(self, rel: str) -> str:
        return self.src_prefix + rel if rel else self.src_root

    def dst(self, rel: str) -> str:
        return self.dst_prefix + rel if rel else self.dst_root

    # -- the run -------------------------------------------------------------------------

    def run(self) -> TreeResult:
        started = self.clock()
        lock = TreeLock(self.dst_root)
        try:
            source, plan = self.run_locked()
        except (KeyboardInterrupt, Interrupted):
            self.salvage()
            raise self.interrupted() from None
        except NoSpaceError:
            self.salvage()
            raise
        finally:
            self.syncer.close()
            self.journal.close()
            lock.close()
        result = TreeResult(
            source=self.src_root,
            destination=self.dst_root,
            files=self.files,
            bytes=self.total,
            copied_files=self.copied_files,
            copied=self.copied,
            unchanged_files=plan.unchanged_files,
            linked=self.linked,
            symlinks=self.symlinks,
            dirs_made=self.dirs_made,
            deleted=self.deleted,
            extras=len(plan.extras),
            skipped=len(plan.skipped) + len(source.skipped),
            failed=tuple(self.failures),
            duration=self.clock() - started,
        )
        self.emit(TreeDone(result))
        if self.failures:
            count = len(self.failures)
            raise PartialCopyError(
                f"{display(self.dst_root)}: {count} {'entry' if count == 1 else 'entries'} could not be "
                f"copied (listed above); everything else is copied. Fix the causes and run the same "
                "command again: only what failed is copied then",
                self.dst_root,
                tuple(self.failures),
            )
        return result

    def run_locked(self) -> tuple[SourceTree, TreePlan]:
        with contextlib.suppress(OSError, ValueError):
            self.name_max = os.pathconf(self.dst_root, "PC_NAME_MAX")
        loaded = self.load_journal()
        try:
            source = scan_source(self.src_root, follow=self.follow, avoid=self.avoid(), rules=self.rules)
        except OSError as exc:  # the root itself, gone or changed since it was checked
            raise from_oserror(exc, self.src_root, "cannot read source", source=True) from None
        try:
            dest = scan_destination(self.dst_root, source, self.rules)
        except OSError as exc:
            raise from_oserror(exc, self.dst_root, "cannot read destination", source=False) from None
        plan = plan_tree(
            source,
            dest,
            loaded.done if loaded is not None else {},
            source_root=self.src_root,
            small=self.opts.chunk_size,
            delete=self.delete,
            preserve_mode=self.opts.preserve_mode,
            preserve_times=self.opts.preserve_times,
            verify_full=self.opts.verify == "full",
            compare_content=self.compare,
            restart=self.opts.restart,
        )
        self.files, self.total = plan.files, plan.bytes
        self.files_done, self.bytes_done = plan.unchanged_files, plan.unchanged_bytes
        self.emit(TreeStart(self.src_root, self.dst_root, plan.files, plan.bytes, *self.current_done()))
        self.report(source, plan)
        if not plan.idle or loaded is not None:
            self.carry_out(plan)
        self.finish(source, dest, plan)
        self.progress(force=True)
        return source, plan

    def current_done(self) -> tuple[int, int]:
        return self.files_done, self.bytes_done

    def avoid(self) -> set[tuple[int, int]]:
        st = os.stat(self.dst_root)
        return {(st.st_dev, st.st_ino)}

    def report(self, source: SourceTree, plan: TreePlan) -> None:
        for rel, why in source.problems:
            self.fail(self.src(rel), f"{display(self.src(rel))}: {why}", rel)
        for rel, why in [*source.skipped, *plan.skipped]:
            # The notice is about the destination entry that is not made; the message names the source.
            self.notice(display(self.dst(rel)), f"not copied: {display(self.src(rel))} {why}")
        for conflict in plan.conflicts:
            self.fail(
                self.dst(conflict.path),
                f"{display(self.dst(conflict.path))}: {conflict.message}",
                conflict.path,
            )
        for rel in plan.extras:
            self.notice(display(self.dst(rel)), "is not in the source; kept (--delete would remove it)")

    # -- the tree journal ------------------------------------------------------------------

    def load_journal(self) -> TreeDecoded | None:
        if self.opts.restart:
            self.journal.remove()
            return None
        raw = self.journal.read()
        if raw is None:
            return None
        try:
            loaded = decode_tree(raw)
        except Garbled as exc:  # nothing in it to trust, nothing a human must decide: start over
            aside = self.journal.set_aside()
            self.notice(
                display(self.journal.name),
                f"journal unreadable ({exc}), moved to {display(aside)}; checking every file",
            )
            return None
        except DecodeError as exc:
            raise JournalError(
                f"{self.journal.name}: {exc}; move it away, or re-run with --restart to start over",
                self.journal.name,
            ) from None
        header = loaded.header
        if header.destination != self.dst_root:
            raise JournalError(
                f"{self.journal.name}: journal belongs to a copy to {display(header.destination)}; "
                "move it away, or re-run with --restart to start over",
                self.journal.name,
            )
        if header.source != self.src_root:
            raise DestinationError(
                f"{display(self.dst_root)}: holds an unfinished copy of {display(header.source)}; re-run "
                "that copy to finish it, or use --restart to discard it",
                self.dst_root,
            )
        self.have_journal = True
        if header.follow_symlinks != self.follow:
            self.notice(display(self.journal.name), "-L differs from the unfinished run; checking every file")
            loaded.done.clear()
            self.rewrite(loaded)
        elif loaded.damaged_tail:
            self.notice(
                display(self.journal.name),
                f"journal tail damaged: ignored its last {loaded.damaged_tail} bytes",
            )
            self.rewrite(loaded)
        return loaded

    def header(self) -> TreeHeader:
        return TreeHeader(self.src_root, self.dst_root, self.follow, time.time())

    def rewrite(self, loaded: TreeDecoded) -> None:
        records = b"".join(encode_done(path, stamp) for path, stamp in loaded.done.items())
        self.journal.create(encode_tree_start(loaded.header._replace(follow_symlinks=self.follow)) + records)

    def open_journal(self, plan: TreePlan) -> None:
        counts = encode_counts(Counts(plan.files, plan.bytes, plan.unchanged_files, plan.unchanged_bytes))
        if not self.have_journal:
            self.journal.create(encode_tree_start(self.header()) + counts)
            self.have_journal = True
        else:
            self.journal.append(counts)

    def mark_done(self, records: Sequence[tuple[str, Stamp]]) -> None:
        if records:
            self.journal.append(b"".join(encode_done(path, stamp) for path, stamp in records))

    # -- carrying the plan out -------------------------------------------------------------

    def carry_out(self, plan: TreePlan) -> None:
        if not plan.idle:
            self.open_journal(plan)
        for rel in plan.removals:
            self.remove(rel, rel in plan.deleted)
        for rel in plan.stale:
            try:
                if remove_working_files(self.dst(rel)):
                    self.touched.add(parent(rel))
            except OSError as exc:
                where = display(partial_path(self.dst(rel)))
                self.fail(self.dst(rel), f"{where}: {cause(exc, 'cannot remove an unfinished copy')}", rel)
        self.unlock_dirs(plan)
        for rel in plan.mkdirs:
            if self.below_failed(rel):
                continue
            try:
                make_dir(self.dst(rel))
            except OSError as exc:
                self.failed_dirs.add(rel)
                self.fail(
                    self.dst(rel), f"{display(self.dst(rel))}: {cause(exc, 'cannot create directory')}", rel
                )
                continue
            self.dirs_made += 1
        made = {self.dst(parent(rel)) for rel in plan.mkdirs if rel not in self.failed_dirs}
        # New directories are durable in their parents before anything in them can be marked done.
        self.syncer.flush_dirs(sorted(d for d in made if os.path.isdir(d)), "making directories")
        for rel, mode in plan.modes:
            try:
                os.chmod(self.dst(rel), mode)
            except OSError as exc:
                self.fail(
                    self.dst(rel), f"{display(self.dst(rel))}: {cause(exc, 'cannot set permissions')}", rel
                )
                continue
            self.emit(FileDone(rel, "updated", 0, 0, 0, self.files_done, self.files))
        for link in plan.symlinks:
            self.symlink(link.path, link.target, (link.atime_ns, link.mtime_ns))
        links = list(plan.links)
        for copy in plan.verify:
            if not self.verify_done(
                copy, plan.attrs.get(copy.path)
            ):  # copied again: its hard links must follow the new copy
                links += [MakeLink(path, copy.path) for path in plan.followers.get(copy.path, [])]
        for copy in plan.copies:
            self.copy(copy)
        self.commit()
        for hard in links:
            self.hardlink(hard.path, hard.leader, plan)
        self.commit()
        if self.touched:
            self.syncer.flush(
                {self.dst(d) for d in self.touched if not self.below_failed(d)}, "making entries"
            )

    def below_failed(self, rel: str) -> bool:
        if not self.failed_dirs:
            return False
        while rel:
            rel = parent(rel)
            if rel in self.failed_dirs:
                return True
        return False

    def unlock_dirs(self, plan: TreePlan) -> None:
        """Destination directories onward must write into get owner rwx until the final pass
        gives them their source's bits (a read-only directory of an earlier run, say)."""
        for rel in plan.dirs:
            try:
                st = os.lstat(self.dst(rel))
            except OSError:
                continue
            if (st.st_mode & 0o700) != 0o700 and os.path.isdir(self.dst(rel)):
                with contextlib.suppress(OSError):  # else writing into it fails, naming it
                    os.chmod(self.dst(rel), (st.st_mode & 0o7777) | 0o700)

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
            self.emit(FileDone(rel, "deleted", 0, 0, 0, self.files_done, self.files))

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
        self.emit(FileDone(rel, "symlinked", 0, 0, 0, self.files_done, self.files))

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
            self.copy(CopyFile(rel, size, "new", size <= self.opts.chunk_size))
            self.commit()
            return
        self.linked += 1
        self.touched.add(parent(rel))
        self.file_done(rel, "linked", 0)

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
            self.file_done(copy.path, "verified", copy.size)
            return True
        if not self.compare:  # with -c a file whose bytes differ is simply copied, as by rsync -c
            self.notice(
                display(self.dst(copy.path)), "differs from the source (--verify full); copying it again"
            )
        self.copy(copy._replace(reason="differs"))
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
        from .engine import Transfer  # the copy loop (and its reader thread) only when something is copied

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
        self.file_done(rel, "copied", copy.size, relay.copied, relay.resumed_from)
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
            self.file_done(item.path, "copied", item.size, item.copied, item.resumed_from)

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

    # -- the end: journal, then directory metadata -------------------------------------------

    def finish(self, source: SourceTree, dest: DestTree, plan: TreePlan) -> None:
        if self.have_journal and not self.failures:
            self.journal.remove()
            fsync_dir(self.journal.name, "removing the tree journal")
        changed = False
        for rel in plan.dirs:
            if rel in self.failed_dirs or self.below_failed(rel):
                continue
            node = source.entries[rel] if rel else source.root
            path = self.dst(rel)
            try:
                self.keeper.apply_path(self.src(rel), path, follow=self.follow or not rel)
            except OSError as exc:
                self.fail(path, f"{display(path)}: {cause(exc, 'cannot set owner and attributes')}")
                continue
            if plan.idle and not self.have_journal:
                found = dest.entries.get(rel) if rel else dest.root
                mode, mtime_ns = (found.mode, found.mtime_ns) if found is not None else (0, 0)
            else:
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                mode, mtime_ns = st.st_mode, st.st_mtime_ns
            new_mode, new_times = dir_changes(
                node,
                mode,
                mtime_ns,
                preserve_mode=self.opts.preserve_mode,
                preserve_times=self.opts.preserve_times,
            )
            if new_mode is None and new_times is None:
                continue
            try:
                apply_attrs(path, new_mode, new_times)
            except OSError as exc:
                self.fail(
                    path, f"{display(path)}: {cause(exc, 'cannot set directory permissions and times')}"
                )
                continue
            changed = True
        if changed:
            self.syncer.flush([self.dst_root], "setting directory times")


class Relay:
    """Listens to one file's ``Transfer``: progress becomes the tree's, the rest is passed on."""

    def __init__(self, tree: TreeCopy, *, quiet: bool) -> None:
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

"""One run of a directory-tree copy: list both trees, plan, carry the plan out in order.

``TreeCopy.run`` lists the source and the destination (``endpoints.localtree``), lets
``core.tree.plan_tree`` decide, then removes, makes directories, fixes modes, makes
symlinks, compares, copies and links (``treeentries.TreeEntries``), and at the end gives
directories their source's bits and times. The tree journal (``core.treejournal``) marks
files done only once their data, rename and directory entry are durable.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping

from ..core.journal import DecodeError, Garbled
from ..core.tree import DestTree, MakeLink, SourceTree, TreePlan, dir_changes, parent, plan_tree
from ..core.treejournal import (
    Counts,
    Stamp,
    TreeDecoded,
    TreeHeader,
    decode_tree,
    encode_counts,
    encode_done,
    encode_tree_start,
)
from ..endpoints.local import fsync_dir, partial_path
from ..endpoints.localtree import (
    TreeLock,
    apply_attrs,
    cause,
    display,
    make_dir,
    remove_working_files,
    scan_destination,
    scan_source,
)
from ..errors import DestinationError, Interrupted, JournalError, NoSpaceError, PartialCopyError, from_oserror
from ..events import FileAction, FileDone, TreeDone, TreeResult, TreeStart
from ..options import Options
from .treeentries import TreeEntries

__all__ = ["TreeCopy", "plan_run"]


def plan_run(
    source: SourceTree,
    dest: DestTree,
    done: Mapping[str, Stamp],
    opts: Options,
    *,
    source_root: str,
    delete: bool,
    compare: bool,
) -> TreePlan:
    """``core.tree.plan_tree`` with a run's options: a real run and a dry run plan alike."""
    return plan_tree(
        source,
        dest,
        done,
        source_root=source_root,
        small=opts.chunk_size,
        delete=delete,
        preserve_mode=opts.preserve_mode,
        preserve_times=opts.preserve_times,
        verify_full=opts.verify == "full",
        compare_content=compare,
        restart=opts.restart,
    )


class TreeCopy(TreeEntries):
    """One run of a tree copy; ``run()`` once."""

    # -- the run -----------------------------------------------------------------------------

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
        done = loaded.done if loaded is not None else {}
        plan = plan_run(
            source, dest, done, self.opts, source_root=self.src_root, delete=self.delete, compare=self.compare
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

    # -- the tree journal --------------------------------------------------------------------

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

    # -- carrying the plan out ---------------------------------------------------------------

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
            self.emit(FileDone(rel, FileAction.UPDATED, 0, 0, 0, self.files_done, self.files))
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

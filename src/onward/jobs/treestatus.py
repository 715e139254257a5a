"""Unfinished tree copies for ``onward status`` and ``onward clean``: one entry per tree.

A tree copy in progress is its tree journal (``DST/onward-tree.onward-journal``)
plus the file journals and partials of the files in flight below DST. ``status``
shows it as one entry with files and bytes done (DONE records, plus the chunks
the file journals below it hold); ``clean`` removes all of it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from ..core.journal import DecodeError, decode
from ..core.plan import without
from ..core.treejournal import decode_tree
from ..endpoints.local import JOURNAL_SUFFIX, PARTIAL_SUFFIX
from ..endpoints.localtree import TREE_JOURNAL, TreeLock, remove_working_files, working_base
from ..errors import from_oserror
from .status import Unfinished

__all__ = ["inside", "remove_tree", "unfinished_trees"]


def inside(path: str, roots: list[str]) -> bool:
    """Whether ``path`` is one of ``roots`` or lies below one."""
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def _tree_roots(root: str) -> Iterator[str]:
    """Directories at, above or below ``root`` that hold a tree journal."""
    up = os.path.abspath(root)
    while True:
        if os.path.isfile(os.path.join(up, TREE_JOURNAL)):
            yield up
            return
        if up == os.path.dirname(up):
            break
        up = os.path.dirname(up)
    if not os.path.isdir(root):
        return
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        if TREE_JOURNAL in files:
            yield os.path.abspath(directory)
            dirs.clear()  # its insides belong to it


def _in_flight(tree: str) -> tuple[int, list[str]]:
    """Bytes committed by the file journals below ``tree``, and every working file there."""
    committed, working = 0, []
    for directory, dirs, files in os.walk(tree):
        dirs.sort()
        for name in files:
            base = working_base(name)
            if base is None or (directory == tree and name.startswith(TREE_JOURNAL)):
                continue
            path = os.path.join(directory, name)
            working.append(path)
            if not name.endswith(JOURNAL_SUFFIX):
                continue
            try:
                with open(path, "rb") as fh:
                    loaded = decode(fh.read())
                present = os.stat(os.path.join(directory, base + PARTIAL_SUFFIX)).st_size
            except (OSError, DecodeError):
                continue
            plan = loaded.header.plan
            committed += plan.committed_bytes(without(loaded.chunks, plan.beyond(loaded.chunks, present)))
    return committed, working


def _describe(tree: str) -> Unfinished:
    journal = os.path.join(tree, TREE_JOURNAL)
    committed, working = _in_flight(tree)
    times = [os.stat(p).st_mtime for p in [journal, *working] if os.path.exists(p)]
    found = Unfinished(
        destination=tree,
        source=None,
        size=None,
        done=0,
        last_activity=max(times, default=0.0),
        journal=journal,
        partial=None,
        tree=True,
    )
    try:
        with open(journal, "rb") as fh:
            loaded = decode_tree(fh.read())
    except (OSError, DecodeError) as exc:
        return found._replace(problem=f"tree journal unreadable: {exc}")
    progress = loaded.progress
    if progress is None:
        return found._replace(source=loaded.header.source)
    files_done, files, bytes_done, size = progress
    return found._replace(
        source=loaded.header.source,
        size=size,
        done=min(bytes_done + committed, size),
        files=files,
        files_done=files_done,
    )


def unfinished_trees(root: str) -> list[Unfinished]:
    return [_describe(tree) for tree in _tree_roots(root)]


def remove_tree(item: Unfinished) -> None:
    """Delete an unfinished tree copy's journal and every working file below it (not the files
    already copied); refuses while a copy is running into it."""
    lock = TreeLock(item.destination)
    try:
        _, working = _in_flight(item.destination)
        for path in working:
            name = working_base(os.path.basename(path))
            if name is not None:
                remove_working_files(os.path.join(os.path.dirname(path), name))
        journal = os.path.join(item.destination, TREE_JOURNAL)
        for leftover in (journal, f"{journal}.tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
    except OSError as exc:
        raise from_oserror(exc, exc.filename or item.destination, "cannot remove", source=False) from None
    finally:
        lock.close()

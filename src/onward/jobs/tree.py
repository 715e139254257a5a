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

import os
from collections.abc import Sequence
from typing import Any

from ..core.filters import Filter, Rule
from ..endpoints.local import fsync_dir
from ..endpoints.localtree import display
from ..errors import DestinationError, SourceError, UsageError, from_oserror
from ..events import Listener, TreeResult
from ..options import Options
from .treecopy import TreeCopy

__all__ = ["copy_tree", "resolve_tree", "tree_roots"]

StrPath = str | os.PathLike[str]


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
        from ..core.http import looks_like_url

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

"""``onward copy --dry-run``: what a copy would do, found by reading only.

No file or directory is made, changed, locked or removed, and no request is sent: a
file copy reads the source's identity and the journal beside the destination; a tree
lists both trees and plans them with the same ``core.tree.plan_tree`` a real run uses;
a download or an upload is described from its URL and any journal it left. What a
server would answer (a changed file, a name from Content-Disposition) is not asked.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import NamedTuple

from ..core.filters import Filter
from ..core.http import looks_like_url, name_from_url, redact_url
from ..core.identity import matches
from ..core.journal import Decoded, DecodeError, decode
from ..core.tree import CopyReason, DestTree, TreePlan
from ..core.treejournal import Stamp, decode_tree
from ..endpoints.local import LocalSource, journal_path
from ..endpoints.localtree import TREE_JOURNAL, display, scan_destination, scan_source
from ..options import Options
from .api import resolve_destination
from .treecopy import plan_run

__all__ = ["Planned", "plan_copy", "plan_tree_copy"]


class Act(StrEnum):
    """What a run would do (a ``plan`` line's ``action``); the second group only in trees."""

    COPY = "copy"
    RESUME = "resume"
    DOWNLOAD = "download"
    UPLOAD = "upload"
    REFUSE = "refuse"

    MKDIR = "mkdir"
    LINK = "link"
    SYMLINK = "symlink"
    UPDATE = "update"
    COMPARE = "compare"
    DELETE = "delete"
    REPLACE = "replace"
    SKIP = "skip"
    CONFLICT = "conflict"
    KEEP = "keep"


class Planned(NamedTuple):
    """One thing a run would do, the ``path`` it concerns (a tree's relative to its roots),
    the bytes it would move."""

    action: Act
    path: str
    bytes: int = 0
    note: str = ""


def _journal(path: str) -> Decoded | str | None:
    """The file journal at ``path`` decoded, why it cannot be read, or None when there is none."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"its journal cannot be read ({exc.strerror})"
    try:
        return decode(raw)
    except DecodeError as exc:
        return f"its journal is unreadable ({exc})"


def plan_copy(src: str, dst: str, opts: Options) -> Planned:
    """What ``onward copy SRC DST`` would do with one file, a URL or an upload."""
    if looks_like_url(dst):
        return Planned(Act.UPLOAD, redact_url(dst), os.stat(src).st_size, f"of {src}")
    if looks_like_url(src):
        target = os.path.join(dst, name_from_url(src) or "?") if os.path.isdir(dst) else dst
        found = None if opts.restart else _journal(journal_path(target))
        note = f"from {redact_url(src)}"
        if isinstance(found, Decoded) and found.header.source == redact_url(src):
            done = found.header.plan.committed_bytes(found.chunks)
            note += f", resuming at {done} bytes if the server still has the same version"
        return Planned(Act.DOWNLOAD, target, -1, note)
    target = os.path.abspath(resolve_destination(src, dst))
    source = LocalSource.open(src)
    try:
        identity = source.identity()
    finally:
        source.close()
    size = identity.size
    found = None if opts.restart else _journal(journal_path(target))
    if found is None:
        return Planned(Act.COPY, target, size, "replacing the file there" if os.path.exists(target) else "")
    if isinstance(found, str):
        return Planned(Act.REFUSE, target, 0, f"{found}; --restart discards it")
    if found.header.source != source.name:
        return Planned(Act.REFUSE, target, 0, f"holds an unfinished copy of {found.header.source}")
    if not matches(found.header.identity, identity):
        return Planned(Act.RESUME, target, size, "the source changed: committed chunks are checked again")
    done = found.header.plan.committed_bytes(found.chunks)
    return Planned(Act.RESUME, target, size - done, f"at {done} of {size} bytes")


def plan_tree_copy(
    src_root: str,
    dst_root: str,
    opts: Options,
    *,
    follow: bool,
    delete: bool,
    compare: bool,
    rules: Filter | None,
) -> tuple[TreePlan, list[Planned]]:
    """The plan a run of ``copy -r`` would carry out, and it as a list of actions."""
    source = scan_source(src_root, follow=follow, rules=rules)
    done: Mapping[str, Stamp] = {}
    journal = os.path.join(dst_root, TREE_JOURNAL)
    if not opts.restart and os.path.exists(journal):
        with contextlib.suppress(OSError, DecodeError), open(journal, "rb") as fh:
            loaded = decode_tree(fh.read())
            if loaded.header.follow_symlinks == follow:
                done = loaded.done
    exists = os.path.isdir(dst_root)  # a root a real run would make is planned as empty
    dest = scan_destination(dst_root, source, rules) if exists else DestTree(source.root, {})
    plan = plan_run(source, dest, done, opts, source_root=src_root, delete=delete, compare=compare)
    return plan, actions_of(plan, source.skipped)


def actions_of(plan: TreePlan, skipped: Sequence[tuple[str, str]]) -> list[Planned]:
    deleted = set(plan.deleted)
    out = [Planned(Act.DELETE if p in deleted else Act.REPLACE, p) for p in plan.removals]
    out += [Planned(Act.MKDIR, p) for p in plan.mkdirs]
    out += [Planned(Act.COMPARE, c.path, c.size, "copied only if its bytes differ") for c in plan.verify]
    out += [
        Planned(Act.RESUME if c.reason is CopyReason.RESUME else Act.COPY, c.path, c.size, c.reason)
        for c in plan.copies
    ]
    out += [Planned(Act.LINK, link.path, 0, f"to {link.leader}") for link in plan.links]
    out += [Planned(Act.SYMLINK, s.path, 0, f"-> {s.target}") for s in plan.symlinks]
    out += [Planned(Act.UPDATE, p, 0, f"mode {mode:o}") for p, mode in plan.modes]
    out += [Planned(Act.SKIP, p, 0, why) for p, why in [*skipped, *plan.skipped]]
    out += [Planned(Act.CONFLICT, c.path, 0, c.message) for c in plan.conflicts]
    out += [Planned(Act.KEEP, p, 0, "not in the source (--delete would remove it)") for p in plan.extras]
    return out


def shown(item: Planned) -> str:
    """One action for people: ``ACTION PATH (SIZE; NOTE)``."""
    from ..units import format_size

    parts = [format_size(item.bytes)] if item.bytes > 0 else []
    parts += [item.note] if item.note else []
    return f"{item.action} {display(item.path)}" + (f" ({'; '.join(parts)})" if parts else "")

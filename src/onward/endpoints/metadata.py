"""Owner, group, extended attributes and POSIX ACLs of a source entry, carried to its copy
(``--preserve``). Permission bits and times stay with the sinks' ``apply_metadata``, which
calls ``Keeper.apply`` first: ``chown`` clears set-ID bits and file capabilities, so the
mode comes after it, and the times after everything that touches the inode.

A copy's metadata goes onto its partial (a file, the temporary name of a symlink) before
the rename that gives it its final name, so that name never shows the wrong owner; a
directory gets it at the end of its tree, with its permission bits.

What the destination refuses (ENOTSUP, EPERM, ...) is one notice per cause and run, never
a failure: the bytes are the copy, metadata is as much of it as the destination keeps.
ACLs travel as the raw ``system.posix_acl_*`` attributes, as the kernel stores them.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from ..events import Listener, Notice, dispatch

__all__ = ["ACLS", "Keeper", "keeper_for", "wanted"]

ACLS = ("system.posix_acl_access", "system.posix_acl_default")
# Attributes onward removes from a copy when its source lacks them: security.* labels are the
# policy's (SELinux gives each new file its own), system.* are the file system's.
OWN_NAMESPACES = ("user.", "trusted.")
# What the destination may say instead of keeping an attribute: a notice, not a failure.
REFUSALS = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM, errno.EACCES, errno.E2BIG, errno.EINVAL})
# What a source may say when it has no attributes to give: nothing to keep.
ABSENT = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENODATA})
LABELS = {"owner": "owner", "group": "group", "xattrs": "extended attributes", "acls": "ACLs"}

Target = int | str  # a partial's descriptor, or the path of a directory or a symlink


def wanted(given: Iterable[str] | None) -> frozenset[str]:
    """What to keep: as given, or by default owner and group for root (as ``cp -a`` and
    ``rsync -a``) and nothing more for anyone else."""
    if given is not None:
        return frozenset(given)
    return frozenset({"owner", "group"}) if os.geteuid() == 0 else frozenset()


class Described(Protocol):
    """A source as a sink sees it (``LocalSource``): its path and its last ``stat``."""

    name: str

    @property
    def stat(self) -> os.stat_result: ...


class Keeper:
    """Carries what ``keep`` names from source entries to their copies, for one run; each
    refusal is told once per cause through ``report(path, message)``."""

    def __init__(self, keep: frozenset[str], report: Callable[[str, str], None]) -> None:
        self.owner, self.group = "owner" in keep, "group" in keep
        self.xattrs, self.acls = "xattrs" in keep, "acls" in keep
        self.active = bool(keep)
        self.root = os.geteuid() == 0
        self.report = report
        self.told: set[tuple[str, int]] = set()

    def bind(self, source: Described) -> Callable[[int, str], None] | None:
        """The hook a sink runs on its partial (descriptor, destination) before the mode, or None."""
        if not self.active:
            return None
        return lambda fd, shown: self.apply(source.name, source.stat, fd, shown=shown)

    def link(self, source: str, shown: str) -> Callable[[str], None] | None:
        """The hook ``make_symlink`` runs on the symlink's temporary name, or None."""
        if not self.active:
            return None
        return lambda temp: self.apply(source, os.lstat(source), temp, shown=shown, follow=False)

    def apply_path(self, source: str, destination: str, *, follow: bool) -> None:
        """A directory (or any entry by path): the source's owner and attributes."""
        if self.active:
            st = os.stat(source) if follow else os.lstat(source)
            self.apply(source, st, destination, shown=destination, follow=follow)

    def apply(self, src: str, st: os.stat_result, dst: Target, *, shown: str, follow: bool = True) -> None:
        """Owner and group, then xattrs, then ACLs. Raises ``OSError`` for what is not a refusal."""
        self.chown(st, dst, shown)
        if not (self.xattrs or self.acls):
            return
        names, present = _names(src, follow), _names(dst, False)
        if self.xattrs:
            ours = [n for n in names if not n.startswith("system.")]
            self.copy_names(src, dst, ours, follow, shown, "xattrs")
            for name in present:
                if name.startswith(OWN_NAMESPACES) and name not in ours:
                    self.attempt("xattrs", shown, _remove, dst, name)
        if self.acls and not stat.S_ISLNK(st.st_mode):
            acls = ACLS if stat.S_ISDIR(st.st_mode) else ACLS[:1]
            self.copy_names(src, dst, [n for n in acls if n in names], follow, shown, "acls")
            for name in acls:  # none in the source: none in the copy (not even an inherited one)
                if name in present and name not in names:
                    self.attempt("acls", shown, _remove, dst, name)

    def chown(self, st: os.stat_result, dst: Target, shown: str) -> None:
        now = os.fstat(dst) if isinstance(dst, int) else os.lstat(dst)
        uid = st.st_uid if self.owner and st.st_uid != now.st_uid else -1
        gid = st.st_gid if self.group and st.st_gid != now.st_gid else -1
        if uid != -1 and not self.root:
            self.tell(
                "owner", errno.EPERM, shown, "only root can give a file to another user; the copy stays yours"
            )
            uid = -1
        if uid == -1 and gid == -1:
            return
        what = "owner" if uid != -1 else "group"
        if isinstance(dst, int):
            self.attempt(what, shown, os.fchown, dst, uid, gid)
        else:
            self.attempt(what, shown, os.lchown, dst, uid, gid)

    def copy_names(
        self, src: str, dst: Target, names: Sequence[str], follow: bool, shown: str, item: str
    ) -> None:
        for name in names:
            try:
                value = os.getxattr(src, name, follow_symlinks=follow)
            except OSError as exc:
                if exc.errno in ABSENT:
                    continue  # removed meanwhile
                raise
            self.attempt(item, shown, _set, dst, name, value)

    def attempt(self, item: str, shown: str, call: Callable[..., None], *args: object) -> None:
        try:
            call(*args)
        except OSError as exc:
            if exc.errno == errno.ENODATA and item in ("xattrs", "acls"):
                return  # a removal of what is not there
            if exc.errno not in REFUSALS:
                raise
            self.tell(item, exc.errno, shown, _why(item, exc.errno, self.root))

    def tell(self, item: str, code: int, shown: str, why: str) -> None:
        if (item, code) in self.told:
            return
        self.told.add((item, code))
        self.report(shown, f"{LABELS[item]} not kept: {why}; not said again for other files of this run")


def keeper_for(keep: Iterable[str] | None, listeners: Sequence[Listener]) -> Keeper:
    """A ``Keeper`` whose notices go to ``listeners`` as ``Notice`` events."""

    def report(path: str, message: str) -> None:
        for listener in listeners:
            dispatch(listener, Notice(path, message))

    return Keeper(wanted(keep), report)


def _why(item: str, code: int, root: bool) -> str:
    text = os.strerror(code)
    if code in (errno.EOPNOTSUPP, errno.ENOTSUP):
        return f"the destination's file system does not support them ({text})"
    if code in (errno.EPERM, errno.EACCES) and item == "group" and not root:
        return f"not permitted ({text}; a non-root user can give a file only to a group it belongs to)"
    if code in (errno.EPERM, errno.EACCES) and item in ("xattrs", "acls"):
        return f"not permitted ({text}; trusted.* and security.* need root, symlinks take no user.*)"
    return text


def _names(path: Target, follow: bool) -> list[str]:
    try:
        if isinstance(path, int):
            return os.listxattr(path)
        return os.listxattr(path, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno in ABSENT:
            return []
        raise


def _set(dst: Target, name: str, value: bytes) -> None:
    if isinstance(dst, int):
        os.setxattr(dst, name, value)
    else:
        os.setxattr(dst, name, value, follow_symlinks=False)


def _remove(dst: Target, name: str) -> None:
    if isinstance(dst, int):
        os.removexattr(dst, name)
    else:
        os.removexattr(dst, name, follow_symlinks=False)

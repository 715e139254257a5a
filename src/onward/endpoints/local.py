"""Local files: a source read with ``pread``, a partial beside the destination, a journal beside it.

For a destination ``DIR/NAME`` the partial copy is ``DIR/NAME.onward-partial``
and the journal ``DIR/NAME.onward-journal``: same directory, so the final
rename is atomic, and visible to ``ls`` so an unfinished copy is never a secret.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Callable
from typing import NoReturn

from ..core.identity import Identity
from ..core.journal import Promote, Seal
from ..errors import (
    DestinationError,
    DurabilityError,
    NoSpaceError,
    SourceError,
    from_oserror,
)
from . import Attributes
from .direct import DirectFile, mostly_cached
from .sealing import BOOT_ID, mount_id

__all__ = [
    "JOURNAL_SUFFIX",
    "PARTIAL_SUFFIX",
    "LocalSink",
    "LocalSource",
    "file_kind",
    "fsync_dir",
    "journal_path",
    "lock_or_refuse",
    "partial_path",
]

PARTIAL_SUFFIX = ".onward-partial"
JOURNAL_SUFFIX = ".onward-journal"


def partial_path(destination: str) -> str:
    return destination + PARTIAL_SUFFIX


def journal_path(destination: str) -> str:
    return destination + JOURNAL_SUFFIX


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages ("is a FIFO")."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def lock_or_refuse(fd: int, refused: Exception) -> None:
    """Take ``fd``'s exclusive lock without waiting; if another process holds it (or the lock
    cannot be taken at all), close ``fd`` and raise ``refused``: one writer at a time."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise refused from None


def fsync_dir(path: str, doing: str, *, directory: bool = False) -> None:
    """fsync the directory holding ``path`` (``directory``: ``path`` itself) so that a rename,
    a creation or an unlink in it is durable; ``doing`` names that step in the error."""
    if not directory:
        path = os.path.dirname(path) or "."
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise DurabilityError(
            f"{path}: fsync of the directory after {doing} failed: {os.strerror(exc.errno or 0)}; "
            "progress since the last checkpoint is not trusted, re-run to resume",
            path,
        ) from None


# Direct I/O for the source's reads and the partial's writes and read-backs (bench/onward_ablated.py
# turns each off to measure what it buys).
SOURCE_DIRECT = True
SINK_DIRECT = True
# Smaller sources are read through the page cache: a direct read would wait for the device even
# when the file is cached, which for many small files (a tree) costs more than it saves.
DIRECT_MIN = 1 << 20


class LocalSource:
    """A regular file, read by offset. Open it with ``LocalSource.open``."""

    connections = 1
    # Two buffers: with four a 2 GiB copy was no faster (2.76 s with two, 3.15 s with four,
    # interleaved) and a 256 MiB one took 9 ms more CPU, each buffer's first touch.
    readahead = 2
    recheck_on_change = True

    def __init__(self, name: str, fd: int, st: os.stat_result) -> None:
        self.name = name
        # Direct reads for a big file that is not in the page cache (no copy through it); a
        # cached one is read through the cache, as cp does, rather than from the device again.
        direct = SOURCE_DIRECT and st.st_size >= DIRECT_MIN and not mostly_cached(fd, st.st_size)
        self._io = DirectFile(fd, os.O_RDONLY, enabled=direct)
        self._st = st

    @classmethod
    def open(cls, path: str) -> LocalSource:
        try:
            st = os.stat(path)
            if stat.S_ISDIR(st.st_mode):
                raise SourceError(f"{path}: is a directory; use -r to copy a directory tree", path)
            if not stat.S_ISREG(st.st_mode):
                raise SourceError(
                    f"{path}: is {file_kind(st.st_mode)}; onward copies regular files only, "
                    "because a stream cannot be resumed",
                    path,
                )
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise from_oserror(exc, path, "cannot open source", source=True) from None
        source = cls(os.path.abspath(path), fd, os.fstat(fd))
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        return source

    @property
    def stat(self) -> os.stat_result:
        return self._st

    def identity(self) -> Identity:
        """Identity of whatever the path names now; follows a file replaced by rename."""
        try:
            st = os.stat(self.name)
            if (st.st_dev, st.st_ino) != (self._st.st_dev, self._st.st_ino):
                fd = os.open(self.name, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
                self._io.replace(fd, os.O_RDONLY)
                st = os.fstat(fd)
        except OSError as exc:
            raise from_oserror(exc, self.name, "cannot read source", source=True) from None
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(f"{self.name}: is now {file_kind(st.st_mode)}", self.name)
        self._st = st
        return Identity(
            "local",
            st.st_size,
            {"dev": st.st_dev, "ino": st.st_ino, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns},
        )

    def attributes(self) -> Attributes:
        st = self._st
        return Attributes(stat.S_IMODE(st.st_mode) & 0o777, (st.st_atime_ns, st.st_mtime_ns))

    def read_into(self, offset: int, buf: memoryview) -> int:
        try:
            return self._io.read(offset, buf)
        except OSError as exc:
            raise from_oserror(exc, self.name, "read", source=True) from None

    def in_hole(self, offset: int, length: int) -> bool:
        """Whether ``offset`` to ``offset + length`` lies wholly in a hole (one ``SEEK_DATA``):
        ``--sparse``'s test, asked only of a chunk that read as zeros."""
        return _data_from(self._io.fd, offset) >= offset + length

    def data_in(self, offset: int, length: int) -> list[tuple[int, int]] | None:
        """The data extents (start, end) within ``offset`` to ``offset + length``, or None when
        it is all data: one ``SEEK_HOLE`` for a chunk without holes, asked of every data chunk."""
        fd, end = self._io.fd, offset + length
        try:
            if os.lseek(fd, offset, os.SEEK_HOLE) >= end:
                return None
            spans, at = [], offset
            while (start := _data_from(fd, at)) < end:
                at = min(os.lseek(fd, start, os.SEEK_HOLE), end)
                spans.append((start, at))
        except OSError:
            return None  # changed under us (shrank), or cannot tell: written whole
        return spans

    def close(self) -> None:
        self._io.close()


def _data_from(fd: int, offset: int) -> int:
    """Where the first data at or after ``offset`` starts (``SEEK_DATA``); past the end: the end."""
    try:
        return os.lseek(fd, offset, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no data from there to the end of the file
            return max(offset, os.fstat(fd).st_size)
        return offset  # the file system cannot tell: assume data (the chunk is written)


class LocalSink:
    """The partial beside a local destination; locked so that two runs never share it.

    Chunks are written and read back with direct I/O (``direct.py``): the read-back after
    each sync then comes from the device, not the page cache.
    """

    direct_io = True
    can_read_back = True
    extra: Callable[[int, str], None] | None = None  # owner, xattrs, ACLs (endpoints.metadata)

    def __init__(self, name: str, fd: int, fresh: bool) -> None:
        self.name = name
        self.partial = partial_path(name)
        self._fd = fd
        self._io = DirectFile(fd, os.O_RDWR, enabled=self.direct_io and SINK_DIRECT)
        self._fresh = fresh
        self._poisoned: str | None = None
        self._mount = mount_id(fd)

    @classmethod
    def open(cls, destination: str) -> LocalSink:
        """Open (or create) and lock the partial. A partial this run creates is removed again at
        ``close`` if nothing was ever written to it (a refused copy leaves nothing behind); so a
        lock taken on a partial that was removed meanwhile is given up and the path opened again."""
        directory = os.path.dirname(destination) or "."
        if not os.path.isdir(directory):
            raise DestinationError(f"{directory}: destination directory does not exist", directory)
        for _ in range(3):
            sink = cls._open_locked(destination)
            if sink is not None:
                return sink
        raise DestinationError(
            f"{destination}: another onward keeps creating and removing its partial copy; re-run", destination
        )

    @classmethod
    def _open_locked(cls, destination: str) -> LocalSink | None:
        """The locked partial, or None when the path no longer names what was locked."""
        partial = partial_path(destination)
        fresh = False
        try:
            try:
                fd = os.open(partial, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                fresh = True
            except PermissionError:
                if not os.path.lexists(partial):
                    raise  # denied for another reason: report that, not the chmod's ENOENT
                # A crash after the source's read-only mode was applied, just before the rename.
                os.chmod(partial, 0o600)
                fd = os.open(partial, os.O_RDWR | os.O_CLOEXEC)
            st = os.fstat(fd)
        except OSError as exc:
            error = from_oserror(exc, partial, "cannot open partial copy", source=False)
            if isinstance(error, NoSpaceError):  # before the engine, which adds the advice later on
                error = NoSpaceError(f"{error.message}; free space (or inodes) and re-run", partial)
            raise error from None
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise DestinationError(f"{partial}: is {file_kind(st.st_mode)}, not a partial copy", partial)
        lock_or_refuse(
            fd,
            DestinationError(
                f"{destination}: another onward is copying to it right now; wait for it to finish",
                destination,
            ),
        )
        if not _names(partial, st):
            os.close(fd)
            return None
        return cls(destination, fd, fresh)

    def _fail(self, exc: OSError, doing: str) -> NoReturn:
        raise from_oserror(exc, self.partial, doing, source=False) from None

    def present(self) -> int | None:
        if self._fresh:
            return None
        return os.fstat(self._fd).st_size

    def reset(self) -> None:
        self.truncate(0)
        self._fresh = False

    def write(self, offset: int, data: memoryview) -> None:
        try:
            self._io.write(offset, data)
        except OSError as exc:
            self._fail(exc, "write")

    def read_into(self, offset: int, buf: memoryview) -> int:
        try:
            return self._io.read(offset, buf)
        except OSError as exc:
            self._fail(exc, "read back")

    def leave_hole(self, offset: int, length: int) -> bool:
        """Keep ``offset`` to ``offset + length`` a hole instead of writing its zeros: True when
        the partial holds no data there (it is then extended to cover it, so that it reads as
        zeros); False when it does (an earlier run's bytes): the zeros must be written."""
        end = offset + length
        try:
            size = os.fstat(self._fd).st_size
            if offset < size and _data_from(self._fd, offset) < min(end, size):
                return False
            if size < end:
                os.ftruncate(self._fd, end)
        except OSError as exc:
            self._fail(exc, "extend")
        return True

    def truncate(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
        except OSError as exc:
            self._fail(exc, "truncate")

    def sync(self) -> None:
        """fdatasync; after one failure every later call fails too (the kernel may have dropped pages)."""
        if self._poisoned is None:
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                self._poisoned = os.strerror(exc.errno or 0)
            else:
                if not self._io.bypasses_cache:  # so that the read-back still comes from the device
                    with contextlib.suppress(OSError):
                        os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)
                return
        raise DurabilityError(
            f"{self.partial}: fsync failed: {self._poisoned}; progress since the last checkpoint "
            "is not trusted, re-run to resume",
            self.partial,
        )

    def seal(self) -> Seal:
        """The partial as it is now: one ``fstat``, made right after each write (``core.trust``)."""
        st = os.fstat(self._fd)
        return Seal(st.st_ctime_ns, st.st_size, st.st_ino, self._mount, BOOT_ID)

    def token(self) -> Promote:
        st = os.fstat(self._fd)
        return Promote(st.st_dev, st.st_ino)

    def holds(self, token: Promote) -> bool:
        try:
            st = os.stat(self.name)
        except OSError:
            return False
        # A file system may come back from a power cut under another device number (loop
        # devices, device-mapper, USB disks are numbered as they appear): on the file system
        # the partial is on now, the inode decides.
        return st.st_ino == token.inode and st.st_dev in (token.device, os.fstat(self._fd).st_dev)

    def apply_metadata(self, mode: int | None, times_ns: tuple[int, int] | None) -> None:
        """The source's permission bits (``None``: what the umask gives a new file) and times."""
        try:
            if self.extra is not None:  # before the mode: chown clears set-ID bits
                self.extra(self._fd, self.name)
            if mode is None:
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o666 & ~umask
            os.fchmod(self._fd, mode)
            if times_ns is not None:
                os.utime(self._fd, ns=times_ns)
        except OSError as exc:
            self._fail(exc, "set permissions and times")

    def promote(self, mode: int | None, times_ns: tuple[int, int] | None) -> None:
        """chmod and utime, fsync, rename onto the final name, fsync the directory."""
        self.apply_metadata(mode, times_ns)
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._poisoned = os.strerror(exc.errno or 0)
            self.sync()
        if os.path.isdir(self.name) and not os.path.islink(self.name):
            raise DestinationError(f"{self.name}: is a directory; cannot replace it with a file", self.name)
        try:
            os.rename(self.partial, self.name)
        except OSError as exc:
            raise from_oserror(exc, self.name, "rename into place", source=False) from None
        self.settle()

    def settle(self) -> None:
        # A re-run after a crash between the rename and the journal's removal opened (created)
        # a new partial at the old name: it holds nothing the finished copy needs, drop it.
        try:
            st, mine = os.stat(self.partial), os.fstat(self._fd)
            if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino) and not self.holds(self.token()):
                os.unlink(self.partial)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._fail(exc, "remove the leftover partial")
        fsync_dir(self.name, "renaming the finished copy")

    def close(self) -> None:
        if self._fresh:  # created by this run, never reset or written: leave nothing new behind
            with contextlib.suppress(OSError):
                if _names(self.partial, os.fstat(self._fd)):
                    os.unlink(self.partial)
        self._io.close()


def _names(path: str, st: os.stat_result) -> bool:
    """Whether ``path`` names the file ``st`` describes (not one removed and created again)."""
    try:
        now = os.stat(path)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)

"""The journal file beside a local destination (``DIR/NAME.onward-journal``, docs/JOURNAL.md).

``create`` writes a new journal whole and durably (temporary file, fsync, rename, directory
fsync); ``note`` appends records without waiting for the disk; ``append`` appends and
fdatasyncs, so a record it returned from survives a crash.
"""

from __future__ import annotations

import contextlib
import os

from ..errors import DurabilityError, JournalError, from_oserror
from .local import fsync_dir, journal_path

__all__ = ["LocalJournal", "write_all"]


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte of ``data`` is written (a write may be short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class LocalJournal:
    """The journal file beside a local destination."""

    def __init__(self, destination: str) -> None:
        self.name = journal_path(destination)
        self._fd: int | None = None

    def _error(self, exc: OSError, doing: str) -> Exception:
        return from_oserror(exc, self.name, doing, source=False)

    def read(self) -> bytes | None:
        try:
            with open(self.name, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise JournalError(
                f"{self.name}: cannot read journal: {os.strerror(exc.errno or 0)}; "
                "re-run once it is readable, or with --restart to start over",
                self.name,
            ) from None

    def create(self, data: bytes) -> None:
        self.close()
        tmp = self.name + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.name)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise self._error(exc, "write journal") from None
        fsync_dir(self.name, "writing the journal")

    def note(self, data: bytes) -> None:
        """Append without waiting for the disk: records whose loss costs at most a read-back."""
        try:
            if self._fd is None:
                self._fd = os.open(self.name, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            write_all(self._fd, data)
        except OSError as exc:
            raise self._error(exc, "append to journal") from None

    def append(self, data: bytes) -> None:
        self.note(data)
        assert self._fd is not None
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            raise DurabilityError(
                f"{self.name}: fsync of the journal failed: {os.strerror(exc.errno or 0)}; re-run to resume",
                self.name,
            ) from None

    def set_aside(self) -> str:
        """Rename an unreadable journal to ``NAME.bad`` (replacing an older one); returns that name."""
        self.close()
        bad = self.name + ".bad"
        try:
            os.rename(self.name, bad)
        except OSError as exc:
            raise self._error(exc, "move the unreadable journal aside") from None
        fsync_dir(self.name, "moving the unreadable journal aside")
        return bad

    def remove(self) -> None:
        self.close()
        try:
            os.unlink(self.name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._error(exc, "remove journal") from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

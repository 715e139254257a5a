"""An upload's journal: in the user's state directory, locked for the run, naming its upload.

``UploadJournal`` keeps the journal of an upload (``endpoints.tus.UploadSink``) in
the user's state directory (``$XDG_STATE_HOME/onward/uploads``), named after the file
and the URL, locked for the run, with an UPLOAD record (docs/JOURNAL.md) naming the
upload. No record or name made here contains the URL's user name, password or secret
query values.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from ..core.journal import DecodeError, Upload, decode, encode_upload
from ..errors import DestinationError, JournalError, OnwardError
from .local import lock_or_refuse
from .localjournal import LocalJournal, write_all

if TYPE_CHECKING:
    from .tus import UploadSink

__all__ = ["JOURNAL_PREFIX", "LOCK_SUFFIX", "UploadJournal", "lock_state"]

JOURNAL_PREFIX = "upload-"
LOCK_SUFFIX = ".onward-lock"


class UploadJournal:
    """An upload's journal in the state directory, locked for the run.

    ``DIR/upload-KEY.onward-journal`` (the key names the file and the URL, see
    ``core.upload.state_key``), written by the rules of every journal (``LocalJournal``).
    Every rewrite carries the UPLOAD record of the upload the sink is using, if that upload
    was made for the file the new header describes; otherwise the upload is dropped.
    """

    def __init__(self, directory: str, key: str, sink: UploadSink) -> None:
        self._place(directory, key)
        self._sink = sink
        sink.record = self.record
        self._lock = -1
        self._append_fd = -1

    def _place(self, directory: str, key: str) -> None:
        """The journal's and its lock's paths: ``key`` in ``directory``."""
        self.directory = directory
        self._journal = LocalJournal(os.path.join(directory, key))
        self.name = self._journal.name
        self._lock_path = os.path.join(directory, key + LOCK_SUFFIX)

    @classmethod
    def open(cls, directory: str, key: str, sink: UploadSink) -> UploadJournal:
        fd = lock_state(directory, key, sink.name)
        store = cls(directory, key, sink)
        store._lock = fd
        return store

    def read(self) -> bytes | None:
        return self._journal.read()

    def create(self, data: bytes) -> None:
        self._close_appender()
        try:
            header = decode(data).header
        except DecodeError:  # never ours to write: let the plain store say what it says
            self._journal.create(data)
            return
        binding = self._sink.expect(header.identity, header.total_size)
        self._journal.create(data + (encode_upload(binding) if binding is not None else b""))

    def append(self, data: bytes) -> None:
        """Append CHUNK (and PROMOTE) records durably, as ``JournalStore.append`` promises: one
        ``fdatasync`` per checkpoint, whose cost was within the noise of bench/upload_bench.py."""
        self._write(data, sync=True)

    def note(self, data: bytes) -> None:
        self._write(data, sync=False)

    def set_aside(self) -> str:
        self._close_appender()
        return self._journal.set_aside()

    def record(self, upload: Upload) -> None:
        """Name a new upload in the journal, durably, before anything is sent to it."""
        self._write(encode_upload(upload), sync=True)

    def _write(self, data: bytes, *, sync: bool) -> None:
        try:
            if self._append_fd < 0:
                self._append_fd = os.open(self.name, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            write_all(self._append_fd, data)
            if sync:
                os.fdatasync(self._append_fd)
        except OSError as exc:
            raise JournalError(
                f"{self.name}: cannot append to the journal: {os.strerror(exc.errno or 0)}; re-run to resume",
                self.name,
            ) from None

    def _close_appender(self) -> None:
        if self._append_fd >= 0:
            os.close(self._append_fd)
            self._append_fd = -1

    def remove(self) -> None:
        self._close_appender()
        self._journal.remove()

    def names_an_upload(self) -> bool:
        """Whether the sink has an upload on the server that a later run could continue."""
        return self._sink.upload_url is not None

    def close(self) -> None:
        self._close_appender()
        if not self.names_an_upload():
            # No upload was made (the server refused or was down before one existed): there is
            # nothing to resume, so nothing is left for ``onward status`` to list at 0 %.
            with contextlib.suppress(OnwardError):
                self._journal.remove()
        self._journal.close()
        if self._lock >= 0:
            if not os.path.exists(self.name):  # finished: the lock file goes too, while we hold it
                with contextlib.suppress(OSError):
                    os.unlink(self._lock_path)
            os.close(self._lock)
            self._lock = -1


def lock_state(directory: str, key: str, name: str) -> int:
    """Lock the upload journal ``key`` in ``directory`` for this run (the directory is made if
    needed); the locked descriptor, or an error naming ``name`` when another run holds it."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(directory, key + LOCK_SUFFIX), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise JournalError(
            f"{directory}: cannot keep upload journals there: {os.strerror(exc.errno or 0)}; "
            "set XDG_STATE_HOME to a writable directory",
            directory,
        ) from None
    lock_or_refuse(
        fd,
        DestinationError(
            f"{name}: another onward is uploading this file there right now; wait for it to finish", name
        ),
    )
    return fd

"""Uploads in a directory: data, a crash-safe record of what is durable, and atomic promotion.

Layout under the served directory ``DIR``::

    DIR/.onward-uploads/.lock        flock: one server per directory
    DIR/.onward-uploads/ID.part      the bytes received so far
    DIR/.onward-uploads/ID.info      the upload's record (below)
    DIR/ID                           a finished upload, renamed here from ID.part
    DIR/ID.json                      its metadata, written (fsync + rename) before that rename

The record reuses onward's journal framing (``onward.core.journal``: the preamble, then
self-checking records, a torn last record detected and ignored). Its first record is an
UPLOAD record (JSON: length, metadata, expiry, ...); then OFFSET records, each written
only after ``fdatasync`` of the data it claims, so the offset a restarted server reports
is never ahead of the bytes on disk; LENGTH (a deferred length became known), COMPLETE,
PROMOTED and HOOKED mark the last steps. An append overwrites a torn tail rather than
writing after it, so one bad record never hides the good ones after it.

A slow client may send small PATCHes for days, one OFFSET record each: once the record
passes ``COMPACT_AT`` bytes it is rewritten as the few records that say the same thing
(temporary name, fsync, rename, fsync of the directory), so a restart reads a short file
whatever the history; the whole file is read either way, however long it is.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import secrets
import struct
import time
from collections.abc import Callable, Iterator

from ..core.journal import DecodeError, frame, frames, preamble
from ..endpoints.local import fsync_dir, lock_or_refuse
from ..errors import DestinationError, DurabilityError, from_oserror
from .headers import valid_id
from .storage import Upload

__all__ = ["STAGING", "DiskData", "Store"]

STAGING = ".onward-uploads"
KIND_UPLOAD = 8  # kinds 1-3 are a file journal's, 4-6 a tree journal's
KIND_OFFSET = 9
KIND_LENGTH = 10
KIND_COMPLETE = 11
KIND_PROMOTED = 12
KIND_HOOKED = 13
_U64 = struct.Struct("<Q")
log = logging.getLogger("onward.server")
COPY_BLOCK = 1 << 20
COMPACT_AT = 64 << 10  # bytes of record file (about 3,800 OFFSET records) before it is rewritten short


class Store:
    """The uploads of one directory (an ``UploadStore``). Blocking calls: the app runs them in
    a worker thread. One server per directory: ``open`` takes an ``flock``."""

    def __init__(self, directory: str) -> None:
        self.root = os.path.abspath(directory)
        self.staging = os.path.join(self.root, STAGING)
        self._lock_fd: int | None = None

    # --- paths: only ever built from ids that passed valid_id -----------------------------

    def part_path(self, upload_id: str) -> str:
        return os.path.join(self.staging, self._checked(upload_id) + ".part")

    def info_path(self, upload_id: str) -> str:
        return os.path.join(self.staging, self._checked(upload_id) + ".info")

    def final_path(self, upload_id: str) -> str:
        return os.path.join(self.root, self._checked(upload_id))

    def data_path(self, upload: Upload) -> str:
        return self.final_path(upload.id) if upload.promoted else self.part_path(upload.id)

    @staticmethod
    def _checked(upload_id: str) -> str:
        if not valid_id(upload_id):
            raise ValueError(f"not an upload id: {upload_id[:40]!r}")
        return upload_id

    # --- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Create the staging directory and take the directory's lock (one server per directory)."""
        if not os.path.isdir(self.root):
            raise DestinationError(f"{self.root}: no such directory; create it first", self.root)
        try:
            os.makedirs(self.staging, exist_ok=True)
            fd = os.open(os.path.join(self.staging, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise from_oserror(exc, self.staging, "creating the upload directory", source=False) from None
        lock_or_refuse(
            fd,
            DestinationError(
                f"{self.root}: another onward server is using this directory; stop it or serve another",
                self.root,
            ),
        )
        self._lock_fd = fd
        for name in os.listdir(self.staging):
            if name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.staging, name))

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def new_id(self) -> str:
        """A fresh id that never begins with "-" (shell tools would read it as an option)."""
        while True:
            upload_id = secrets.token_urlsafe(24)
            if upload_id.startswith("-"):
                continue  # redraw: keeps every remaining id equally likely (about 191 bits)
            if not os.path.exists(self.info_path(upload_id)):
                return upload_id

    def exists(self, upload_id: str) -> bool:
        return os.path.exists(self.info_path(upload_id))

    def ids(self) -> Iterator[str]:
        for name in os.listdir(self.staging):
            stem, dot, ext = name.partition(".")
            if dot and ext == "info" and valid_id(stem):
                yield stem

    # --- the record -----------------------------------------------------------------------

    def create(self, upload: Upload) -> None:
        """Write the record (temporary name, fsync, rename) and an empty data file, durably."""
        info = self.info_path(upload.id)
        try:
            fd = os.open(
                self.part_path(upload.id), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
            )
            os.close(fd)
            upload.info_length = _replace(info, _state_records(upload))
            fsync_dir(info, "creating the upload")
        except OSError as exc:
            raise from_oserror(exc, info, "creating the upload", source=False) from None

    def load(self, upload_id: str) -> Upload | None:
        """The upload's record as it is on disk, or None when there is none (or it is unreadable)."""
        try:
            with open(self.info_path(upload_id), "rb") as f:
                data = f.read()  # all of it: an OFFSET past any fixed buffer was acknowledged too
        except FileNotFoundError:
            return None
        try:
            records = frames(data)
            if not records or records[0][0] != KIND_UPLOAD:
                return None
            upload = Upload.from_header(json.loads(records[0][1]))
        except (DecodeError, ValueError, KeyError, TypeError):
            return None
        if upload.id != upload_id:
            return None
        upload.info_length = records[0][2]
        for kind, payload, end in records[1:]:
            if kind in (KIND_OFFSET, KIND_LENGTH) and len(payload) == _U64.size:
                (value,) = _U64.unpack(payload)
                if kind == KIND_OFFSET:
                    upload.offset = value
                else:
                    upload.length = value
            elif kind == KIND_COMPLETE:
                upload.complete = True
            elif kind == KIND_PROMOTED:
                upload.promoted = True
            elif kind == KIND_HOOKED:
                upload.hooked = True
            else:
                break
            upload.info_length = end
        if upload.complete and not upload.promoted and not os.path.exists(self.part_path(upload_id)):
            upload.promoted = os.path.exists(self.final_path(upload_id))  # crashed between rename and record
        try:
            size = os.stat(self.data_path(upload)).st_size
        except FileNotFoundError:
            size = -1
        upload.lost = size < upload.offset
        return upload

    def _append(self, upload: Upload, record: bytes) -> None:
        """Write one record at the end of the clean part of the record file and make it durable."""
        path = self.info_path(upload.id)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.pwrite(fd, record, upload.info_length)
                os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise DurabilityError(f"{path}: recording the upload's progress failed: {exc}", path) from None
        upload.info_length += len(record)

    def _compact(self, upload: Upload) -> None:
        """Rewrite a long record as the records that say the same (temporary name, fsync,
        rename, fsync of the directory): a crash at any step leaves the old or the new file,
        and both read as the same upload."""
        if upload.info_length < COMPACT_AT:
            return
        path = self.info_path(upload.id)
        try:
            upload.info_length = _replace(path, _state_records(upload))
        except OSError as exc:  # the long record is still whole and readable: keep it
            log.warning("%s: could not shorten the upload's record: %s", path, exc)
            return
        fsync_dir(path, "shortening the upload's record")

    def record_offset(self, upload: Upload, offset: int) -> None:
        """Call only after the data up to ``offset`` was ``fdatasync``ed (or, going back, before
        the data past ``offset`` is cut off: a refused request's bytes are taken back)."""
        self._append(upload, frame(KIND_OFFSET, _U64.pack(offset)))
        upload.offset = offset
        self._compact(upload)

    def record_length(self, upload: Upload, length: int) -> None:
        self._append(upload, frame(KIND_LENGTH, _U64.pack(length)))
        upload.length = length

    def record_complete(self, upload: Upload) -> None:
        self._append(upload, frame(KIND_COMPLETE, b""))
        upload.complete = True

    def record_hooked(self, upload: Upload) -> None:
        self._append(upload, frame(KIND_HOOKED, b""))
        upload.hooked = True

    # --- data -----------------------------------------------------------------------------

    def open_data(self, upload: Upload) -> DiskData:
        """The data file for appending; anything past the durable offset is dropped first."""
        path = self.part_path(upload.id)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            if os.fstat(fd).st_size != upload.offset:
                os.ftruncate(fd, upload.offset)
            return DiskData(fd)
        except OSError as exc:
            raise from_oserror(exc, path, "opening the upload", source=False) from None

    def digest(self, upload: Upload, algorithm: str) -> str:
        with open(self.data_path(upload), "rb") as f:
            return hashlib.file_digest(f, algorithm).hexdigest()

    def concatenate(self, final: Upload, parts: list[Upload]) -> None:
        """Fill ``final``'s data with the parts' data, in order, and make it durable."""
        out = os.open(self.part_path(final.id), os.O_WRONLY | os.O_CLOEXEC)
        try:
            pos = 0
            for part in parts:
                with open(self.data_path(part), "rb") as f:
                    while block := f.read(COPY_BLOCK):
                        os.pwrite(out, block, pos)
                        pos += len(block)
            os.fdatasync(out)
        finally:
            os.close(out)
        self.record_offset(final, pos)

    def promote(self, upload: Upload) -> str:
        """Metadata beside the final name first, then the data by one rename, then fsync the
        directories: a crash leaves either the partial or the whole, finished upload."""
        final = self.final_path(upload.id)
        meta = final + ".json"
        body = {
            "id": upload.id,
            "size": upload.offset,
            "metadata": upload.metadata,
            "content_type": upload.content_type,
            "created": upload.created,
            "finished": time.time(),
        }
        tmp = os.path.join(self.staging, upload.id + ".json.tmp")
        mode = os.stat(self.part_path(upload.id)).st_mode & 0o777  # the sidecar is as private as the data
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        with open(fd, "w", encoding="utf-8") as f:
            os.fchmod(fd, mode)  # whatever the umask
            json.dump(body, f, sort_keys=True)
            f.flush()
            os.fsync(fd)
        os.rename(tmp, meta)
        os.rename(self.part_path(upload.id), final)
        fsync_dir(final, "promoting the finished upload")
        fsync_dir(self.part_path(upload.id), "promoting the finished upload")
        self._append(upload, frame(KIND_PROMOTED, b""))
        upload.promoted = True
        return final

    def remove(self, upload: Upload, *, keep_finished: bool) -> None:
        """Forget the upload; its finished file and metadata stay unless ``keep_finished`` is False."""
        paths = [self.part_path(upload.id), self.info_path(upload.id)]
        if upload.promoted and not keep_finished:
            paths += [self.final_path(upload.id), self.final_path(upload.id) + ".json"]
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        fsync_dir(self.part_path(upload.id), "removing the upload")


class DiskData:
    """An upload's data file (an ``UploadData``): ``pwrite``, ``fdatasync``, ``ftruncate``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes, at: int) -> None:
        """Write one block at ``at``, then start its writeback (``sync_file_range``) so the
        ``fdatasync`` that acknowledges it has little left to wait for."""
        start = at
        view = memoryview(data)
        while view:
            done = os.pwrite(self.fd, view, at)
            at += done
            view = view[done:]
        if _writeback is not None:
            _writeback(self.fd, start, len(data))

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def close(self) -> None:
        os.close(self.fd)


def _writeback_call() -> Callable[[int, int, int], None] | None:
    """``sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)``: start writing a block to the
    disk now, without waiting, so the ``fdatasync`` that acknowledges it has little left to do."""
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int

    def start(fd: int, offset: int, length: int) -> None:
        call(fd, offset, length, 2)  # SYNC_FILE_RANGE_WRITE; a failure here is seen by fdatasync

    return start


_writeback = _writeback_call()


def _state_records(upload: Upload) -> bytes:
    """The shortest record of ``upload`` as it is now: the preamble, UPLOAD (with the length,
    deferred or not), OFFSET and the flags it has reached."""
    records = [preamble(), frame(KIND_UPLOAD, json.dumps(upload.header(), sort_keys=True).encode())]
    if upload.offset:
        records.append(frame(KIND_OFFSET, _U64.pack(upload.offset)))
    flags = ((KIND_COMPLETE, upload.complete), (KIND_PROMOTED, upload.promoted), (KIND_HOOKED, upload.hooked))
    records += [frame(kind, b"") for kind, reached in flags if reached]
    return b"".join(records)


def _replace(path: str, data: bytes) -> int:
    """Put ``data`` at ``path`` by a temporary name, fsync and rename (the directory's fsync is
    the caller's); a failure leaves the old file, if any, and no temporary one. Its length."""
    tmp = path + ".tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return len(data)

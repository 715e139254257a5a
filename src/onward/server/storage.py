"""What the upload server needs from where uploads are kept: the upload's record and two protocols.

The app (``onward.server.app``) speaks only to an ``UploadStore``; ``onward.server.store``
keeps uploads in a directory, and an object-store backend (S3 multipart parts plus a small
tail object, issue 18) is one more module implementing the same two protocols. Every
method may block: the app calls them in its I/O threads, never on the event loop.

The one promise the whole server rests on: **the offset a store reports is durable.** A
store that restarts, or is read by another server, never reports bytes it does not hold;
it may report fewer than were sent (they are sent again).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .headers import valid_id

__all__ = ["Upload", "UploadData", "UploadStore"]


@dataclass
class Upload:
    """What the server knows about one upload; ``offset`` is always durable."""

    id: str
    length: int | None
    metadata: dict[str, str | None]
    created: float
    expires: float
    concat: str | None = None  # "partial", "final" or None
    parts: list[str] = field(default_factory=list)
    repr_digest: tuple[str, str] | None = None  # (hashlib name, hex) of Repr-Digest at creation
    content_type: str | None = None
    offset: int = 0
    complete: bool = False
    promoted: bool = False
    hooked: bool = False
    lost: bool = False  # data shorter than the durable offset: the state cannot be trusted
    info_length: int = 0  # bytes of the record file that decoded cleanly (the disk store's)

    def header(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "length": self.length,
            "metadata": self.metadata,
            "created": self.created,
            "expires": self.expires,
            "concat": self.concat,
            "parts": self.parts,
            "repr_digest": list(self.repr_digest) if self.repr_digest else None,
            "content_type": self.content_type,
        }

    @classmethod
    def from_header(cls, data: Any) -> Upload:
        if not isinstance(data, dict) or not valid_id(str(data.get("id"))):
            raise ValueError("not an upload record")
        digest = data.get("repr_digest")
        return cls(
            id=data["id"],
            length=data.get("length"),
            metadata=dict(data.get("metadata") or {}),
            created=float(data["created"]),
            expires=float(data["expires"]),
            concat=data.get("concat"),
            parts=list(data.get("parts") or []),
            repr_digest=(str(digest[0]), str(digest[1])) if digest else None,
            content_type=data.get("content_type"),
        )


class UploadData(Protocol):
    """One request's handle on the bytes of one upload, from its durable offset on."""

    def write(self, data: bytes, at: int) -> None:
        """Put ``data`` at ``at`` (always the end of what this handle wrote). Not durable:
        a crash may lose it, and nothing may report it until ``sync`` has returned."""

    def sync(self) -> None:
        """Return only once every byte written through this handle survives a crash or the
        loss of this server; raise if that cannot be promised (nothing since the last
        successful ``sync`` may then be reported)."""

    def truncate(self, size: int) -> None:
        """Drop every byte past ``size`` (the bytes of a refused request). The caller has
        already recorded an offset no greater than ``size``."""

    def close(self) -> None:
        """Release the handle; what was not synced may be lost."""


class UploadStore(Protocol):
    """Where uploads live: their records, their bytes, and the finished files."""

    def open(self) -> None:
        """Make the store ready and claim it; raise ``OnwardError`` (one line) when it cannot
        be used, e.g. another server holds a store that allows only one."""

    def close(self) -> None:
        """Let the store go (a second server may claim it)."""

    def new_id(self) -> str:
        """A fresh upload id that passes ``valid_id``, never used in this store."""

    def ids(self) -> Iterator[str]:
        """The id of every upload that has a record (finished or not)."""

    def exists(self, upload_id: str) -> bool:
        """Whether ``upload_id`` has a record; cheap (asked before any per-upload state is made)."""

    def create(self, upload: Upload) -> None:
        """Record a new upload at offset 0 with no bytes, durably before returning."""

    def load(self, upload_id: str) -> Upload | None:
        """The upload's durable record, None when there is none or it cannot be read. Sets
        ``lost`` when the bytes held are fewer than the recorded offset."""

    def open_data(self, upload: Upload) -> UploadData:
        """A handle writing from ``upload.offset``; bytes held past it are dropped first."""

    def record_offset(self, upload: Upload, offset: int) -> None:
        """Durably record ``offset``. Call only after ``sync`` of the bytes up to it, or,
        going back, before the bytes past it are truncated."""

    def record_length(self, upload: Upload, length: int) -> None:
        """Durably record a length that was deferred."""

    def record_complete(self, upload: Upload) -> None:
        """Durably record that all bytes arrived (before any promotion)."""

    def record_hooked(self, upload: Upload) -> None:
        """Durably record that the completion hook ran (it is not run again after a restart)."""

    def concatenate(self, final: Upload, parts: list[Upload]) -> None:
        """Fill ``final`` with the parts' bytes in order, durably, and record its offset."""

    def digest(self, upload: Upload, algorithm: str) -> str:
        """The hex ``hashlib`` digest of the upload's bytes, as held."""

    def promote(self, upload: Upload) -> str:
        """Publish the finished upload and its metadata under its final name atomically (a
        crash leaves the unfinished or the whole finished upload, never a torn one), record
        PROMOTED durably, and return the final name."""

    def final_path(self, upload_id: str) -> str:
        """Where a finished upload is published (its metadata is beside it, plus ``.json``)."""

    def remove(self, upload: Upload, *, keep_finished: bool) -> None:
        """Forget the upload durably; its finished file and metadata stay if ``keep_finished``."""

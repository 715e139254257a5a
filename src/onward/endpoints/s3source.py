"""An object in an S3-compatible store as the engine's source: ranged GETs that never stitch.

``S3Source``: HeadObject gives the size, the ETag (and VersionId); each chunk is a ranged
GET with ``If-Match`` on that ETag (and the version), so a replaced object answers 412 and
is never stitched.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import botocore.exceptions

from ..core import s3 as proto
from ..core.identity import Identity
from ..errors import SourceError
from . import Attributes
from .s3 import CALL_ERRORS, Store, error_code, kind_of, translate

__all__ = ["WINDOW", "S3Source"]

# A download's GET asks for a worker's share of the object (its size over the connections), and at
# least this much, from where it starts: one request serves a whole run of chunks (the engine gives
# each worker a contiguous run), and a worker that stops early (its run was split with an idle one)
# leaves at most its share unread. Fewer requests matter on a store whose cost is per request, as
# moto's is (each ranged GET reads the whole object: 4 connections, 64 MiB windows, 256 MiB: 12 GETs,
# 5.6 s; one GET per run: 4 GETs).
WINDOW = 64 << 20


class S3Source:
    """An object in a store; open it with ``S3Source.open`` (one HeadObject)."""

    recheck_on_change = False  # re-checking old chunks would download them again: start over
    readahead = 4

    def __init__(self, store: Store, target: proto.S3Url, *, connections: int = 1) -> None:
        self.name = target.name
        self.target = target
        self._client = store.client
        self._connections = connections
        self._head: dict[str, Any] = {}
        self._fresh = False
        self.on_notice: Callable[[str], None] | None = None
        self._local = threading.local()  # each reading thread's open response (``_cursor``)
        self._lock = threading.Lock()
        self._open: list[Any] = []

    @classmethod
    def open(cls, store: Store, target: proto.S3Url, *, connections: int = 1) -> S3Source:
        source = cls(store, target, connections=connections)
        source._ask()
        source._fresh = True
        return source

    @property
    def connections(self) -> int:
        return self._connections

    def _ask(self) -> None:
        try:
            self._head = self._client.head_object(
                Bucket=self.target.bucket, Key=self.target.key, ChecksumMode="ENABLED"
            )
        except CALL_ERRORS as exc:
            if kind_of(exc) == "no-key" and self._is_prefix(exc):
                raise SourceError(
                    f"{self.name}: is a prefix (a 'directory'), not an object; use -r to copy what it holds",
                    self.name,
                ) from None
            raise translate(self._why(exc), self.name, "looking at the object", source=True) from None

    def _why(self, refused: BaseException) -> BaseException:
        """The error to report for a refused HeadObject: a HEAD's 403 has no body to say why
        (a skewed clock or bad credentials), so a one-byte GET asks; else ``refused`` itself."""
        found = error_code(refused)
        if found is None or found[1] != 403 or found[0] not in ("", "403", "Forbidden"):
            return refused
        try:
            self._client.get_object(Bucket=self.target.bucket, Key=self.target.key, Range="bytes=0-0")
        except CALL_ERRORS as exc:
            told: BaseException = exc
            return told
        return refused

    def _is_prefix(self, missing: BaseException) -> bool:
        """Whether the key the store has no object for is a prefix of others (a "directory"); a
        HEAD's 404 has no body to say whether the object or the bucket is missing: this says."""
        prefix = self.target.key.rstrip("/") + "/"
        try:
            page = self._client.list_objects_v2(Bucket=self.target.bucket, Prefix=prefix, MaxKeys=1)
        except botocore.exceptions.ClientError as exc:
            if kind_of(exc) == "no-bucket":
                raise translate(exc, self.name, "listing the bucket", source=True) from None
            return False
        except botocore.exceptions.BotoCoreError:
            return False
        return bool(page.get("KeyCount") or page.get("Contents"))

    @property
    def etag(self) -> str:
        return str(self._head.get("ETag", ""))

    @property
    def version(self) -> str:
        version = self._head.get("VersionId")
        return str(version) if version and version != "null" else ""

    @property
    def stored_checksum(self) -> tuple[str, str] | None:
        """(algorithm, base64 value) of the whole object's stored checksum, when the store keeps one
        (a composite checksum of parts, ``VALUE-N``, is not of the whole object: None)."""
        # A multipart object's checksum is a composite unless the store says FULL_OBJECT (moto
        # sends a composite with neither the "-N" suffix nor a ChecksumType).
        kind = self._head.get("ChecksumType", "FULL_OBJECT" if "-" not in self.etag else "COMPOSITE")
        for algorithm, (suffix, _) in proto.CHECKSUMS.items():
            value = self._head.get("Checksum" + suffix)
            if value and "-" not in str(value) and kind == "FULL_OBJECT":
                return algorithm, str(value)
        return None

    def identity(self) -> Identity:
        if not self._fresh:
            self._ask()
        self._fresh = False
        attrs: dict[str, int | str] = {"etag": self.etag}
        if self.version:
            attrs["version"] = self.version
        return Identity("s3", int(self._head.get("ContentLength", 0)), attrs)

    def attributes(self) -> Attributes:
        """No mode; LastModified as the times, as ``aws s3 cp`` does."""
        when = self._head.get("LastModified")
        if when is None:
            return Attributes(None, None)
        ns = int(when.timestamp() * 1_000_000_000)
        return Attributes(None, (ns, ns))

    def read_into(self, offset: int, buf: memoryview) -> int:
        """Fill ``buf`` from ``offset``; short (0) when the object was replaced, so the engine asks
        ``identity()`` again. Each thread reads its run of chunks through ranged GETs of its share
        of the object (``WINDOW`` at least) on the recorded ETag (and version), chunk after chunk:
        one round trip per run, not per chunk."""
        got = 0
        try:
            while got < len(buf):
                cursor = self._cursor(offset + got, len(buf) - got)
                if cursor is None:
                    break  # replaced (412) or shorter (416): the engine asks identity() again
                piece = cursor[0].read(min(1 << 20, len(buf) - got))
                if not piece:
                    window_done = cursor[1] > cursor[2]
                    self._drop()
                    if window_done:
                        continue  # the next window
                    break  # the object ended
                buf[got : got + len(piece)] = piece
                got += len(piece)
                cursor[1] += len(piece)
        except CALL_ERRORS as exc:
            self._drop()
            raise translate(exc, self.name, f"reading bytes from {offset + got}", source=True) from None
        return got

    def _cursor(self, offset: int, length: int) -> list[Any] | None:
        """This thread's open response positioned at ``offset`` ([body, position, last byte]), a
        new one for the next share (at least ``length``) bytes if needed; None when the store
        will not send the recorded object from there (replaced: 412; shorter: 416)."""
        cursor: list[Any] | None = getattr(self._local, "cursor", None)
        if cursor is not None and cursor[1] == offset and offset <= cursor[2]:
            return cursor
        self._drop()
        share = -(-int(self._head.get("ContentLength", 0)) // max(1, self._connections))
        end = offset + max(WINDOW, length, share) - 1
        params: dict[str, Any] = {
            "Bucket": self.target.bucket,
            "Key": self.target.key,
            "Range": f"bytes={offset}-{end}",
            "IfMatch": self.etag,
        }
        if self.version:
            params["VersionId"] = self.version
        try:
            answer = self._client.get_object(**params)
        except CALL_ERRORS as exc:
            if kind_of(exc) in ("changed", "no-key") or error_code(exc) == ("InvalidRange", 416):
                return None
            raise translate(exc, self.name, f"reading bytes from {offset}", source=True) from None
        body = answer["Body"]
        if not str(answer.get("ContentRange", "")).startswith(f"bytes {offset}-"):
            body.close()  # not the bytes asked for: never appended
            return None
        cursor = [body, offset, end]
        self._local.cursor = cursor
        with self._lock:
            self._open.append(body)
        return cursor

    def _drop(self) -> None:
        cursor = getattr(self._local, "cursor", None)
        if cursor is not None:
            self._local.cursor = None
            with self._lock:
                if cursor[0] in self._open:
                    self._open.remove(cursor[0])
            with contextlib.suppress(Exception):
                cursor[0].close()

    def close(self) -> None:
        with self._lock:
            bodies, self._open = self._open, []
        for body in bodies:
            with contextlib.suppress(Exception):
                body.close()

"""An S3 multipart upload (or one PutObject) as the engine's sink, and the upload's journal.

``S3UploadSink``: each engine chunk is one part. The multipart upload is created lazily by
the first part and named durably in the journal (an S3UPLOAD record) before any part is
sent; each part is remembered as soon as the store acknowledged it (an S3PART record:
number, size, ETag, checksum and the xxh3 digest the engine's CHUNK record would hold),
unsynced: a resume after a kill finds every acknowledged part in the journal and reads none
of them again. Parts are sent by a pool of ``connections`` threads and ``sync`` waits for
them (with one, the next part's copy and checksum overlap the request in flight).
``promote`` sends any part the upload still lacks, read from the file again, and completes
the upload; a file of at most one part goes in one PutObject.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import xxhash

from ..core import s3 as proto
from ..core.identity import Identity
from ..core.journal import DecodeError, Promote, decode
from ..core.resume import keeps_upload
from ..errors import DestinationError, IntegrityError, SourceError, TransientError
from .s3 import CALL_ERRORS, Store, checksum_param, kind_of, translate
from .uploadjournal import UploadJournal, lock_state

__all__ = ["S3Journal", "S3UploadSink"]

ReadSource = Callable[[int, memoryview], int]


class S3UploadSink:
    """A multipart upload (or one PutObject) as the engine's sink; see the module's docstring."""

    # No read-back capability (endpoints.ReadBack): integrity comes from per-part checksums.

    def __init__(
        self,
        store: Store,
        target: proto.S3Url,
        *,
        read_source: ReadSource,
        part_size: int,
        checksum: str,
        connections: int = 1,
        single: bool = False,
    ) -> None:
        self.name = target.name
        self.target = target
        self._client = store.client
        self.endpoint = store.endpoint
        self._read_source = read_source
        self.part_size = part_size
        self.checksum = checksum
        self._connections = connections
        self.single = single  # at most one part: one PutObject at promotion
        self._body = b""
        self.on_notice: Callable[[str], None] | None = None
        self.record: Callable[[proto.S3Upload], None] = lambda upload: None  # set by the journal store
        self.record_part: Callable[[proto.Part], None] = lambda part: None  # likewise
        self.binding: proto.S3Upload | None = None
        self.parts: dict[int, proto.Part] = {}  # parts the upload holds, as the store acknowledged them
        self._identity: Identity | None = None
        self._size: int | None = None
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: list[Future[None]] = []
        self.sent = 0  # bytes sent over the network by this run (the bench reads it)
        self.etag = ""  # the object's ETag once this run has put or completed it (trees record it)

    # -- the binding between this sink, its upload and the journal ---------------------------

    def adopt(self, binding: proto.S3Upload, parts: dict[int, proto.Part]) -> None:
        """Continue the upload an earlier run made for this very file, holding ``parts``."""
        self.binding, self.parts = binding, dict(parts)
        self._identity, self._size = binding.identity, binding.size

    def expect(self, identity: Identity, size: int) -> proto.S3Upload | None:
        """The journal now describes the file as ``identity``: keep the upload if it was made for
        exactly that file, else abort it (it is never completed from two versions of a file)."""
        self._identity, self._size = identity, size
        binding = self.binding
        if binding is not None and not keeps_upload(binding.identity, binding.size, identity, size):
            self._notice(
                f"the file is not the one multipart upload {binding.upload_id} was made for: "
                "aborting it and sending the file to a new upload"
            )
            self.abort(binding)
            self.binding, self.parts = None, {}
        return self.binding

    def abort(self, binding: proto.S3Upload) -> None:
        """Abort an upload (the store bills its parts until then); one already gone is fine."""
        try:
            self._on(binding, self._client.abort_multipart_upload)
        except CALL_ERRORS as exc:
            if kind_of(exc) not in ("no-upload", "no-key"):
                raise translate(exc, self.name, "aborting the old upload", source=False) from None

    def _notice(self, message: str) -> None:
        if self.on_notice is not None:
            self.on_notice(message)

    # -- the Sink interface -----------------------------------------------------------------

    def present(self) -> int | None:
        """The whole size while there is an upload: ``onward.jobs.s3copy`` has already dropped from the
        journal every part the store does not hold as recorded (ListParts)."""
        return self._size if self.binding is not None else None

    def reset(self) -> None:
        """Nothing to drop: a new journal header rebinds the upload (``expect``)."""

    def write(self, offset: int, data: memoryview) -> None:
        number = offset // self.part_size + 1
        if self.single:
            self._body = bytes(data)
            return
        self._ensure_upload()
        # The part is copied (the engine reuses its buffer once this returns) and checksummed
        # here, while the part before it is still in flight: even one connection overlaps this
        # work with the store's (one request at a time, on a thread of the pool).
        body = bytes(data)
        checksum = proto.checksum_of(self.checksum, body)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._connections, thread_name_prefix="onward-s3")
        while len(self._inflight) >= self._connections:
            self._inflight.pop(0).result()
        self._inflight.append(self._pool.submit(self._put_part, number, body, checksum))

    def sync(self) -> None:
        """Wait for every part in flight: each is durable once the store acknowledged it."""
        inflight, self._inflight = self._inflight, []
        error: BaseException | None = None
        for future in inflight:
            try:
                future.result()
            except BaseException as exc:
                error = error or exc
        if error is not None:
            raise error

    def token(self) -> Promote:
        return Promote(0, 0)

    def holds(self, token: Promote) -> bool:
        """Whether the key already holds the object completed from this upload's parts."""
        return self.completed()

    def promote(self, mode: int | None, times_ns: tuple[int, int] | None) -> None:
        if self.single:
            self._put_object()
            return
        self._ensure_upload()
        size = self._planned_size()
        count = max(1, -(-size // self.part_size))
        missing = [n for n in range(1, count + 1) if n not in self.parts]
        if missing:  # a part the engine committed went to an upload since replaced: send it again
            buf = memoryview(bytearray(self.part_size))
            for number in missing:
                offset = (number - 1) * self.part_size
                length = min(self.part_size, size - offset)
                if self._read_source(offset, buf[:length]) != length:
                    raise SourceError(f"{self.name}: the file got shorter while it was uploaded", self.name)
                self._put_part(number, bytes(buf[:length]))
        self._complete(count)

    def settle(self) -> None:
        """Nothing to do: a completed upload needs no rename."""

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    # -- requests ---------------------------------------------------------------------------

    def _planned_size(self) -> int:
        if self._size is None:
            raise DestinationError(f"{self.name}: no journal header yet (internal error)", self.name)
        return self._size

    def _call(self, doing: str, method: Callable[..., Any], **params: Any) -> Any:
        try:
            return method(Bucket=self.target.bucket, Key=self.target.key, **params)
        except CALL_ERRORS as exc:
            raise translate(exc, self.name, doing, source=False) from None

    @staticmethod
    def _on(binding: proto.S3Upload, method: Callable[..., Any], **params: Any) -> Any:
        """``method`` (a botocore call) on the multipart upload ``binding`` names."""
        return method(Bucket=binding.bucket, Key=binding.key, UploadId=binding.upload_id, **params)

    def _ensure_upload(self) -> None:
        """Create the multipart upload and name it durably in the journal, before any part is sent."""
        if self.binding is not None:
            return
        assert self._identity is not None
        answer = self._call(
            "creating the multipart upload",
            self._client.create_multipart_upload,
            ChecksumAlgorithm=proto.CHECKSUMS[self.checksum][0],
        )
        binding = proto.S3Upload(
            self.target.bucket,
            self.target.key,
            self.endpoint,
            str(answer["UploadId"]),
            self.part_size,
            self.checksum,
            self._identity,
            self._planned_size(),
            time.time(),
        )
        self.binding, self.parts = binding, {}
        self.record(binding)

    def _put_part(self, number: int, body: bytes, checksum: str | None = None) -> None:
        binding = self.binding
        assert binding is not None
        checksum = checksum or proto.checksum_of(self.checksum, body)
        param = checksum_param(self.checksum)
        try:
            answer = self._on(
                binding,
                self._client.upload_part,
                PartNumber=number,
                Body=body,
                ChecksumAlgorithm=proto.CHECKSUMS[self.checksum][0],
                **{param: checksum},
            )
        except CALL_ERRORS as exc:
            if kind_of(exc) == "no-upload":
                raise DestinationError(
                    f"{self.name}: the store no longer has multipart upload {binding.upload_id} (it expired "
                    "or was aborted); re-run to start a new one",
                    self.name,
                ) from None
            raise translate(exc, self.name, f"sending part {number}", source=False) from None
        echoed = answer.get(param)
        if echoed is not None and echoed != checksum:
            raise TransientError(
                f"{self.name}: the store acknowledged part {number} with checksum {echoed}, not the "
                f"{checksum} of the bytes sent; sending it again",
                self.name,
            )
        part = proto.Part(number, len(body), str(answer["ETag"]), checksum, xxhash.xxh3_128_hexdigest(body))
        with self._lock:
            self.parts[number] = part
            self.sent += len(body)
        self.record_part(part)

    def _complete(self, count: int) -> None:
        binding = self.binding
        assert binding is not None
        param = checksum_param(self.checksum)
        listed = [
            {"PartNumber": p.number, "ETag": p.etag, **({param: p.checksum} if p.checksum else {})}
            for p in (self.parts[n] for n in range(1, count + 1))
        ]
        try:
            answer = self._on(
                binding, self._client.complete_multipart_upload, MultipartUpload={"Parts": listed}
            )
        except CALL_ERRORS as exc:
            if kind_of(exc) == "no-upload" and self.completed():
                return  # an earlier request completed it; its answer was lost
            raise translate(exc, self.name, "completing the multipart upload", source=False) from None
        want = proto.composite_etag([self.parts[n].etag for n in range(1, count + 1)])
        got = answer.get("ETag")
        if want is not None and got and not proto.same_etag(want, got):
            raise IntegrityError(
                f"{self.name}: the store completed the upload with ETag {got}, not {want} of the parts sent",
                self.name,
            )
        self.etag = str(got or want or "")

    def _put_object(self) -> None:
        param = checksum_param(self.checksum)
        checksum = proto.checksum_of(self.checksum, self._body)
        answer = self._call(
            "uploading",
            self._client.put_object,
            Body=self._body,
            ChecksumAlgorithm=proto.CHECKSUMS[self.checksum][0],
            **{param: checksum},
        )
        self.sent += len(self._body)
        self.etag = str(answer.get("ETag", ""))
        echoed = answer.get(param)
        if echoed is not None and echoed != checksum:
            raise IntegrityError(
                f"{self.name}: the store stored checksum {echoed}, not the {checksum} of the bytes sent",
                self.name,
            )

    def completed(self) -> bool:
        """Whether the key holds the object completed from ``parts`` (size and ETag)."""
        if self.single or self._size is None:
            return False
        count = max(1, -(-self._size // self.part_size))
        if any(n not in self.parts for n in range(1, count + 1)):
            return False
        want = proto.composite_etag([self.parts[n].etag for n in range(1, count + 1)])
        try:
            head = self._client.head_object(Bucket=self.target.bucket, Key=self.target.key)
        except CALL_ERRORS as exc:
            if kind_of(exc) == "no-key":
                return False
            raise translate(exc, self.name, "looking at the object", source=False) from None
        if head.get("ContentLength") != self._size:
            return False
        return want is None or proto.same_etag(want, str(head.get("ETag", "")))

    # -- what resuming asks the store ------------------------------------------------------

    def list_parts(self, binding: proto.S3Upload) -> dict[int, proto.Part] | None:
        """Every part the store holds for ``binding`` (all pages), or None when it has no such upload."""
        found: dict[int, proto.Part] = {}
        marker = 0
        param = checksum_param(binding.checksum)
        while True:
            try:
                page = self._on(binding, self._client.list_parts, PartNumberMarker=marker)
            except CALL_ERRORS as exc:
                if kind_of(exc) in ("no-upload", "no-key"):
                    return None
                raise translate(exc, self.name, "listing the upload's parts", source=False) from None
            for item in page.get("Parts", []):
                number = int(item["PartNumber"])
                found[number] = proto.Part(number, int(item["Size"]), str(item["ETag"]), item.get(param))
            following = int(page.get("NextPartNumberMarker") or 0)
            if not page.get("IsTruncated") or following <= marker:
                return found
            marker = following

    def find_uploads(self, since: float) -> list[str]:
        """Upload IDs for this key that hold no part or were initiated at or after ``since`` (Unix
        time), newest first; at most 10 are looked at (a store may date them wrongly: moto does)."""
        found: list[tuple[float, str]] = []
        params: dict[str, str] = {"Prefix": self.target.key}
        for _ in range(100):  # pages; bounded
            try:
                page = self._client.list_multipart_uploads(Bucket=self.target.bucket, **params)
            except CALL_ERRORS as exc:
                raise translate(exc, self.name, "listing unfinished uploads", source=False) from None
            for item in page.get("Uploads", []):
                when = item.get("Initiated")
                if item.get("Key") == self.target.key:
                    found.append((when.timestamp() if when is not None else 0.0, str(item["UploadId"])))
            if not page.get("IsTruncated"):
                break
            params = {
                "Prefix": self.target.key,
                "KeyMarker": page.get("NextKeyMarker", ""),
                "UploadIdMarker": page.get("NextUploadIdMarker", ""),
            }
        chosen = []
        for stamp, upload_id in sorted(found, reverse=True)[:10]:
            try:
                probe = self._client.list_parts(
                    Bucket=self.target.bucket, Key=self.target.key, UploadId=upload_id, MaxParts=1
                )
            except CALL_ERRORS:
                continue  # gone meanwhile, or not ours to read
            if stamp >= since or not probe.get("Parts"):
                chosen.append(upload_id)
        return chosen


class S3Journal(UploadJournal):
    """An S3 upload's journal in the state directory (``$XDG_STATE_HOME/onward/uploads``), locked
    for the run, written as an upload's (``UploadJournal``). Every rewrite carries the S3UPLOAD
    record of the upload the sink is using (if made for the file the new header describes) and
    the parts it holds; each part is appended once the store acknowledged it, before the CHUNK
    record that claims it."""

    def __init__(self, directory: str, key: str, sink: S3UploadSink, lock: int) -> None:
        self._place(directory, key)  # not UploadJournal.__init__: that one binds a tus sink
        self._s3 = sink
        sink.record = self.record_s3
        sink.record_part = self.record_part
        self._writing = threading.Lock()  # the sink's threads record parts as the engine appends
        self._lock = lock
        self._append_fd = -1

    def names_an_upload(self) -> bool:
        return self._s3.binding is not None

    @classmethod
    def lock(cls, directory: str, key: str, sink: S3UploadSink) -> S3Journal:
        return cls(directory, key, sink, lock_state(directory, key, sink.name))

    def create(self, data: bytes) -> None:
        with self._writing:
            self._create(data)

    def _create(self, data: bytes) -> None:
        self._close_appender()
        try:
            header = decode(data).header
        except DecodeError:
            self._journal.create(data)
            return
        binding = self._s3.expect(header.identity, header.total_size)
        extra = b""
        if binding is not None:
            parts = dict(self._s3.parts)  # one copy: the sink's threads may be adding to it
            extra = proto.encode_s3_upload(binding) + proto.encode_parts([parts[n] for n in sorted(parts)])
        self._journal.create(data + extra)

    def append(self, data: bytes) -> None:
        """CHUNK records, without waiting for the disk: a journal that lags costs nothing but
        local reads (a resume asks ListParts and compares each part the journal lacks with the
        file). Only the S3UPLOAD record (``record_s3``) is synced."""
        with self._writing:
            self._write(data, sync=False)

    def record_part(self, part: proto.Part) -> None:
        """A part the store acknowledged, at once and unsynced (from the sink's threads): after a
        kill the journal (in the page cache) names every acknowledged part, so none is read again."""
        with self._writing:
            self._write(proto.encode_parts([part]), sync=False)

    def record_s3(self, upload: proto.S3Upload) -> None:
        """Name a new upload in the journal, durably, before any part is sent to it."""
        with self._writing:
            self._write(proto.encode_s3_upload(upload), sync=True)

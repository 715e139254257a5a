"""S3-compatible object stores: a multipart-upload sink, a ranged-GET source, and the upload's journal.

botocore (the ``onward[s3]`` extra) signs the requests and resolves credentials, region and
endpoint as the AWS CLI does; it is imported by this module only, and this module only for
``s3://`` URLs (docs/S3.md has the measurement). Every store error leaves here as an
``onward.errors`` type whose message names the object and the cause, never a credential.

``S3UploadSink``: each engine chunk is one part. The multipart upload is created lazily by
the first part and named durably in the journal (an S3UPLOAD record) before any part is
sent; each acknowledged part is remembered (an S3PART record: number, size, ETag, checksum)
with the next checkpoint. With ``connections`` > 1 parts are sent by a pool of threads and
``sync`` waits for them. ``promote`` sends any part the upload still lacks, read from the
file again, and completes the upload; a file of at most one part goes in one PutObject.

``S3Source``: HeadObject gives the size, the ETag (and VersionId); each chunk is a ranged
GET with ``If-Match`` on that ETag, so a replaced object answers 412 and is never stitched.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

import botocore.config
import botocore.exceptions
import botocore.session

from .._version import __version__
from ..core import s3 as proto
from ..core.identity import Identity
from ..core.journal import DecodeError, Promote, decode
from ..core.resume import keeps_upload
from ..errors import DestinationError, IntegrityError, OnwardError, SourceError, TransientError, UsageError
from . import Attributes
from .local import LocalJournal
from .tus import LOCK_SUFFIX, UploadJournal, lock_state

__all__ = ["S3Journal", "S3Source", "S3UploadSink", "Settings", "connect"]

ReadSource = Callable[[int, memoryview], int]
# A download's GET asks for at most this much from where it starts: one request serves many chunks,
# and a store that reads a ranged request's bytes up front (moto) or a worker that stops at the end
# of its run never pays for more (1 GiB from moto with 4 connections: 28 s open-ended).
WINDOW = 64 << 20


class Settings(NamedTuple):
    """How to reach the store: as the AWS CLI's options and environment say (None: the default)."""

    profile: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    timeout: float = 30.0
    retries: int = 5
    connections: int = 1


class Store(NamedTuple):
    client: Any  # a botocore S3 client (thread-safe)
    endpoint: str  # the store's URL, without user information: recorded and shown


def connect(settings: Settings, name: str) -> Store:
    """A client for the store ``settings`` name: the standard credential chain (environment,
    ``~/.aws`` profiles, SSO, instance roles), ``--endpoint-url`` or ``AWS_ENDPOINT_URL(_S3)``,
    path-style addressing for such endpoints (S3-compatible stores)."""
    try:
        session = botocore.session.Session(profile=settings.profile)
        region = settings.region or session.get_config_variable("region") or "us-east-1"
        endpoint = (
            settings.endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or None
        )
        config = botocore.config.Config(
            region_name=region,
            retries={"max_attempts": settings.retries + 1, "mode": "standard"},
            connect_timeout=settings.timeout,
            read_timeout=settings.timeout,
            max_pool_connections=max(10, 2 * settings.connections),
            # onward computes and checks every checksum itself: no aws-chunked trailers, which
            # some S3-compatible stores refuse (aws-cli#9214, boto3#4400).
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"} if endpoint else None,
            user_agent_extra=f"onward/{__version__}",
        )
        client = session.create_client("s3", endpoint_url=endpoint, config=config)
    except botocore.exceptions.ProfileNotFound:
        raise UsageError(f"{name}: no AWS profile named {settings.profile!r} in ~/.aws/config") from None
    except ValueError as exc:  # a malformed --endpoint-url
        raise UsageError(f"{name}: bad endpoint URL: {exc}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise UsageError(f"{name}: cannot set up the S3 client: {type(exc).__name__}") from None
    shown = urllib.parse.urlsplit(client.meta.endpoint_url)
    host = shown.netloc.rpartition("@")[2]
    return Store(client, urllib.parse.urlunsplit((shown.scheme, host, shown.path, "", "")))


def error_code(exc: BaseException) -> tuple[str, int] | None:
    """The store's error code and HTTP status of a ``ClientError``, else None."""
    if isinstance(exc, botocore.exceptions.ClientError):
        response: Any = exc.response
        return str(response.get("Error", {}).get("Code", "")), int(
            response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        )
    return None


def kind_of(exc: BaseException) -> str | None:
    found = error_code(exc)
    return proto.classify(*found) if found else None


def translate(exc: BaseException, name: str, doing: str, *, source: bool) -> OnwardError:
    """The ``onward.errors`` type for a botocore error met while ``doing`` something to ``name``."""
    kind = SourceError if source else DestinationError
    if isinstance(exc, OnwardError):
        return exc
    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return kind(
            f"{name}: no usable AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "or give a profile of ~/.aws/credentials with --profile or AWS_PROFILE",
            name,
        )
    if isinstance(
        exc,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectionClosedError
        | botocore.exceptions.ReadTimeoutError
        | botocore.exceptions.ConnectTimeoutError
        | botocore.exceptions.ResponseStreamingError,
    ):
        return TransientError(
            f"{name}: cannot reach the store while {doing} ({type(exc).__name__}); re-run to resume", name
        )
    found = error_code(exc)
    if found is None:
        return kind(f"{name}: {doing} failed ({type(exc).__name__})", name)
    code, status = found
    what = proto.classify(code, status)
    bucket = name[5:].partition("/")[0]
    if what == "transient":
        return TransientError(
            f"{name}: the store is busy or failing ({code or 'HTTP'} {status}) while {doing}; re-run",
            name,
        )
    if what == "skew":
        return kind(
            f"{name}: the store refuses the request because this machine's clock is off ({code}); "
            "set the clock (NTP) and re-run",
            name,
        )
    if what == "denied":
        return kind(
            f"{name}: access denied ({code or status}) while {doing}; check the credentials, "
            "--profile and the bucket's policy",
            name,
        )
    if what == "no-bucket":
        return kind(
            f"{name}: no such bucket {bucket!r} (check the name, the region and --endpoint-url)", name
        )
    if what == "no-key":
        return kind(f"{name}: no such object", name)
    return kind(f"{name}: {doing} failed: {code or 'HTTP'} {status}", name)


def _checksum_param(algorithm: str) -> str:
    return "Checksum" + proto.CHECKSUMS[algorithm][0]


# -- uploads ------------------------------------------------------------------------------------


class S3UploadSink:
    """A multipart upload (or one PutObject) as the engine's sink; see the module's docstring."""

    # No read-back capability (endpoints.ReadBack): integrity comes from per-part checksums the store checks.

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
        self.binding: proto.S3Upload | None = None
        self.parts: dict[int, proto.Part] = {}  # parts the upload holds, as the store acknowledged them
        self._fresh: list[proto.Part] = []  # acknowledged, not yet in the journal
        self._identity: Identity | None = None
        self._size: int | None = None
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: list[Future[None]] = []
        self.sent = 0  # bytes sent over the network by this run (the bench reads it)

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

    def take_fresh(self) -> list[proto.Part]:
        with self._lock:
            fresh, self._fresh = self._fresh, []
        return fresh

    def abort(self, binding: proto.S3Upload) -> None:
        """Abort an upload (the store bills its parts until then); one already gone is fine."""
        try:
            self._client.abort_multipart_upload(
                Bucket=binding.bucket, Key=binding.key, UploadId=binding.upload_id
            )
        except botocore.exceptions.ClientError as exc:
            if kind_of(exc) not in ("no-upload", "no-key"):
                raise translate(exc, self.name, "aborting the old upload", source=False) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise translate(exc, self.name, "aborting the old upload", source=False) from None

    def _notice(self, message: str) -> None:
        if self.on_notice is not None:
            self.on_notice(message)

    # -- the Sink interface -----------------------------------------------------------------

    def present(self) -> int | None:
        """The whole size while there is an upload: ``onward.s3copy`` has already dropped from the
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
        body = bytes(data)  # the engine reuses its buffer once this returns
        if self._connections <= 1:
            self._put_part(number, body)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._connections, thread_name_prefix="onward-s3")
        while len(self._inflight) >= self._connections:
            self._inflight.pop(0).result()
        self._inflight.append(self._pool.submit(self._put_part, number, body))

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
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise translate(exc, self.name, doing, source=False) from None

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

    def _put_part(self, number: int, body: bytes) -> None:
        binding = self.binding
        assert binding is not None
        checksum = proto.checksum_of(self.checksum, body)
        param = _checksum_param(self.checksum)
        try:
            answer = self._client.upload_part(
                Bucket=binding.bucket,
                Key=binding.key,
                UploadId=binding.upload_id,
                PartNumber=number,
                Body=body,
                ChecksumAlgorithm=proto.CHECKSUMS[self.checksum][0],
                **{param: checksum},
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
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
        part = proto.Part(number, len(body), str(answer["ETag"]), checksum)
        with self._lock:
            self.parts[number] = part
            self._fresh.append(part)
            self.sent += len(body)

    def _complete(self, count: int) -> None:
        binding = self.binding
        assert binding is not None
        param = _checksum_param(self.checksum)
        listed = [
            {"PartNumber": p.number, "ETag": p.etag, **({param: p.checksum} if p.checksum else {})}
            for p in (self.parts[n] for n in range(1, count + 1))
        ]
        try:
            answer = self._client.complete_multipart_upload(
                Bucket=binding.bucket,
                Key=binding.key,
                UploadId=binding.upload_id,
                MultipartUpload={"Parts": listed},
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
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

    def _put_object(self) -> None:
        param = _checksum_param(self.checksum)
        checksum = proto.checksum_of(self.checksum, self._body)
        answer = self._call(
            "uploading",
            self._client.put_object,
            Body=self._body,
            ChecksumAlgorithm=proto.CHECKSUMS[self.checksum][0],
            **{param: checksum},
        )
        self.sent += len(self._body)
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
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
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
        param = _checksum_param(binding.checksum)
        while True:
            try:
                page = self._client.list_parts(
                    Bucket=binding.bucket,
                    Key=binding.key,
                    UploadId=binding.upload_id,
                    PartNumberMarker=marker,
                )
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
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
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
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
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                continue  # gone meanwhile, or not ours to read
            if stamp >= since or not probe.get("Parts"):
                chosen.append(upload_id)
        return chosen


class S3Journal(UploadJournal):
    """An S3 upload's journal in the state directory (``$XDG_STATE_HOME/onward/uploads``), locked
    for the run, written as an upload's (``UploadJournal``). Every rewrite carries the S3UPLOAD
    record of the upload the sink is using (if made for the file the new header describes) and
    the parts it holds; each checkpoint appends the parts acknowledged since the last, before
    the CHUNK records that claim them."""

    def __init__(self, directory: str, key: str, sink: S3UploadSink, lock: int) -> None:
        # Not UploadJournal.__init__: that one binds a tus sink; these are the fields it sets.
        self.directory = directory
        self._journal = LocalJournal(os.path.join(directory, key))
        self.name = self._journal.name
        self._lock_path = os.path.join(directory, key + LOCK_SUFFIX)
        self._s3 = sink
        sink.record = self.record_s3
        self._lock = lock
        self._append_fd = -1

    def names_an_upload(self) -> bool:
        return self._s3.binding is not None

    @classmethod
    def lock(cls, directory: str, key: str, sink: S3UploadSink) -> S3Journal:
        return cls(directory, key, sink, lock_state(directory, key, sink.name))

    def create(self, data: bytes) -> None:
        self._close_appender()
        try:
            header = decode(data).header
        except DecodeError:
            self._journal.create(data)
            return
        binding = self._s3.expect(header.identity, header.total_size)
        extra = b""
        if binding is not None:
            self._s3.take_fresh()
            extra = proto.encode_s3_upload(binding) + proto.encode_parts(
                [self._s3.parts[n] for n in sorted(self._s3.parts)]
            )
        self._journal.create(data + extra)

    def append(self, data: bytes) -> None:
        """Parts, then the CHUNK records claiming them, without waiting for the disk: a journal
        that lags costs nothing but local reads (a resume asks ListParts and compares each part
        the journal lacks with the file). Only the S3UPLOAD record (``record_s3``) is synced."""
        self._write(proto.encode_parts(self._s3.take_fresh()) + data, sync=False)

    def record_s3(self, upload: proto.S3Upload) -> None:
        """Name a new upload in the journal, durably, before any part is sent to it."""
        self._write(proto.encode_s3_upload(upload), sync=True)


# -- downloads ----------------------------------------------------------------------------------


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
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            if kind_of(exc) == "no-key" and self._is_prefix(exc):
                raise SourceError(
                    f"{self.name}: is a prefix (a 'directory'), not an object; use -r to copy what it holds",
                    self.name,
                ) from None
            raise translate(exc, self.name, "looking at the object", source=True) from None

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
        ``identity()`` again. Each thread reads its run of chunks through ranged GETs of up to
        ``WINDOW`` bytes on the recorded ETag (and version), chunk after chunk: one round trip per
        64 MiB, not per chunk, and a store that reads a ranged request's bytes up front (moto)
        reads each byte once."""
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
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            self._drop()
            raise translate(exc, self.name, f"reading bytes from {offset + got}", source=True) from None
        return got

    def _cursor(self, offset: int, length: int) -> list[Any] | None:
        """This thread's open response positioned at ``offset`` ([body, position, last byte]), a
        new one for the next ``WINDOW`` (at least ``length``) bytes if needed; None when the store
        will not send the recorded object from there (replaced: 412; shorter: 416)."""
        cursor: list[Any] | None = getattr(self._local, "cursor", None)
        if cursor is not None and cursor[1] == offset and offset <= cursor[2]:
            return cursor
        self._drop()
        end = offset + max(WINDOW, length) - 1
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
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
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


# -- trees --------------------------------------------------------------------------------------


def list_objects(store: Store, bucket: str, prefix: str, name: str) -> Iterator[tuple[str, int]]:
    """(key, size) of every object under ``prefix``, all pages, in key order."""
    params: dict[str, str] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        try:
            page = store.client.list_objects_v2(**params)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise translate(exc, name, "listing the objects", source=True) from None
        for item in page.get("Contents", []):
            yield str(item["Key"]), int(item["Size"])
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return
        params["ContinuationToken"] = str(token)


def head(store: Store, target: proto.S3Url, part: int | None = None) -> dict[str, Any] | None:
    """The object's HeadObject answer (with its stored checksum; of one part when ``part`` is
    given), or None when there is none."""
    extra: dict[str, Any] = {"PartNumber": part} if part is not None else {}
    try:
        return dict(
            store.client.head_object(Bucket=target.bucket, Key=target.key, ChecksumMode="ENABLED", **extra)
        )
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        if kind_of(exc) == "no-key":
            return None
        raise translate(exc, target.name, "looking at the object", source=False) from None

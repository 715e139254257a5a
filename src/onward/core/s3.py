"""The decisions of S3 copies, as pure functions: no sockets, no clock, no files.

What an ``s3://bucket/key`` URL names, the part size of a multipart upload within
the protocol's limits, the journal records that bind a journal to a multipart
upload (S3UPLOAD) and remember each part the store acknowledged (S3PART), whether
a part the store lists is the one the journal remembers, the ETag a completed
upload must have, per-part checksums, and what a store's error code means.
``onward.endpoints.s3*`` do the I/O and ask these; docs/S3.md has the rules.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

from .identity import Identity
from .journal import KIND_S3_PART, KIND_S3_UPLOAD, frame, frames

__all__ = [
    "CHECKSUMS",
    "MAX_PARTS",
    "MIN_PART",
    "Part",
    "Running",
    "S3Upload",
    "S3Url",
    "checksum_of",
    "choose_part_size",
    "classify",
    "composite_etag",
    "encode_parts",
    "encode_s3_upload",
    "is_s3_url",
    "md5_etag",
    "object_key",
    "parse_s3_url",
    "part_matches",
    "read_s3_records",
    "same_etag",
]

MiB = 1 << 20
MIN_PART = 5 * MiB  # every part but the last (S3's EntityTooSmall below it)
MAX_PART = 5 * 1024 * MiB
MAX_PARTS = 10_000
MAX_OBJECT = 5 * 1024 * 1024 * MiB
DEFAULT_PART = 8 * MiB  # aws-cli's and boto3's default part size and multipart threshold
ENGINE_MAX_CHUNK = 1024 * MiB  # a part is one engine chunk, held in memory while it is sent


def _crc32c(data: bytes | memoryview) -> bytes:
    import crc32c  # the onward[s3] extra: hardware CRC32C (SSE4.2 / ARMv8)

    return int(crc32c.crc32c(data)).to_bytes(4, "big")


def _crc32(data: bytes | memoryview) -> bytes:
    return zlib.crc32(data).to_bytes(4, "big")


# --checksum-algorithm -> (botocore parameter suffix, raw digest function)
CHECKSUMS: dict[str, tuple[str, Callable[[bytes | memoryview], bytes]]] = {
    "crc32c": ("CRC32C", _crc32c),
    "crc32": ("CRC32", _crc32),
    "sha256": ("SHA256", lambda d: hashlib.sha256(d).digest()),
    "sha1": ("SHA1", lambda d: hashlib.sha1(d).digest()),
}


def checksum_of(algorithm: str, data: bytes | memoryview) -> str:
    """The value of ``x-amz-checksum-ALGORITHM`` for ``data``: the base64 of the raw digest."""
    return base64.b64encode(CHECKSUMS[algorithm][1](data)).decode("ascii")


class Running:
    """A whole-object checksum fed piece by piece (a download's stored checksum)."""

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self._crc = 0
        self._hash = hashlib.new(algorithm) if algorithm.startswith("sha") else None

    def update(self, data: bytes | memoryview) -> None:
        if self._hash is not None:
            self._hash.update(data)
        elif self.algorithm == "crc32":
            self._crc = zlib.crc32(data, self._crc)
        else:
            import crc32c

            self._crc = int(crc32c.crc32c(data, self._crc))

    def value(self) -> str:
        raw = self._hash.digest() if self._hash is not None else self._crc.to_bytes(4, "big")
        return base64.b64encode(raw).decode("ascii")


class S3Url(NamedTuple):
    bucket: str
    key: str  # may be empty or end in "/": a prefix (a "directory")

    @property
    def name(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def is_prefix(self) -> bool:
        return not self.key or self.key.endswith("/")


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-_]{2,254}$", re.IGNORECASE)


def is_s3_url(text: str) -> bool:
    return text[:5].lower() == "s3://"


def parse_s3_url(text: str) -> S3Url:
    """The bucket and key ``s3://bucket/key`` names; ``ValueError`` saying why when it names none."""
    if not is_s3_url(text):
        raise ValueError("not an s3:// URL")
    bucket, _, key = text[5:].partition("/")
    if not _BUCKET.match(bucket):
        raise ValueError(f"{bucket!r} is not a bucket name")
    if "\x00" in key or len(key.encode("utf-8", "surrogateescape")) > 1024:
        raise ValueError("the key is longer than 1024 bytes or holds a NUL")
    return S3Url(bucket, key)


def object_key(url: S3Url, filename: str) -> S3Url:
    """The object a file named ``filename`` goes to: ``url`` itself, or under it when it is a prefix."""
    return url._replace(key=url.key + filename) if url.is_prefix else url


def choose_part_size(size: int, asked: int | None, minimum: int = MIN_PART) -> int:
    """The part size of an upload of ``size`` bytes: ``asked`` (``--part-size``) if it fits the
    protocol (``minimum`` to 5 GiB, at most 10,000 parts), else the smallest whole MiB of at
    least 8 MiB that keeps within 10,000 parts. ``ValueError`` when nothing fits."""
    if size > MAX_OBJECT:
        raise ValueError(f"{size} bytes is more than S3's largest object (5 TiB)")
    limit = min(MAX_PART, ENGINE_MAX_CHUNK)
    if asked is not None:
        if not minimum <= asked <= limit:
            raise ValueError(f"--part-size must be between {minimum} and {limit} bytes, not {asked}")
        if -(-size // asked) > MAX_PARTS:
            raise ValueError(f"--part-size {asked} makes more than {MAX_PARTS} parts of {size} bytes")
        return asked
    need = -(-size // MAX_PARTS)
    part = max(DEFAULT_PART, -(-need // MiB) * MiB)
    if part > limit:
        raise ValueError(f"{size} bytes needs parts larger than {limit} bytes")
    return part


class S3Upload(NamedTuple):
    """The multipart upload a journal's parts go to, bound to the identity and size of the file it
    was created for (any other file never resumes into it). No credentials: the endpoint is the
    store's URL as the user gave it, without user information."""

    bucket: str
    key: str
    endpoint: str
    upload_id: str
    part_size: int
    checksum: str  # --checksum-algorithm of every part
    identity: Identity
    size: int
    created: float

    def to_json(self) -> dict[str, Any]:
        data = self._asdict()
        data["identity"] = self.identity.to_json()
        return data

    @classmethod
    def from_json(cls, data: Any) -> S3Upload:
        if not isinstance(data, dict):
            raise ValueError("S3 upload record is not an object")
        strings = ("bucket", "key", "endpoint", "upload_id", "checksum")
        if not all(isinstance(data.get(k), str) for k in strings) or data["checksum"] not in CHECKSUMS:
            raise ValueError("S3 upload record has missing or mistyped fields")
        if not all(isinstance(data.get(k), int) for k in ("part_size", "size")):
            raise ValueError("S3 upload record has missing or mistyped sizes")
        return cls(
            bucket=data["bucket"],
            key=data["key"],
            endpoint=data["endpoint"],
            upload_id=data["upload_id"],
            part_size=data["part_size"],
            checksum=data["checksum"],
            identity=Identity.from_json(data.get("identity")),
            size=data["size"],
            created=float(data.get("created", 0.0)),
        )


class Part(NamedTuple):
    """A part the store acknowledged: its number (1-based), size, ETag and checksum (base64);
    ``digest``: the hex xxh3-128 of its bytes (the engine's chunk digest), when this side sent it."""

    number: int
    size: int
    etag: str
    checksum: str | None
    digest: str | None = None


def encode_s3_upload(upload: S3Upload) -> bytes:
    return frame(
        KIND_S3_UPLOAD, json.dumps(upload.to_json(), sort_keys=True).encode("utf-8", "surrogateescape")
    )


def encode_parts(parts: list[Part]) -> bytes:
    return b"".join(
        frame(KIND_S3_PART, json.dumps([p.number, p.size, p.etag, p.checksum, p.digest]).encode("ascii"))
        for p in parts
    )


def read_s3_records(data: bytes) -> tuple[S3Upload | None, dict[int, Part]]:
    """The journal's last S3UPLOAD record and the S3PART records written after it (a part
    record belongs to the upload named before it). Undecodable records end the reading, as
    a damaged tail ends ``core.journal.decode``."""
    upload: S3Upload | None = None
    parts: dict[int, Part] = {}
    for kind, payload, _ in frames(data):
        try:
            if kind == KIND_S3_UPLOAD:
                upload, parts = S3Upload.from_json(json.loads(payload)), {}
            elif kind == KIND_S3_PART:
                number, size, etag, checksum, *rest = json.loads(payload)  # rest: the digest, if any
                if not (isinstance(number, int) and isinstance(size, int) and isinstance(etag, str)):
                    break
                digest = rest[0] if rest and isinstance(rest[0], str) else None
                parts[number] = Part(
                    number, size, etag, checksum if isinstance(checksum, str) else None, digest
                )
        except (ValueError, TypeError, UnicodeDecodeError):
            break
    return upload, parts


_MD5_ETAG = re.compile(r'^"?([0-9a-f]{32})"?$')


def md5_etag(etag: str) -> str | None:
    """The MD5 (hex) a plain ETag is, or None (a multipart, SSE-KMS or foreign ETag)."""
    match = _MD5_ETAG.match(etag.strip().lower())
    return match.group(1) if match else None


def composite_etag(etags: list[str]) -> str | None:
    """The ETag a store gives the object completed from parts with these ETags (the MD5 of the
    parts' binary MD5s, then ``-N``), or None when a part's ETag is not an MD5."""
    md5s = [md5_etag(e) for e in etags]
    if not md5s or any(m is None for m in md5s):
        return None
    joined = b"".join(bytes.fromhex(m) for m in md5s if m is not None)
    return f'"{hashlib.md5(joined).hexdigest()}-{len(md5s)}"'


def same_etag(a: str, b: str) -> bool:
    return a.strip().strip('"') == b.strip().strip('"')


def part_matches(listed: Part, remembered: Part | None, expected_size: int) -> bool | None:
    """Whether a part the store lists is the one the journal remembers: True, False, or None
    when the journal does not remember it (the caller then compares it with the source)."""
    if listed.size != expected_size:
        return False
    if remembered is None:
        return None
    if remembered.size != listed.size or not same_etag(remembered.etag, listed.etag):
        return False
    return listed.checksum is None or remembered.checksum is None or listed.checksum == remembered.checksum


# -- what an error code means --------------------------------------------------------------------

TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "RequestLimitExceeded",
}
DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}


def classify(code: str, status: int) -> str:
    """What a store's error means: ``transient`` (retry), ``skew`` (the clock), ``denied``,
    ``no-bucket``, ``no-key``, ``no-upload``, ``changed`` (a precondition failed) or ``fatal``."""
    if code in ("RequestTimeTooSkewed", "RequestExpired"):
        return "skew"
    if code in TRANSIENT_CODES or status in (429, 500, 502, 503, 504):
        return "transient"
    if code in DENIED_CODES or status == 403:
        return "denied"
    if code == "NoSuchBucket":
        return "no-bucket"
    if code == "NoSuchUpload":
        return "no-upload"
    if code in ("PreconditionFailed",) or status == 412:
        return "changed"
    if code in ("NoSuchKey", "NotFound", "404") or status == 404:
        return "no-key"
    return "fatal"

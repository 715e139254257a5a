"""The header fields of the upload server, parsed: integers, booleans, metadata, checksums, concatenation.

Two protocols share one upload model (an offset that only grows, a length that may
be unknown until the end, a completeness flag):

- tus 1.0.0 (tus.io), recognised by ``Tus-Resumable``; its extensions creation,
  creation-with-upload, creation-defer-length, expiration, checksum, termination
  and concatenation.
- draft-ietf-httpbis-resumable-upload, recognised by ``Upload-Draft-Interop-Version``
  (8, and 6 for tus-js-client's ``ietf-draft-05`` mode). Its fields are Structured
  Fields (RFC 8941): ``Upload-Complete: ?1``, ``Upload-Offset: 42``; "other values
  MUST cause the entire header field to be ignored", so a malformed one reads as absent.

Pure functions of strings; ``onward.server.protocol`` decides with what they return.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from ..core import sfv
from ..core.http import DIGEST_SIZES
from ..core.http import parse_digest_field as digest_field

__all__ = [
    "CHECKSUM_ALGORITHMS",
    "ID_PATTERN",
    "IETF_VERSIONS",
    "TUS_EXTENSIONS",
    "TUS_VERSION",
    "Checksum",
    "Reject",
    "digest_field",
    "parse_checksum",
    "parse_concat",
    "parse_metadata",
    "parse_sf_boolean",
    "parse_sf_integer",
    "parse_tus_integer",
    "valid_id",
]

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "expiration",
    "checksum",
    "termination",
    "concatenation",
)
IETF_VERSIONS = frozenset({6, 8})
# Upload-Checksum algorithm names (tus checksum extension) -> hashlib names.
CHECKSUM_ALGORITHMS = {"sha1": "sha1", "sha256": "sha256", "md5": "md5"}

# Ids are secrets.token_urlsafe(24): 32 characters of the URL-safe base64 alphabet, redrawn when
# the first is "-" (shell tools would take the id for an option). Anything
# else never reaches the file system, so "..", "/", NUL or a long name cannot name a path.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{32}")
_DIGITS = re.compile(r"[0-9]{1,19}")
_META_KEY = re.compile(r"[^\s,]+")
MAX_METADATA = 16 * 1024  # bytes of Upload-Metadata accepted; tusd and @tus/server have similar caps
# A final concatenation copies every part it names: naming one partial many times multiplies
# the writes of one small request. A few repeats are allowed (a file may repeat a block).
MAX_PART_REPEATS = 4
MAX_PARTS = 1024


@dataclass(eq=False)  # not frozen: the exception machinery sets __traceback__
class Reject(Exception):
    """A request the server refuses: the status to answer and one line saying why."""

    status: int
    reason: str
    problem: str | None = None  # an RFC 9457 problem type for the IETF protocol
    members: tuple[tuple[str, int], ...] = ()  # extra members of that problem
    headers: tuple[tuple[str, str], ...] = ()  # extra response headers


@dataclass(frozen=True, slots=True)
class Checksum:
    """A digest the content of one request must have (``Upload-Checksum`` or ``Content-Digest``)."""

    algorithm: str  # hashlib name
    digest: bytes
    mismatch_status: int  # 460 for tus (Checksum Mismatch), 400 for Content-Digest


def valid_id(text: str) -> bool:
    return ID_PATTERN.fullmatch(text) is not None


def parse_tus_integer(value: str | None, name: str) -> int | None:
    """A tus non-negative integer header (``Upload-Offset``, ``Upload-Length``); None when absent."""
    if value is None:
        return None
    if not _DIGITS.fullmatch(value.strip()):
        raise Reject(400, f"{name} must be a non-negative integer, not {value[:40]!r}")
    return int(value)


def parse_sf_integer(value: str | None) -> int | None:
    """A Structured Field Integer that must be non-negative; None when absent or malformed."""
    number = sfv.item_value(value, int)
    return number if number is not None and number >= 0 else None


def parse_sf_boolean(value: str | None) -> bool | None:
    """A Structured Field Boolean (``?1`` / ``?0``); None when absent or malformed."""
    return sfv.item_value(value, bool)


def parse_metadata(value: str | None) -> dict[str, str | None]:
    """``Upload-Metadata``: ``key base64value`` pairs separated by commas; keys unique, values
    optional. Returns the base64 text as sent (decoded values are the client's business, and
    may not be UTF-8); raises ``Reject(400)`` on anything malformed."""
    if value is None or not value.strip():
        return {}
    if len(value) > MAX_METADATA:
        raise Reject(400, f"Upload-Metadata is longer than {MAX_METADATA} bytes")
    out: dict[str, str | None] = {}
    for pair in value.split(","):
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not _META_KEY.fullmatch(parts[0]):
            raise Reject(400, "Upload-Metadata must be comma-separated 'key base64value' pairs")
        key = parts[0]
        if key in out:
            raise Reject(400, f"Upload-Metadata repeats the key {key!r}")
        raw = parts[1] if len(parts) == 2 else None
        if raw is not None:
            try:
                base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise Reject(400, f"Upload-Metadata value of {key!r} is not base64") from None
        out[key] = raw
    return out


def parse_checksum(upload_checksum: str | None, content_digest: str | None) -> Checksum | None:
    """The digest this request's content must have: tus ``Upload-Checksum: ALG BASE64`` or
    RFC 9530 ``Content-Digest: sha-256=:BASE64:``; None when neither is sent."""
    if upload_checksum is not None:
        alg, _, raw = upload_checksum.strip().partition(" ")
        if alg.lower() not in CHECKSUM_ALGORITHMS:
            supported = ",".join(CHECKSUM_ALGORITHMS)
            raise Reject(400, f"Upload-Checksum algorithm {alg[:20]!r} is not supported ({supported})")
        algorithm = CHECKSUM_ALGORITHMS[alg.lower()]
        digest = _b64(raw)
        if digest is None or len(digest) != DIGEST_SIZES[algorithm]:
            raise Reject(400, "Upload-Checksum must be 'ALGORITHM BASE64-DIGEST'")
        return Checksum(algorithm, digest, 460)
    if content_digest is not None:
        found = digest_field(content_digest)
        if found is None:
            raise Reject(400, "Content-Digest names no algorithm this server knows (sha-256, sha-512)")
        return Checksum(found[0], found[1], 400)
    return None


def parse_concat(value: str | None, base_path: str) -> tuple[str, list[str]] | None:
    """``Upload-Concat: partial`` -> ("partial", []); ``final;URL URL`` -> ("final", [ids]).

    The URLs of a final upload may be absolute or paths; each must name an upload under
    ``base_path`` by a well-formed id, or the request is a 400.
    """
    if value is None:
        return None
    text = value.strip()
    if text == "partial":
        return "partial", []
    kind, sep, urls = text.partition(";")
    if kind != "final" or not sep or not urls.strip():
        raise Reject(400, "Upload-Concat must be 'partial' or 'final;URL URL ...'")
    ids: list[str] = []
    seen: dict[str, int] = {}
    if len(urls.split()) > MAX_PARTS:
        raise Reject(400, f"Upload-Concat names more than {MAX_PARTS} parts")
    for url in urls.split():
        path = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/]*", "", url)
        if not path.startswith(base_path):
            raise Reject(400, f"Upload-Concat names {url[:80]!r}, which is not an upload of this server")
        upload_id = path[len(base_path) :]
        if not valid_id(upload_id):
            raise Reject(400, f"Upload-Concat names {url[:80]!r}, which is not an upload of this server")
        ids.append(upload_id)
        seen[upload_id] = seen.get(upload_id, 0) + 1
        if seen[upload_id] > MAX_PART_REPEATS:
            raise Reject(400, f"Upload-Concat names {url[:80]!r} more than {MAX_PART_REPEATS} times")
    return "final", ids


def _b64(value: str) -> bytes | None:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None

"""The decisions of an HTTP(S) download, as pure functions of header and URL strings.

What a URL may be shown as (never with its credentials), what a ``Content-Range``
says, which validator goes into ``If-Range``, how long ``Retry-After`` asks to
wait, what a server-sent file name becomes on disk (never a path that leaves the
destination directory), and which whole-file digests a download must match. The
HTTP endpoint (``onward.endpoints.http``) does the I/O and asks these.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = [
    "ALGORITHMS",
    "ContentRange",
    "Expected",
    "filename_from_disposition",
    "header_problem",
    "looks_like_url",
    "name_from_url",
    "never_resolves",
    "parse_checksum",
    "parse_content_range",
    "parse_digest_field",
    "parse_retry_after",
    "redact_url",
    "safe_filename",
    "server_digests",
    "strong_etag",
]

# Names --expect-digest accepts -> hashlib names.
ALGORITHMS = {"sha256": "sha256", "sha512": "sha512", "sha1": "sha1", "md5": "md5"}
# Bytes of a digest of each algorithm (hashlib names): the one table every digest check uses.
DIGEST_SIZES = {"sha256": 32, "sha512": 64, "sha1": 20, "md5": 16}
# Repr-Digest / Content-Digest (RFC 9530) and legacy Digest (RFC 3230) algorithm tokens,
# strongest first.
SERVER_ALGORITHMS = {"sha-512": "sha512", "sha-256": "sha256", "sha": "sha1", "md5": "md5"}

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Query parameters whose values are secrets often enough to keep them out of journals and logs.
_SENSITIVE = re.compile(
    r"token|sig|signature|secret|passw|pwd|key|auth|credential|session|jwt|ticket", re.IGNORECASE
)
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 field-name
# Headers onward sets itself: a user's value would break byte offsets or the request.
RESERVED_HEADERS = frozenset({"range", "if-range", "accept-encoding", "host", "content-length"})
MAX_NAME_BYTES = 200  # leaves room for ".onward-journal.tmp" within NAME_MAX (255)


def looks_like_url(text: str) -> bool:
    """``scheme://...``: a URL (maybe of a scheme onward does not speak), not a local path."""
    return bool(_SCHEME.match(text))


def redact_url(url: str) -> str:
    """``url`` as onward shows and records it: no user name or password, no fragment, and
    the values of query parameters that look like secrets (token, signature, key, ...)
    replaced by ``REDACTED``."""
    import urllib.parse  # here, not at import: a local copy asks only looks_like_url (4 ms of start-up)

    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pieces = []
        for piece in query.split("&"):
            name, eq, _ = piece.partition("=")
            sensitive = eq and _SENSITIVE.search(urllib.parse.unquote_plus(name))
            pieces.append(f"{name}=REDACTED" if sensitive else piece)
        query = "&".join(pieces)
    return urllib.parse.urlunsplit((parts.scheme.lower(), host, parts.path, query, ""))


def header_problem(name: object, value: object) -> str | None:
    """Why a request header a user wants to add cannot be sent, or None when it can."""
    if not isinstance(name, str) or not isinstance(value, str):
        return "a header is a pair of strings"
    if not _TOKEN.match(name):
        return "not a valid header name"
    if any(c in value for c in "\r\n\0"):
        return "the value must be one line"
    if name.lower() in RESERVED_HEADERS:
        return "onward sets this header itself"
    return None


def never_resolves(host: str) -> bool:
    """RFC 6761 §6.4: names under ``.invalid`` never resolve; resolvers should say so at once."""
    return host.rstrip(".").lower().rpartition(".")[2] == "invalid"


class ContentRange(NamedTuple):
    start: int | None  # None for "bytes */total" (the form a 416 carries)
    end: int | None  # inclusive
    total: int | None  # None for an unknown total ("*")


def parse_content_range(value: str | None) -> ContentRange | None:
    """``bytes a-b/total``, ``bytes a-b/*`` or ``bytes */total``; None when absent or malformed."""
    if value is None:
        return None
    match = _CONTENT_RANGE.match(value)
    if not match:
        return None
    start, end, total = match.groups()
    if start is None and total == "*":
        return None
    out = ContentRange(
        None if start is None else int(start),
        None if end is None else int(end),
        None if total == "*" else int(total),
    )
    if out.start is not None and out.end is not None and out.end < out.start:
        return None
    if out.end is not None and out.total is not None and out.end >= out.total:
        return None
    return out


def strong_etag(value: str | None) -> str:
    """The ETag if it is a strong one (usable in ``If-Range``), else ``""``."""
    if not value:
        return ""
    value = value.strip()
    if value.startswith(("W/", "w/")) or not (value.startswith('"') and value.endswith('"')):
        return ""
    return value


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    import email.utils  # here, not at start-up: only an HTTP answer needs it

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def filename_from_disposition(value: str | None) -> str | None:
    """The raw ``filename*`` (RFC 6266/5987, preferred) or ``filename`` of a Content-Disposition."""
    if not value:
        return None
    from email.message import Message

    message = Message()
    message["content-disposition"] = value
    try:
        name = message.get_filename()
    except (ValueError, LookupError):
        return None
    return name


def safe_filename(raw: str | None) -> str | None:
    """A name from a server or a URL made safe to create inside the destination directory.

    Only the last path component is kept (``/`` and ``\\`` both count as separators),
    control characters become ``_``, and names that are empty, ``.`` or ``..`` are
    refused (None). Over-long names are shortened, keeping their extension.
    """
    if raw is None:
        return None
    name = re.split(r"[/\\]", raw)[-1]
    name = "".join("_" if ord(c) < 32 or ord(c) == 127 else c for c in name).strip()
    if name in ("", ".", "..") or "\0" in name:
        return None
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) > MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        ext = dot + ext if dot and stem and len(ext.encode("utf-8", "surrogateescape")) <= 16 else ""
        keep = MAX_NAME_BYTES - len(ext.encode("utf-8", "surrogateescape"))
        head = encoded[:keep].decode("utf-8", "ignore")
        name = head + ext
    return name


def name_from_url(url: str) -> str | None:
    """The file name a URL's path ends with (percent-decoded), made safe; None if there is none."""
    import urllib.parse

    path = urllib.parse.urlsplit(url).path
    if not path or path.endswith("/"):
        return None
    return safe_filename(urllib.parse.unquote(path.rsplit("/", 1)[-1], errors="surrogateescape"))


class Expected(NamedTuple):
    """A whole-file digest the finished download must have, and who said so."""

    algorithm: str  # hashlib name
    digest: bytes
    origin: str  # "--expect-digest", "Repr-Digest" or "Digest"

    @property
    def hex(self) -> str:
        return self.digest.hex()


def parse_checksum(spec: str) -> Expected:
    """``ALG:HEX`` with ALG one of sha256, sha512, sha1, md5; raises ValueError."""
    alg, sep, hexdigest = spec.strip().partition(":")
    alg = alg.lower().replace("-", "")
    if not sep or alg not in ALGORITHMS:
        raise ValueError(f"expected ALG:HEX with ALG one of {', '.join(ALGORITHMS)}, not {spec!r}")
    try:
        digest = bytes.fromhex(hexdigest.strip())
    except ValueError:
        raise ValueError(f"{hexdigest!r} is not a hexadecimal digest") from None
    if len(digest) != DIGEST_SIZES[alg]:
        raise ValueError(f"a {alg} digest has {2 * DIGEST_SIZES[alg]} hex digits, not {len(hexdigest)}")
    return Expected(ALGORITHMS[alg], digest, "--expect-digest")


def _b64(value: str) -> bytes | None:
    import base64
    import binascii

    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def _strongest(found: dict[str, bytes]) -> tuple[str, bytes] | None:
    for alg in SERVER_ALGORITHMS.values():  # strongest first
        if alg in found:
            return alg, found[alg]
    return None


def parse_digest_field(value: str | None) -> tuple[str, bytes] | None:
    """The strongest (hashlib name, digest) of a ``Repr-Digest`` or ``Content-Digest`` field
    (RFC 9530: a Structured Field Dictionary, ``sha-256=:BASE64:``); None when it is absent,
    does not parse, or names no algorithm onward knows with a digest of the right length."""
    if not value:
        return None
    from . import sfv  # here, not at import: a local copy never reads a digest field

    try:
        members = sfv.parse_dictionary(value)
    except sfv.SFError:
        return None
    found: dict[str, bytes] = {}
    for name, member in members.items():
        alg = SERVER_ALGORITHMS.get(name)
        digest = member.value if isinstance(member, sfv.Item) else None
        if alg is not None and isinstance(digest, bytes) and len(digest) == DIGEST_SIZES[alg]:
            found[alg] = digest
    return _strongest(found)


def _legacy_digest(value: str) -> tuple[str, bytes] | None:
    """The strongest digest of an RFC 3230 ``Digest`` field (``SHA-256=BASE64``: not a
    Structured Field; algorithm names are case-insensitive)."""
    found: dict[str, bytes] = {}
    for member in value.split(","):
        name, eq, raw = member.partition("=")
        alg = SERVER_ALGORITHMS.get(name.strip().lower())
        digest = _b64(raw.split(";", 1)[0]) if eq and alg else None
        if alg is not None and digest is not None and len(digest) == DIGEST_SIZES[alg]:
            found[alg] = digest
    return _strongest(found)


def server_digests(repr_digest: str | None, digest: str | None) -> list[Expected]:
    """The strongest digest a server announced for the whole representation, if any.

    ``Repr-Digest`` (RFC 9530: ``sha-256=:BASE64:``) is preferred over the legacy
    ``Digest`` (RFC 3230: ``SHA-256=BASE64``). Algorithms onward does not know, and
    values that do not decode to the right length, are ignored.
    """
    found = parse_digest_field(repr_digest)
    if found is not None:
        return [Expected(*found, "Repr-Digest")]
    found = _legacy_digest(digest) if digest else None
    return [Expected(*found, "Digest")] if found is not None else []

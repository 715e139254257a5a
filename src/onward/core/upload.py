"""The decisions of a resumable upload (tus 1.0.0 and the IETF draft), as pure functions.

Which URL schemes mean an upload and with which protocol, the headers of each
request, what a response's headers say (offset, completeness, limits, the
checksum algorithms a tus server accepts), how a chunk the engine hands over
lines up with the offset the server holds, and where an upload's journal lives.
No sockets, no clock, no files: ``onward.endpoints.tus`` does the I/O and asks
these, and tests/test_upload_core.py checks them without a server.

Two protocols, chosen by the destination URL's scheme (docs/UPLOAD.md):

- ``tus+http://`` / ``tus+https://``: tus 1.0.0 (core, creation; the checksum
  extension when the server advertises it). The URL is the creation endpoint.
- ``ietf+http://`` / ``ietf+https://``: "Resumable Uploads for HTTP"
  (draft-ietf-httpbis-resumable-upload), interop version 8. The URL is the
  resource the upload is created at.

The server's offset is authoritative: a chunk is sent from the offset the
server reports, never from the offset the journal remembers.
"""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.parse
from collections.abc import Mapping
from typing import NamedTuple

from . import sfv
from .http import redact_url

__all__ = [
    "IETF_INTEROP_VERSION",
    "PROTOCOLS",
    "TUS_VERSION",
    "Limits",
    "Placement",
    "Target",
    "append_headers",
    "choose_checksum",
    "creation_headers",
    "encode_metadata",
    "head_headers",
    "is_upload_url",
    "parse_boolean",
    "parse_limits",
    "parse_offset",
    "parse_target",
    "parse_tokens",
    "patch_pieces",
    "place",
    "repr_digest",
    "resolve_location",
    "restore_secrets",
    "state_dir",
    "state_key",
    "status_kind",
    "strip_userinfo",
    "upload_checksum",
    "upload_complete",
    "upload_offset",
]

TUS_VERSION = "1.0.0"
IETF_INTEROP_VERSION = 8
PROTOCOLS = ("tus", "ietf")
# scheme -> (protocol, the HTTP scheme it travels over)
SCHEMES = {
    "tus+http": ("tus", "http"),
    "tus+https": ("tus", "https"),
    "ietf+http": ("ietf", "http"),
    "ietf+https": ("ietf", "https"),
}
# Upload-Checksum algorithms onward sends, strongest first (tus checksum extension).
CHECKSUMS = ("sha256", "sha1")
TUS_PATCH_TYPE = "application/offset+octet-stream"
IETF_PATCH_TYPE = "application/partial-upload"
# Structured-field integers have at most 15 digits (RFC 9651 §3.3.1); tus offsets are plain
# decimal numbers, capped here at 19 digits so they always fit a signed 64-bit integer.
_DIGITS = re.compile(r"^[0-9]{1,19}$")


class Target(NamedTuple):
    """An upload destination: the protocol and the http(s) URL requests go to."""

    protocol: str  # "tus" or "ietf"
    url: str  # http(s)://..., with any credentials the user gave: never shown, never recorded
    name: str  # the URL as given (tus+https://...), without credentials or secret query values

    @property
    def label(self) -> str:
        return "tus 1.0.0" if self.protocol == "tus" else f"IETF draft (interop {IETF_INTEROP_VERSION})"


def is_upload_url(text: str) -> bool:
    """Whether ``text`` names an upload destination (``tus+http(s)://`` or ``ietf+http(s)://``)."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def parse_target(text: str) -> Target:
    """The upload destination ``text`` names; ``ValueError`` (saying why) when it names none."""
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ValueError(f"not an upload URL (schemes: {', '.join(sorted(SCHEMES))})")
    protocol, http_scheme = SCHEMES[scheme.lower()]
    url = f"{http_scheme}://{rest}"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    if not parts.hostname:
        raise ValueError("not a valid URL (no host name)")
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"not a valid URL (port {port} is out of range)")
    name = redact_url(url)
    return Target(protocol, url, f"{scheme.lower()}{name[len(http_scheme) :]}")


# -- headers we send ----------------------------------------------------------------------------


def encode_metadata(pairs: Mapping[str, str]) -> str:
    """tus ``Upload-Metadata``: ``key base64(value)`` pairs joined by commas (keys must be
    ASCII without spaces or commas; others are left out rather than sent malformed)."""
    out = []
    for key, value in pairs.items():
        if not key or not key.isascii() or any(c in key for c in " ,\t") or not key.isprintable():
            continue
        encoded = base64.b64encode(value.encode("utf-8", "surrogateescape")).decode("ascii")
        out.append(f"{key} {encoded}" if value else key)
    return ",".join(out)


def _common(protocol: str) -> dict[str, str]:
    if protocol == "tus":
        return {"Tus-Resumable": TUS_VERSION}
    return {"Upload-Draft-Interop-Version": str(IETF_INTEROP_VERSION)}


def creation_headers(protocol: str, length: int, metadata: Mapping[str, str]) -> dict[str, str]:
    """Headers of the request that creates an upload of ``length`` bytes, with no data in it.

    Creation carries no data on purpose (no creation-with-upload): the upload's URL must be
    in the journal before the first byte is sent, so a kill right after creation loses nothing.
    """
    headers = _common(protocol)
    headers["Upload-Length"] = str(length)
    if protocol == "tus":
        meta = encode_metadata(metadata)
        if meta:
            headers["Upload-Metadata"] = meta
    else:
        headers["Upload-Complete"] = "?0"
        headers["Content-Type"] = "application/octet-stream"
        filename = metadata.get("filename")
        if filename:
            headers["Content-Disposition"] = _disposition(filename)
    return headers


def _disposition(filename: str) -> str:
    """``inline`` with the file name, as RFC 6266 wants it (ASCII fallback and ``filename*``)."""
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    quoted = urllib.parse.quote(filename.encode("utf-8", "surrogateescape"), safe="")
    return f"inline; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}"


def head_headers(protocol: str) -> dict[str, str]:
    return _common(protocol)


def append_headers(
    protocol: str,
    offset: int,
    *,
    complete: bool,
    checksum: str | None = None,
    digest: str | None = None,
) -> dict[str, str]:
    """Headers of a PATCH appending bytes at ``offset``. ``checksum`` is a tus
    ``Upload-Checksum`` value for this request's bytes; ``digest`` an RFC 9530
    ``Repr-Digest`` value for the whole upload (IETF, on the request that completes it)."""
    headers = _common(protocol)
    headers["Upload-Offset"] = str(offset)
    if protocol == "tus":
        headers["Content-Type"] = TUS_PATCH_TYPE
        if checksum is not None:
            headers["Upload-Checksum"] = checksum
    else:
        headers["Content-Type"] = IETF_PATCH_TYPE
        headers["Upload-Complete"] = "?1" if complete else "?0"
        if digest is not None:
            headers["Repr-Digest"] = digest
    return headers


def choose_checksum(advertised: list[str]) -> str | None:
    """The strongest ``Upload-Checksum`` algorithm the server and onward both know, or None."""
    for name in CHECKSUMS:
        if name in advertised:
            return name
    return None


def upload_checksum(algorithm: str, data: bytes | memoryview) -> str:
    """A tus ``Upload-Checksum`` value: the algorithm, a space, the base64 digest of ``data``."""
    digest = hashlib.new(algorithm, data).digest()
    return f"{algorithm} {base64.b64encode(digest).decode('ascii')}"


def repr_digest(sha256: bytes) -> str:
    """An RFC 9530 ``Repr-Digest`` value from a SHA-256 of the whole representation."""
    return f"sha-256=:{base64.b64encode(sha256).decode('ascii')}:"


# -- what the server says -----------------------------------------------------------------------


def parse_offset(value: str | None) -> int | None:
    """A non-negative decimal integer (``Upload-Offset``, ``Upload-Length``), or None."""
    if value is None:
        return None
    value = value.strip()
    return int(value) if _DIGITS.match(value) else None


def parse_boolean(value: str | None) -> bool | None:
    """A structured-field Boolean (``?1`` / ``?0``), or None for anything else."""
    return sfv.item_value(value, bool)


def parse_tokens(value: str | None) -> list[str]:
    """A comma-separated list (``Tus-Extension``, ``Tus-Checksum-Algorithm``), lower-cased."""
    if not value:
        return []
    return [t.strip().lower() for t in value.split(",") if t.strip()]


class Limits(NamedTuple):
    """What ``Upload-Limit`` (IETF) or ``Tus-Max-Size`` (tus) allows; None: no limit said."""

    max_size: int | None = None
    max_append_size: int | None = None
    min_append_size: int | None = None


def parse_limits(value: str | None) -> Limits:
    """``Upload-Limit``, a structured-field Dictionary; unknown keys are ignored, and a known
    key with a value that is not a non-negative integer voids the whole field (the draft)."""
    if not value:
        return Limits()
    try:
        members = sfv.parse_dictionary(value)
    except sfv.SFError:
        return Limits()
    found: dict[str, int] = {}
    for key, member in members.items():
        if key not in ("max-size", "max-append-size", "min-append-size", "max-age", "min-size"):
            continue
        number = member.value if isinstance(member, sfv.Item) else None
        if type(number) is not int or number < 0:
            return Limits()
        found[key] = number
    return Limits(found.get("max-size"), found.get("max-append-size"), found.get("min-append-size"))


def upload_offset(headers: Mapping[str, str]) -> int | None:
    return parse_offset(headers.get("upload-offset"))


def upload_complete(protocol: str, headers: Mapping[str, str], offset: int, length: int) -> bool:
    """Whether the server holds the whole upload: tus, when its offset reached the length;
    the draft, when it says ``Upload-Complete: ?1`` (an offset equal to the length is not
    enough there: the completing request may still be due)."""
    if protocol == "tus":
        return offset == length
    return parse_boolean(headers.get("upload-complete")) is True and offset == length


def status_kind(protocol: str, status: int) -> str:
    """What a response status means to an upload request:

    ``ok`` (2xx), ``gone`` (the upload no longer exists: 404, 410; 403 too for tus,
    where some servers answer it for an expired upload), ``offset`` (409: not the offset
    the server holds; ask it again), ``checksum`` (460: the bytes arrived damaged; send
    them again), ``transient`` (408, 423 locked by an earlier request still open, 429,
    5xx), ``too-large`` (413), ``fatal`` (anything else).
    """
    if 200 <= status < 300:
        return "ok"
    if status in (404, 410) or (status == 403 and protocol == "tus"):
        return "gone"
    if status == 409:
        return "offset"
    if status == 460:
        return "checksum"
    if status in (408, 423, 429) or status >= 500:
        return "transient"
    if status == 413:
        return "too-large"
    return "fatal"


# -- lining chunks up with the server's offset --------------------------------------------------


class Placement(NamedTuple):
    """How a chunk the engine hands over at ``offset`` meets the server's offset.

    ``skip`` leading bytes are already on the server (sent by an earlier run or attempt
    from this same file: the upload is bound to the file's identity); ``gap`` bytes
    before the chunk are missing on the server (it lost them, or this is a new upload)
    and must be sent first, read from the file again.
    """

    skip: int
    gap: int


def place(offset: int, length: int, server_offset: int) -> Placement:
    """Where a chunk [``offset``, ``offset + length``) lands against ``server_offset``."""
    if server_offset >= offset:
        return Placement(min(server_offset - offset, length), 0)
    return Placement(0, offset - server_offset)


def patch_pieces(start: int, end: int, max_append: int | None) -> list[tuple[int, int]]:
    """The (start, end) ranges the bytes [start, end) are sent in: one PATCH, or several
    when the server limits the size of one append (``max-append-size``)."""
    if end <= start:
        return []
    step = end - start if not max_append or max_append <= 0 else max_append
    return [(p, min(p + step, end)) for p in range(start, end, step)]


# -- upload URLs --------------------------------------------------------------------------------


def resolve_location(base: str, location: str) -> str:
    """The absolute URL a ``Location`` header names (it may be relative to the request URL)."""
    return urllib.parse.urljoin(base, location.strip())


def strip_userinfo(url: str) -> str:
    """``url`` without ``user:password@``; the fragment goes too."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, ""))


def restore_secrets(recorded: str, endpoint: str) -> str | None:
    """The upload URL to use now, from the ``recorded`` one (written redacted: secret-looking
    query values as ``REDACTED``) and the ``endpoint`` the user gave this run.

    A redacted value is taken from the endpoint's query parameter of the same name (servers
    that authorise by a token in the query echo it into the upload URL). None when a secret
    cannot be restored: the old upload cannot be reached, a new one is made.
    """
    parts = urllib.parse.urlsplit(recorded)
    if "REDACTED" not in parts.query:
        return recorded
    given: dict[str, str] = {}
    for piece in urllib.parse.urlsplit(endpoint).query.split("&"):
        key, eq, value = piece.partition("=")
        if eq:
            given.setdefault(key, value)
    pieces = []
    for piece in parts.query.split("&"):
        key, eq, value = piece.partition("=")
        if eq and value == "REDACTED":
            if key not in given:
                return None
            value = given[key]
        pieces.append(f"{key}{eq}{value}")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(pieces), ""))


def state_key(source: str, destination: str) -> str:
    """The name (without suffix) of the journal of an upload of ``source`` to ``destination``
    (both as recorded: an absolute path and the redacted URL), unique to that pair."""
    raw = f"{source}\n{destination}".encode("utf-8", "surrogateescape")
    return "upload-" + hashlib.sha256(raw).hexdigest()[:32]


def state_dir(environ: Mapping[str, str], home: str) -> str:
    """Where unfinished uploads keep their journals: ``$XDG_STATE_HOME/onward/uploads``, else
    ``~/.local/state/onward/uploads`` (the XDG base directory rules: a relative
    ``XDG_STATE_HOME`` is ignored)."""
    base = environ.get("XDG_STATE_HOME", "")
    if not base.startswith("/"):
        base = f"{home.rstrip('/')}/.local/state"
    return f"{base.rstrip('/')}/onward/uploads"

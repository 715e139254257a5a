"""The values the upload server's rules (``onward.server.protocol``) take and return: the parsed
request, the response, the plans the app carries out, and the settings the rules depend on."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from .headers import Checksum, Reject, parse_sf_integer
from .storage import Upload

__all__ = ["Action", "Answer", "Append", "BodyEnd", "Creation", "Headers", "Request", "Rules"]

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Request:
    """A request as the rules see it."""

    method: str  # after X-HTTP-Method-Override
    target: str  # "" for the collection, else what follows the base path
    headers: Mapping[str, str]  # lower-case names, repeated fields joined by ", "
    ietf: int | None = None  # Upload-Draft-Interop-Version; None for tus

    @classmethod
    def of(cls, method: str, target: str, headers: Mapping[str, str]) -> Request:
        version = headers.get("upload-draft-interop-version")
        ietf = parse_sf_integer(version) if version is not None else None
        if method == "POST" and "x-http-method-override" in headers:
            method = headers["x-http-method-override"].strip().upper()
        return cls(method, target, headers, ietf)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def body_length(self) -> int | None:
        """Content-Length; 0 without a body, None for a chunked one (known only as it arrives)."""
        value = self.header("content-length")
        if value is None:
            return None if "transfer-encoding" in self.headers else 0
        try:
            return int(value)
        except ValueError:
            raise Reject(400, "Content-Length is not a number") from None

    def media_type(self) -> str:
        """Content-Type without its parameters, as sent."""
        return (self.header("content-type") or "").split(";")[0].strip()


@dataclass(frozen=True)
class Answer:
    """A response: status, headers (CORS ones are the app's), body."""

    status: int
    headers: Headers = ()
    body: bytes = b""


class Action(enum.Enum):
    """What a request to the upload collection or to one upload asks for."""

    CREATE_TUS = "create-tus"
    CREATE_IETF = "create-ietf"
    HEAD = "head"
    PATCH = "patch"
    DELETE = "delete"


class BodyEnd(enum.Enum):
    """How the streaming of a request body ended."""

    DONE = "done"
    ENDED = "ended"  # a newer request to the same upload took over
    TIMEOUT = "timeout"
    DISCONNECT = "disconnect"
    TOO_LONG = "too-long"  # more bytes than the upload's length (none of them kept)
    BAD_CHECKSUM = "bad-checksum"  # all arrived, digest wrong (none of them kept)


@dataclass(frozen=True)
class Creation:
    """A new upload to make, and the data its creation request carries."""

    length: int | None
    metadata: dict[str, str | None]
    body: int | None = 0  # bytes of data announced: 0 none, None not known yet (chunked)
    concat: str | None = None  # "partial" or "final"
    parts: tuple[str, ...] = ()  # the ids a final upload concatenates
    checksum: Checksum | None = None
    complete: bool | None = None  # IETF Upload-Complete; None for tus
    content_type: str | None = None
    repr_digest: tuple[str, str] | None = None  # (hashlib name, hex digest)


@dataclass(frozen=True)
class Append:
    """Data to stream onto an upload: what it must hash to, where it must stop, what it sets."""

    limit: int | None  # the offset the data may not pass
    checksum: Checksum | None = None
    new_length: int | None = None  # a deferred length this request sets (recorded once its data is)
    complete: bool | None = None  # IETF Upload-Complete; None for tus


@dataclass(frozen=True)
class Rules:
    """The server's settings the decisions depend on."""

    base: str = "/files/"  # where uploads live, with both slashes
    max_size: int | None = None
    expire_after: float = 24 * 3600.0

    def check_size(self, length: int | None) -> None:
        if length is not None and self.max_size is not None and length > self.max_size:
            raise Reject(413, f"the upload is larger than this server accepts ({self.max_size} bytes)")

    def limits(self, upload: Upload | None, now: float) -> str:
        """``Upload-Limit``: the size cap and the seconds left (for a new upload, all of them)."""
        parts = [] if self.max_size is None else [f"max-size={self.max_size}"]
        age = self.expire_after if upload is None else upload.expires - now
        parts.append(f"max-age={max(0, int(age))}")
        return ", ".join(parts)

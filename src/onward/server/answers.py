"""What the upload server's answers say: the headers that describe an upload, the server and a
refusal, for each of the two protocols. Pure; ``onward.server.protocol`` picks the status."""

from __future__ import annotations

import email.utils
import json
from typing import Any

from .headers import CHECKSUM_ALGORITHMS, TUS_EXTENSIONS, TUS_VERSION, Reject
from .model import Answer, Headers, Rules
from .storage import Upload

__all__ = ["capabilities", "cors_headers", "ietf_state", "preflight", "refusal", "tus_state"]

TUS_CONTENT_TYPE = "application/offset+octet-stream"
IETF_CONTENT_TYPE = "application/partial-upload"
PROBLEM = "https://iana.org/assignments/http-problem-types#"
EXPOSED = (
    "Location, Upload-Offset, Upload-Length, Upload-Metadata, Upload-Defer-Length, Upload-Concat, "
    "Upload-Expires, Upload-Complete, Upload-Limit, Upload-Draft-Interop-Version, Tus-Resumable, "
    "Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm"
)
ALLOWED_HEADERS = (
    "Authorization, Content-Type, Content-Digest, Repr-Digest, Upload-Offset, Upload-Length, "
    "Upload-Metadata, Upload-Defer-Length, Upload-Concat, Upload-Checksum, Upload-Complete, "
    "Upload-Draft-Interop-Version, Tus-Resumable, X-HTTP-Method-Override, X-Requested-With"
)
METHODS = "POST, PUT, HEAD, PATCH, DELETE, OPTIONS"


def preflight(asked: str | None) -> Headers:
    """A CORS preflight's answer: the methods, the headers asked for (else all this server reads)."""
    return (
        ("Access-Control-Allow-Methods", METHODS),
        ("Access-Control-Allow-Headers", asked or ALLOWED_HEADERS),
        ("Access-Control-Max-Age", "86400"),
    )


def capabilities(rules: Rules) -> Headers:
    headers = [
        ("Tus-Resumable", TUS_VERSION),
        ("Tus-Version", TUS_VERSION),
        ("Tus-Extension", ",".join(TUS_EXTENSIONS)),
        ("Tus-Checksum-Algorithm", ",".join(CHECKSUM_ALGORITHMS)),
        ("Accept-Patch", f"{TUS_CONTENT_TYPE}, {IETF_CONTENT_TYPE}"),
        ("Upload-Limit", rules.limits(None, 0.0)),
    ]
    if rules.max_size is not None:
        headers.append(("Tus-Max-Size", str(rules.max_size)))
    return tuple(headers)


def cors_headers(origin: str | None, origins: tuple[str, ...]) -> Headers:
    """What every response to a browser at ``origin`` carries, when ``origins`` allows it."""
    if origin is None or not origins or ("*" not in origins and origin not in origins):
        return ()
    return (
        ("Access-Control-Allow-Origin", origin),
        ("Vary", "Origin"),
        ("Access-Control-Expose-Headers", EXPOSED),
    )


def tus_state(upload: Upload, rules: Rules) -> Headers:
    headers = [
        ("Tus-Resumable", TUS_VERSION),
        ("Upload-Offset", str(upload.offset)),
        ("Upload-Expires", email.utils.formatdate(upload.expires, usegmt=True)),
        ("Cache-Control", "no-store"),
    ]
    if upload.length is not None:
        headers.append(("Upload-Length", str(upload.length)))
    else:
        headers.append(("Upload-Defer-Length", "1"))
    if upload.metadata:
        text = ",".join(k if v is None else f"{k} {v}" for k, v in upload.metadata.items())
        headers.append(("Upload-Metadata", text))
    if upload.concat == "partial":
        headers.append(("Upload-Concat", "partial"))
    elif upload.concat == "final":
        headers.append(("Upload-Concat", "final;" + " ".join(rules.base + p for p in upload.parts)))
    return tuple(headers)


def ietf_state(upload: Upload, rules: Rules, now: float) -> Headers:
    headers = [
        ("Upload-Offset", str(upload.offset)),
        ("Upload-Complete", "?1" if upload.complete else "?0"),
        ("Upload-Limit", rules.limits(upload, now)),
        ("Cache-Control", "no-store"),
    ]
    if upload.length is not None:
        headers.append(("Upload-Length", str(upload.length)))
    return tuple(headers)


def refusal(rejected: Reject, ietf: bool, rules: Rules) -> Answer:
    """A refusal as the client's protocol says it: an RFC 9457 problem for the IETF draft,
    a line of text for tus."""
    if ietf:
        problem: dict[str, Any] = {"type": PROBLEM + rejected.problem if rejected.problem else "about:blank"}
        problem["title"] = rejected.reason
        problem.update(rejected.members)
        headers = [("Content-Type", "application/problem+json"), *rejected.headers]
        if rejected.status == 413:
            headers.append(("Upload-Limit", rules.limits(None, 0.0)))
        return Answer(rejected.status, tuple(headers), json.dumps(problem).encode())
    headers = [
        ("Tus-Resumable", TUS_VERSION),
        ("Content-Type", "text/plain; charset=utf-8"),
        *rejected.headers,
    ]
    if rejected.status == 405:
        headers.append(("Allow", METHODS))
    if rejected.status == 401:
        headers.append(("WWW-Authenticate", 'Bearer realm="onward"'))
    return Answer(rejected.status, tuple(headers), (rejected.reason + "\n").encode())

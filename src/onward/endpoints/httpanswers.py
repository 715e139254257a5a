"""What one answer of an HTTP server says about the file a download fetches.

A probe (``GET`` with ``Range: bytes=0-0``) or a data response becomes a ``Probe``:
the size, whether byte ranges work, the validators (the strong ETag, else
Last-Modified: a weak ETag never vouches for a range), the digests and file name
the server announced. A status that is not a success becomes the onward error it
means (``raise_for_status``), and ``other_version`` says when an answer holds
another version of the file than the one recorded (RFC 9110 §15.3.7.3).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx

from ..core.http import (
    Expected,
    filename_from_disposition,
    parse_content_range,
    parse_retry_after,
    server_digests,
    strong_etag,
)
from ..errors import SourceError, TransientError

__all__ = ["UNKNOWN", "Probe", "describe", "found", "other_version", "raise_for_status"]

UNKNOWN = -1  # the size of a body the server sends without a length


@dataclass(frozen=True)
class Probe:
    """What one answer of the server says about the file."""

    size: int  # UNKNOWN: no Content-Length (chunked, or delimited by the connection's close)
    ranges: bool
    etag: str  # strong ETag or ""
    last_modified: str
    url: httpx.URL  # after redirects
    digests: list[Expected] = field(default_factory=list)
    filename: str | None = None  # raw, from Content-Disposition

    @property
    def validator(self) -> str:
        return self.etag or self.last_modified

    @property
    def version(self) -> tuple[int, str, str]:
        return self.size, self.etag, self.last_modified


def found(response: httpx.Response, size: int, *, ranges: bool) -> Probe:
    """The ``Probe`` of ``response``, a file of ``size`` bytes."""
    headers = response.headers
    return Probe(
        size=size,
        ranges=ranges,
        etag=strong_etag(headers.get("ETag")),
        last_modified=(headers.get("Last-Modified") or "").strip(),
        url=response.url,
        digests=server_digests(headers.get("Repr-Digest"), headers.get("Digest")),
        filename=filename_from_disposition(headers.get("Content-Disposition")),
    )


def describe(response: httpx.Response, ranged: bool, name: str) -> Probe | None:
    """The ``Probe`` of the answer to a probe (``ranged``: it asked for byte 0 only), None when
    it cannot be used (ask again without a range); an error for a status that is one."""
    status = response.status_code
    content_range = parse_content_range(response.headers.get("Content-Range"))
    if status == 416 and ranged:
        if content_range is not None and content_range.total == 0:
            return found(response, 0, ranges=True)  # an empty file has no byte 0
        return None
    raise_for_status(response, name)
    if status == 206 and ranged:
        if content_range is None or content_range.start != 0 or content_range.total is None:
            return None
        if content_range.end == 0 and response.headers.get("Content-Length") == "1":
            response.read()  # the one byte asked for: leaves the connection reusable
        # Else (a server that sends the whole file as the "range"): closed unread.
        return found(response, content_range.total, ranges=True)
    if status != 200:
        return None
    length = response.headers.get("Content-Length", "")
    return found(response, int(length) if length.isdigit() else UNKNOWN, ranges=False)


def raise_for_status(response: httpx.Response, name: str) -> None:
    """Nothing for a 2xx; else the error the status means for the download of ``name``."""
    status = response.status_code
    if 200 <= status < 300:
        return
    what = f"{name}: the server answered {status} {response.reason_phrase}".rstrip()
    if status in (408, 429) or status >= 500:
        wait = parse_retry_after(response.headers.get("Retry-After"), time.time())
        raise TransientError(f"{what}; re-run to resume", name, retry_after=wait)
    if status == 401:
        what += "; give credentials in the URL (https://user:password@host/...) or in ~/.netrc"
    elif status in (403, 404, 410):
        what += "; check the URL"
    elif 300 <= status < 400:
        what += " and no usable redirect"
    raise SourceError(what, name)


def other_version(probe: Probe, headers: httpx.Headers) -> str | None:
    """What says an answer holds another version than ``probe``, or None: a different (or
    missing) strong ETag, else a different Last-Modified. A weak ETag never vouches."""
    if probe.etag:
        which, mine, theirs = "ETag", probe.etag, (headers.get("ETag") or "").strip()
        same = strong_etag(theirs) == mine
    else:
        which, mine = "Last-Modified", probe.last_modified
        theirs = (headers.get("Last-Modified") or "").strip()
        same = theirs == mine
    if same:
        return None
    theirs = theirs[:80] or "missing"
    return f"the server answered with another version of the file ({which} {theirs}, not {mine})"

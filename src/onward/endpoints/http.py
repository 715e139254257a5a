"""HTTP(S) sources: ranged GETs guarded by validators, so a download resumes and never stitches.

``HttpSource.open(url)`` asks the server once (``GET`` with ``Range: bytes=0-0``,
redirects followed; the answer's body is never read beyond that one byte) for
the size, whether byte ranges work, and the validators of the final response:
the strong ETag, else Last-Modified (a weak ETag never vouches for a range).
Every later request for data carries ``Range`` and ``If-Range`` with that
validator, and every answer is checked, whatever the server did with
``If-Range``: only a 206 with exactly the ``Content-Range`` asked for *and* the
recorded validator (RFC 9110 §15.3.7.3) is read. Anything else (a 200, a 416,
other bytes, another version's ETag or Last-Modified) is a ``TransientError``
with nothing written; the engine asks ``identity()`` again and starts over on a
new version. When the answer is a version this run already had, the server is
serving two at once (or its ranges lie): the download goes on in one piece.

A server that ignores ranges, or sends no validator at all, cannot prove that
two responses hold the same file. Such a download is "streamed": one response
from byte 0, in order, on one connection. If it breaks, the identity changes
(it carries a per-response generation, and ``why_changed`` says why) and the
engine starts over rather than splice a second response onto the first, within
its retry budget; a later run starts over too.

Data requests and the end-of-run check go to the final URL of the last answer
that fit (no second walk down a redirect chain); the user's URL credentials go
with them only when it is the user's origin (scheme, host, port). After any
failure, and when the final URL answers 401, 403, 404 or 410 (a signed URL that
expired), the next request starts again from the URL the user gave.

Each engine worker thread (one per connection) reads its own contiguous run of
chunks (``Readahead`` hands them out that way) through a single request for the
rest of the file (``bytes=OFFSET-LAST``), chunk after chunk, so no round trip is spent
between chunks, and its body (framed by Content-Length) is read straight from
the socket into the chunk buffers: h11 parses the headers, the bytes are not
copied through it (a third of the CPU of a download). A worker that reaches
the end of its run closes its connection, as aria2 does with a segment. httpx errors become
``onward.errors`` types here: connection errors, timeouts, 408, 429 and 5xx
are ``TransientError`` (with the server's ``Retry-After``), 4xx, TLS and name
resolution failures ``SourceError``. No message, name or record made here
contains the URL's credentials.
"""

from __future__ import annotations

import contextlib
import email.utils
import netrc
import os
import random
import secrets
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

import httpx

from .._version import __version__
from ..core.http import (
    Expected,
    filename_from_disposition,
    never_resolves,
    parse_content_range,
    parse_retry_after,
    redact_url,
    server_digests,
    strong_etag,
)
from ..core.identity import Identity
from ..core.retry import Backoff
from ..errors import OnwardError, SourceError, TransientError, UsageError
from . import Attributes

__all__ = ["MAX_REDIRECTS", "HttpSource", "check_url"]

MAX_REDIRECTS = 10
# httpcore reads a response 64 KiB at a time, and h11 copies every read several times;
# 256 KiB reads halve the CPU a download costs (docs/PERFORMANCE.md, "HTTP downloads").
READ_SIZE = 256 * 1024
SCHEMES = ("http", "https")
# Sent only to the origin the user named; dropped when a redirect leads elsewhere.
ORIGIN_ONLY = ("authorization", "cookie")
UNKNOWN = -1  # the size of a body the server sends without a length
ENDLESS = 1 << 62  # where a cursor over such a body ends: when the server ends it
# Answers of a redirect target that may have expired (a signed URL): ask the user's URL again.
EXPIRED = (401, 403, 404, 410)
BROKEN_STREAM = "the connection broke, and without byte ranges and a validator a download cannot go on"

OnRetry = Callable[[int, float, str], None]  # attempt, delay in seconds, message
T = TypeVar("T")


def retrying(
    what: Callable[[], T], *, retries: int, on_retry: OnRetry | None, sleep: Callable[[float], None]
) -> T:
    """``what()``, tried again with backoff after a ``TransientError``, at most ``retries``
    more times (each one told to ``on_retry``); the last error is raised."""
    backoff = Backoff(retries=retries)
    attempt = 0
    while True:
        try:
            return what()
        except TransientError as exc:
            attempt += 1
            delay = backoff.delay(attempt, random.random(), exc.retry_after)
            if delay is None:
                raise
            if on_retry is not None:
                on_retry(attempt, delay, exc.reason)
            sleep(delay)


def _safe_name(url: str) -> str:
    try:
        return redact_url(url)
    except ValueError:  # not even splittable: drop anything that may be userinfo
        scheme, sep, rest = url.partition("://")
        return scheme + sep + rest.rpartition("@")[2].split("/", 1)[0]


def check_url(url: str) -> httpx.URL:
    """``url`` parsed, or ``UsageError`` for an unknown scheme or a malformed URL."""
    name = _safe_name(url)
    scheme = url.partition("://")[0].lower()
    if scheme not in SCHEMES:
        raise UsageError(
            f"{name}: unknown URL scheme {scheme!r}; onward copies local files and http:// or https:// URLs"
        )
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, ValueError) as exc:
        raise UsageError(f"{name}: not a valid URL ({_scrub_text(str(exc), url)})") from None
    if not parsed.host:
        raise UsageError(f"{name}: not a valid URL (no host name)")
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"{name}: not a valid URL (port {port} is out of range)")
    return parsed


def _scrub_text(text: str, url: str) -> str:
    """``text`` without the userinfo or secret query values of ``url``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        parts = None
    hidden = [url]
    if parts is not None:
        userinfo = parts.netloc.rpartition("@")[0]
        if userinfo:
            hidden += [userinfo, urllib.parse.unquote(userinfo)]
            password = userinfo.partition(":")[2]
            hidden += [password, urllib.parse.unquote(password)]
        for piece in parts.query.split("&"):
            key, eq, value = piece.partition("=")
            if eq and value and f"{key}=REDACTED" in redact_url(url):
                hidden += [value, urllib.parse.unquote_plus(value)]
    for secret in sorted(filter(None, hidden), key=len, reverse=True):
        text = text.replace(secret, _safe_name(url) if secret == url else "***")
    return text


def _larger_reads() -> None:
    """Raise httpcore's per-read size for HTTP/1.1 (a class attribute it reads on every read)."""
    with contextlib.suppress(ImportError, AttributeError):
        from httpcore._sync.http11 import HTTP11Connection

        if HTTP11Connection.READ_NUM_BYTES < READ_SIZE:
            HTTP11Connection.READ_NUM_BYTES = READ_SIZE


def _netrc_auth() -> httpx.Auth | None:
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    if not os.path.isfile(path):
        return None
    try:
        return httpx.NetRCAuth(path)
    except (OSError, netrc.NetrcParseError) as exc:
        raise UsageError(f"{path}: cannot use it for credentials: {exc}") from None


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of type ``kind`` in the chain that led to ``exc``."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 16:
        if isinstance(current, kind):
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def _body_socket(response: httpx.Response) -> socket.socket | None:
    """The socket a response's body can be read from directly, or None when that is not safe:
    only a body framed by Content-Length, on a plain or TLS socket (not TLS inside TLS, as
    through an HTTPS proxy, where the socket carries the outer layer)."""
    headers = response.headers
    if "content-length" not in headers or "transfer-encoding" in headers:
        return None
    stream = response.extensions.get("network_stream")
    try:
        sock = stream.get_extra_info("socket") if stream is not None else None
        tls = stream.get_extra_info("ssl_object") if stream is not None else None
    except Exception:  # a transport that does not answer: take the ordinary path
        return None
    if not isinstance(sock, socket.socket) or isinstance(tls, ssl.SSLObject):
        return None
    if isinstance(sock, ssl.SSLSocket) != (tls is not None):
        return None
    return sock


DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or DEFAULT_PORTS.get(url.scheme)


def _same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    """RFC 6454 origins: scheme, host and port all equal (an upgrade to https is another origin)."""
    return _origin(a) == _origin(b)


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


def _origin_only(user: httpx.URL) -> Callable[[httpx.Request], None]:
    """A hook that takes credentials off every request (each redirect hop included) that does not
    go to the origin of the URL the user gave; httpx alone keeps them on an upgrade to https."""

    def guard(request: httpx.Request) -> None:
        if not _same_origin(user, request.url):
            for name in ORIGIN_ONLY:
                request.headers.pop(name, None)

    return guard


def _same_url(a: httpx.URL, b: httpx.URL) -> bool:
    return a.copy_with(userinfo=b"") == b.copy_with(userinfo=b"")


def _version(probe: Probe) -> tuple[int, str, str]:
    return probe.size, probe.etag, probe.last_modified


@dataclass
class _Cursor:
    """An open response being read into chunks: bytes [pos, end) are still to come."""

    response: httpx.Response
    chunks: Iterator[bytes]
    pos: int
    end: int
    thread: threading.Thread
    rest: memoryview | None = None
    sock: socket.socket | None = None  # set: the body is read straight from the socket


class HttpSource:
    """A file on an HTTP(S) server. Open it with ``HttpSource.open``; no I/O happens before."""

    # On a changed source the engine starts over instead of downloading old chunks to compare.
    recheck_on_change = False
    # Four buffers: room to keep draining the socket while the writer syncs (one connection,
    # 2 GiB from nginx: 3.12 s with four, 3.44 s with two, interleaved).
    readahead = 4

    def __init__(
        self,
        url: str,
        client: httpx.Client,
        *,
        headers: Sequence[tuple[str, str]] = (),
        connections: int = 1,
        retries: int = 5,
        timeout: float = 30.0,
        on_retry: OnRetry | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._url = url  # may hold credentials: never shown, never recorded
        self.name = _safe_name(url)
        self.on_retry = on_retry
        self._client = client
        self._headers = list(headers)
        self._connections = connections
        self._retries = retries
        self._timeout = timeout
        self._sleep = sleep
        self._lock = threading.RLock()
        self._cursors: dict[int, _Cursor] = {}
        self._probe: Probe | None = None
        self._data_headers: dict[str, str] = {}
        self._fresh = False  # identity() may answer from the probe open() just made
        # Why a data request got an answer that does not fit the recorded file (None: none did).
        self._suspect: str | None = None
        # Where data requests and the end-of-run check go: the final URL of the last answer that
        # fit (with the user's credentials when it is their origin); None: the user's URL again.
        self._data_url: httpx.URL | None = None
        self.why_changed: str | None = None  # what made identity() change without a new version
        self._seen: set[tuple[int, str, str]] = set()  # versions adopted in this run
        # Streaming (no ranges, or no validator): one response at a time, from byte 0.
        self.streaming: str | None = None  # why, when streaming: no-ranges, no-validator, broken-ranges
        self._nonce = secrets.token_hex(4)
        self._generation = 0
        self._generation_used = False
        self._stream: _Cursor | None = None

    @classmethod
    def open(
        cls,
        url: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        timeout: float = 30.0,
        connections: int = 1,
        retries: int = 5,
        on_retry: OnRetry | None = None,
        verify: bool = True,
    ) -> HttpSource:
        """Check ``url``, ask the server about the file (with retries) and return the source."""
        parsed = check_url(url)
        _larger_reads()
        if never_resolves(parsed.host):
            raise SourceError(
                f"{_safe_name(url)}: cannot resolve host {parsed.host!r}: names under .invalid never "
                "resolve (RFC 6761); check the URL",
                _safe_name(url),
            )
        auth = None if parsed.userinfo else _netrc_auth()
        client = httpx.Client(
            auth=auth,
            headers={"User-Agent": f"onward/{__version__}", "Accept-Encoding": "identity"},
            timeout=httpx.Timeout(timeout),
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            limits=httpx.Limits(max_connections=connections + 2, max_keepalive_connections=connections + 2),
            trust_env=True,  # proxies from HTTP(S)_PROXY / NO_PROXY, CAs from SSL_CERT_FILE / SSL_CERT_DIR
            verify=verify,
            event_hooks={"request": [_origin_only(parsed)]},
        )
        source = cls(
            url,
            client,
            headers=headers,
            connections=connections,
            retries=retries,
            timeout=timeout,
            on_retry=on_retry,
        )
        try:
            source._adopt(source._probe_with_retries())
        except BaseException:
            source.close()
            raise
        source._fresh = True
        return source

    # -- what the server says -------------------------------------------------

    @property
    def connections(self) -> int:
        """Worker threads the engine may read with: one while streaming."""
        return 1 if self.streaming else self._connections

    @property
    def digests(self) -> list[Expected]:
        """Whole-file digests the server announced (Repr-Digest or Digest), strongest only."""
        return list(self._probe.digests) if self._probe else []

    @property
    def filename(self) -> str | None:
        """The file name the server gave in Content-Disposition (raw: not yet made safe)."""
        return self._probe.filename if self._probe else None

    def identity(self) -> Identity:
        """The file as the server describes it now (asks again, except right after ``open``)."""
        if self._fresh:
            self._fresh = False
        elif not self.streaming:
            self.why_changed = None  # a new answer: a change now is the file's own
            probe = self._probe_with_retries()
            if self._suspect and probe.ranges and _version(probe) in self._seen:
                # A range came back wrong, yet the file is one this run already had: the server's
                # ranges lie, or requests reach two versions in turn (a deploy behind a balancer).
                # One response holds one version: download it in one piece.
                self._start_streaming("broken-ranges", f"{self._suspect}, so it is downloaded in one piece")
            self._adopt(probe)
        self._suspect = None
        return self._identity()

    def attributes(self) -> Attributes:
        """No mode; Last-Modified as the times, as ``wget`` and ``curl -R`` do."""
        stamp = self._probe.last_modified if self._probe else ""
        try:
            when = email.utils.parsedate_to_datetime(stamp) if stamp else None
        except (TypeError, ValueError, IndexError):
            when = None
        if when is None or when.tzinfo is None:
            return Attributes(None, None)
        ns = int(when.timestamp()) * 1_000_000_000
        return Attributes(None, (ns, ns))

    def described(self) -> Identity:
        """The identity as the server last described it, without asking again."""
        return self._identity()

    def _identity(self) -> Identity:
        probe = self._probe
        assert probe is not None
        if self.sized is False:  # the response's validators, for a later run that gets ranges
            attrs: dict[str, int | str] = {"etag": probe.etag, "last_modified": probe.last_modified}
            attrs.update(length="unknown", response=f"{self._nonce}.{self._generation}")
            return Identity("http", 0, attrs)  # the size is what the transfer receives
        if self.streaming:  # one response is the whole truth; nothing ties it to another one
            attrs = {"etag": "", "last_modified": "", "response": f"{self._nonce}.{self._generation}"}
        else:
            attrs = {"etag": probe.etag, "last_modified": probe.last_modified}
        return Identity("http", probe.size, attrs)

    @property
    def sized(self) -> bool:
        """Whether the server said how large the file is (else the body ends when it ends)."""
        return self._probe is None or self._probe.size != UNKNOWN

    def _adopt(self, probe: Probe) -> None:
        if probe.size == UNKNOWN and self._probe is not None and self.sized:
            raise SourceError(
                f"{self.name}: the server no longer says how large the file is; re-run to download it "
                "without a length",
                self.name,
            )
        self._probe = probe
        self._seen.add(_version(probe))
        self._follow(probe.url)
        if not self.streaming:
            if probe.size == UNKNOWN:
                self._start_streaming("no-length")
            elif not probe.ranges:
                self._start_streaming("no-ranges")
            elif not probe.validator:
                self._start_streaming("no-validator")

    def _follow(self, final: httpx.URL) -> None:
        """Send the next data requests to ``final``, where the user's URL led: with the user's
        credentials and origin-only headers only when it is the user's origin (RFC 6454)."""
        user = httpx.URL(self._url)
        headers = dict(self._headers)
        if _same_origin(user, final):
            if user.userinfo and not final.userinfo:
                final = final.copy_with(userinfo=user.userinfo)
        else:
            headers = {k: v for k, v in headers.items() if k.lower() not in ORIGIN_ONLY}
        self._data_url, self._data_headers = final, headers

    def _start_streaming(self, why: str, because: str | None = None) -> None:
        self.streaming = why
        self._restart(because)

    def _restart(self, why: str | None) -> None:
        """A new response generation: what was read from the old one cannot be continued."""
        self._generation += 1
        self._generation_used = False
        self.why_changed = why

    # -- asking the server --------------------------------------------------------

    def _probe_with_retries(self) -> Probe:
        return retrying(self._probe_once, retries=self._retries, on_retry=self.on_retry, sleep=self._sleep)

    def _probe_once(self) -> Probe:
        """Ask where the last answer came from (not the whole redirect chain again) while that
        still answers; else, and after any failure, from the URL the user gave."""
        reuse, self._data_url = self._data_url, None
        if reuse is not None:
            with contextlib.suppress(SourceError):  # e.g. an expired signed URL: 403
                probe = self._ask(reuse, ranged=True)
                if probe is not None:
                    return probe
        user = httpx.URL(self._url)
        return self._ask(user, ranged=True) or self._ask(user, ranged=False) or self._no_answer()

    def _no_answer(self) -> Probe:
        raise SourceError(f"{self.name}: the server's answers say nothing usable about the file", self.name)

    def _ask(self, url: httpx.URL, *, ranged: bool) -> Probe | None:
        """One probe: None when the answer cannot be used (ask again without a range). Its body
        is never read beyond the one byte asked for: the response is closed, not drained."""
        headers = dict(self._headers if url == httpx.URL(self._url) else self._data_headers)
        if ranged:
            headers["Range"] = "bytes=0-0"
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                return self._describe(response, ranged)
        except httpx.HTTPError as exc:
            raise self._error(exc) from None
        except httpx.InvalidURL as exc:  # e.g. a redirect to a malformed Location
            raise SourceError(f"{self.name}: {self._scrub(str(exc))}", self.name) from None

    def _describe(self, response: httpx.Response, ranged: bool) -> Probe | None:
        status = response.status_code
        content_range = parse_content_range(response.headers.get("Content-Range"))
        if status == 416 and ranged:
            if content_range is not None and content_range.total == 0:
                return self._found(response, 0, ranges=True)  # an empty file has no byte 0
            return None
        self._raise_for_status(response)
        if status == 206 and ranged:
            if content_range is None or content_range.start != 0 or content_range.total is None:
                return None
            if content_range.end == 0 and response.headers.get("Content-Length") == "1":
                response.read()  # the one byte asked for: leaves the connection reusable
            # Else (a server that sends the whole file as the "range"): closed unread.
            return self._found(response, content_range.total, ranges=True)
        if status != 200:
            return None
        length = response.headers.get("Content-Length", "")
        return self._found(response, int(length) if length.isdigit() else UNKNOWN, ranges=False)

    def _found(self, response: httpx.Response, size: int, *, ranges: bool) -> Probe:
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

    def _raise_for_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        what = f"{self.name}: the server answered {status} {response.reason_phrase}".rstrip()
        if status in (408, 429) or status >= 500:
            wait = parse_retry_after(response.headers.get("Retry-After"), time.time())
            raise TransientError(f"{what}; re-run to resume", self.name, retry_after=wait)
        if status == 401:
            what += "; give credentials in the URL (https://user:password@host/...) or in ~/.netrc"
        elif status in (403, 404, 410):
            what += "; check the URL"
        elif 300 <= status < 400:
            what += " and no usable redirect"
        raise SourceError(what, self.name)

    def _error(self, exc: httpx.HTTPError) -> OnwardError:
        """An httpx error as one line of the onward tree, without credentials."""
        reason = self._scrub(str(exc)) or type(exc).__name__
        name = self.name
        if isinstance(exc, httpx.TooManyRedirects):
            return SourceError(f"{name}: more than {MAX_REDIRECTS} redirects", name)
        if isinstance(exc, httpx.UnsupportedProtocol):
            return SourceError(f"{name}: redirected to a URL onward cannot fetch ({reason})", name)
        cert = _cause(exc, ssl.SSLCertVerificationError)
        if isinstance(cert, ssl.SSLCertVerificationError):
            return SourceError(
                f"{name}: TLS certificate verification failed ({cert.verify_message or cert.reason}); "
                "onward always verifies certificates: fix the server's certificate, or trust its CA "
                "with SSL_CERT_FILE",
                name,
            )
        tls = _cause(exc, ssl.SSLError)
        if isinstance(tls, ssl.SSLError):
            return SourceError(f"{name}: TLS handshake failed ({tls.reason or tls})", name)
        dns = _cause(exc, socket.gaierror)
        if isinstance(dns, socket.gaierror):
            host = httpx.URL(self._url).host
            if dns.errno in (socket.EAI_AGAIN,):
                return TransientError(
                    f"{name}: cannot resolve host {host!r} right now ({dns.strerror}); re-run to resume", name
                )
            return SourceError(f"{name}: cannot resolve host {host!r} ({dns.strerror}); check the URL", name)
        if isinstance(exc, httpx.ConnectTimeout):
            return TransientError(
                f"{name}: could not connect within {self._timeout:g} s (--timeout); re-run to resume", name
            )
        if isinstance(exc, httpx.TimeoutException):
            return TransientError(
                f"{name}: the server sent nothing for {self._timeout:g} s (--timeout); re-run to resume", name
            )
        if isinstance(exc, httpx.ConnectError):
            return TransientError(f"{name}: cannot connect ({reason}); re-run to resume", name)
        if isinstance(exc, httpx.LocalProtocolError):
            return SourceError(f"{name}: cannot send the request ({reason})", name)
        if isinstance(exc, httpx.TransportError):
            return TransientError(f"{name}: the connection broke ({reason}); re-run to resume", name)
        return SourceError(f"{name}: {reason}", name)

    def _scrub(self, text: str) -> str:
        return _scrub_text(text, self._url)

    # -- reading --------------------------------------------------------------------

    def read_into(self, offset: int, buf: memoryview) -> int:
        """Fill ``buf`` from ``offset``. Returns short (0) when the server's answer does not
        belong to the recorded file: the engine then asks ``identity()`` and starts over."""
        if self.streaming:
            with self._lock:
                return self._read_stream(offset, buf)
        return self._read_range(offset, buf)

    def _read_range(self, offset: int, buf: memoryview) -> int:
        me = threading.current_thread()
        cursor = self._cursors.get(me.ident or 0)
        if cursor is None or cursor.pos != offset:
            if cursor is not None:
                self._drop(cursor)
            cursor = self._open_range(offset, me)
        return self._take(cursor, buf)

    def _open_range(self, offset: int, me: threading.Thread) -> _Cursor:
        """A response holding bytes ``offset``.. of the recorded version, or ``TransientError``
        (nothing of that answer is written): the engine then asks ``identity()`` whether the
        file changed (start over) or the server cannot be trusted with ranges (one piece)."""
        probe = self._probe
        assert probe is not None
        # Open-ended: this thread's next reads follow on (a run of chunks each, see the docstring).
        last = probe.size - 1
        response = self._send_data({"Range": f"bytes={offset}-{last}", "If-Range": probe.validator})
        status = response.status_code
        problem: str | None
        if status == 206:
            got = parse_content_range(response.headers.get("Content-Range"))
            if got is None or (got.start, got.end, got.total) != (offset, last, probe.size):
                problem = "the server answered a range request with other bytes than asked for"
            else:  # RFC 9110 §15.3.7.3: parts combine only under the same strong validator
                problem = self._other_version(response.headers)
            if problem is None:
                return self._register(self._cursor(response, offset, last + 1, me))
        elif status == 200 and offset == 0:
            # Asked for the whole file, some servers send a plain 200: fine if it is the same file.
            declared = response.headers.get("Content-Length", "")
            problem = self._other_version(response.headers)
            if problem is None and declared != str(probe.size):
                problem = f"the server now sends {declared or 'an unknown number of'} bytes, not {probe.size}"
            if problem is None:
                return self._register(self._cursor(response, 0, probe.size, me))
        elif status == 200:
            problem = "the server answered a range request with the whole file (changed, or ranges ignored)"
        elif status == 416:
            problem = "the server says the file no longer reaches that far (416)"
        else:
            try:
                self._raise_for_status(response)
            finally:
                response.close()
            problem = f"the server answered {status} to a range request"
        response.close()
        self._suspect = problem
        raise self._refused(problem)

    def _refused(self, problem: str) -> TransientError:
        return TransientError(
            f"{self.name}: {problem}; nothing of that answer was written, re-run to resume", self.name
        )

    def _other_version(self, headers: httpx.Headers) -> str | None:
        """What says an answer holds another version than the recorded one, or None: a different
        (or missing) strong ETag, else a different Last-Modified. A weak ETag never vouches."""
        probe = self._probe
        assert probe is not None
        if probe.etag:
            field, mine, theirs = "ETag", probe.etag, (headers.get("ETag") or "").strip()
            same = strong_etag(theirs) == mine
        else:
            field, mine = "Last-Modified", probe.last_modified
            theirs = (headers.get("Last-Modified") or "").strip()
            same = theirs == mine
        if same:
            return None
        theirs = theirs[:80] or "missing"
        return f"the server answered with another version of the file ({field} {theirs}, not {mine})"

    def _read_stream(self, offset: int, buf: memoryview) -> int:
        cursor = self._stream
        if cursor is None or cursor.pos != offset:
            if cursor is not None:
                self._drop(cursor)
            if offset != 0 or self._generation_used:
                # A second response cannot be proven to hold the same file: start over.
                self._restart(BROKEN_STREAM)
                return 0
            self._generation_used = True
            cursor = self._open_whole()
            if cursor is None:
                self._restart(None)
                return 0
            self._stream = cursor
        return self._take(cursor, buf)

    def _open_whole(self) -> _Cursor | None:
        probe = self._probe
        assert probe is not None
        response = self._send_data({})
        try:
            self._raise_for_status(response)
        except OnwardError:
            response.close()
            raise
        length = response.headers.get("Content-Length", "")
        now = self._found(response, int(length) if length.isdigit() else UNKNOWN, ranges=probe.ranges)
        if not self.sized:
            return self._open_unsized(response, now)
        if response.status_code == 200 and now.size >= 0:
            self._probe = now  # its validators and digests describe the bytes that follow
        if response.status_code != 200 or now.size != probe.size:
            response.close()  # not the planned size: the next identity() says what it is now
            return None
        return self._cursor(response, 0, probe.size, threading.current_thread())

    def _open_unsized(self, response: httpx.Response, now: Probe) -> _Cursor:
        """A body read until it ends, if it is the version the identity names (else, with the
        new version adopted, ``TransientError``: the engine starts over with it)."""
        status = response.status_code
        problem = self._other_version(response.headers) if status == 200 else f"the server answered {status}"
        self._probe = replace(now, size=UNKNOWN)  # its digests (and validators) are this body's
        if problem is not None:
            response.close()
            self._restart(None)
            raise self._refused(problem)
        return self._cursor(response, 0, ENDLESS, threading.current_thread())

    def _send_data(self, extra: dict[str, str]) -> httpx.Response:
        """A data request where the last good answer came from; when that URL fails (a signed
        URL that expired: 401, 403, 404, 410), and after any failure, from the user's URL."""
        reuse = self._data_url
        if reuse is None:
            url, headers = httpx.URL(self._url), dict(self._headers)
        else:
            url, headers = reuse, self._data_headers
        try:
            response = self._send(url, {**headers, **extra})
        except OnwardError:
            self._data_url = None
            raise
        status = response.status_code
        if status >= 400:
            self._data_url = None
            if reuse is not None and status in EXPIRED and not _same_url(reuse, httpx.URL(self._url)):
                response.close()
                return self._send_data(extra)
        elif status < 300:
            self._follow(response.url)
        return response

    def _cursor(self, response: httpx.Response, start: int, end: int, me: threading.Thread) -> _Cursor:
        cursor = _Cursor(response, response.iter_raw(), start, end, me)
        # One long response per thread: read its body straight into the chunk buffers (what h11
        # had buffered first), sparing h11's copies of every byte (docs/PERFORMANCE.md). The
        # connection is then closed, not reused: h11 never saw the body end.
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) == end - start:
            cursor.sock = _body_socket(response)
        if cursor.sock is not None:
            try:
                first = next(cursor.chunks, b"")
            except httpx.HTTPError as exc:
                response.close()
                raise self._error(exc) from None
            cursor.rest = memoryview(first) if first else None
            cursor.sock.settimeout(self._timeout)
        return cursor

    def _send(self, url: httpx.URL, headers: dict[str, str]) -> httpx.Response:
        """One GET, redirects followed, its body left to be read."""
        try:
            return self._client.send(self._client.build_request("GET", url, headers=headers), stream=True)
        except httpx.HTTPError as exc:
            raise self._error(exc) from None

    def _register(self, cursor: _Cursor) -> _Cursor:
        with self._lock:
            for key, old in list(self._cursors.items()):
                if not old.thread.is_alive():  # left by a finished round of worker threads
                    del self._cursors[key]
                    old.response.close()
            self._cursors[cursor.thread.ident or 0] = cursor
        return cursor

    def _drop(self, cursor: _Cursor) -> None:
        with contextlib.suppress(Exception):
            cursor.response.close()
        if self._stream is cursor:
            self._stream = None
        key = cursor.thread.ident or 0
        if self._cursors.get(key) is cursor:
            with self._lock:
                self._cursors.pop(key, None)

    def _broke(self, cursor: _Cursor) -> None:
        """A response that broke: the retry asks from the user's URL again; a streamed one is
        over (nothing proves that a second response holds the same file)."""
        self._drop(cursor)
        self._data_url = None
        if self.streaming:
            self._restart(BROKEN_STREAM)

    def _take(self, cursor: _Cursor, buf: memoryview) -> int:
        """Copy the next ``len(buf)`` bytes of ``cursor`` into ``buf``."""
        want, got = len(buf), 0
        try:
            while got < want:
                piece = cursor.rest
                if piece is None and cursor.sock is not None:
                    n = cursor.sock.recv_into(buf[got:], want - got)
                    if n == 0:
                        break
                    got += n
                    continue
                if piece is None:
                    data = next(cursor.chunks, None)
                    if data is None:
                        break
                    piece = memoryview(data)
                n = min(len(piece), want - got)
                buf[got : got + n] = piece[:n]
                cursor.rest = piece[n:] if n < len(piece) else None
                got += n
        except httpx.HTTPError as exc:
            self._broke(cursor)
            raise self._error(exc) from None
        except TimeoutError:
            self._broke(cursor)
            raise TransientError(
                f"{self.name}: the server sent nothing for {self._timeout:g} s (--timeout); re-run to resume",
                self.name,
            ) from None
        except OSError as exc:
            self._broke(cursor)
            raise TransientError(
                f"{self.name}: the connection broke ({exc.strerror or exc}); re-run to resume", self.name
            ) from None
        cursor.pos += got
        if got < want and cursor.end == ENDLESS:  # a body without a length: this is its end
            self._drop(cursor)
            return got
        if got < want:
            self._broke(cursor)
            raise TransientError(
                f"{self.name}: the connection broke ({cursor.end - cursor.pos} bytes of the response "
                "never came); re-run to resume",
                self.name,
            )
        if cursor.pos >= cursor.end:  # read to its end: the connection can go back to the pool
            if cursor.sock is None:
                with contextlib.suppress(httpx.HTTPError, StopIteration):
                    next(cursor.chunks)
            self._drop(cursor)
        return got

    def close(self) -> None:
        with self._lock:
            cursors = list(self._cursors.values())
            self._cursors.clear()
        if self._stream is not None:
            cursors.append(self._stream)
            self._stream = None
        for cursor in cursors:
            with contextlib.suppress(Exception):
                cursor.response.close()
        self._client.close()

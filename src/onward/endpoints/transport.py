"""HTTP plumbing shared by every endpoint that speaks HTTP: the client, its errors, its secrets.

One place for what downloads (``endpoints.http``) and uploads (``endpoints.tus``) both
need from httpx: the client they are built on (``make_client``: pooling, proxies and
CAs from the environment, ``~/.netrc``, TLS set up only for ``https:``), how an httpx
error becomes one line of the ``onward.errors`` tree (``transport_error``), URLs and
error texts without the user's credentials (``shown_url``, ``scrub``), retries with
backoff (``retrying``), and the read-size fast path (``larger_reads``, ``body_socket``).

The fast path reaches into httpcore (a class attribute it reads on every read, and the
socket behind a response), so httpx and httpcore are pinned in pyproject to the versions
it is tested with, and tests/test_http_transport.py fails when it stops applying.
"""

from __future__ import annotations

import netrc
import os
import random
import socket
import ssl
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from typing import TypeVar

# httpx imports its own command-line client whenever click, rich and pygments are installed (as
# they are with onward: rich is a dependency, uvicorn brings click), about 50 ms of every
# start-up that speaks HTTP; onward never runs it. None in sys.modules makes httpx use its stub.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
import httpx

from .._version import __version__
from ..core.http import never_resolves, redact_url
from ..core.retry import Backoff
from ..errors import OnwardError, SourceError, TransientError, UsageError

__all__ = [
    "MAX_REDIRECTS",
    "READ_SIZE",
    "OnRetry",
    "Pieces",
    "body_socket",
    "larger_reads",
    "make_client",
    "netrc_auth",
    "retrying",
    "same_origin",
    "scrub",
    "shown_url",
    "transport_error",
]

MAX_REDIRECTS = 10
# httpcore reads a response 64 KiB at a time, and h11 copies every read several times;
# 256 KiB reads halve the CPU a download costs (docs/PERFORMANCE.md, "HTTP downloads").
READ_SIZE = 256 * 1024
# Sent only to the origin the user named; dropped when a redirect leads elsewhere.
ORIGIN_ONLY = ("authorization", "cookie")
DEFAULT_PORTS = {"http": 80, "https": 443}
WRITE_SIZE = 512 * 1024  # bytes of a request body handed to the socket per write (see Pieces)

OnRetry = Callable[[int, float, str], None]  # attempt, delay in seconds, message
T = TypeVar("T")


# -- the fast path ------------------------------------------------------------------------------


def larger_reads() -> bool:
    """Raise httpcore's per-read size for HTTP/1.1 (a class attribute it reads on every read);
    whether it now reads ``READ_SIZE`` or more (False: this httpcore has no such attribute)."""
    try:
        from httpcore._sync.http11 import HTTP11Connection
    except ImportError:
        return False
    current = getattr(HTTP11Connection, "READ_NUM_BYTES", None)
    if not isinstance(current, int):
        return False
    if current < READ_SIZE:
        HTTP11Connection.READ_NUM_BYTES = READ_SIZE
    return True


def body_socket(response: httpx.Response) -> socket.socket | None:
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


# -- request bodies ----------------------------------------------------------------------------


class Pieces:
    """Request bodies in ``WRITE_SIZE`` pieces, each copied once.

    Pieces, not one bytes object: httpcore sends a buffer by slicing off what each ``send``
    took, a copy of the rest every time, quadratic in the buffer's size (one 16 MiB bytes
    object cost more CPU than the network transfer). Bytes, not memoryviews: h11 joins what
    it is given into bytes, which is a copy unless it is one bytes object already.

    The last piece of a body is kept until the next body's pieces are made. Otherwise the last
    two pieces are freed together at the end of each request, glibc's malloc finds that much
    free at the top of its heap and gives it back to the kernel, and the next request faults
    fresh zeroed pages in for its first pieces: three ``brk`` calls and 1 MiB of page faults
    per PATCH, about 0.1 s of CPU per GiB uploaded (docs/UPLOAD.md).
    """

    def __init__(self) -> None:
        self._kept = b""

    def of(self, body: memoryview) -> Iterator[bytes]:
        for start in range(0, len(body), WRITE_SIZE):
            piece = bytes(body[start : start + WRITE_SIZE])
            if start + WRITE_SIZE >= len(body):
                self._kept = piece
            yield piece
            del piece


# -- the client ---------------------------------------------------------------------------------


class LazyTransport(httpx.BaseTransport):
    """httpx's own transport, one for ``http:`` and one for ``https:`` URLs, each made when
    first used: loading the CA certificates for TLS is about 30 ms, which plain HTTP never
    needs. (Proxies from the environment have transports of their own.)"""

    def __init__(self, *, verify: bool, limits: httpx.Limits) -> None:
        self._verify, self._limits = verify, limits
        self._made: dict[str, httpx.HTTPTransport] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        scheme = request.url.scheme
        transport = self._made.get(scheme)
        if transport is None:
            # No TLS is spoken to an http: URL; a context that trusts nothing fails closed anyway.
            tls = self._verify if scheme == "https" else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            transport = self._made[scheme] = httpx.HTTPTransport(verify=tls, limits=self._limits)
        return transport.handle_request(request)

    def close(self) -> None:
        for transport in self._made.values():
            transport.close()


def netrc_auth() -> httpx.Auth | None:
    """Credentials from ``$NETRC`` or ``~/.netrc`` when there is such a file (as curl -n)."""
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    if not os.path.isfile(path):
        return None
    try:
        return httpx.NetRCAuth(path)
    except (OSError, netrc.NetrcParseError) as exc:
        raise UsageError(f"{path}: cannot use it for credentials: {exc}") from None


def make_client(
    user: httpx.URL,
    *,
    name: str,
    timeout: float,
    connections: int,
    verify: bool,
    redirects: bool,
    final: type[OnwardError] = SourceError,
) -> httpx.Client:
    """The client for requests that start at the user's URL ``user``: ``connections`` pooled
    connections, ``~/.netrc`` unless the URL carries credentials, and, with ``redirects``,
    up to ``MAX_REDIRECTS`` followed with credentials kept to the user's origin. A host no
    client can reach is ``final`` (for ``name``) at once."""
    if never_resolves(user.host):
        raise final(
            f"{name}: cannot resolve host {user.host!r}: names under .invalid never resolve (RFC 6761); "
            "check the URL",
            name,
        )
    larger_reads()
    auth = None if user.userinfo else netrc_auth()
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.Client(
        auth=auth,
        headers={"User-Agent": f"onward/{__version__}", "Accept-Encoding": "identity"},
        timeout=httpx.Timeout(timeout),
        follow_redirects=redirects,  # an upload request is never replayed elsewhere
        max_redirects=MAX_REDIRECTS,
        limits=limits,
        trust_env=True,  # proxies from HTTP(S)_PROXY / NO_PROXY, CAs from SSL_CERT_FILE / SSL_CERT_DIR
        verify=verify,  # for those proxies' transports; LazyTransport is given it too
        transport=LazyTransport(verify=verify, limits=limits),
        event_hooks={"request": [_origin_only(user)]} if redirects else None,
    )


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or DEFAULT_PORTS.get(url.scheme)


def same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    """RFC 6454 origins: scheme, host and port all equal (an upgrade to https is another origin)."""
    return _origin(a) == _origin(b)


def _origin_only(user: httpx.URL) -> Callable[[httpx.Request], None]:
    """A hook that takes credentials off every request (each redirect hop included) that does not
    go to the origin of the URL the user gave; httpx alone keeps them on an upgrade to https."""

    def guard(request: httpx.Request) -> None:
        if not same_origin(user, request.url):
            for name in ORIGIN_ONLY:
                request.headers.pop(name, None)

    return guard


# -- retries ------------------------------------------------------------------------------------


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


# -- secrets ------------------------------------------------------------------------------------


def shown_url(url: str) -> str:
    """``url`` as messages show it (``redact_url``), even when it cannot be parsed."""
    try:
        return redact_url(url)
    except ValueError:  # not even splittable: drop anything that may be userinfo
        scheme, sep, rest = url.partition("://")
        return scheme + sep + rest.rpartition("@")[2].split("/", 1)[0]


def scrub(text: str, *urls: str) -> str:
    """``text`` without the userinfo or secret query values of any of ``urls``."""
    for url in urls:
        text = _scrub_one(text, url)
    return text


def _scrub_one(text: str, url: str) -> str:
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
        text = text.replace(secret, shown_url(url) if secret == url else "***")
    return text


# -- errors -------------------------------------------------------------------------------------


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of type ``kind`` in the chain that led to ``exc``."""
    current: BaseException | None = exc
    for _ in range(16):
        if current is None:
            return None
        if isinstance(current, kind):
            return current
        current = current.__cause__ or current.__context__
    return None


def transport_error(
    exc: httpx.HTTPError,
    *,
    shown: str,
    name: str,
    url: str,
    timeout: float,
    final: type[OnwardError] = SourceError,
    hide: tuple[str, ...] = (),
) -> OnwardError:
    """``exc`` as one line of the onward tree, without the credentials of ``url`` (the URL the
    request went to): ``TransientError`` for what a retry may cure (a broken or refused
    connection, a timeout, a resolver that cannot answer now), ``final`` (``SourceError`` or
    ``DestinationError``, for ``name``) for the rest. Messages start with ``shown`` and hold
    nothing secret of ``url`` or of the URLs in ``hide``."""
    reason = scrub(str(exc), url, *hide) or type(exc).__name__
    tls = _tls_problem(exc)
    dns = _cause(exc, socket.gaierror)
    if isinstance(exc, httpx.TooManyRedirects):
        return final(f"{shown}: more than {MAX_REDIRECTS} redirects", name)
    if isinstance(exc, httpx.UnsupportedProtocol):
        return final(f"{shown}: redirected to a URL onward cannot fetch ({reason})", name)
    if tls is not None:
        return final(f"{shown}: {tls}", name)
    if isinstance(dns, socket.gaierror):
        host = httpx.URL(url).host
        if dns.errno == socket.EAI_AGAIN:
            return TransientError(
                f"{shown}: cannot resolve host {host!r} right now ({dns.strerror}); re-run to resume", name
            )
        return final(f"{shown}: cannot resolve host {host!r} ({dns.strerror}); check the URL", name)
    transient = _transient_reason(exc, reason, timeout)
    if transient is not None:
        return TransientError(f"{shown}: {transient}; re-run to resume", name)
    if isinstance(exc, httpx.LocalProtocolError):
        return final(f"{shown}: cannot send the request ({reason})", name)
    return final(f"{shown}: {reason}", name)


def _tls_problem(exc: BaseException) -> str | None:
    cert = _cause(exc, ssl.SSLCertVerificationError)
    if isinstance(cert, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate verification failed ({cert.verify_message or cert.reason}); onward always "
            "verifies certificates: fix the server's certificate, or trust its CA with SSL_CERT_FILE"
        )
    tls = _cause(exc, ssl.SSLError)
    if isinstance(tls, ssl.SSLError):
        return f"TLS handshake failed ({tls.reason or tls})"
    return None


def _transient_reason(exc: httpx.HTTPError, reason: str, timeout: float) -> str | None:
    if isinstance(exc, httpx.ConnectTimeout):
        return f"could not connect within {timeout:g} s (--timeout)"
    if isinstance(exc, httpx.TimeoutException):
        return f"the server sent nothing for {timeout:g} s (--timeout)"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({reason})"
    if isinstance(exc, httpx.TransportError) and not isinstance(exc, httpx.LocalProtocolError):
        return f"the connection broke ({reason})"
    return None

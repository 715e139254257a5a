"""Resumable uploads: a remote sink speaking tus 1.0.0 or the IETF draft, and its journal.

``UploadSink`` is the engine's sink for ``onward copy FILE tus+https://host/files/``
(or ``ietf+https://...``). It creates the upload lazily (one creation request with
no data, so that its URL is in the journal before a byte is sent), then appends each
chunk the engine hands over with one PATCH from the offset the server holds. The
server's offset is authoritative (``core.upload.place``): bytes the server already
has are not sent again, bytes it lacks are read from the file again and sent first.
That is safe because an upload is bound to the identity (device, inode, size, mtime,
ctime) of the file it was created for: the journal store drops the binding as soon as
the engine records another identity, and the next chunk then goes to a new upload.

Such a sink has no read-back capability (``endpoints.ReadBack``): the engine skips its
read-back checks, and integrity comes from the protocol instead: every PATCH must be
acknowledged with exactly the offset it reached, a tus server that advertises the
checksum extension gets an ``Upload-Checksum`` (sha256, else sha1) on every PATCH and
refuses damaged bytes (460), and an IETF upload is completed with a ``Repr-Digest``
of the whole file.

``UploadJournal`` keeps the journal in the user's state directory
(``$XDG_STATE_HOME/onward/uploads``), named after the file and the URL, locked for
the run, with an UPLOAD record (docs/JOURNAL.md) naming the upload. No message, record
or name made here contains the URL's user name, password or secret query values.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import mmap
import os
import socket
import ssl
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence

# httpx imports its own command-line client whenever click, rich and pygments are installed (as
# they are with onward: rich is a dependency, uvicorn brings click), about 50 ms of every
# upload's start-up; onward never runs it. None in sys.modules makes httpx fall back to its stub.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
import httpx

from .._version import __version__
from ..core import upload as proto
from ..core.http import parse_retry_after, redact_url
from ..core.identity import Identity
from ..core.journal import DecodeError, Promote, Upload, decode, encode_upload
from ..core.resume import keeps_upload
from ..errors import DestinationError, JournalError, OnwardError, TransientError
from .http import OnRetry, retrying
from .local import LocalJournal

__all__ = ["JOURNAL_PREFIX", "UploadJournal", "UploadSink"]

JOURNAL_PREFIX = "upload-"
LOCK_SUFFIX = ".onward-lock"
WRITE_SIZE = 512 * 1024  # bytes handed to the socket per write (see Pieces)

ReadSource = Callable[[int, memoryview], int]


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


class _Transport(httpx.BaseTransport):
    """httpx's own transport, one for ``http:`` and one for ``https:`` URLs, each made when
    first used: loading the CA certificates for TLS is about 30 ms, which an upload over
    plain HTTP never needs. (Proxies from the environment have transports of their own.)"""

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


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = httpx.URL(url)
    return parsed.scheme, parsed.host, parsed.port


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    current: BaseException | None = exc
    for _ in range(16):
        if current is None:
            return None
        if isinstance(current, kind):
            return current
        current = current.__cause__ or current.__context__
    return None


class UploadSink:
    """A tus or IETF-draft upload as the engine's sink. Build it with ``UploadSink.open``."""

    def __init__(
        self,
        target: proto.Target,
        client: httpx.Client,
        *,
        read_source: ReadSource,
        chunk_size: int,
        metadata: Mapping[str, str],
        headers: Sequence[tuple[str, str]] = (),
        timeout: float = 30.0,
        retries: int = 5,
        on_retry: OnRetry | None = None,
        on_notice: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.target = target
        self.name = target.name
        self.protocol = target.protocol
        self._client = client
        self._read_source = read_source
        self._chunk_size = chunk_size
        self._metadata = dict(metadata)
        self._timeout = timeout
        self._retries = retries
        self._in_engine_loop = False  # write(): the engine's retries are the only ones
        self._sleep = sleep
        self.on_retry = on_retry
        self.on_notice = on_notice
        self.record: Callable[[Upload], None] = lambda upload: None  # set by the journal store
        # Credentials go only to the origin the user named (the endpoint's).
        self._origin = _origin(target.url)
        self._auth_headers = dict(headers)
        userinfo = httpx.URL(target.url).userinfo
        if userinfo:
            raw = urllib.parse.unquote(userinfo.decode("ascii", "replace"))
            self._auth_headers.setdefault(
                "Authorization", "Basic " + base64.b64encode(raw.encode("utf-8")).decode("ascii")
            )
        self._endpoint = proto.strip_userinfo(target.url)
        # The upload, once there is one.
        self._binding: Upload | None = None
        self._url: str | None = None  # with its secrets: used, never recorded
        self._identity: Identity | None = None  # what the journal says the file is now
        self._size: int | None = None
        self._server_offset: int | None = None  # None: unknown, ask before the next PATCH
        self._complete = False
        self._discovered = False
        self._checksum: str | None = None
        self._limits = proto.Limits()
        self._repr = hashlib.sha256()
        self._repr_at = 0  # bytes [0, _repr_at) are in _repr
        self._fill_buffer: memoryview | None = None
        self._pieces = Pieces()
        self.sent = 0  # bytes sent over the network by this run (the bench reads it)

    @classmethod
    def open(
        cls,
        target: proto.Target,
        *,
        read_source: ReadSource,
        chunk_size: int,
        metadata: Mapping[str, str],
        headers: Sequence[tuple[str, str]] = (),
        timeout: float = 30.0,
        retries: int = 5,
        on_retry: OnRetry | None = None,
        verify: bool = True,
    ) -> UploadSink:
        from ..core.http import never_resolves
        from .http import _larger_reads, _netrc_auth

        host = httpx.URL(target.url).host
        if never_resolves(host):
            raise DestinationError(
                f"{target.name}: cannot resolve host {host!r}: names under .invalid never resolve "
                "(RFC 6761); check the URL",
                target.name,
            )
        _larger_reads()
        auth = None if httpx.URL(target.url).userinfo else _netrc_auth()
        limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
        client = httpx.Client(
            auth=auth,
            headers={"User-Agent": f"onward/{__version__}", "Accept-Encoding": "identity"},
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,  # an upload request is never replayed elsewhere
            limits=limits,
            trust_env=True,  # proxies from HTTP(S)_PROXY / NO_PROXY, CAs from SSL_CERT_FILE / SSL_CERT_DIR
            verify=verify,  # for those proxies' transports; _Transport is given it too
            transport=_Transport(verify=verify, limits=limits),
        )
        return cls(
            target,
            client,
            read_source=read_source,
            chunk_size=chunk_size,
            metadata=metadata,
            headers=headers,
            timeout=timeout,
            retries=retries,
            on_retry=on_retry,
        )

    # -- the binding between this sink, its upload and the journal ---------------------------

    @property
    def upload_url(self) -> str | None:
        """The upload's URL as shown (redacted), or None before there is one."""
        return self._binding.url if self._binding is not None else None

    def adopt(self, binding: Upload, url: str) -> None:
        """Continue the upload an earlier run made (its identity matched the file's)."""
        self._binding, self._url = binding, url
        self._identity, self._size = binding.identity, binding.size
        self._server_offset = None

    def expect(self, identity: Identity, size: int) -> Upload | None:
        """The journal now describes the file as ``identity``: keep the upload if it was made
        for exactly that file, else drop it (the next chunk goes to a new upload)."""
        self._identity, self._size = identity, size
        binding = self._binding
        if binding is not None and not keeps_upload(binding.identity, binding.size, identity, size):
            self._notice(
                f"the file is not the one the upload at {binding.url} was made for: "
                "sending it to a new upload"
            )
            self.abandon()
        return self._binding

    def abandon(self) -> None:
        """Forget the current upload (left to the server's expiry; never written to again)."""
        self._binding, self._url = None, None
        self._server_offset, self._complete = None, False

    def _notice(self, message: str) -> None:
        if self.on_notice is not None:
            self.on_notice(message)

    # -- the Sink interface -----------------------------------------------------------------

    def present(self) -> int | None:
        """The server's offset (the bytes it holds), or None when there is no usable upload."""
        if self._url is None:
            return None
        offset = self._head()
        if offset is None:
            return None
        return offset

    def reset(self) -> None:
        self.abandon()

    def write(self, offset: int, data: memoryview) -> None:
        """Append ``data`` at ``offset``, creating the upload or asking its offset first where
        needed. Called inside the engine's retry loop: a transient failure of any of these
        requests goes straight to it, so one ``--retries`` budget covers them all (retries
        nested here made 5 x 6 attempts of a server that was down)."""
        self._in_engine_loop = True
        try:
            size = self._planned_size()
            self._ensure_upload(size)
            if self._server_offset is None and self._head() is None:  # gone: a new upload, filled
                self._ensure_upload(size)
            at = self._server_offset
            assert at is not None
            where = proto.place(offset, len(data), at)
            if where.gap:
                self._fill(at, offset)
            if where.skip < len(data):
                self._send(offset + where.skip, data[where.skip :])
        finally:
            self._in_engine_loop = False

    def sync(self) -> None:
        """Nothing to do: every PATCH was acknowledged with the offset it reached."""

    def token(self) -> Promote:
        return Promote(0, 0)

    def holds(self, token: Promote) -> bool:
        """Whether the server holds the whole upload (an earlier run finished it)."""
        if self._url is None:
            return False
        return self._head() is not None and self._complete

    def promote(self, mode: int | None, times_ns: tuple[int, int] | None) -> None:
        """Finish the upload: anything the server still lacks is sent from the file, and the
        IETF draft's completing request (``Upload-Complete: ?1``) goes out if still due."""
        size = self._planned_size()
        self._ensure_upload(size)
        offset = self._head() if self._server_offset is None or not self._complete else self._server_offset
        if offset is None:
            self._ensure_upload(size)
            offset = 0
        if offset < size:
            self._fill(offset, size)
        if not self._complete:
            self._send(size, memoryview(b""))
        if not self._complete:
            raise DestinationError(
                f"{self.name}: the server does not report the upload at {self.upload_url} as complete",
                self.name,
            )

    def settle(self) -> None:
        """Nothing to do: a finished upload needs no rename."""

    def close(self) -> None:
        self._client.close()

    # -- requests ---------------------------------------------------------------------------

    def _planned_size(self) -> int:
        if self._size is None:
            raise DestinationError(f"{self.name}: no journal header yet (internal error)", self.name)
        return self._size

    def _headers_for(self, url: str, headers: dict[str, str]) -> dict[str, str]:
        if _origin(url) == self._origin:
            return {**self._auth_headers, **headers}
        return headers

    def _request(
        self, method: str, url: str, headers: dict[str, str], body: memoryview | None = None
    ) -> httpx.Response:
        content: bytes | Iterator[bytes] = b""
        if body is not None:
            headers = {**headers, "Content-Length": str(len(body))}
            content = self._pieces.of(body)
        try:
            request = self._client.build_request(
                method, url, headers=self._headers_for(url, headers), content=content
            )
            response = self._client.send(request)
        except httpx.HTTPError as exc:
            self._server_offset = None
            raise self._error(exc, url) from None
        except httpx.InvalidURL as exc:
            raise DestinationError(f"{self._shown(url)}: {exc}", self.name) from None
        return response

    def _shown(self, url: str) -> str:
        if url == self._endpoint:
            return self.name
        try:
            return redact_url(url)
        except ValueError:
            return self.name

    def _with_retries(self, what: Callable[[], httpx.Response]) -> httpx.Response:
        """A request made outside ``write`` (before or after the engine's copy loop), retried
        with backoff; inside ``write`` the engine retries."""
        if self._in_engine_loop:
            return what()
        return retrying(what, retries=self._retries, on_retry=self.on_retry, sleep=self._sleep)

    def _answer(self, response: httpx.Response, url: str, doing: str) -> str:
        """The kind of ``response`` (``core.upload.status_kind``); raises for the final ones."""
        kind = proto.status_kind(self.protocol, response.status_code)
        if kind in ("ok", "gone", "offset", "checksum"):
            return kind
        status = f"{response.status_code} {response.reason_phrase}".rstrip()
        what = f"{self._shown(url)}: {doing}: the server answered {status}"
        if kind == "transient":
            wait = parse_retry_after(response.headers.get("Retry-After"), time.time())
            raise TransientError(f"{what}; re-run to resume", self.name, retry_after=wait)
        if kind == "too-large":
            raise DestinationError(f"{what}: the file is larger than the server accepts", self.name)
        if response.status_code == 401:
            what += "; give credentials in the URL (tus+https://user:password@host/...), ~/.netrc or -H"
        elif response.status_code == 412 and self.protocol == "tus":
            versions = response.headers.get("Tus-Version", "?")
            what += f": it does not speak tus {proto.TUS_VERSION} (it offers {versions})"
        elif response.status_code in (405, 501) or (self.protocol == "tus" and response.status_code == 400):
            what += f"; is it a {self.target.label} endpoint?"
        raise DestinationError(what, self.name)

    def _discover(self) -> None:
        """tus: ask the endpoint (OPTIONS) which extensions and checksums it supports."""
        if self._discovered or self.protocol != "tus":
            self._discovered = True
            return
        response = self._with_retries(
            lambda: self._request("OPTIONS", self._endpoint, proto.head_headers("tus"))
        )
        self._discovered = True
        if response.status_code >= 300:
            return  # OPTIONS is optional for a tus server: core only, no checksums
        if "checksum" in proto.parse_tokens(response.headers.get("Tus-Extension")):
            self._checksum = proto.choose_checksum(
                proto.parse_tokens(response.headers.get("Tus-Checksum-Algorithm"))
            )
        most = proto.parse_offset(response.headers.get("Tus-Max-Size"))
        if most is not None:
            self._limits = proto.Limits(max_size=most)

    def _ensure_upload(self, size: int) -> None:
        """Create the upload if there is none: one request, no data; recorded before use."""
        self._discover()
        if self._url is not None:
            return
        if self._identity is None:
            raise DestinationError(f"{self.name}: no journal header yet (internal error)", self.name)
        if self._limits.max_size is not None and size > self._limits.max_size:
            raise DestinationError(
                f"{self.name}: the file ({size} bytes) is larger than the server accepts "
                f"({self._limits.max_size} bytes)",
                self.name,
            )
        headers = proto.creation_headers(self.protocol, size, self._metadata)
        response = self._with_retries(lambda: self._request("POST", self._endpoint, headers))
        kind = self._answer(response, self._endpoint, "creating the upload")
        location = response.headers.get("Location")
        if kind != "ok" or not location:
            raise DestinationError(
                f"{self.name}: creating the upload: the server answered {response.status_code} "
                "without a Location; "
                f"is it a {self.target.label} endpoint?",
                self.name,
            )
        url = proto.resolve_location(self._endpoint, location)
        if not url.startswith(("http://", "https://")):
            raise DestinationError(f"{self.name}: the server gave an upload URL onward cannot use", self.name)
        self._limits = self._merge_limits(response.headers)
        binding = Upload(self.protocol, redact_url(url), self._identity, size, time.time())
        self.record(binding)  # in the journal (durable) before the first byte goes out
        self._binding, self._url = binding, url
        self._server_offset, self._complete = 0, size == 0 and self.protocol == "tus"
        self._repr, self._repr_at = hashlib.sha256(), 0

    def _merge_limits(self, headers: Mapping[str, str]) -> proto.Limits:
        if self.protocol != "ietf" or "upload-limit" not in headers:
            return self._limits
        return proto.parse_limits(headers.get("upload-limit"))

    def _head(self) -> int | None:
        """Ask the server for the upload's offset; None (and no upload) when it is gone."""
        url = self._url
        assert url is not None
        response = self._with_retries(lambda: self._request("HEAD", url, proto.head_headers(self.protocol)))
        kind = self._answer(response, url, "asking for the upload's offset")
        if kind == "gone":
            self._notice(
                f"the upload at {self.upload_url} is gone from the server ({response.status_code}): "
                "starting a new one"
            )
            self.abandon()
            return None
        offset = proto.upload_offset(response.headers)
        size = self._planned_size()
        if kind != "ok" or offset is None or offset > size:
            why = "no valid Upload-Offset" if offset is None else f"an offset of {offset} past the end"
            self._notice(
                f"the server answered the upload at {self.upload_url} with {why}: starting a new one"
            )
            self.abandon()
            return None
        self._limits = self._merge_limits(response.headers)
        self._server_offset = offset
        self._complete = proto.upload_complete(self.protocol, response.headers, offset, size)
        return offset

    def _fill(self, start: int, end: int) -> None:
        """Send bytes [start, end) the server lacks, read from the file again."""
        if self._fill_buffer is None:
            self._fill_buffer = memoryview(mmap.mmap(-1, self._chunk_size))  # page-aligned
        buf = self._fill_buffer
        pos = start
        while pos < end:
            view = buf[: min(self._chunk_size, end - pos)]
            got = self._read_source(pos, view)
            if got != len(view):
                raise TransientError(f"{self.name}: the file got shorter while it was uploaded", self.name)
            self._send(pos, view)
            pos += got

    def _catch_up_digest(self, upto: int) -> None:
        """Bring the whole-file SHA-256 up to ``upto`` by reading the file (after a resume)."""
        if self._repr_at == upto:
            return
        self._repr, self._repr_at = hashlib.sha256(), 0
        if self._fill_buffer is None:
            self._fill_buffer = memoryview(mmap.mmap(-1, self._chunk_size))
        while self._repr_at < upto:
            view = self._fill_buffer[: min(self._chunk_size, upto - self._repr_at)]
            got = self._read_source(self._repr_at, view)
            if got != len(view):
                raise TransientError(f"{self.name}: the file got shorter while it was uploaded", self.name)
            self._repr.update(view)
            self._repr_at += got

    def _send(self, offset: int, data: memoryview) -> None:
        """Append ``data`` at ``offset`` (which must be the server's offset)."""
        size = self._planned_size()
        url = self._url
        assert url is not None
        for start, end in proto.patch_pieces(offset, offset + len(data), self._limits.max_append_size) or [
            (offset, offset)
        ]:
            piece = data[start - offset : end - offset]
            complete = end == size
            checksum = digest = None
            if self._checksum is not None:
                checksum = proto.upload_checksum(self._checksum, piece)
            if self.protocol == "ietf":
                if self._repr_at != start:
                    self._catch_up_digest(start)
                self._repr.update(piece)
                self._repr_at = end
                if complete:
                    digest = proto.repr_digest(self._repr.digest())
            headers = proto.append_headers(
                self.protocol, start, complete=complete, checksum=checksum, digest=digest
            )
            response = self._request("PATCH", url, headers, piece)
            kind = self._answer(response, url, f"sending bytes {start}-{end}")
            if kind == "ok":
                reached = proto.upload_offset(response.headers)
                if reached is None and (self.protocol == "ietf" or start == end):
                    reached = end  # the draft's completing response may carry no offset
                if reached != end:
                    self._server_offset = None
                    raise TransientError(
                        f"{self.name}: the server acknowledged offset {reached} after bytes "
                        f"{start}-{end}; asking it again",
                        self.name,
                    )
                self.sent += end - start
                self._server_offset = end
                self._complete = complete
                continue
            self._server_offset = None
            if kind == "gone":
                self._notice(f"the upload at {self.upload_url} is gone from the server: starting a new one")
                self.abandon()
                raise TransientError(
                    f"{self.name}: the upload is gone; sending the file to a new one", self.name
                )
            if kind == "checksum":
                raise TransientError(
                    f"{self.name}: the server says bytes {start}-{end} arrived damaged (checksum "
                    "mismatch); sending them again",
                    self.name,
                )
            raise TransientError(
                f"{self.name}: the server holds another offset than {start}; asking it again", self.name
            )

    def _error(self, exc: httpx.HTTPError, url: str) -> OnwardError:
        """An httpx error as one line of the onward tree, without credentials."""
        from .http import _scrub_text

        name = self._shown(url)
        reason = _scrub_text(str(exc), self.target.url) or type(exc).__name__
        cert = _cause(exc, ssl.SSLCertVerificationError)
        if isinstance(cert, ssl.SSLCertVerificationError):
            return DestinationError(
                f"{name}: TLS certificate verification failed ({cert.verify_message or cert.reason}); "
                "trust the server's CA with SSL_CERT_FILE",
                self.name,
            )
        tls = _cause(exc, ssl.SSLError)
        if isinstance(tls, ssl.SSLError):
            return DestinationError(f"{name}: TLS handshake failed ({tls.reason or tls})", self.name)
        dns = _cause(exc, socket.gaierror)
        if isinstance(dns, socket.gaierror):
            host = httpx.URL(url).host
            if dns.errno == socket.EAI_AGAIN:
                return TransientError(
                    f"{name}: cannot resolve host {host!r} right now; re-run to resume", self.name
                )
            return DestinationError(
                f"{name}: cannot resolve host {host!r} ({dns.strerror}); check the URL", self.name
            )
        if isinstance(exc, httpx.ConnectTimeout):
            return TransientError(
                f"{name}: could not connect within {self._timeout:g} s; re-run to resume", self.name
            )
        if isinstance(exc, httpx.TimeoutException):
            return TransientError(
                f"{name}: the server did not answer for {self._timeout:g} s (--timeout); re-run to resume",
                self.name,
            )
        if isinstance(exc, httpx.ConnectError):
            refused = _cause(exc, ConnectionRefusedError)
            why = "connection refused" if refused is not None else "cannot connect"
            return TransientError(f"{name}: {why}; re-run to resume", self.name)
        if isinstance(exc, httpx.TransportError):
            return TransientError(f"{name}: the connection broke ({reason}); re-run to resume", self.name)
        return DestinationError(f"{name}: {reason}", self.name)


class UploadJournal:
    """An upload's journal in the state directory, locked for the run.

    ``DIR/upload-KEY.onward-journal`` (the key names the file and the URL, see
    ``core.upload.state_key``), written by the rules of every journal (``LocalJournal``).
    Every rewrite carries the UPLOAD record of the upload the sink is using, if that upload
    was made for the file the new header describes; otherwise the upload is dropped.
    """

    def __init__(self, directory: str, key: str, sink: UploadSink) -> None:
        self.directory = directory
        self._journal = LocalJournal(os.path.join(directory, key))
        self.name = self._journal.name
        self._lock_path = os.path.join(directory, key + LOCK_SUFFIX)
        self._sink = sink
        sink.record = self.record
        self._lock = -1
        self._append_fd = -1

    @classmethod
    def open(cls, directory: str, key: str, sink: UploadSink) -> UploadJournal:
        fd = lock_state(directory, key, sink.name)
        store = cls(directory, key, sink)
        store._lock = fd
        return store

    def read(self) -> bytes | None:
        return self._journal.read()

    def create(self, data: bytes) -> None:
        self._close_appender()
        try:
            header = decode(data).header
        except DecodeError:  # never ours to write: let the plain store say what it says
            self._journal.create(data)
            return
        binding = self._sink.expect(header.identity, header.total_size)
        self._journal.create(data + (encode_upload(binding) if binding is not None else b""))

    def append(self, data: bytes) -> None:
        """Append CHUNK (and PROMOTE) records durably, as ``JournalStore.append`` promises: one
        ``fdatasync`` per checkpoint, whose cost was within the noise of bench/upload_bench.py."""
        self._write(data, sync=True)

    def note(self, data: bytes) -> None:
        self._write(data, sync=False)

    def set_aside(self) -> str:
        self._close_appender()
        return self._journal.set_aside()

    def record(self, upload: Upload) -> None:
        """Name a new upload in the journal, durably, before anything is sent to it."""
        self._write(encode_upload(upload), sync=True)

    def _write(self, data: bytes, *, sync: bool) -> None:
        try:
            if self._append_fd < 0:
                self._append_fd = os.open(self.name, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            view = memoryview(data)
            while view:
                view = view[os.write(self._append_fd, view) :]
            if sync:
                os.fdatasync(self._append_fd)
        except OSError as exc:
            raise JournalError(
                f"{self.name}: cannot append to the journal: {os.strerror(exc.errno or 0)}; re-run to resume",
                self.name,
            ) from None

    def _close_appender(self) -> None:
        if self._append_fd >= 0:
            os.close(self._append_fd)
            self._append_fd = -1

    def remove(self) -> None:
        self._close_appender()
        self._journal.remove()

    def names_an_upload(self) -> bool:
        """Whether the sink has an upload on the server that a later run could continue."""
        return self._sink.upload_url is not None

    def close(self) -> None:
        self._close_appender()
        if not self.names_an_upload():
            # No upload was made (the server refused or was down before one existed): there is
            # nothing to resume, so nothing is left for ``onward status`` to list at 0 %.
            with contextlib.suppress(OnwardError):
                self._journal.remove()
        self._journal.close()
        if self._lock >= 0:
            if not os.path.exists(self.name):  # finished: the lock file goes too, while we hold it
                with contextlib.suppress(OSError):
                    os.unlink(self._lock_path)
            os.close(self._lock)
            self._lock = -1


def lock_state(directory: str, key: str, name: str) -> int:
    """Lock the upload journal ``key`` in ``directory`` for this run (the directory is made if
    needed); the locked descriptor, or an error naming ``name`` when another run holds it."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(directory, key + LOCK_SUFFIX), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise JournalError(
            f"{directory}: cannot keep upload journals there: {os.strerror(exc.errno or 0)}; "
            "set XDG_STATE_HOME to a writable directory",
            directory,
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise DestinationError(
            f"{name}: another onward is uploading this file there right now; wait for it to finish", name
        ) from None
    return fd

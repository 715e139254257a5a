"""Resumable uploads: a remote sink speaking tus 1.0.0 or the IETF draft.

``UploadSink`` is the engine's sink for ``onward copy FILE tus+https://host/files/`` (or
``ietf+https://...``). It creates the upload lazily (one creation request with no data, so
its URL is in the journal before a byte is sent), then appends each chunk with one PATCH
from the offset the server holds, which is authoritative (``core.upload.place``): safe, as
an upload is bound to the identity of the file it was made for (``uploadjournal``). It
has no read-back capability (``endpoints.ReadBack``): every PATCH must be acknowledged
with exactly the offset it reached, a tus server with the checksum extension gets an
``Upload-Checksum`` on every PATCH, an IETF upload ends with a ``Repr-Digest``. Nothing made
here holds the URL's secrets.
"""

from __future__ import annotations

# First: importing transport keeps httpx from loading its command-line client (see there).
from .transport import OnRetry, Pieces, make_client, retrying, same_origin, transport_error

# isort: split
import base64
import hashlib
import mmap
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence

import httpx

from ..core import upload as proto
from ..core.http import parse_retry_after, redact_url
from ..core.identity import Identity
from ..core.journal import Promote, Upload
from ..core.resume import keeps_upload
from ..errors import DestinationError, OnwardError, TransientError

__all__ = ["UploadSink"]

ReadSource = Callable[[int, memoryview], int]


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
        self._origin = httpx.URL(target.url)
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
        client = make_client(
            httpx.URL(target.url),
            name=target.name,
            timeout=timeout,
            connections=2,
            verify=verify,
            redirects=False,
            final=DestinationError,
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

    def sync(self) -> None:
        """Nothing to do: every PATCH was acknowledged with the offset it reached."""

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
        if same_origin(httpx.URL(url), self._origin):
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
        return transport_error(
            exc,
            shown=self._shown(url),
            name=self.name,
            url=url,
            timeout=self._timeout,
            final=DestinationError,
            hide=(self.target.url,),
        )

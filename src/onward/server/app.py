"""The upload server as a plain ASGI application: routing, the two protocols, one writer per upload.

A raw ASGI callable rather than a Starlette app: the whole job is streaming one request
body to disk with bounded memory and deciding exactly when to ``fdatasync``, over one
path pattern; a framework would add a dependency and a request object between the body
and the disk, and nothing a mounted app needs (Starlette and FastAPI mount any ASGI app).

Blocking file work (writes, ``fdatasync``, promotion) runs in the server's own bounded pool
of I/O threads, and completion hooks in a second, smaller pool with a timeout, so a slow
hook never holds a thread that moves upload bytes. Every request to an upload takes
that upload's lock; a new request ends the one holding it (what the IETF draft
recommends: the client only sends a new one when it believes the old one failed), and
gets 423 Locked if the old one does not let go within ``lock_wait`` seconds.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import ctypes
import email.utils
import errno
import functools
import hashlib
import hmac
import inspect
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import NoSpaceError, OnwardError
from .guard import INFORMATIONAL
from .protocol import (
    CHECKSUM_ALGORITHMS,
    IETF_VERSIONS,
    TUS_EXTENSIONS,
    TUS_VERSION,
    Checksum,
    Reject,
    digest_field,
    parse_checksum,
    parse_concat,
    parse_metadata,
    parse_sf_boolean,
    parse_sf_integer,
    parse_tus_integer,
    valid_id,
)
from .store import Store, Upload

__all__ = ["AuthRequest", "FinishedUpload", "ServerOptions", "UploadServer", "create_app"]

log = logging.getLogger("onward.server")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_MAX_SIZE = 100 << 30  # a safe bound on one upload and on a concatenation's result
WRITE_BLOCK = 1 << 20  # request body is handed to the disk in blocks of this size
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


@dataclass(frozen=True)
class FinishedUpload:
    """What the completion hook gets: the promoted file, its metadata file and what the client said."""

    id: str
    path: str
    metadata_path: str
    size: int
    metadata: dict[str, str | None]  # tus Upload-Metadata, values decoded (UTF-8, errors replaced)
    content_type: str | None


@dataclass(frozen=True)
class AuthRequest:
    """What the auth hook sees of a request: return True to let it through (else 401)."""

    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    client: tuple[str, int] | None


@dataclass
class ServerOptions:
    base_path: str = "/files/"
    max_size: int | None = DEFAULT_MAX_SIZE  # bytes; larger uploads are refused with 413; None: no limit
    expire_after: float = 24 * 3600.0  # an unfinished upload older than this is removed
    idle_timeout: float = 60.0  # seconds without a byte of request body before the request is ended
    lock_wait: float = 5.0  # seconds a request waits for the previous one on the same upload to end
    checkpoint_bytes: int = 64 << 20  # data made durable and acknowledged at least this often ...
    checkpoint_seconds: float = 1.0  # ... and this often, inside one long PATCH
    sweep_interval: float = 60.0  # how often expired uploads are looked for
    cors_origins: tuple[str, ...] = ()  # "*" for any
    token: str | None = None  # require "Authorization: Bearer TOKEN"
    auth: Callable[[AuthRequest], bool | Awaitable[bool]] | None = None
    on_complete: Callable[[FinishedUpload], object] | None = None
    hook_timeout: float = 60.0  # seconds a response waits for the hook (a command is then killed)
    hook_workers: int = 4  # hooks running at once; more wait their turn, upload bytes never do
    io_threads: int = 8  # threads writing and syncing upload data, sized for one disk
    clock: Callable[[], float] = field(default=time.time, repr=False)


class _Slot:
    """One upload's lock, and the way to end the request that holds it."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0  # requests holding or waiting for the lock: the slot is dropped at 0
        self.ended = False
        self.waiting: asyncio.Timeout | None = None  # the holder's wait for its next body message

    def end_holder(self) -> None:
        self.ended = True
        if self.waiting is not None:
            with contextlib.suppress(RuntimeError):
                self.waiting.reschedule(asyncio.get_running_loop().time())


@dataclass
class _Request:
    method: str
    target: str  # "" for the collection, else what follows the base path
    headers: dict[str, str]
    ietf: int | None  # interop version, None for tus
    client: tuple[str, int] | None
    cors: list[tuple[str, str]]
    root: str = ""  # where the app is mounted
    interim: Callable[[int, list[tuple[str, str]]], bool] | None = None  # sends a 1xx, when the server can

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class _Outcome(Exception):
    """A finished request: status, headers and body, raised from deep inside a handler."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        super().__init__(status)
        self.status, self.headers, self.body = status, headers, body


class UploadServer:
    """An ASGI application serving tus 1.0.0 and draft-ietf-httpbis-resumable-upload uploads
    into ``directory``. Mount it under any path; ``base_path`` is where uploads live below it."""

    def __init__(self, directory: str, options: ServerOptions | None = None) -> None:
        self.options = options or ServerOptions()
        base = "/" + self.options.base_path.strip("/")
        self.base = base.rstrip("/") + "/"
        self.store = Store(directory)
        self._slots: dict[str, _Slot] = {}
        self._uploads: dict[str, Upload] = {}
        self._started = False
        self._sweeper: asyncio.Task[None] | None = None
        self._io_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._hook_pool: concurrent.futures.ThreadPoolExecutor | None = None

    # --- ASGI entry ------------------------------------------------------------------------

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = self._parse(scope)
        if scope["method"] == "HEAD":
            send = _without_body(send)
        try:
            self._start()
            if request is None:
                raise Reject(404, "no such resource")
            await self._dispatch(request, scope, receive, send)
        except _Outcome as done:
            await _respond(send, done.status, (request.cors if request else []) + done.headers, done.body)
        except Reject as rejected:
            await self._reject(send, request, rejected)
        except (OnwardError, OSError) as exc:  # the disk failed us: say so, keep serving
            log.error("%s", exc.message if isinstance(exc, OnwardError) else exc)
            full = isinstance(exc, NoSpaceError) or getattr(exc, "errno", None) in (
                errno.ENOSPC,
                errno.EDQUOT,
            )
            status = 507 if full else 500  # 507 Insufficient Storage: retrying later may work
            await self._reject(send, request, Reject(status, "the server could not store the data"))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self._start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._sweeper is not None:
                    self._sweeper.cancel()
                for pool in (self._io_pool, self._hook_pool):
                    if pool is not None:
                        pool.shutdown(wait=False)  # running work finishes; the interpreter joins it
                self.store.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _start(self) -> None:
        """Open the store on first use (a mounted app may never see a lifespan event)."""
        if self._started:
            return
        self.store.open()
        self._io_pool = concurrent.futures.ThreadPoolExecutor(self.options.io_threads, "onward-io")
        self._hook_pool = concurrent.futures.ThreadPoolExecutor(self.options.hook_workers, "onward-hook")
        self._started = True
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    # --- request parsing, CORS, auth ------------------------------------------------------

    def _parse(self, scope: MutableMapping[str, Any]) -> _Request | None:
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", []):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        path: str = scope.get("path", "/")
        root: str = scope.get("root_path", "")
        if root and path.startswith(root + "/"):
            path = path[len(root) :]
        cors = self._cors_headers(headers.get("origin"))
        version = headers.get("upload-draft-interop-version")
        ietf = parse_sf_integer(version) if version is not None else None
        method = scope["method"]
        if method == "POST" and "x-http-method-override" in headers:
            method = headers["x-http-method-override"].strip().upper()
        request = _Request(method, "", headers, ietf, scope.get("client"), cors, root)
        request.interim = (scope.get("extensions") or {}).get(INFORMATIONAL)
        if path == self.base.rstrip("/") or path == self.base:
            return request
        if not path.startswith(self.base):
            return None
        request.target = path[len(self.base) :]
        return request

    def _cors_headers(self, origin: str | None) -> list[tuple[str, str]]:
        origins = self.options.cors_origins
        if origin is None or not origins or ("*" not in origins and origin not in origins):
            return []
        return [
            ("Access-Control-Allow-Origin", origin),
            ("Vary", "Origin"),
            ("Access-Control-Expose-Headers", EXPOSED),
        ]

    async def _authorised(self, request: _Request) -> bool:
        token = self.options.token
        if token is not None:
            sent = request.header("authorization") or ""
            scheme, _, credentials = sent.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                credentials.strip().encode(), token.encode()
            ):
                return False
        if self.options.auth is not None:
            path = self.base + request.target
            verdict = self.options.auth(AuthRequest(request.method, path, request.headers, request.client))
            if inspect.isawaitable(verdict):
                verdict = await verdict
            return bool(verdict)
        return True

    # --- dispatch -------------------------------------------------------------------------

    async def _dispatch(
        self, request: _Request, scope: MutableMapping[str, Any], receive: Receive, send: Send
    ) -> None:
        if request.method == "OPTIONS":
            if request.cors and "access-control-request-method" in request.headers:
                allow = request.header("access-control-request-headers") or ALLOWED_HEADERS
                raise _Outcome(
                    204,
                    [
                        ("Access-Control-Allow-Methods", METHODS),
                        ("Access-Control-Allow-Headers", allow),
                        ("Access-Control-Max-Age", "86400"),
                    ],
                )
            raise _Outcome(204, self._capabilities())
        if request.ietf is None and "upload-draft-interop-version" in request.headers:
            raise Reject(400, "Upload-Draft-Interop-Version must be an integer")
        if request.ietf is not None and request.ietf not in IETF_VERSIONS:
            raise Reject(400, f"Upload-Draft-Interop-Version {request.ietf} is not supported (6 or 8)")
        if request.ietf is None and request.header("tus-resumable") != TUS_VERSION:
            raise _Outcome(
                412,
                [("Tus-Version", TUS_VERSION), ("Content-Type", "text/plain")],
                b"Tus-Resumable: 1.0.0 is required (or Upload-Draft-Interop-Version for the IETF protocol)\n",
            )
        if not await self._authorised(request):
            raise Reject(401, "missing or wrong credentials")
        if request.target == "":
            if request.method == "POST" or (request.method == "PUT" and request.ietf is not None):
                if request.ietf is not None:
                    await self._create_ietf(request, receive)
                else:
                    await self._create_tus(request, receive)
            raise Reject(405, f"{request.method} is not allowed here")
        if not valid_id(request.target):
            raise Reject(404, "no such upload")
        if request.method == "HEAD":
            await self._head(request)
        elif request.method == "PATCH":
            await self._patch(request, receive)
        elif request.method == "DELETE":
            await self._delete(request)
        raise Reject(405, f"{request.method} is not allowed on an upload")

    def _capabilities(self) -> list[tuple[str, str]]:
        headers = [
            ("Tus-Resumable", TUS_VERSION),
            ("Tus-Version", TUS_VERSION),
            ("Tus-Extension", ",".join(TUS_EXTENSIONS)),
            ("Tus-Checksum-Algorithm", ",".join(CHECKSUM_ALGORITHMS)),
            ("Accept-Patch", f"{TUS_CONTENT_TYPE}, {IETF_CONTENT_TYPE}"),
            ("Upload-Limit", self._limits(None)),
        ]
        if self.options.max_size is not None:
            headers.append(("Tus-Max-Size", str(self.options.max_size)))
        return headers

    def _limits(self, upload: Upload | None) -> str:
        parts = []
        if self.options.max_size is not None:
            parts.append(f"max-size={self.options.max_size}")
        age = self.options.expire_after if upload is None else upload.expires - self.options.clock()
        parts.append(f"max-age={max(0, int(age))}")
        return ", ".join(parts)

    # --- responses ------------------------------------------------------------------------

    async def _reject(self, send: Send, request: _Request | None, rejected: Reject) -> None:
        cors = request.cors if request else []
        if request is not None and request.ietf is not None:
            body: dict[str, Any] = {"type": PROBLEM + rejected.problem if rejected.problem else "about:blank"}
            body["title"] = rejected.reason
            body.update(rejected.members)
            headers = [("Content-Type", "application/problem+json"), *rejected.headers]
            if rejected.status == 413:
                headers.append(("Upload-Limit", self._limits(None)))
            await _respond(send, rejected.status, cors + headers, json.dumps(body).encode())
            return
        headers = [
            ("Tus-Resumable", TUS_VERSION),
            ("Content-Type", "text/plain; charset=utf-8"),
            *rejected.headers,
        ]
        if rejected.status == 405:
            headers.append(("Allow", METHODS))
        if rejected.status == 401:
            headers.append(("WWW-Authenticate", 'Bearer realm="onward"'))
        await _respond(send, rejected.status, cors + headers, (rejected.reason + "\n").encode())

    def _location(self, request: _Request, upload_id: str) -> str:
        return request.root + self.base + upload_id

    def _tus_state(self, upload: Upload) -> list[tuple[str, str]]:
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
            headers.append(("Upload-Concat", "final;" + " ".join(self.base + p for p in upload.parts)))
        return headers

    def _ietf_state(self, upload: Upload) -> list[tuple[str, str]]:
        headers = [
            ("Upload-Offset", str(upload.offset)),
            ("Upload-Complete", "?1" if upload.complete else "?0"),
            ("Upload-Limit", self._limits(upload)),
            ("Cache-Control", "no-store"),
        ]
        if upload.length is not None:
            headers.append(("Upload-Length", str(upload.length)))
        return headers

    def _state(self, request: _Request, upload: Upload) -> list[tuple[str, str]]:
        return self._ietf_state(upload) if request.ietf is not None else self._tus_state(upload)

    # --- uploads: lookup and the one-writer rule -------------------------------------------

    async def _get(self, upload_id: str) -> Upload:
        """The upload (loaded once, then kept); call it holding the upload's lock."""
        upload = self._uploads.get(upload_id)
        if upload is None:
            upload = await self._io(functools.partial(self.store.load, upload_id))
            if upload is None:
                raise Reject(404, "no such upload")
            self._uploads[upload_id] = upload
        if upload.lost:
            raise Reject(410, "this server lost part of the upload's data; start a new upload")
        if self.options.clock() > upload.expires:
            raise Reject(410, "the upload expired")
        return upload

    @contextlib.asynccontextmanager
    async def _hold(self, upload_id: str) -> Any:
        """The upload's lock; a request still holding it is told to end first. Only an upload
        that exists gets a slot, and only while requests use it: unknown ids cost no memory."""
        if upload_id not in self._uploads and not await self._io(
            functools.partial(os.path.exists, self.store.info_path(upload_id))
        ):
            raise Reject(404, "no such upload")
        slot = self._slots.get(upload_id)
        if slot is None:
            slot = self._slots[upload_id] = _Slot()
        slot.users += 1
        try:
            if slot.lock.locked():
                slot.end_holder()
            try:
                async with asyncio.timeout(self.options.lock_wait):
                    await slot.lock.acquire()
            except TimeoutError:
                raise Reject(423, "another request is still writing to this upload; retry shortly") from None
            slot.ended = False
            try:
                yield slot
            finally:
                slot.lock.release()
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._slots[upload_id]

    # --- HEAD and DELETE -----------------------------------------------------------------

    async def _head(self, request: _Request) -> None:
        async with self._hold(request.target):
            upload = await self._get(request.target)
            status = 204 if request.ietf is not None else 200
            raise _Outcome(status, self._state(request, upload))

    async def _delete(self, request: _Request) -> None:
        async with self._hold(request.target):
            upload = await self._get(request.target)
            await self._io(lambda: self.store.remove(upload, keep_finished=True))
            self._uploads.pop(upload.id, None)
            headers = [] if request.ietf is not None else [("Tus-Resumable", TUS_VERSION)]
            raise _Outcome(204, headers)

    # --- creation --------------------------------------------------------------------------

    def _new_upload(self, length: int | None, metadata: dict[str, str | None]) -> Upload:
        now = self.options.clock()
        return Upload(
            id=self.store.new_id(),
            length=length,
            metadata=metadata,
            created=now,
            expires=now + self.options.expire_after,
        )

    def _check_size(self, length: int | None) -> None:
        if length is not None and self.options.max_size is not None and length > self.options.max_size:
            raise Reject(
                413, f"the upload is larger than this server accepts ({self.options.max_size} bytes)"
            )

    async def _create_tus(self, request: _Request, receive: Receive) -> None:
        concat = parse_concat(request.header("upload-concat"), self.base)
        length = parse_tus_integer(request.header("upload-length"), "Upload-Length")
        defer = request.header("upload-defer-length")
        if defer is not None and defer.strip() != "1":
            raise Reject(400, "Upload-Defer-Length must be 1")
        metadata = parse_metadata(request.header("upload-metadata"))
        if concat is not None and concat[0] == "final":
            if length is not None or defer is not None:
                raise Reject(400, "a final upload (Upload-Concat: final) takes its length from its parts")
            await self._create_final(request, concat[1], metadata)
        if (length is None) == (defer is None):
            raise Reject(400, "send exactly one of Upload-Length and Upload-Defer-Length: 1")
        self._check_size(length)
        body = _content_length(request)
        if body is None:  # chunked: whether data comes is known only from the stream
            has_data, receive = await self._peek_body(receive)
            body = None if has_data else 0
        if body != 0 and (request.header("content-type") or "").split(";")[0].strip() != TUS_CONTENT_TYPE:
            raise Reject(415, f"data sent with the creation request must be {TUS_CONTENT_TYPE}")
        if body and length is not None and body > length:
            raise Reject(413, "more data than Upload-Length")
        checksum = parse_checksum(request.header("upload-checksum"), None) if body != 0 else None
        upload = self._new_upload(length, metadata)
        upload.concat = concat[0] if concat else None
        await self._io(lambda: self.store.create(upload))
        self._uploads[upload.id] = upload
        headers = [("Location", self._location(request, upload.id))]
        async with self._hold(upload.id) as slot, self._discard_if_refused(upload):
            if body != 0:
                await self._append(request, receive, slot, upload, checksum, None, headers)
            if upload.length == upload.offset and not upload.complete:
                await self._finish(upload)
            raise _Outcome(201, headers + self._tus_state(upload))

    async def _create_final(
        self, request: _Request, part_ids: list[str], metadata: dict[str, str | None]
    ) -> None:
        parts = [await self._get(p) for p in part_ids]
        for part in parts:
            if part.concat != "partial" or not part.complete:
                raise Reject(
                    400, f"upload {part.id} is not a finished partial upload (Upload-Concat: partial)"
                )
        length = sum(p.offset for p in parts)
        self._check_size(length)
        upload = self._new_upload(length, metadata)
        upload.concat, upload.parts = "final", part_ids
        await self._io(lambda: self.store.create(upload))
        self._uploads[upload.id] = upload
        async with self._hold(upload.id):
            await self._io(lambda: self.store.concatenate(upload, parts))
            await self._finish(upload)
            raise _Outcome(201, [("Location", self._location(request, upload.id)), *self._tus_state(upload)])

    async def _create_ietf(self, request: _Request, receive: Receive) -> None:
        complete = parse_sf_boolean(request.header("upload-complete"))
        if complete is None:
            raise Reject(400, "Upload-Complete (?0 or ?1) is required to create an upload")
        length = parse_sf_integer(request.header("upload-length"))
        body = _content_length(request)
        if complete and body is not None:
            if length is not None and length != body:
                raise Reject(400, "Upload-Length and Content-Length disagree", "inconsistent-upload-length")
            length = body
        if length is not None and body is not None and body > length:
            raise Reject(400, "more data than Upload-Length", "inconsistent-upload-length")
        self._check_size(length)
        metadata = parse_metadata(request.header("upload-metadata"))
        checksum = parse_checksum(None, request.header("content-digest")) if body != 0 else None
        repr_digest = digest_field(request.header("repr-digest") or "")
        upload = self._new_upload(length, metadata)
        upload.content_type = request.header("content-type")
        if repr_digest is not None:
            upload.repr_digest = (repr_digest[0], repr_digest[1].hex())
        await self._io(lambda: self.store.create(upload))
        self._uploads[upload.id] = upload
        headers = [("Location", self._location(request, upload.id))]
        if body != 0 and request.interim is not None:
            # 104: the client knows where to resume before it sends the data (the draft's SHOULD)
            version = ("Upload-Draft-Interop-Version", str(request.ietf))
            request.interim(104, [*headers, version, ("Upload-Limit", self._limits(upload))])
        async with self._hold(upload.id) as slot, self._discard_if_refused(upload):
            if body != 0:
                await self._append(request, receive, slot, upload, checksum, complete, headers)
            elif complete:
                await self._complete_ietf(request, upload, headers)
            status = 200 if upload.complete else 201
            raise _Outcome(status, headers + self._ietf_state(upload))

    # --- append ----------------------------------------------------------------------------

    async def _patch(self, request: _Request, receive: Receive) -> None:
        async with self._hold(request.target) as slot:
            upload = await self._get(request.target)
            content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
            if request.ietf is not None:
                await self._patch_ietf(request, receive, slot, upload, content_type)
            else:
                await self._patch_tus(request, receive, slot, upload, content_type)

    async def _patch_tus(
        self, request: _Request, receive: Receive, slot: _Slot, upload: Upload, content_type: str
    ) -> None:
        if content_type != TUS_CONTENT_TYPE:
            raise Reject(415, f"PATCH data must be sent as {TUS_CONTENT_TYPE}")
        if upload.concat == "final":
            raise Reject(403, "a final upload (Upload-Concat: final) cannot be patched")
        offset = parse_tus_integer(request.header("upload-offset"), "Upload-Offset")
        if offset is None:
            raise Reject(400, "Upload-Offset is required")
        if offset != upload.offset:
            raise _Outcome(
                409,
                [("Tus-Resumable", TUS_VERSION), ("Upload-Offset", str(upload.offset))],
                f"Upload-Offset is {offset} but the upload is at {upload.offset}\n".encode(),
            )
        new_length = parse_tus_integer(request.header("upload-length"), "Upload-Length")
        if new_length == upload.length:
            new_length = None
        elif new_length is not None:
            if upload.length is not None:
                raise Reject(400, "Upload-Length cannot change once it is set")
            if new_length < upload.offset:
                raise Reject(400, "Upload-Length is smaller than what was already uploaded")
            self._check_size(new_length)
        checksum = parse_checksum(request.header("upload-checksum"), None)
        body = _content_length(request)
        limit = self._limit(upload, new_length)
        if body is not None and limit is not None and upload.offset + body > limit:
            raise Reject(413, "the data goes past the upload's length")
        headers: list[tuple[str, str]] = []
        await self._append(request, receive, slot, upload, checksum, None, headers, new_length)
        raise _Outcome(204, headers + self._tus_state(upload))

    async def _patch_ietf(
        self, request: _Request, receive: Receive, slot: _Slot, upload: Upload, content_type: str
    ) -> None:
        if content_type != IETF_CONTENT_TYPE:
            raise Reject(415, f"PATCH data must be sent as {IETF_CONTENT_TYPE}")
        offset = parse_sf_integer(request.header("upload-offset"))
        complete = parse_sf_boolean(request.header("upload-complete"))
        if offset is None or complete is None:
            raise Reject(400, "Upload-Offset and Upload-Complete are required")
        body = _content_length(request)
        if upload.complete:
            if complete and body == 0 and offset == upload.offset:  # "it is complete": it is
                raise _Outcome(200, self._ietf_state(upload))
            raise Reject(400, "the upload is already complete", "completed-upload")
        if offset != upload.offset:
            raise Reject(
                409,
                "offset from request does not match offset of resource",
                "mismatching-upload-offset",
                members=(("expected-offset", upload.offset), ("provided-offset", offset)),
                headers=(("Upload-Offset", str(upload.offset)),),
            )
        length = parse_sf_integer(request.header("upload-length"))
        if complete and body is not None:
            implied = upload.offset + body
            if length is not None and length != implied:
                raise Reject(400, "Upload-Length and Content-Length disagree", "inconsistent-upload-length")
            length = implied
        if length is not None:
            if upload.length is not None and length != upload.length:
                raise Reject(400, "the upload's length cannot change", "inconsistent-upload-length")
            if length < upload.offset or (body is not None and upload.offset + body > length):
                raise Reject(400, "the data does not fit the upload's length", "inconsistent-upload-length")
            self._check_size(length)
        new_length = length if upload.length is None else None
        limit = self._limit(upload, new_length)
        if body is not None and limit is not None and upload.offset + body > limit:
            raise Reject(413, "the data goes past the upload's size limit")
        checksum = parse_checksum(None, request.header("content-digest"))
        headers: list[tuple[str, str]] = []
        await self._append(request, receive, slot, upload, checksum, complete, headers, new_length)
        status = 200 if upload.complete else 204
        raise _Outcome(status, headers + self._ietf_state(upload))

    async def _append(
        self,
        request: _Request,
        receive: Receive,
        slot: _Slot,
        upload: Upload,
        checksum: Checksum | None,
        ietf_complete: bool | None,
        headers: list[tuple[str, str]],
        new_length: int | None = None,
    ) -> None:
        """Stream the request body onto the upload; what arrived is durable when this returns
        (or raises), except the body of a refused request (a failed checksum, data past the
        length), which is dropped whole, with ``new_length`` (a deferred length this request
        sets, recorded only once its data is taken)."""
        writer = _Writer(self.store, upload, checksum, self.options, self._pool())
        await self._io(writer.open)
        outcome = "done"
        try:
            outcome = await writer.stream(receive, slot, self._limit(upload, new_length))
        finally:
            try:
                await self._io(writer.close)
            except asyncio.CancelledError:  # shutting down: make what arrived durable anyway
                writer.close()
                raise
        if new_length is not None and writer.keep:
            await self._io(lambda: self.store.record_length(upload, new_length))
        if outcome == "bad-checksum":
            raise Reject(
                checksum.mismatch_status if checksum else 460, "checksum mismatch: the data was dropped"
            )
        if outcome == "too-long":
            problem = "inconsistent-upload-length" if request.ietf is not None else None
            raise Reject(
                413 if request.ietf is None else 400, "the data goes past the upload's length", problem
            )
        if outcome == "ended":
            raise Reject(409, "ended by a newer request to the same upload")
        if outcome == "timeout":
            raise Reject(408, f"no data for {self.options.idle_timeout:g} s; what arrived is kept")
        if outcome == "disconnect":
            raise _Outcome(400, [])  # nobody is listening
        if ietf_complete:
            await self._complete_ietf(request, upload, headers)
        elif upload.length == upload.offset and not upload.complete:
            # Reaching a declared length completes the upload in both protocols: tus-js-client's
            # ietf-draft-05 mode may send the last bytes with Upload-Complete: ?0 (docs/SERVER.md).
            await self._finish(upload)

    async def _complete_ietf(self, request: _Request, upload: Upload, headers: list[tuple[str, str]]) -> None:
        if upload.length is not None and upload.length != upload.offset:
            raise Reject(
                400,
                "Upload-Complete: ?1 but the upload is shorter than its length",
                "inconsistent-upload-length",
            )
        if upload.length is None:
            await self._io(lambda: self.store.record_length(upload, upload.offset))
        await self._finish(upload)

    async def _finish(self, upload: Upload) -> None:
        """Complete: check Repr-Digest, promote (not a partial of a concatenation), run the hook."""
        if upload.repr_digest is not None:
            algorithm, want = upload.repr_digest
            have = await self._io(lambda: _file_digest(self.store.data_path(upload), algorithm))
            if have != want:
                await self._io(lambda: self.store.remove(upload, keep_finished=False))
                self._uploads.pop(upload.id, None)
                raise Reject(
                    400, f"{algorithm} of the upload does not match Repr-Digest; the upload was discarded"
                )
        await self._io(lambda: self.store.record_complete(upload))
        if upload.concat == "partial":
            return
        await self._io(lambda: self.store.promote(upload))
        await self._run_hook(upload)

    async def _run_hook(self, upload: Upload) -> None:
        """The hook in the hook pool; the response waits for it at most ``hook_timeout`` seconds
        (a command hook is killed then, a Python one is left to finish and record HOOKED)."""
        assert self._hook_pool is not None
        running = asyncio.get_running_loop().run_in_executor(self._hook_pool, self._hook, upload)
        try:
            async with asyncio.timeout(self.options.hook_timeout):
                await asyncio.shield(running)
        except TimeoutError:
            log.error(
                "completion hook for upload %s still running after %g s; answering without it",
                upload.id,
                self.options.hook_timeout,
            )

    def _hook(self, upload: Upload) -> None:
        if self.options.on_complete is not None:
            path = self.store.final_path(upload.id)
            finished = FinishedUpload(
                upload.id, path, path + ".json", upload.offset, _decoded(upload.metadata), upload.content_type
            )
            try:
                self.options.on_complete(finished)
            except Exception:
                log.exception("completion hook failed for upload %s", upload.id)
        try:
            self.store.record_hooked(upload)
        except OnwardError as exc:  # e.g. deleted while a hook past its timeout still ran
            log.error("%s", exc.message)

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        assert self._io_pool is not None, "the app is started by its first request"
        return self._io_pool

    async def _io(self, fn: Callable[[], Any]) -> Any:
        """Blocking store work in the I/O pool (never the hooks', never the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool(), fn)

    def _limit(self, upload: Upload, new_length: int | None = None) -> int | None:
        """Where this request's data must stop: the length (or the one it sets), else --max-size."""
        for limit in (new_length, upload.length, self.options.max_size):
            if limit is not None:
                return limit
        return None

    @contextlib.asynccontextmanager
    async def _discard_if_refused(self, upload: Upload) -> Any:
        """Around the data of a creation request: if it is refused, the upload goes too (the
        request is refused whole; without a 104 the client never learned the URL); one cut
        short keeps what arrived, as any request does."""
        try:
            yield
        except Reject as refused:
            if refused.status not in (408, 409):
                await self._io(lambda: self.store.remove(upload, keep_finished=False))
                self._uploads.pop(upload.id, None)
            raise

    async def _peek_body(self, receive: Receive) -> tuple[bool, Receive]:
        """Whether a body of unknown length (chunked) carries any byte, and a ``receive`` that
        hands back what was read for that first."""
        seen: list[Message] = []
        try:
            async with asyncio.timeout(self.options.idle_timeout):
                while not seen or (seen[-1]["type"] == "http.request" and seen[-1].get("more_body")):
                    seen.append(await receive())
                    if seen[-1].get("body"):
                        break
        except TimeoutError:
            raise Reject(408, f"no data for {self.options.idle_timeout:g} s") from None

        async def replay() -> Message:
            return seen.pop(0) if seen else await receive()

        return any(m.get("body") for m in seen), replay

    # --- expiry ----------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        try:
            await self._recover()
        except Exception:
            log.exception("finishing the uploads a restart interrupted failed")
        while True:
            await asyncio.sleep(self.options.sweep_interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("removing expired uploads failed")

    async def _recover(self) -> None:
        """At start, finish what a killed server left half done: an upload whose data was all
        recorded but that was not completed and promoted (its client, told the whole length is
        there, will not send again), and a promoted upload whose hook did not run (at least once)."""
        for upload_id in await self._io(lambda: list(self.store.ids())):
            upload = await self._io(functools.partial(self.store.load, upload_id))
            if (
                upload is None
                or upload.lost
                or upload.hooked
                or (upload.complete and upload.concat == "partial")
            ):
                continue  # nothing left to do (a finished partial is a piece: no promotion, no hook)
            if not upload.promoted and upload.length != upload.offset:
                continue  # unfinished: its client sends the rest
            try:
                async with self._hold(upload_id):
                    upload = await self._get(upload_id)
                    if upload.promoted:
                        await self._run_hook(upload)
                    else:
                        await self._finish(upload)
            except Reject as refused:  # e.g. a Repr-Digest that does not match: discarded
                log.error("upload %s could not be finished after a restart: %s", upload_id, refused.reason)

    async def sweep(self) -> list[str]:
        """Remove expired uploads (unfinished: data and record; finished: the record only)."""
        now = self.options.clock()
        removed = []
        for upload_id in await self._io(lambda: list(self.store.ids())):
            if upload_id in self._slots:  # in use
                continue
            upload = self._uploads.get(upload_id) or await self._io(
                functools.partial(self.store.load, upload_id)
            )
            if upload is None or now <= upload.expires:
                continue
            await self._io(functools.partial(self.store.remove, upload, keep_finished=True))
            self._uploads.pop(upload_id, None)
            removed.append(upload_id)
        return removed


class _Writer:
    """One request body onto one upload: blocks to the disk, checkpoints, the checksum."""

    def __init__(
        self,
        store: Store,
        upload: Upload,
        checksum: Checksum | None,
        options: ServerOptions,
        pool: concurrent.futures.Executor,
    ) -> None:
        self.store, self.upload, self.checksum, self.options = store, upload, checksum, options
        self.pool = pool
        self.hasher = hashlib.new(checksum.algorithm) if checksum else None
        self.fd = -1
        self.start = self.pos = upload.offset
        self.keep = checksum is None  # False: drop what this request wrote (checksum failed or unchecked)

    def open(self) -> None:
        self.fd = self.store.open_data(self.upload)

    def write(self, data: bytes, at: int) -> None:
        """Write one block at ``at``, then start its writeback (``sync_file_range``) so the
        ``fdatasync`` that acknowledges it has little left to wait for."""
        start = at
        view = memoryview(data)
        while view:
            done = os.pwrite(self.fd, view, at)
            at += done
            view = view[done:]
        if self.hasher is not None:
            self.hasher.update(data)
        _start_writeback(self.fd, start, len(data))

    def checkpoint(self, upto: int | None = None) -> None:
        """fdatasync, then record the offset: the record never claims more than is on disk."""
        os.fdatasync(self.fd)
        self.store.record_offset(self.upload, self.pos if upto is None else upto)

    async def stream(self, receive: Receive, slot: _Slot, limit: int | None) -> str:
        """Receive, write and checkpoint as a pipeline: one block is written and one checkpoint
        synced in worker threads while the next block arrives, so a sync never stalls the client."""
        loop = asyncio.get_running_loop()
        pending: list[bytes] = []
        size = 0
        queued = written = self.pos  # end of the blocks handed to a thread / known to be written
        writing: asyncio.Future[None] | None = None
        syncing: asyncio.Future[None] | None = None
        last = loop.time()
        more = True
        outcome = "done"
        try:
            while more:
                try:
                    async with asyncio.timeout(self.options.idle_timeout) as waiting:
                        slot.waiting = waiting
                        if slot.ended:
                            waiting.reschedule(loop.time())
                        message = await receive()
                except TimeoutError:
                    outcome = "ended" if slot.ended else "timeout"
                    break
                finally:
                    slot.waiting = None
                if message["type"] == "http.disconnect":
                    outcome = "disconnect"
                    break
                body: bytes = message.get("body", b"")
                more = bool(message.get("more_body", False))
                if limit is not None and queued + size + len(body) > limit:
                    outcome, self.keep = "too-long", False  # none of a body that overruns the length
                    break
                if body:
                    pending.append(body)
                    size += len(body)
                if size < WRITE_BLOCK and more:
                    continue
                if writing is not None:
                    await writing
                    written = queued
                data = b"".join(pending)  # measured: cheaper than pwritev of many small buffers
                pending, size = [], 0
                writing = loop.run_in_executor(self.pool, self.write, data, queued)
                queued += len(data)
                now = loop.time()
                due = written - self.upload.offset >= self.options.checkpoint_bytes
                idle = syncing is None or syncing.done()
                if (
                    self.checksum is None
                    and more
                    and idle
                    and (due or now - last >= self.options.checkpoint_seconds)
                ):
                    if syncing is not None:
                        await syncing  # done: surfaces its error, if any
                    syncing = loop.run_in_executor(self.pool, self.checkpoint, written)
                    last = now
        finally:
            confirmed = written  # a failed write must never be claimed by the final checkpoint
            try:
                if writing is not None:
                    await writing
                    confirmed = queued
                if syncing is not None:
                    await syncing
            finally:
                self.pos = confirmed
        if pending and self.keep:
            await loop.run_in_executor(self.pool, self.write, b"".join(pending), self.pos)
            self.pos += size
        if self.hasher is not None and self.checksum is not None:
            # a checked body is kept whole or not at all: never a prefix nobody verified
            self.keep = outcome == "done" and self.hasher.digest() == self.checksum.digest
            if outcome == "done" and not self.keep:
                return "bad-checksum"
        return outcome

    def close(self) -> None:
        """Make what arrived durable and record it, or (``keep`` False) drop all of it: an
        offset checkpointed inside this request (nobody was told it) is taken back first,
        then the data cut, so the record never claims bytes the file no longer has."""
        if self.fd < 0:
            return
        try:
            if self.keep and self.pos != self.upload.offset:
                self.checkpoint()
            elif not self.keep:
                if self.upload.offset != self.start:
                    self.store.record_offset(self.upload, self.start)
                os.ftruncate(self.fd, self.start)
        finally:
            os.close(self.fd)
            self.fd = -1


def _writeback_call() -> Callable[[int, int, int], None] | None:
    """``sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)``: start writing a block to the
    disk now, without waiting, so the ``fdatasync`` that acknowledges it has little left to do."""
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int

    def start(fd: int, offset: int, length: int) -> None:
        call(fd, offset, length, 2)  # SYNC_FILE_RANGE_WRITE; a failure here is seen by fdatasync

    return start


_writeback = _writeback_call()


def _start_writeback(fd: int, offset: int, length: int) -> None:
    if _writeback is not None:
        _writeback(fd, offset, length)


def _without_body(send: Send) -> Send:
    """A HEAD response carries the headers of the body it would have, not the body."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return wrapped


def _content_length(request: _Request) -> int | None:
    value = request.header("content-length")
    if value is None:
        return None if "transfer-encoding" in request.headers else 0
    try:
        return int(value)
    except ValueError:
        raise Reject(400, "Content-Length is not a number") from None


def _file_digest(path: str, algorithm: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def _decoded(metadata: dict[str, str | None]) -> dict[str, str | None]:
    return {
        k: None if v is None else base64.b64decode(v).decode("utf-8", "replace") for k, v in metadata.items()
    }


async def _respond(send: Send, status: int, headers: list[tuple[str, str]], body: bytes = b"") -> None:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    if status not in (204, 304) and not (100 <= status < 200):
        raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body if status != 204 else b""})


def create_app(directory: str | os.PathLike[str], **options: Any) -> UploadServer:
    """The upload server for ``directory`` as an ASGI app; ``options`` are ``ServerOptions`` fields."""
    return UploadServer(os.fspath(directory), ServerOptions(**options))

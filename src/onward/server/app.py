"""The upload server as a plain ASGI application: routing, body streaming, one writer per upload.

Every rule of the two protocols (which status, which headers, which offsets and lengths
are consistent) is a pure function in ``onward.server.protocol``; this module parses the
ASGI scope into its ``Request``, asks, and carries out what it is told with the store
(``onward.server.storage``). A raw ASGI callable rather than a Starlette app: the job is
streaming one request body into the store with bounded memory and deciding exactly when
to sync, over one path pattern (docs/SERVER.md says what was measured).

Blocking store work (writes, syncs, promotion) runs in the server's own bounded pool of
I/O threads, and completion hooks in a second, smaller pool with a timeout, so a slow
hook never holds a thread that moves upload bytes. Every request to an upload takes
that upload's lock; a new request ends the one holding it (what the IETF draft
recommends: the client only sends a new one when it believes the old one failed), and
gets 423 Locked if the old one does not let go within ``lock_wait`` seconds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import errno
import functools
import hmac
import inspect
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import NoSpaceError, OnwardError
from . import answers, protocol
from .body import BodyWriter, Slot, peek_body
from .guard import INFORMATIONAL
from .headers import Reject
from .hooks import finish_hook
from .model import Action, Answer, Append, BodyEnd, Creation, Headers, Request, Rules
from .options import AuthRequest, ServerOptions
from .storage import Upload, UploadStore
from .store import Store

__all__ = ["UploadServer", "create_app"]

log = logging.getLogger("onward.server")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
T = TypeVar("T")


@dataclass
class _Call:
    """One HTTP request to the app: what the rules see, and what only the app needs."""

    request: Request
    cors: Headers
    root: str  # where the app is mounted
    client: tuple[str, int] | None
    interim: Callable[[int, list[tuple[str, str]]], bool] | None  # sends a 1xx, when the server can


class UploadServer:
    """An ASGI application serving tus 1.0.0 and draft-ietf-httpbis-resumable-upload uploads
    into ``store`` (a directory, or any ``UploadStore``). Mount it under any path;
    ``base_path`` is where uploads live below it."""

    def __init__(self, store: str | UploadStore, options: ServerOptions | None = None) -> None:
        self.options = options or ServerOptions()
        base = "/" + self.options.base_path.strip("/")
        self.base = base.rstrip("/") + "/"
        self.rules = Rules(self.base, self.options.max_size, self.options.expire_after)
        self.store: UploadStore = Store(store) if isinstance(store, str) else store
        self._slots: dict[str, Slot] = {}
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
        call = self._parse(scope)
        if scope["method"] == "HEAD":
            send = _without_body(send)
        ietf = call is not None and call.request.ietf is not None
        try:
            self._start()
            if call is None:
                raise Reject(404, "no such resource")
            answer = await self._dispatch(call, receive)
        except Reject as rejected:
            answer = answers.refusal(rejected, ietf, self.rules)
        except (OnwardError, OSError) as exc:  # the store failed us: say so, keep serving
            answer = answers.refusal(_failure(exc), ietf, self.rules)
        await _respond(send, answer, call.cors if call else ())

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

    # --- request parsing, auth, routing -----------------------------------------------------

    def _parse(self, scope: MutableMapping[str, Any]) -> _Call | None:
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", []):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        path: str = scope.get("path", "/")
        root: str = scope.get("root_path", "")
        if root and path.startswith(root + "/"):
            path = path[len(root) :]
        if path == self.base.rstrip("/") or path == self.base:
            target = ""
        elif path.startswith(self.base):
            target = path[len(self.base) :]
        else:
            return None
        request = Request.of(scope["method"], target, headers)
        cors = answers.cors_headers(headers.get("origin"), self.options.cors_origins)
        interim = (scope.get("extensions") or {}).get(INFORMATIONAL)
        return _Call(request, cors, root, scope.get("client"), interim)

    async def _authorised(self, call: _Call) -> bool:
        request, token = call.request, self.options.token
        if token is not None:
            sent = request.header("authorization") or ""
            scheme, _, credentials = sent.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                credentials.strip().encode(), token.encode()
            ):
                return False
        if self.options.auth is not None:
            asked = AuthRequest(request.method, self.base + request.target, request.headers, call.client)
            verdict = self.options.auth(asked)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            return bool(verdict)
        return True

    async def _dispatch(self, call: _Call, receive: Receive) -> Answer:
        request = call.request
        answer = protocol.gate(request, self.rules, bool(call.cors))
        if answer is not None:
            return answer
        if not await self._authorised(call):
            raise Reject(401, "missing or wrong credentials")
        action = protocol.route(request)
        if action is Action.CREATE_TUS:
            return await self._create_tus(call, receive)
        if action is Action.CREATE_IETF:
            return await self._create_ietf(call, receive)
        async with self._hold(request.target) as slot:
            upload = await self._get(request.target)
            if action is Action.HEAD:
                return protocol.state(request, upload, self.rules, self.options.clock())
            if action is Action.DELETE:
                await self._io(lambda: self.store.remove(upload, keep_finished=True))
                self._uploads.pop(upload.id, None)
                return protocol.deleted(request)
            return await self._patch(request, receive, slot, upload)

    # --- uploads: lookup and the one-writer rule -------------------------------------------

    async def _get(self, upload_id: str) -> Upload:
        """The upload (loaded once, then kept); call it holding the upload's lock."""
        upload = self._uploads.get(upload_id)
        if upload is None:
            upload = await self._io(functools.partial(self.store.load, upload_id))
            if upload is not None:
                self._uploads[upload_id] = upload
        return protocol.live(upload, self.options.clock())

    @contextlib.asynccontextmanager
    async def _hold(self, upload_id: str) -> AsyncIterator[Slot]:
        """The upload's lock; a request still holding it is told to end first. Only an upload
        that exists gets a slot, and only while requests use it: unknown ids cost no memory."""
        if upload_id not in self._uploads and not await self._io(
            functools.partial(self.store.exists, upload_id)
        ):
            raise Reject(404, "no such upload")
        slot = self._slots.get(upload_id)
        if slot is None:
            slot = self._slots[upload_id] = Slot()
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

    # --- creation --------------------------------------------------------------------------

    async def _new_upload(self, plan: Creation) -> Upload:
        now = self.options.clock()
        upload = Upload(self.store.new_id(), plan.length, plan.metadata, now, now + self.options.expire_after)
        upload.concat, upload.parts = plan.concat, list(plan.parts)
        upload.content_type, upload.repr_digest = plan.content_type, plan.repr_digest
        await self._io(lambda: self.store.create(upload))
        self._uploads[upload.id] = upload
        return upload

    def _location(self, call: _Call, upload_id: str) -> str:
        return call.root + self.base + upload_id

    async def _create_tus(self, call: _Call, receive: Receive) -> Answer:
        plan = protocol.tus_creation(call.request, self.rules)
        if plan.concat == "final":
            return await self._create_final(call, plan)
        has_data = False
        if plan.body is None:  # chunked: whether data comes is known only from the stream
            has_data, receive = await peek_body(receive, self.options.idle_timeout)
        plan = protocol.tus_creation_data(call.request, plan, has_data)
        return await self._create(call, receive, plan)

    async def _create_ietf(self, call: _Call, receive: Receive) -> Answer:
        return await self._create(call, receive, protocol.ietf_creation(call.request, self.rules))

    async def _create(self, call: _Call, receive: Receive, plan: Creation) -> Answer:
        request = call.request
        upload = await self._new_upload(plan)
        location = self._location(call, upload.id)
        if request.ietf is not None and plan.body != 0 and call.interim is not None:
            # 104: the client knows where to resume before it sends the data (the draft's SHOULD)
            call.interim(
                104,
                list(protocol.interim_headers(request, location, upload, self.rules, self.options.clock())),
            )
        async with self._hold(upload.id) as slot, self._discard_if_refused(upload):
            if plan.body != 0:
                data = Append(
                    protocol.data_limit(upload, None, self.rules), plan.checksum, None, plan.complete
                )
                stop = await self._append(request, receive, slot, upload, data)
                if stop is not None:
                    return stop
            elif plan.complete:
                await self._complete_ietf(upload)
            if request.ietf is None and upload.length == upload.offset and not upload.complete:
                await self._finish(upload)
            return protocol.created(request, upload, location, self.rules, self.options.clock())

    async def _create_final(self, call: _Call, plan: Creation) -> Answer:
        parts = [await self._get(p) for p in plan.parts]
        upload = await self._new_upload(
            dataclasses.replace(plan, length=protocol.final_length(parts, self.rules))
        )
        async with self._hold(upload.id):
            await self._io(lambda: self.store.concatenate(upload, parts))
            await self._finish(upload)
            return protocol.created(
                call.request, upload, self._location(call, upload.id), self.rules, self.options.clock()
            )

    @contextlib.asynccontextmanager
    async def _discard_if_refused(self, upload: Upload) -> AsyncIterator[None]:
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

    # --- append and completion ---------------------------------------------------------------

    async def _patch(self, request: Request, receive: Receive, slot: Slot, upload: Upload) -> Answer:
        if request.ietf is None:
            plan = protocol.tus_patch(request, upload, self.rules)
        else:
            plan = protocol.ietf_patch(request, upload, self.rules, self.options.clock())
        if isinstance(plan, Answer):
            return plan
        stop = await self._append(request, receive, slot, upload, plan)
        return stop or protocol.appended(request, upload, self.rules, self.options.clock())

    async def _append(
        self, request: Request, receive: Receive, slot: Slot, upload: Upload, plan: Append
    ) -> Answer | None:
        """Stream the request body onto the upload; what arrived is durable when this returns
        (or raises), except the body of a refused request (a failed checksum, data past the
        length), which is dropped whole, with the deferred length it sets. None: go on."""
        writer = BodyWriter(self.store, upload, plan.checksum, self.options, self._pool())
        await self._io(writer.open)
        end = BodyEnd.DONE
        try:
            end = await writer.stream(receive, slot, plan.limit)
        finally:
            try:
                await self._io(writer.close)
            except asyncio.CancelledError:  # shutting down: make what arrived durable anyway
                writer.close()
                raise
        new_length = plan.new_length
        if new_length is not None and writer.keep:
            await self._io(lambda: self.store.record_length(upload, new_length))
        stop = protocol.after_body(end, request, plan.checksum, self.options.idle_timeout)
        if stop is not None:
            return stop
        if plan.complete:
            await self._complete_ietf(upload)
        elif upload.length == upload.offset and not upload.complete:
            # Reaching a declared length completes the upload in both protocols: tus-js-client's
            # ietf-draft-05 mode may send the last bytes with Upload-Complete: ?0 (docs/SERVER.md).
            await self._finish(upload)
        return None

    async def _complete_ietf(self, upload: Upload) -> None:
        if protocol.ietf_completion(upload):
            await self._io(lambda: self.store.record_length(upload, upload.offset))
        await self._finish(upload)

    async def _finish(self, upload: Upload) -> None:
        """Complete: check Repr-Digest, promote (not a partial of a concatenation), run the hook."""
        if upload.repr_digest is not None:
            algorithm, want = upload.repr_digest
            if await self._io(lambda: self.store.digest(upload, algorithm)) != want:
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
        hook = functools.partial(finish_hook, self.store, self.options.on_complete, upload)
        running = asyncio.get_running_loop().run_in_executor(self._hook_pool, hook)
        try:
            async with asyncio.timeout(self.options.hook_timeout):
                await asyncio.shield(running)
        except TimeoutError:
            log.error(
                "completion hook for upload %s still running after %g s; answering without it",
                upload.id,
                self.options.hook_timeout,
            )

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        assert self._io_pool is not None, "the app is started by its first request"
        return self._io_pool

    async def _io(self, fn: Callable[[], T]) -> T:
        """Blocking store work in the I/O pool (never the hooks', never the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool(), fn)

    # --- expiry and recovery ---------------------------------------------------------------

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
            if upload is None or not protocol.needs_recovery(upload):
                continue
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


def _failure(exc: OnwardError | OSError) -> Reject:
    """The refusal for a store that failed: 507 when it is full (retrying later may work)."""
    log.error("%s", exc.message if isinstance(exc, OnwardError) else exc)
    full = isinstance(exc, NoSpaceError) or getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
    return Reject(507 if full else 500, "the server could not store the data")


def _without_body(send: Send) -> Send:
    """A HEAD response carries the headers of the body it would have, not the body."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return wrapped


async def _respond(send: Send, answer: Answer, cors: Headers) -> None:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (*cors, *answer.headers)]
    status = answer.status
    if status not in (204, 304) and not (100 <= status < 200):
        raw.append((b"content-length", str(len(answer.body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": answer.body if status != 204 else b""})


def create_app(
    directory: str | os.PathLike[str] | None = None, *, store: UploadStore | None = None, **options: Any
) -> UploadServer:
    """The upload server for ``directory`` (or any ``store``) as an ASGI app; ``options`` are
    ``ServerOptions`` fields."""
    if (directory is None) == (store is None):
        raise TypeError("create_app takes a directory or a store=, one of them")
    return UploadServer(store or Store(os.fspath(directory or "")), ServerOptions(**options))

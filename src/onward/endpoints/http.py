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

Requests go where ``httproute.Route`` sends them (the last final URL that fit, else
the user's URL); what an answer says is read by ``httpanswers``. Each engine worker
thread (one per connection) reads its own contiguous run of chunks (``Readahead``
hands them out that way) through a single request for the rest of the file
(``bytes=OFFSET-LAST``), chunk after chunk, so no round trip is spent between chunks,
read by ``httpbody.Cursor`` (straight from the socket where it can); a worker that
reaches the end of its run closes its connection, as aria2 does with a segment.
httpx errors become ``onward.errors`` types (``transport.transport_error``):
connection errors, timeouts, 408, 429 and 5xx are ``TransientError`` (with the
server's ``Retry-After``), 4xx, TLS and name resolution failures ``SourceError``.
No message, name or record made here contains the URL's credentials.
"""

from __future__ import annotations

# First: importing transport keeps httpx from loading its command-line client (see there).
from .transport import MAX_REDIRECTS, OnRetry, make_client, retrying, scrub, shown_url

# isort: split
import contextlib
import email.utils
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import httpx

from ..core.http import Expected, parse_content_range
from ..core.identity import Identity
from ..errors import OnwardError, SourceError, TransientError, UsageError
from . import Attributes
from .httpanswers import UNKNOWN, Probe, found, other_version, raise_for_status
from .httpbody import ENDLESS, Cursor
from .httproute import Route

__all__ = ["MAX_REDIRECTS", "HttpSource", "check_url"]

SCHEMES = ("http", "https")
BROKEN_STREAM = "the connection broke, and without byte ranges and a validator a download cannot go on"


def check_url(url: str) -> httpx.URL:
    """``url`` parsed, or ``UsageError`` for an unknown scheme or a malformed URL."""
    name = shown_url(url)
    scheme = url.partition("://")[0].lower()
    if scheme not in SCHEMES:
        raise UsageError(
            f"{name}: unknown URL scheme {scheme!r}; onward copies local files and http:// or https:// URLs"
        )
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, ValueError) as exc:
        raise UsageError(f"{name}: not a valid URL ({scrub(str(exc), url)})") from None
    if not parsed.host:
        raise UsageError(f"{name}: not a valid URL (no host name)")
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"{name}: not a valid URL (port {port} is out of range)")
    return parsed


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
        self.name = shown_url(url)
        self.on_retry = on_retry
        self._route = Route(url, client, headers=headers, timeout=timeout)
        self._connections = connections
        self._retries = retries
        self._timeout = timeout
        self._sleep = sleep
        self._lock = threading.RLock()
        self._cursors: dict[int, Cursor] = {}
        self._probe: Probe | None = None
        self._fresh = False  # identity() may answer from the probe open() just made
        # Why a data request got an answer that does not fit the recorded file (None: none did).
        self._suspect: str | None = None
        self.why_changed: str | None = None  # what made identity() change without a new version
        self._seen: set[tuple[int, str, str]] = set()  # versions adopted in this run
        # Streaming (no ranges, or no validator): one response at a time, from byte 0.
        self.streaming: str | None = None  # why, when streaming: no-ranges, no-validator, broken-ranges
        self._nonce = secrets.token_hex(4)
        self._generation = 0
        self._generation_used = False
        self._stream: Cursor | None = None

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
        client = make_client(
            parsed,
            name=shown_url(url),
            timeout=timeout,
            connections=connections + 2,
            verify=verify,
            redirects=True,
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
            if self._suspect and probe.ranges and probe.version in self._seen:
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
        self._seen.add(probe.version)
        self._route.follow(probe.url)
        if not self.streaming:
            if probe.size == UNKNOWN:
                self._start_streaming("no-length")
            elif not probe.ranges:
                self._start_streaming("no-ranges")
            elif not probe.validator:
                self._start_streaming("no-validator")

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
        return retrying(self._route.probe, retries=self._retries, on_retry=self.on_retry, sleep=self._sleep)

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

    def _open_range(self, offset: int, me: threading.Thread) -> Cursor:
        """A response holding bytes ``offset``.. of the recorded version, or ``TransientError``
        (nothing of that answer is written): the engine then asks ``identity()`` whether the
        file changed (start over) or the server cannot be trusted with ranges (one piece)."""
        probe = self._probe
        assert probe is not None
        # Open-ended: this thread's next reads follow on (a run of chunks each, see the docstring).
        last = probe.size - 1
        response = self._route.send_data({"Range": f"bytes={offset}-{last}", "If-Range": probe.validator})
        status = response.status_code
        problem: str | None
        if status == 206:
            got = parse_content_range(response.headers.get("Content-Range"))
            if got is None or (got.start, got.end, got.total) != (offset, last, probe.size):
                problem = "the server answered a range request with other bytes than asked for"
            else:  # RFC 9110 §15.3.7.3: parts combine only under the same strong validator
                problem = other_version(probe, response.headers)
            if problem is None:
                return self._register(self._cursor(response, offset, last + 1, me))
        elif status == 200 and offset == 0:
            # Asked for the whole file, some servers send a plain 200: fine if it is the same file.
            declared = response.headers.get("Content-Length", "")
            problem = other_version(probe, response.headers)
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
                raise_for_status(response, self.name)
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

    def _open_whole(self) -> Cursor | None:
        probe = self._probe
        assert probe is not None
        response = self._route.send_data({})
        try:
            raise_for_status(response, self.name)
        except OnwardError:
            response.close()
            raise
        length = response.headers.get("Content-Length", "")
        now = found(response, int(length) if length.isdigit() else UNKNOWN, ranges=probe.ranges)
        if not self.sized:
            return self._open_unsized(response, now)
        if response.status_code == 200 and now.size >= 0:
            self._probe = now  # its validators and digests describe the bytes that follow
        if response.status_code != 200 or now.size != probe.size:
            response.close()  # not the planned size: the next identity() says what it is now
            return None
        return self._cursor(response, 0, probe.size, threading.current_thread())

    def _open_unsized(self, response: httpx.Response, now: Probe) -> Cursor:
        """A body read until it ends, if it is the version the identity names (else, with the
        new version adopted, ``TransientError``: the engine starts over with it)."""
        status = response.status_code
        probe = self._probe
        assert probe is not None
        problem = other_version(probe, response.headers) if status == 200 else f"the server answered {status}"
        self._probe = replace(now, size=UNKNOWN)  # its digests (and validators) are this body's
        if problem is not None:
            response.close()
            self._restart(None)
            raise self._refused(problem)
        return self._cursor(response, 0, ENDLESS, threading.current_thread())

    def _cursor(self, response: httpx.Response, start: int, end: int, me: threading.Thread) -> Cursor:
        try:
            return Cursor.over(response, start, end, me, self._timeout)
        except httpx.HTTPError as exc:
            raise self._route.error(exc) from None

    def _register(self, cursor: Cursor) -> Cursor:
        with self._lock:
            for key, old in list(self._cursors.items()):
                if not old.thread.is_alive():  # left by a finished round of worker threads
                    del self._cursors[key]
                    old.response.close()
            self._cursors[cursor.thread.ident or 0] = cursor
        return cursor

    def _drop(self, cursor: Cursor) -> None:
        with contextlib.suppress(Exception):
            cursor.response.close()
        if self._stream is cursor:
            self._stream = None
        key = cursor.thread.ident or 0
        if self._cursors.get(key) is cursor:
            with self._lock:
                self._cursors.pop(key, None)

    def _broke(self, cursor: Cursor) -> None:
        """A response that broke: the retry asks from the user's URL again; a streamed one is
        over (nothing proves that a second response holds the same file)."""
        self._drop(cursor)
        self._route.forget()
        if self.streaming:
            self._restart(BROKEN_STREAM)

    def _take(self, cursor: Cursor, buf: memoryview) -> int:
        """Copy the next ``len(buf)`` bytes of ``cursor`` into ``buf``."""
        want = len(buf)
        try:
            got = cursor.fill(buf)
        except httpx.HTTPError as exc:
            self._broke(cursor)
            raise self._route.error(exc) from None
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
            cursor.finish()
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
        self._route.client.close()

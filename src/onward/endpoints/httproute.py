"""Where a download's requests go: the user's URL, or the final URL of the last answer that fit.

Data requests and the end-of-run check go to the final URL of the last answer that fit
(no second walk down a redirect chain); the user's URL credentials go with them only
when it is the user's origin (scheme, host, port). After any failure, and when the
final URL answers 401, 403, 404 or 410 (a signed URL that expired), the next request
starts again from the URL the user gave.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import httpx

from ..errors import OnwardError, SourceError
from .httpanswers import Probe, describe
from .transport import ORIGIN_ONLY, same_origin, scrub, shown_url, transport_error

__all__ = ["Route"]

# Answers of a redirect target that may have expired (a signed URL): ask the user's URL again.
EXPIRED = (401, 403, 404, 410)


def _same_url(a: httpx.URL, b: httpx.URL) -> bool:
    return a.copy_with(userinfo=b"") == b.copy_with(userinfo=b"")


class Route:
    """The requests of one download: GETs through ``client``, from the user's ``url`` (which may
    hold credentials: never shown, never recorded) or from where its last good answer came."""

    def __init__(
        self, url: str, client: httpx.Client, *, headers: Sequence[tuple[str, str]], timeout: float
    ) -> None:
        self._url = url
        self.name = shown_url(url)
        self.client = client
        self._headers = list(headers)
        self._timeout = timeout
        # The final URL of the last answer that fit (with the user's credentials when it is their
        # origin), and the headers that go there; None: the user's URL again.
        self._data_url: httpx.URL | None = None
        self._data_headers: dict[str, str] = {}

    def follow(self, final: httpx.URL) -> None:
        """Send the next data requests to ``final``, where the user's URL led: with the user's
        credentials and origin-only headers only when it is the user's origin (RFC 6454)."""
        user = httpx.URL(self._url)
        headers = dict(self._headers)
        if same_origin(user, final):
            if user.userinfo and not final.userinfo:
                final = final.copy_with(userinfo=user.userinfo)
        else:
            headers = {k: v for k, v in headers.items() if k.lower() not in ORIGIN_ONLY}
        self._data_url, self._data_headers = final, headers

    def forget(self) -> None:
        """Start the next request from the user's URL (after a failure)."""
        self._data_url = None

    def probe(self) -> Probe:
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
            with self.client.stream("GET", url, headers=headers) as response:
                return describe(response, ranged, self.name)
        except httpx.HTTPError as exc:
            raise self.error(exc) from None
        except httpx.InvalidURL as exc:  # e.g. a redirect to a malformed Location
            raise SourceError(f"{self.name}: {scrub(str(exc), self._url)}", self.name) from None

    def send_data(self, extra: dict[str, str]) -> httpx.Response:
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
                return self.send_data(extra)
        elif status < 300:
            self.follow(response.url)
        return response

    def _send(self, url: httpx.URL, headers: dict[str, str]) -> httpx.Response:
        """One GET, redirects followed, its body left to be read."""
        try:
            return self.client.send(self.client.build_request("GET", url, headers=headers), stream=True)
        except httpx.HTTPError as exc:
            raise self.error(exc) from None

    def error(self, exc: httpx.HTTPError) -> OnwardError:
        """An httpx error as one line of the onward tree, without credentials."""
        return transport_error(exc, shown=self.name, name=self.name, url=self._url, timeout=self._timeout)

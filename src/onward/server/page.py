"""The browser upload page of ``onward serve``: ``GET /`` and its static files.

``with_page(app, ...)`` wraps the upload app: it answers GET and HEAD of ``/`` and of
``ASSETS/*`` and passes every other request to the app unchanged. The page's script is
tus-js-client plus a small page of ours, built by ``scripts/build-page`` from ``page/`` (pinned
by its package-lock.json) into ``static/``, so serving it needs no Node. Everything is same-origin
and the Content-Security-Policy allows nothing else: no CDN, no inline script or style.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any

from .app import Receive, Send

__all__ = ["ASSETS", "CONTENT_SECURITY_POLICY", "UploadPage", "with_page"]

ASSETS = "/_page"  # where the script, style sheet and licences are served
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_TYPES = {
    "upload.js": "text/javascript; charset=utf-8",
    "upload.css": "text/css; charset=utf-8",
    "licenses.txt": "text/plain; charset=utf-8",
    "icon.svg": "image/svg+xml",
}


@dataclass(frozen=True)
class _Asset:
    body: bytes
    content_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, content_type: str) -> _Asset:
        return cls(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def _static(name: str) -> bytes:
    return (resources.files(__package__) / "static" / name).read_bytes()


class UploadPage:
    """ASGI middleware: the upload page in front of ``app`` (the upload server)."""

    def __init__(self, app: Any, *, title: str, base_path: str, token_required: bool) -> None:
        self.app = app
        endpoint = "/" + base_path.strip("/") + "/" if base_path.strip("/") else "/"
        page = Template(_static("index.html").decode()).substitute(
            title=html.escape(title),
            endpoint=html.escape(endpoint),
            token="required" if token_required else "none",
            assets=ASSETS,
        )
        self.assets: Mapping[str, _Asset] = {
            "/": _Asset.of(page.encode(), "text/html; charset=utf-8"),
            **{f"{ASSETS}/{name}": _Asset.of(_static(name), kind) for name, kind in _TYPES.items()},
        }

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            path = scope.get("path", "/")
            root = scope.get("root_path", "")
            if root and path.startswith(root + "/"):
                path = path[len(root) :]
            asset = self.assets.get(path)
            if asset is not None:
                await self._serve(scope, send, asset)
                return
        await self.app(scope, receive, send)

    async def _serve(self, scope: MutableMapping[str, Any], send: Send, asset: _Asset) -> None:
        sent = dict(scope.get("headers", [])).get(b"if-none-match", b"").decode("latin-1")
        fresh = asset.etag in (tag.strip() for tag in sent.split(","))
        headers = [
            (b"content-type", asset.content_type.encode()),
            (b"etag", asset.etag.encode()),
            (b"cache-control", b"no-cache"),  # revalidate: a new onward version brings a new script
            (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]
        if not fresh:
            headers.append((b"content-length", str(len(asset.body)).encode()))
        await send({"type": "http.response.start", "status": 304 if fresh else 200, "headers": headers})
        body = b"" if fresh or scope["method"] == "HEAD" else asset.body
        await send({"type": "http.response.body", "body": body})


def with_page(
    app: Any, *, title: str = "Upload files", base_path: str = "/files/", token: bool = False
) -> Any:
    """``app`` with the upload page at ``/`` (``token``: the page asks for the server's token)."""
    return UploadPage(app, title=title, base_path=base_path, token_required=token)

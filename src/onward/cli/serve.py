"""``onward serve DIR``: the resumable-upload server (tus 1.0.0 and the IETF draft) under uvicorn."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..errors import UsageError
from ..units import parse_size

DEFAULT_PORT = 1080  # tusd's default, so tus clients' examples work unchanged


def add_parser(verbs: Any) -> None:
    sv = verbs.add_parser(
        "serve",
        help="receive resumable uploads (tus 1.0.0, IETF resumable uploads) into a directory",
        description="Serve DIR as a resumable-upload endpoint: tus 1.0.0 and "
        "draft-ietf-httpbis-resumable-upload (interop versions 6 and 8) at BASE_PATH. Finished uploads "
        "appear as DIR/ID with DIR/ID.json beside them.",
    )
    sv.add_argument("directory", metavar="DIR", help="where uploads are stored (must exist)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    sv.add_argument("--base-path", default="/files/", help="URL path of the upload collection (/files/)")
    sv.add_argument("--certfile", metavar="PEM", help="TLS certificate chain (with --keyfile: HTTPS)")
    sv.add_argument("--keyfile", metavar="PEM", help="TLS private key")
    sv.add_argument("--max-size", metavar="SIZE", help="refuse uploads larger than SIZE (e.g. 10G)")
    sv.add_argument(
        "--expire-after",
        metavar="S",
        type=float,
        default=86400.0,
        help="remove unfinished uploads this many seconds after creation (default 86400)",
    )
    sv.add_argument(
        "--timeout",
        metavar="S",
        type=float,
        default=60.0,
        help="end a request that sends no data for S seconds; what arrived is kept (default 60)",
    )
    sv.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (or set ONWARD_SERVE_TOKEN)")
    sv.add_argument(
        "--cors-origin",
        metavar="ORIGIN",
        action="append",
        default=[],
        help="allow browser uploads from ORIGIN (repeatable; '*' for any)",
    )
    sv.add_argument(
        "--on-complete",
        metavar="CMD",
        help="run CMD with the finished file's path appended (and ONWARD_UPLOAD_* in the environment)",
    )
    sv.add_argument(
        "--http",
        choices=("auto", "h11", "httptools"),
        default="auto",
        help="uvicorn's HTTP/1.1 implementation (auto: httptools when installed, else h11)",
    )
    sv.add_argument("--no-page", action="store_true", help="do not serve the browser upload page at /")
    sv.add_argument("--page-title", default="Upload files", metavar="TEXT", help="the upload page's title")
    sv.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))


def main(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise UsageError("onward serve needs uvicorn: pip install 'onward[server]'") from None
    from ..server import create_app
    from ..server.hooks import command_hook
    from ..server.store import Store

    if not os.path.isdir(args.directory):
        raise UsageError(f"{args.directory}: not a directory; create it first", args.directory)
    if bool(args.certfile) != bool(args.keyfile):
        raise UsageError("--certfile and --keyfile go together")
    for path in filter(None, (args.certfile, args.keyfile)):
        if not os.access(path, os.R_OK):
            raise UsageError(f"{path}: cannot read the TLS file", path)
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: not a port number")
    for name in ("expire_after", "timeout"):
        if not getattr(args, name) > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive number of seconds")
    try:
        max_size = parse_size(args.max_size) if args.max_size else None
        hook = command_hook(args.on_complete) if args.on_complete is not None else None
    except ValueError as exc:
        raise UsageError(f"onward serve: {exc}") from None
    token = args.token or os.environ.get("ONWARD_SERVE_TOKEN") or None
    store = Store(args.directory)
    store.open()  # a busy or unwritable directory is one clear line here, not a startup traceback
    store.close()
    app = create_app(
        args.directory,
        base_path=args.base_path,
        max_size=max_size,
        expire_after=args.expire_after,
        idle_timeout=args.timeout,
        token=token,
        cors_origins=tuple(args.cors_origin),
        on_complete=hook,
    )
    if not args.no_page:
        from ..server.page import with_page

        app = with_page(app, title=args.page_title, base_path=args.base_path, token=token is not None)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        ssl_certfile=args.certfile,
        ssl_keyfile=args.keyfile,
        log_level=args.log_level,
        http=args.http,
        lifespan="on",
        timeout_graceful_shutdown=5,
        server_header=False,
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1

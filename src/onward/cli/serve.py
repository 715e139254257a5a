"""``onward serve DIR``: the resumable-upload server (tus 1.0.0 and the IETF draft) under uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import resource
import socket
import sys
from typing import Any

from ..errors import OnwardError, UsageError
from ..units import parse_size

DEFAULT_PORT = 1080  # tusd's default, so tus clients' examples work unchanged
DEFAULT_MAX_SIZE = "100G"  # a safe bound on one upload (and a concatenation's result); "none" lifts it


def add_parser(verbs: Any) -> None:
    sv = verbs.add_parser(
        "serve",
        help="receive resumable uploads (tus 1.0.0, IETF resumable uploads) into a directory",
        description="Serve DIR as a resumable-upload endpoint: tus 1.0.0 and "
        "draft-ietf-httpbis-resumable-upload (interop versions 6 and 8) at BASE_PATH. Finished uploads "
        "appear as DIR/ID with DIR/ID.json beside them.",
    )
    sv.add_argument("directory", metavar="DIR", help="where uploads are stored (must exist)")
    _add_listening(sv)
    _add_limits(sv)
    _add_access(sv)
    _add_completion(sv)
    sv.add_argument(
        "--http",
        choices=("auto", "h11", "httptools"),
        default="auto",
        help="uvicorn's HTTP/1.1 implementation (auto: httptools when installed, else h11)",
    )
    sv.add_argument("--no-page", action="store_true", help="do not serve the browser upload page at /")
    sv.add_argument("--page-title", default="Upload files", metavar="TEXT", help="the upload page's title")
    sv.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))


def _add_listening(sv: argparse.ArgumentParser) -> None:
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    sv.add_argument("--base-path", default="/files/", help="URL path of the upload collection (/files/)")
    sv.add_argument("--certfile", metavar="PEM", help="TLS certificate chain (with --keyfile: HTTPS)")
    sv.add_argument("--keyfile", metavar="PEM", help="TLS private key")


def _add_limits(sv: argparse.ArgumentParser) -> None:
    sv.add_argument(
        "--max-size",
        metavar="SIZE",
        default=DEFAULT_MAX_SIZE,
        help=f"refuse uploads larger than SIZE (default {DEFAULT_MAX_SIZE}; 'none' for no limit)",
    )
    _seconds(
        sv,
        "--expire-after",
        86400.0,
        "remove unfinished uploads this many seconds after creation (default 86400)",
    )
    _seconds(
        sv,
        "--timeout",
        60.0,
        "end a request that sends no data for S seconds; what arrived is kept (default 60)",
    )
    _seconds(
        sv,
        "--header-timeout",
        20.0,
        "close a connection whose request headers take longer than S seconds (default 20)",
    )
    _seconds(sv, "--keep-alive", 5.0, "close a connection idle between requests for S seconds (default 5)")
    sv.add_argument(
        "--max-connections",
        metavar="N",
        type=int,
        default=1000,
        help="answer 503 to connections beyond N open at once (default 1000)",
    )


def _add_access(sv: argparse.ArgumentParser) -> None:
    sv.add_argument(
        "--token-file",
        metavar="PATH",
        help="require 'Authorization: Bearer TOKEN', TOKEN being the first line of PATH",
    )
    sv.add_argument(
        "--token",
        help="the same, TOKEN given here (visible in ps: prefer --token-file or ONWARD_SERVE_TOKEN)",
    )
    sv.add_argument(
        "--cors-origin",
        metavar="ORIGIN",
        action="append",
        default=[],
        help="allow browser uploads from ORIGIN (repeatable; '*' for any)",
    )


def _add_completion(sv: argparse.ArgumentParser) -> None:
    sv.add_argument(
        "--on-complete",
        metavar="CMD",
        help="run CMD with the finished file's path appended (and ONWARD_UPLOAD_* in the environment); "
        "CMD is split into words as a shell would but runs without a shell: no pipes, redirections "
        "or variables (for those, name a script, or use sh -c '...')",
    )
    _seconds(
        sv, "--hook-timeout", 60.0, "kill an --on-complete command still running after S seconds (default 60)"
    )


def _seconds(sv: argparse.ArgumentParser, flag: str, default: float, help: str) -> None:
    sv.add_argument(flag, metavar="S", type=float, default=default, help=help)


def main(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise UsageError("onward serve needs uvicorn: pip install 'onward[server]'") from None
    from ..server.guard import guarded_protocol

    options = _checked(args)
    protocol = guarded_protocol(_protocol_class(args.http), args.header_timeout, args.max_connections)
    _raise_file_limit(args.max_connections)
    sock = _listen(args.host, args.port)  # before the store: a busy port leaves DIR as it was
    _try_store(args.directory, sock)
    config = uvicorn.Config(
        _app(args, options),
        host=args.host,
        port=args.port,
        ssl_certfile=args.certfile,
        ssl_keyfile=args.keyfile,
        log_level=args.log_level,
        http=protocol,
        timeout_keep_alive=args.keep_alive,
        lifespan="on",
        timeout_graceful_shutdown=5,
        server_header=False,
    )
    server = uvicorn.Server(config)
    # uvicorn names the address only for a socket it binds itself: say it as it would.
    scheme = "https" if args.certfile else "http"
    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on %s://%s (Press CTRL+C to quit)", scheme, _where(args.host, args.port)
    )
    server.run(sockets=[sock])
    return 0 if server.started else 1


def _checked(args: argparse.Namespace) -> dict[str, Any]:
    """The server's options from the command line, each bad one refused in one line."""
    from ..server.hooks import command_hook

    if not os.path.isdir(args.directory):
        raise UsageError(f"{args.directory}: not a directory; create it first", args.directory)
    if bool(args.certfile) != bool(args.keyfile):
        raise UsageError("--certfile and --keyfile go together")
    for path in filter(None, (args.certfile, args.keyfile)):
        if not os.access(path, os.R_OK):
            raise UsageError(f"{path}: cannot read the TLS file", path)
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: not a port number")
    for name in ("expire_after", "timeout", "header_timeout", "keep_alive", "hook_timeout"):
        if not getattr(args, name) > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive number of seconds")
    if args.max_connections < 1:
        raise UsageError(f"--max-connections {args.max_connections}: must be at least 1")
    try:
        max_size = None if args.max_size.lower() == "none" else parse_size(args.max_size)
        hook = command_hook(args.on_complete, args.hook_timeout) if args.on_complete is not None else None
    except ValueError as exc:
        raise UsageError(f"onward serve: {exc}") from None
    return {"max_size": max_size, "on_complete": hook, "token": _token(args)}


def _try_store(directory: str, sock: socket.socket) -> None:
    """Open and close the store once: a busy or unwritable directory is one clear line here,
    not a start-up traceback."""
    from ..server.store import Store

    store = Store(directory)
    try:
        store.open()
    except OnwardError:
        sock.close()
        raise
    store.close()


def _app(args: argparse.Namespace, options: dict[str, Any]) -> Any:
    """The upload app, behind the upload page unless --no-page."""
    from ..server import create_app

    app: Any = create_app(
        args.directory,
        base_path=args.base_path,
        expire_after=args.expire_after,
        idle_timeout=args.timeout,
        cors_origins=tuple(args.cors_origin),
        hook_timeout=args.hook_timeout,
        **options,
    )
    if not args.no_page:
        from ..server.page import with_page

        token = options["token"] is not None
        app = with_page(app, title=args.page_title, base_path=args.base_path, token=token)
    return app


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here rather than by uvicorn so that an address in use or not
    available is one line and exit 1 (uvicorn logs three lines and exits 3)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: cannot resolve the address: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)  # uvicorn's default backlog
    except OSError as exc:
        sock.close()
        raise OnwardError(f"serve: cannot listen on {_where(host, port)}: {exc.strerror or exc}") from None
    return sock


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _token(args: argparse.Namespace) -> str | None:
    """The bearer token: --token-file, else ONWARD_SERVE_TOKEN, else --token (with a warning:
    a command line is readable by every user of the machine)."""
    if args.token_file and args.token:
        raise UsageError("give --token-file or --token, not both")
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                token = f.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"{args.token_file}: cannot read the token file: {exc}", args.token_file
            ) from None
        if not token:
            raise UsageError(f"{args.token_file}: the token file is empty", args.token_file)
        return token
    if args.token:
        print(
            "onward serve: warning: --token is visible to every user of this machine (ps, /proc); "
            "use --token-file or ONWARD_SERVE_TOKEN",
            file=sys.stderr,
        )
        return str(args.token)
    return os.environ.get("ONWARD_SERVE_TOKEN") or None


def _protocol_class(http: str) -> type[Any]:
    """uvicorn's HTTP/1.1 protocol class for --http (auto: httptools when installed, else h11)."""
    if http == "httptools":
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        except ImportError:
            raise UsageError("--http httptools: httptools is not installed (pip install httptools)") from None
        return HttpToolsProtocol
    if http == "h11":
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return AutoHTTPProtocol


def _raise_file_limit(connections: int) -> None:
    """Each connection and each upload being written holds a descriptor: raise the soft limit
    towards the hard one (as Go programs do at start) so --max-connections can be reached."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * connections + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        with contextlib.suppress(ValueError, OSError):  # else past the soft limit accept() fails: EMFILE
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))

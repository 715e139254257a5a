"""Real HTTP servers on 127.0.0.1 for the download tests and the HTTP benchmark.

``Nginx`` runs the system's nginx in the foreground (one process, as the current
user) with a configuration generated in a scratch directory: static files with
ETag and byte ranges, a rate-limited ``/slow/`` location, basic auth under
``/auth/``, a redirect under ``/moved/``, a 403, an access log of every
request's Range, If-Range and Accept-Encoding, and optionally TLS.

``Misbehaving`` is a small threaded server written for the tests that gets
HTTP wrong on purpose: it ignores Range, lies in Content-Range, drops the
connection mid-body, answers 503 with Retry-After, sends no validators,
stalls, sends a hostile Content-Disposition, serves two versions at once
(ignoring If-Range), answers the probe with the whole file, redirects through
a chain or to signed URLs that work once, or asks for credentials, as its
``Behaviour`` says.

Only the standard library is used (the benchmark imports this module too).
Every wait here is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def onward_serve_argv(directory: Path | str, port: int, *extra: str) -> list[str]:
    """The command that starts ``onward serve DIR`` on ``port`` with quiet logs, as the benches run it."""
    argv = [sys.executable, "-m", "onward", "serve", str(directory), "--port", str(port)]
    return [*argv, "--log-level", "warning", *extra]


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = START_TIMEOUT
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout} s")


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL if it is still running 10 s later; waits for it to end."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 512; }}
http {{
    log_format onward '$connection $status "$request" range="$http_range" if_range="$http_if_range" '
                      'accept_encoding="$http_accept_encoding" auth="$remote_user" run="$http_x_run"';
    access_log {work}/access.log onward;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    types {{ }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    server {{
        listen {host}:{port};
{tls}
        root {root};
        location /slow/ {{ alias {root}/; limit_rate {rate}; }}
        location /auth/ {{
            alias {root}/;
            limit_rate {rate};
            auth_basic "onward tests";
            auth_basic_user_file {work}/htpasswd;
        }}
        location /moved/ {{ rewrite ^/moved/(.*)$ /$1 redirect; }}
        location = /forbidden {{ return 403; }}
    }}
}}
"""


@dataclass
class Nginx:
    """nginx serving ``root`` on a free loopback port; ``start()`` / ``stop()``, or use ``with``."""

    root: Path
    work: Path
    rate: str = "4m"  # limit_rate of /slow/ and /auth/
    users: dict[str, str] = field(default_factory=dict)  # basic auth for /auth/
    tls: tuple[Path, Path] | None = None  # (certificate, key)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed")
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "htpasswd").write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in self.users.items()))
        tls = ""
        if self.tls is not None:
            cert, key = self.tls
            tls = f"        ssl_certificate {cert};\n        ssl_certificate_key {key};"
        for attempt in range(5):
            self.port = free_port()
            listen = f"{self.port} ssl" if self.tls else str(self.port)
            conf = CONFIG.format(
                work=self.work, host=HOST, port=listen, root=self.root, rate=self.rate, tls=tls
            )
            (self.work / "nginx.conf").write_text(conf)
            self.proc = subprocess.Popen(
                [binary, "-p", str(self.work), "-e", str(self.work / "error.log"), "-c", "nginx.conf"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_for_port(self.port, self.proc)
                return self
            except RuntimeError:
                self.stop()
                if attempt == 4:
                    raise RuntimeError(f"nginx did not start: {self.errors()}") from None
        return self

    def url(self, path: str, *, userinfo: str = "") -> str:
        scheme = "https" if self.tls else "http"
        at = f"{userinfo}@" if userinfo else ""
        return f"{scheme}://{at}{HOST}:{self.port}/{path.lstrip('/')}"

    def errors(self) -> str:
        with contextlib.suppress(OSError):
            return (self.work / "error.log").read_text()[-2000:]
        return ""

    def requests(self) -> list[str]:
        """The access log, one line per request (see ``log_format onward``)."""
        with contextlib.suppress(OSError):
            return (self.work / "access.log").read_text().splitlines()
        return []

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def self_signed(work: Path) -> tuple[Path, Path]:
    """A throw-away certificate for 127.0.0.1 (needs the openssl command)."""
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


# -- the misbehaving server ---------------------------------------------------------------


@dataclass
class Behaviour:
    """What ``Misbehaving`` gets wrong. "Data requests" are all GETs but the ``bytes=0-0`` probe."""

    ranges: bool = True  # honour Range (else always 200 with the whole body)
    validators: bool = True  # send ETag and Last-Modified
    lie_from: int | None = None  # data requests from this number on: Content-Range of other bytes
    drop_at: dict[int, int] = field(default_factory=dict)  # data request n -> close after so many bytes
    stall_at: dict[int, int] = field(default_factory=dict)  # data request n -> stall after so many bytes
    stall_for: float = 5.0
    busy: dict[int, int] = field(default_factory=dict)  # request n (all GETs) -> 503 with Retry-After
    status: int | None = None  # answer every request with this status and no body
    disposition: str | None = None  # Content-Disposition header
    repr_digest: str | None = None
    digest: str | None = None  # legacy Digest header
    no_length: bool = False  # send the whole body without Content-Length (connection close)
    chunked: bool = False  # send the body with Transfer-Encoding: chunked (no Content-Length)
    replace_at: dict[int, bytes] = field(default_factory=dict)  # data request n: a new file first
    other: bytes | None = None  # every second request (all GETs) gets this version; If-Range ignored
    weak: bool = False  # the ETag is weak (W/"..."): only Last-Modified can validate
    bare_partials: bool = False  # 206 answers to data requests carry no ETag nor Last-Modified
    probe_whole: bool = False  # the bytes=0-0 probe gets the whole file as a 206
    user: str | None = None  # "name:password" basic auth every request must carry
    # GET /hop/N/file.bin: N absolute same-origin redirects to /hop/0/file.bin, the file.
    # GET /start/file.bin: a redirect to /signed/TOKEN/file.bin, a URL that works for one request.
    away: str | None = None  # GET /away/file.bin: a redirect to this URL (another origin)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Misbehaving._Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        with owner.lock:
            owner.count += 1
            number = owner.count
            behaviour = owner.behaviour
            rng = self.headers.get("Range")
            probe = rng == "bytes=0-0"
            if not probe:
                owner.data_count += 1
            data_number = owner.data_count
            if not probe and data_number in behaviour.replace_at:
                owner.set_data(behaviour.replace_at[data_number])
            data, etag = owner.data, owner.etag
            if behaviour.other is not None and number % 2 == 0:
                data, etag = behaviour.other, etag_of(behaviour.other)
            owner.log.append(
                {
                    "n": number,
                    "range": rng,
                    "if_range": self.headers.get("If-Range"),
                    "path": self.path,
                    "auth": self.headers.get("Authorization"),
                }
            )
            where = owner.route(self.path)
        b = behaviour
        if b.user is not None and self.headers.get("Authorization") != basic(b.user):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="onward tests"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if where is not None:
            self.send_response(403 if where == "" else 302)
            if where:
                here = f"http://{HOST}:{self.server.server_address[1]}"
                self.send_header("Location", where if "://" in where else here + where)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if b.status is not None:
            self.send_response(b.status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if number in b.busy:
            self.send_response(503)
            self.send_header("Retry-After", str(b.busy[number]))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end, status = 0, len(data) - 1, 200
        modified = last_modified(etag)
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        if_range = self.headers.get("If-Range")
        honoured = if_range is None or b.other is not None or (b.validators and if_range in (etag, modified))
        if b.ranges and match and honoured:
            start = int(match.group(1))
            end = min(int(match.group(2)), len(data) - 1) if match.group(2) else len(data) - 1
            status = 206
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body_start = start
        if status == 206 and b.lie_from is not None and not probe and data_number >= b.lie_from:
            body_start = 0  # sends other bytes than asked for, and says so in Content-Range
        if probe and b.probe_whole and status == 206:
            end = len(data) - 1
        body = memoryview(data)[body_start : body_start + (end - start + 1)]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {body_start}-{body_start + len(body) - 1}/{len(data)}")
        if b.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if b.validators and not (b.bare_partials and status == 206 and not probe):
            self.send_header("ETag", "W/" + etag if b.weak else etag)
            self.send_header("Last-Modified", modified)
        for name, value in (
            ("Content-Disposition", b.disposition),
            ("Repr-Digest", b.repr_digest),
            ("Digest", b.digest),
        ):
            if value is not None:
                self.send_header(name, value)
        if b.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif b.no_length:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = b.drop_at.get(data_number) if not probe else None
        stall = b.stall_at.get(data_number) if not probe else None
        write = self._chunk if b.chunked else self.wfile.write
        if cut is not None:
            write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if stall is not None:
            self.wfile.write(body[:stall])
            self.wfile.flush()
            owner.stop.wait(b.stall_for)
            self.close_connection = True
            return
        for pos in range(0, len(body), 1 << 16):
            write(body[pos : pos + (1 << 16)])
        if b.chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: memoryview) -> None:
        if data:
            self.wfile.write(b"%x\r\n" % len(data) + bytes(data) + b"\r\n")


def etag_of(data: bytes) -> str:
    """The strong ETag ``Misbehaving`` sends for ``data``."""
    return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'


def last_modified(etag: str) -> str:
    """A Last-Modified that differs between versions as their ETags do."""
    seconds = 1_772_445_600 + int(etag.strip('"')[:6], 16)
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(seconds))


def basic(user: str) -> str:
    return "Basic " + base64.b64encode(user.encode()).decode()


class Misbehaving:
    """The test server: ``data`` is the file; ``behaviour`` what it gets wrong; ``url`` where."""

    class _Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        block_on_close = False
        owner: Misbehaving

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that went away (killed, timed out) is part of the tests

    def __init__(self, data: bytes, behaviour: Behaviour | None = None) -> None:
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.behaviour = behaviour or Behaviour()
        self.count = 0
        self.data_count = 0
        self.log: list[dict[str, Any]] = []
        self.data = data
        self.etag = ""
        self.set_data(data)
        self.tokens = 0  # signed URLs handed out
        self.used: set[str] = set()  # signed URLs requested once already
        self.server = self._Server((HOST, 0), _Handler)
        self.server.owner = self
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})

    def replace(self, data: bytes) -> None:
        with self.lock:
            self.set_data(data)

    def set_data(self, data: bytes) -> None:
        self.data = data
        self.etag = etag_of(data)

    def route(self, path: str) -> str | None:
        """Where ``path`` redirects to ("": forbidden), or None when it is the file itself."""
        hop = re.fullmatch(r"/hop/(\d+)/file\.bin", path)
        if hop and int(hop.group(1)) > 0:
            return f"/hop/{int(hop.group(1)) - 1}/file.bin"
        if path == "/away/file.bin" and self.behaviour.away is not None:
            return self.behaviour.away
        if path == "/start/file.bin":
            self.tokens += 1
            return f"/signed/t{self.tokens}/file.bin?sig=once"
        signed = re.fullmatch(r"/signed/(t\d+)/file\.bin\?sig=once", path)
        if signed:
            token = signed.group(1)
            if token in self.used:
                return ""
            self.used.add(token)
        return None

    @property
    def url(self) -> str:
        return self.url_for("/file.bin")

    def url_for(self, path: str, userinfo: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        return f"http://{at}{HOST}:{self.server.server_address[1]}{path}"

    def __enter__(self) -> Misbehaving:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

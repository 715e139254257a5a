"""HTTP(S) downloads through the real CLI, against real servers on 127.0.0.1.

nginx (installed by scripts/test) serves static files with ETag and byte ranges;
``Misbehaving`` (tests/http_servers.py) gets HTTP wrong on purpose. Interrupted
downloads are made by SIGKILL, so a resume starts from what a crash leaves.
Every download is checked byte for byte against what the server holds at the end:
a stitched file (old bytes before, new bytes after) can never pass.
No traffic leaves the loopback interface; every wait is bounded.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from http_servers import Behaviour, Misbehaving, Nginx, etag_of, nginx_binary, self_signed
from onward.core import http as rules
from onward.endpoints.http import HttpSource
from onward.errors import SourceError, TransientError, UsageError

MiB = 1 << 20
SIZE = 8 * MiB
CHUNK = 64 * 1024  # what kill_midway downloads with
SMALL = ("--chunk-size", "64K", "--checkpoint-bytes", "64K")  # every chunk checkpointed
ONWARD = [sys.executable, "-m", "onward"]
# Nothing from the environment decides where requests go or which credentials they carry.
ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()} | {"NETRC": os.devnull}

needs_nginx = pytest.mark.skipif(
    nginx_binary() is None, reason="nginx is not installed (scripts/test installs it)"
)


def blob(size: int, seed: object) -> bytes:
    return random.Random(f"{seed}:{size}").randbytes(size)


def run(
    *args: str | os.PathLike[str], env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ONWARD, *(os.fspath(arg) for arg in args)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or ENV,
    )


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def of_kind(evs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in evs if e["event"] == kind]


def notices(evs: list[dict[str, Any]]) -> str:
    return "\n".join(e["message"] for e in of_kind(evs, "notice"))


def done(evs: list[dict[str, Any]]) -> dict[str, Any]:
    (result,) = of_kind(evs, "done")
    return result


def partial_of(dst: Path) -> Path:
    return dst.with_name(dst.name + ".onward-partial")


def journal_of(dst: Path) -> Path:
    return dst.with_name(dst.name + ".onward-journal")


def finished(dst: Path, data: bytes) -> bool:
    return dst.read_bytes() == data and not partial_of(dst).exists() and not journal_of(dst).exists()


def error_line(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The exit code, no traceback, and a last stderr line ``onward: ...`` with every needle."""
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.returncode == code, f"exit {proc.returncode}: {proc.stderr!r}"
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("onward: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def kill_midway(url: str, dst: Path, *extra: str, at: int = MiB, env: dict[str, str] | None = None) -> Any:
    """``onward copy --json`` with 64 KiB chunks, each checkpointed, SIGKILLed once ``at`` bytes
    are committed. stdout is a one-page pipe the copy blocks on, so it is always caught
    mid-way. Returns (bytes committed as last reported, stdout read, stderr)."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    args = ["copy", "--json", "--chunk-size", "64K", "--checkpoint-bytes", "64K", *extra, url, str(dst)]
    proc = subprocess.Popen(
        [*ONWARD, *args], stdin=subprocess.DEVNULL, stdout=write_end, stderr=subprocess.PIPE, env=env or ENV
    )
    os.close(write_end)
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    committed, seen = -1, []
    try:
        with os.fdopen(read_end, "r") as out:
            for line in out:
                seen.append(line)
                event = json.loads(line)
                if event["event"] == "checkpoint":
                    committed = event["committed"]
                    if committed >= at:
                        break
            proc.send_signal(signal.SIGKILL)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"download ended before the kill: {err.decode()}"
    assert committed >= at, err.decode()
    assert partial_of(dst).exists() and journal_of(dst).exists() and not dst.exists()
    return committed, "".join(seen), err.decode()


# -- servers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (scripts/test installs it)")
    base = tmp_path_factory.mktemp("nginx")
    (base / "www").mkdir()
    server = Nginx(base / "www", base / "work", rate="8m", users={"alice": "s3cret-Pa55"})
    with server:
        yield server


@pytest.fixture
def site(nginx: Nginx, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A directory of its own under the nginx root, named after the test."""
    name = "".join(c if c.isalnum() else "-" for c in request.node.name)
    root = nginx.root / name
    root.mkdir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


def put(path: Path, data: bytes, mtime: float | None = None) -> None:
    """Replace ``path`` by rename, as a web site deploys a new version."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.rename(tmp, path)


def served(nginx: Nginx, site: Path, path: str) -> list[str]:
    """Access-log lines of requests for ``path`` under this test's directory."""
    return [line for line in nginx.requests() if f"/{site.name}/{path} " in line]


# -- the pure rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("a/b/", None),
        ("..", None),
        (".", None),
        ("", None),
        ("  ", None),
        ("x\x00y", "x_y"),
        ("tab\there", "tab_here"),
        ("é.txt", "é.txt"),
    ],
)
def test_server_file_names_never_leave_the_directory(raw: str, safe: str | None) -> None:
    assert rules.safe_filename(raw) == safe


def test_rules_for_headers_and_urls() -> None:
    cr = rules.parse_content_range
    assert cr("bytes 0-0/10") == rules.ContentRange(0, 0, 10)
    assert cr("bytes */0") == rules.ContentRange(None, None, 0)
    assert cr("bytes 5-4/10") is None and cr("bytes 0-10/10") is None and cr("items 0-1/2") is None
    assert rules.strong_etag('"abc"') == '"abc"' and rules.strong_etag('W/"abc"') == ""
    assert rules.parse_retry_after("7", now=0) == 7.0
    assert rules.parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0) == 60.0
    assert rules.parse_retry_after("soon", now=0) is None
    redacted = rules.redact_url("HTTPS://bob:pw@host:8443/a/b.iso?X-Amz-Signature=abc&part=2#frag")
    assert redacted == "https://host:8443/a/b.iso?X-Amz-Signature=REDACTED&part=2"
    assert rules.name_from_url("http://h/dir/my%20file.bin?x=1") == "my file.bin"
    assert rules.name_from_url("http://h/") is None and rules.name_from_url("http://h") is None
    assert rules.filename_from_disposition("attachment; filename*=UTF-8''%E2%82%AC.txt") == "€.txt"
    assert rules.filename_from_disposition('attachment; filename="a b.txt"') == "a b.txt"
    assert rules.never_resolves("nothing.invalid") and not rules.never_resolves("invalid.example")
    data = b"onward"
    sha = base64.b64encode(hashlib.sha256(data).digest()).decode()
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    (got,) = rules.server_digests(f"md5=:{md5}:, sha-256=:{sha}:", None)
    assert (got.algorithm, got.digest, got.origin) == ("sha256", hashlib.sha256(data).digest(), "Repr-Digest")
    (legacy,) = rules.server_digests(None, f"MD5={md5}")
    assert (legacy.algorithm, legacy.origin) == ("md5", "Digest")
    assert rules.server_digests("sha-256=:bm90IGEgZGlnZXN0:", None) == []  # wrong length: ignored
    with pytest.raises(ValueError):
        rules.parse_checksum("sha256:abcd")
    assert rules.parse_checksum(f"SHA-256:{hashlib.sha256(data).hexdigest()}").algorithm == "sha256"


def test_name_resolution_failures_map_to_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """The resolver's answer, not a traceback: a name that does not exist is final,
    a resolver that cannot answer now is worth retrying. (getaddrinfo is replaced: no traffic.)"""

    def fail(code: int, text: str) -> Any:
        def getaddrinfo(*args: Any, **kwargs: Any) -> Any:
            raise socket.gaierror(code, text)

        return getaddrinfo

    monkeypatch.setenv("NETRC", os.devnull)
    monkeypatch.setattr(socket, "getaddrinfo", fail(socket.EAI_NONAME, "Name or service not known"))
    with pytest.raises(SourceError, match=r"http://files\.example/x: cannot resolve host 'files\.example'"):
        HttpSource.open("http://u:pw@files.example/x", retries=0)
    monkeypatch.setattr(socket, "getaddrinfo", fail(socket.EAI_AGAIN, "Temporary failure in name resolution"))
    with pytest.raises(TransientError, match="right now") as caught:
        HttpSource.open("http://files.example/x", retries=0)
    assert "pw" not in caught.value.message


# -- nginx: plain downloads ------------------------------------------------------------------


@needs_nginx
def test_download_into_a_directory_is_identical_and_asks_for_identity_encoding(
    nginx: Nginx, site: Path, tmp_path: Path
) -> None:
    data = blob(3 * MiB + 17, "plain")
    put(site / "plain.bin", data, mtime=1_700_000_000)
    proc = run("copy", "--json", nginx.url(f"{site.name}/plain.bin"), tmp_path)
    assert proc.returncode == 0, proc.stderr
    dst = tmp_path / "plain.bin"
    assert finished(dst, data)
    assert dst.stat().st_mtime == 1_700_000_000  # Last-Modified, as wget and curl -R do
    result = done(events(proc.stdout))
    assert result["source"] == nginx.url(f"{site.name}/plain.bin") and result["size"] == len(data)
    log = served(nginx, site, "plain.bin")
    assert log and all('accept_encoding="identity"' in line for line in log)
    data_requests = [line for line in log if 'range="bytes=0-0"' not in line]
    assert data_requests and all('if_range="\\x22' in line for line in data_requests), data_requests


@needs_nginx
def test_redirects_are_followed_and_the_name_comes_from_the_url_asked_for(
    nginx: Nginx, site: Path, tmp_path: Path
) -> None:
    data = blob(MiB, "moved")
    put(site / "moved.bin", data)
    proc = run("copy", nginx.url(f"moved/{site.name}/moved.bin"), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert finished(tmp_path / "moved.bin", data)


@needs_nginx
def test_empty_file(nginx: Nginx, site: Path, tmp_path: Path) -> None:
    put(site / "empty", b"")
    proc = run("copy", nginx.url(f"{site.name}/empty"), tmp_path / "got")
    assert proc.returncode == 0, proc.stderr
    assert finished(tmp_path / "got", b"")


@needs_nginx
@pytest.mark.parametrize(
    ("path", "status"), [("missing.bin", "404 Not Found"), ("forbidden", "403 Forbidden")]
)
def test_http_errors_are_one_clear_line_and_leave_nothing(
    nginx: Nginx, site: Path, tmp_path: Path, path: str, status: str
) -> None:
    url = nginx.url(path if path == "forbidden" else f"{site.name}/{path}")
    proc = run("copy", url, tmp_path)
    error_line(proc, 1, url, status, "check the URL")
    assert list(tmp_path.iterdir()) == []


# -- nginx: interrupted downloads ------------------------------------------------------------


@needs_nginx
@pytest.mark.parametrize("connections", [1, 4])
def test_sigkill_mid_download_then_resume(nginx: Nginx, site: Path, tmp_path: Path, connections: int) -> None:
    data = blob(SIZE, "kill")
    put(site / "big.bin", data)
    url, dst = nginx.url(f"slow/{site.name}/big.bin"), tmp_path / "big.bin"
    flags = ("--connections", str(connections))
    committed, _, _ = kill_midway(url, dst, *flags)
    proc = run("copy", "--json", "-H", "X-Run: resume", *flags, url, dst)  # X-Run: in the log
    assert proc.returncode == 0, proc.stderr
    result = done(events(proc.stdout))
    assert result["resumed_from"] >= committed > 0
    assert result["copied"] == SIZE - result["resumed_from"] < SIZE
    assert finished(dst, data)
    log = served(nginx, site, "big.bin")
    resumed = [line for line in log if 'run="resume"' in line and 'range="bytes=0-0"' not in line]
    assert resumed and all('if_range="\\x22' in line and " 206 " in line for line in resumed), resumed
    spans = [tuple(map(int, line.split('range="bytes=')[1].split('"')[0].split("-"))) for line in resumed]
    if connections == 1:  # one request to the end, from the first byte not yet durable
        assert spans == [(result["resumed_from"], SIZE - 1)]
    else:  # open-ended requests from chunk boundaries, each read on for a run of chunks
        assert spans and all(b == SIZE - 1 and a % CHUNK == 0 for a, b in spans), spans
        assert len(spans) <= (SIZE - result["resumed_from"]) // CHUNK  # never one chunk twice
        assert len({line.split()[0] for line in resumed}) >= 3  # $connection: distinct connections


@needs_nginx
@pytest.mark.parametrize("new_size", [SIZE, SIZE + 12345], ids=["same-size", "other-size"])
def test_file_replaced_between_runs_is_never_stitched(
    nginx: Nginx, site: Path, tmp_path: Path, new_size: int
) -> None:
    old, new = blob(SIZE, "old"), blob(new_size, "new")
    put(site / "f.bin", old, mtime=1_700_000_000)
    url, dst = nginx.url(f"slow/{site.name}/f.bin"), tmp_path / "f.bin"
    kill_midway(url, dst)
    # A new version, as a deploy makes it (nginx's ETag is mtime + size: the mtime moves).
    put(site / "f.bin", new, mtime=1_700_000_100)
    proc = run("copy", "--json", url, dst)
    assert proc.returncode == 0, proc.stderr
    evs = events(proc.stdout)
    assert "the source changed since the last run: starting over from zero" in notices(evs)
    assert of_kind(evs, "start")[0]["resumed_from"] == done(evs)["resumed_from"] == 0
    assert finished(dst, new)


# -- nginx: checksums, credentials, TLS ------------------------------------------------------


@needs_nginx
def test_checksum_good_and_bad(nginx: Nginx, site: Path, tmp_path: Path) -> None:
    data = blob(MiB + 5, "sum")
    put(site / "s.bin", data)
    url = nginx.url(f"{site.name}/s.bin")
    for alg in ("sha256", "md5", "sha1", "sha512"):
        dst = tmp_path / f"ok-{alg}"
        proc = run("copy", "--expect-digest", f"{alg}:{hashlib.new(alg, data).hexdigest()}", url, dst)
        assert proc.returncode == 0, proc.stderr
        assert finished(dst, data)
    dst, wrong = tmp_path / "bad", hashlib.sha256(b"something else").hexdigest()
    proc = run("copy", "--expect-digest", f"sha256:{wrong}", url, dst)
    error_line(proc, 1, str(dst), hashlib.sha256(data).hexdigest(), wrong, "nothing was promoted")
    assert not dst.exists() and partial_of(dst).exists()
    proc = run("copy", "--expect-digest", "sha256:xyz", url, tmp_path / "never")
    error_line(proc, 2, "--expect-digest")
    assert not (tmp_path / "never").exists()


@needs_nginx
def test_credentials_never_reach_journal_status_json_or_stderr(
    nginx: Nginx, site: Path, tmp_path: Path
) -> None:
    data = blob(SIZE, "secret")
    put(site / "private.bin", data)
    secret, user = "s3cret-Pa55", "alice"
    url = nginx.url(f"auth/{site.name}/private.bin", userinfo=f"{user}:{secret}")
    clean_url = nginx.url(f"auth/{site.name}/private.bin")
    dst = tmp_path / "private.bin"
    _, out, err = kill_midway(url, dst)
    journal = journal_of(dst).read_bytes()
    assert clean_url.encode() in journal
    shown = [journal, out.encode(), err.encode()]
    status = run("status", tmp_path)
    status_json = run("status", "--json", tmp_path)
    assert status.returncode == status_json.returncode == 0
    assert clean_url in status.stdout and json.loads(status_json.stdout)["source"] == clean_url
    proc = run("copy", "--json", "--progress", url, dst)
    assert proc.returncode == 0, proc.stderr
    assert finished(dst, data) and done(events(proc.stdout))["resumed_from"] > 0
    shown += [p.encode() for p in (status.stdout, status_json.stdout, proc.stdout, proc.stderr)]
    for text in shown:
        assert secret.encode() not in text and f"{user}:".encode() not in text
    assert any('auth="alice"' in line for line in served(nginx, site, "private.bin"))
    # Without credentials: 401, said plainly. From ~/.netrc: works.
    error_line(run("copy", clean_url, tmp_path / "denied"), 1, "401", "netrc")
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {user} password {secret}\n")
    netrc.chmod(0o600)
    proc = run("copy", clean_url, tmp_path / "via-netrc", env=ENV | {"NETRC": str(netrc)})
    assert proc.returncode == 0, proc.stderr
    assert finished(tmp_path / "via-netrc", data)


@needs_nginx
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_is_verified_by_default(tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    data = blob(MiB, "tls")
    (tmp_path / "www" / "t.bin").write_bytes(data)
    cert, key = self_signed(tmp_path)
    with Nginx(tmp_path / "www", tmp_path / "work", tls=(cert, key)) as server:
        url = server.url("t.bin")
        error_line(run("copy", url, tmp_path / "no"), 1, url, "TLS certificate verification failed")
        assert not (tmp_path / "no").exists()
        proc = run("copy", url, tmp_path / "yes", env=ENV | {"SSL_CERT_FILE": str(cert)})
        assert proc.returncode == 0, proc.stderr
        assert finished(tmp_path / "yes", data)


# -- the misbehaving server -------------------------------------------------------------------


def download(server: Misbehaving, dst: Path, *extra: str) -> tuple[Any, list[dict[str, Any]]]:
    proc = run("copy", "--json", *extra, server.url, dst)
    return proc, events(proc.stdout) if proc.returncode == 0 else []


def test_server_that_ignores_range_is_downloaded_whole(tmp_path: Path) -> None:
    data = blob(2 * MiB + 3, "norange")
    with Misbehaving(data, Behaviour(ranges=False)) as server:
        proc, evs = download(server, tmp_path / "f")
    assert proc.returncode == 0, proc.stderr
    assert "does not support byte ranges" in notices(evs)
    assert finished(tmp_path / "f", data)


def test_content_range_that_lies_is_never_appended(tmp_path: Path) -> None:
    data = blob(2 * MiB + 3, "lie")
    # Honest on the probe and the first data request, then ranges of other bytes.
    with Misbehaving(data, Behaviour(lie_from=2)) as server:
        proc, evs = download(server, tmp_path / "f", "--chunk-size", "256K", "--connections", "2")
    assert proc.returncode == 0, proc.stderr
    text = notices(evs)
    assert "other bytes than asked for" in text and "starting over from zero" in text
    assert finished(tmp_path / "f", data)


@pytest.mark.parametrize("flips_back", [False, True], ids=["replaced", "replaced-and-back"])
@pytest.mark.parametrize("new_size", [2 * MiB, 3 * MiB], ids=["same-size", "longer"])
def test_file_replaced_mid_download_is_never_appended(
    tmp_path: Path, new_size: int, flips_back: bool
) -> None:
    """Requests after the change carry If-Range with the old ETag: the server answers 200 with
    the new file, which onward must not take for the rest of the old one. When the old version
    comes back right after (servers behind a balancer that disagree), only If-Range can tell."""
    old, new = blob(2 * MiB, "mid-old"), blob(new_size, "mid-new")
    # Two connections: two data requests, each for a run of chunks; the second meets the change.
    flips = {2: new, 3: old} if flips_back else {2: new}
    with Misbehaving(old, Behaviour(replace_at=flips)) as server:
        proc, evs = download(server, tmp_path / "f", "--chunk-size", "256K", "--connections", "2")
        log = list(server.log)
    assert proc.returncode == 0, proc.stderr
    assert "starting over from zero" in notices(evs)
    assert finished(tmp_path / "f", old if flips_back else new)
    assert log[2]["if_range"] == etag_of(old)  # the request that met the new file (probe first)


def test_connection_dropped_mid_body_resumes_in_the_same_run(tmp_path: Path) -> None:
    data = blob(4 * MiB, "drop")
    with Misbehaving(data, Behaviour(drop_at={1: MiB + 100})) as server:
        proc, evs = download(server, tmp_path / "f", "--chunk-size", "256K", "--checkpoint-bytes", "256K")
        log = list(server.log)
    assert proc.returncode == 0, proc.stderr
    (retry,) = of_kind(evs, "retry")
    assert "connection broke" in retry["error"]
    assert finished(tmp_path / "f", data)
    first, again = [e for e in log if e["range"] not in (None, "bytes=0-0")]  # the probe aside
    assert first["range"] == f"bytes=0-{len(data) - 1}"
    assert again["range"] == f"bytes={MiB}-{len(data) - 1}" and again["if_range"] == server.etag


@pytest.mark.parametrize("at", [1, 2], ids=["on-the-first-request", "mid-download"])
def test_503_with_retry_after_is_honoured(tmp_path: Path, at: int) -> None:
    data = blob(MiB, "busy")
    with Misbehaving(data, Behaviour(busy={at: 1})) as server:
        proc, evs = download(server, tmp_path / "f")
    assert proc.returncode == 0, proc.stderr
    (retry,) = of_kind(evs, "retry")
    assert "503" in retry["error"] and retry["delay"] >= 1.0
    assert finished(tmp_path / "f", data)


def test_503_for_ever_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    with Misbehaving(b"x" * 1000, Behaviour(status=503)) as server:
        proc = run("copy", "--retries", "1", server.url, tmp_path / "f")
    error_line(proc, 1, server.url, "503", "re-run to resume")


def test_no_validators_download_in_one_piece_and_never_resume(tmp_path: Path) -> None:
    old, new = blob(SIZE, "nv-old"), blob(SIZE, "nv-new")
    dst = tmp_path / "f"
    with Misbehaving(old, Behaviour(validators=False)) as server:
        kill_midway(server.url, dst)
        server.replace(new)  # same size, and nothing tells the two apart: only a restart is safe
        proc, evs = download(server, dst)
    assert proc.returncode == 0, proc.stderr
    text = notices(evs)
    assert "no ETag or Last-Modified" in text and "starting over from zero" in text
    assert of_kind(evs, "start")[0]["resumed_from"] == done(evs)["resumed_from"] == 0
    assert finished(dst, new)


def test_stalled_server_times_out_and_the_retry_resumes(tmp_path: Path) -> None:
    data = blob(2 * MiB, "stall")
    with Misbehaving(data, Behaviour(stall_at={1: MiB}, stall_for=5)) as server:
        proc, evs = download(server, tmp_path / "f", "--timeout", "1", *SMALL)
        log = list(server.log)
    assert proc.returncode == 0, proc.stderr
    assert "sent nothing for 1 s (--timeout)" in of_kind(evs, "retry")[0]["error"]
    assert finished(tmp_path / "f", data)
    again = [e for e in log if e["range"] not in (None, "bytes=0-0")][1]
    assert again["range"] == f"bytes={MiB}-{len(data) - 1}"  # from where the stall began


def test_server_that_always_stalls_fails_clearly(tmp_path: Path) -> None:
    stalls = dict.fromkeys(range(1, 10), 1000)
    with Misbehaving(blob(MiB, "x"), Behaviour(stall_at=stalls, stall_for=5)) as server:
        proc = run("copy", "--timeout", "0.5", "--retries", "1", server.url, tmp_path / "f")
    error_line(proc, 1, server.url, "sent nothing for 0.5 s (--timeout)", "re-run to resume")
    assert not (tmp_path / "f").exists()


def copy_until_a_mib_is_durable(server: Misbehaving, dst: Path) -> subprocess.Popen[str]:
    """``onward copy --json`` of the server's file, returned once its first MiB is durable."""
    proc = subprocess.Popen(
        [*ONWARD, "copy", "--json", *SMALL, server.url, str(dst)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # bounded: the copy's output ends when it does
        event = json.loads(line)
        if event["event"] == "checkpoint" and event["committed"] >= MiB:
            break
    return proc


def test_ctrl_c_on_a_server_without_ranges_says_it_will_start_over(tmp_path: Path) -> None:
    """Such a download cannot resume: the interrupt, status and the re-run all say so, and none
    says "resume" or that the source changed (it did not)."""
    data, dst = blob(2 * MiB, "norange-int"), tmp_path / "f"
    with Misbehaving(data, Behaviour(ranges=False, stall_at={1: MiB}, stall_for=8)) as server:
        proc = copy_until_a_mib_is_durable(server, dst)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        [last] = err.splitlines()[-1:]
        assert last.endswith(
            "this server cannot resume a download: running the same command again starts over"
        )
        assert "to resume" not in err
        status = run("status", tmp_path)
        assert status.returncode == 0, status.stderr
        assert (
            "-%" in status.stdout
            and "its server cannot resume a download: a re-run starts over" in status.stdout
        )
        assert ".0%" not in status.stdout  # no share of it is done: a re-run keeps none of it
        [item] = events(run("status", "--json", tmp_path).stdout)
        server.behaviour = Behaviour(ranges=False)
        again, evs = download(server, dst)
    assert item["percent"] is None and item["restarts"] is True
    assert again.returncode == 0, again.stderr
    said = notices(evs)
    assert "source changed" not in said
    assert (
        "nothing changed, but the last run's server cannot resume a download: starting over from zero" in said
    )
    assert finished(dst, data)


def test_ctrl_c_while_the_server_stalls_stops_at_once(tmp_path: Path) -> None:
    with Misbehaving(blob(2 * MiB, "int"), Behaviour(stall_at={1: MiB}, stall_for=20)) as server:
        proc = copy_until_a_mib_is_durable(server, tmp_path / "f")
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        stopped = time.monotonic() - started
    assert proc.returncode == 130, err
    assert stopped < 3, f"took {stopped:.1f} s to stop"
    assert "run the same command again to resume" in err
    assert of_kind(events(out), "error")[0]["done"] >= MiB


def test_content_disposition_cannot_escape_the_directory(tmp_path: Path) -> None:
    data = blob(MiB, "cd")
    inside = tmp_path / "inside" / "deeper"
    inside.mkdir(parents=True)
    hostile = 'attachment; filename="../../escape.bin"'
    with Misbehaving(data, Behaviour(disposition=hostile)) as server:
        proc, evs = download(server, inside, "--content-disposition")
    assert proc.returncode == 0, proc.stderr
    assert finished(inside / "escape.bin", data)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deeper", "escape.bin", "inside"]
    assert "reduced to 'escape.bin'" in notices(evs)


def test_content_disposition_names_the_file(tmp_path: Path) -> None:
    data = blob(1000, "cd2")
    with Misbehaving(data, Behaviour(disposition="attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.txt")) as s:
        proc, _ = download(s, tmp_path, "--content-disposition")
        default, _ = download(s, tmp_path)  # off unless asked for, as wget
    assert proc.returncode == 0, proc.stderr
    assert finished(tmp_path / "résumé.txt", data)
    assert default.returncode == 0, default.stderr
    assert finished(tmp_path / "file.bin", data)


def sri(alg: str, data: bytes) -> str:
    return base64.b64encode(hashlib.new(alg, data).digest()).decode()


@pytest.mark.parametrize(
    ("header", "good"),
    [("repr_digest", True), ("repr_digest", False), ("digest", True), ("digest", False)],
)
def test_server_digest_is_checked_before_promotion(tmp_path: Path, header: str, good: bool) -> None:
    data = blob(MiB + 1, "digest")
    signed = data if good else data[:-1] + b"?"
    value = (
        f"sha-256=:{sri('sha256', signed)}:"
        if header == "repr_digest"
        else f"SHA-256={sri('sha256', signed)}"
    )
    signature: dict[str, Any] = {header: value}
    with Misbehaving(data, Behaviour(**signature)) as server:
        proc = run("copy", server.url, tmp_path / "f")
    if good:
        assert proc.returncode == 0, proc.stderr
        assert finished(tmp_path / "f", data)
    else:
        origin = "Repr-Digest" if header == "repr_digest" else "Digest"
        error_line(proc, 1, str(tmp_path / "f"), f"{origin} says", "nothing was promoted")
        assert not (tmp_path / "f").exists()


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://", "no host name"),
        ("http:///path/only", "no host name"),
        ("http://[::1/x", "not a valid URL"),
        ("http://127.0.0.1:99999/x", "out of range"),
        ("http://127.0.0.1:port/x", "not a valid URL"),
        ("ftp://127.0.0.1/file", "unknown URL scheme 'ftp'"),
        ("foo://bar", "unknown URL scheme 'foo'"),
    ],
)
def test_malformed_url_or_unknown_scheme_is_a_usage_error(tmp_path: Path, url: str, needle: str) -> None:
    proc = run("copy", url, tmp_path / "f")
    error_line(proc, 2, needle)
    assert len(proc.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_name_that_cannot_resolve(tmp_path: Path) -> None:
    url = "http://onward-test.invalid/file.bin"
    proc = run("copy", url, tmp_path)
    error_line(proc, 1, url, "cannot resolve host 'onward-test.invalid'")
    assert list(tmp_path.iterdir()) == []


def test_url_without_a_name_needs_a_file_destination(tmp_path: Path) -> None:
    data = blob(100, "noname")
    with Misbehaving(data) as server:
        url = server.url.rsplit("/", 1)[0] + "/"
        error_line(run("copy", url, tmp_path), 2, "names no file", "file path")
        proc = run("copy", url, tmp_path / "named")
    assert proc.returncode == 0, proc.stderr
    assert finished(tmp_path / "named", data)


def test_bad_header_option_is_a_usage_error(tmp_path: Path) -> None:
    error_line(run("copy", "-H", "no colon", "http://127.0.0.1:9/x", tmp_path / "f"), 2, "Name: value")
    error_line(run("copy", "-H", "Range: bytes=0-", "http://127.0.0.1:9/x", tmp_path / "f"), 2, "itself")


def test_api_refuses_unknown_scheme_without_touching_anything(tmp_path: Path) -> None:
    import onward

    with pytest.raises(UsageError, match="unknown URL scheme 'gopher'"):
        onward.copy("gopher://127.0.0.1/x", tmp_path / "f")
    assert list(tmp_path.iterdir()) == []

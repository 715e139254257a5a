"""The browser upload page of ``onward serve``, in a real headless Chromium (Debian's, via Playwright).

Every browser test runs the real CLI on 127.0.0.1, opens GET / in a fresh profile, chooses real
files with the page's file input and checks what arrived in the server's directory by sha256.
The cases: two 64 MiB files; a reload (or a closed tab) half-way, the file chosen again, and the
upload continues from the server's offset; the server SIGKILLed and restarted mid-upload, or the
network dropped and back, and the page continues by itself; a wrong token; a file over the limit;
pause and resume from the keyboard at 320 px wide; and, in all of them, not one request to
another origin. A screenshot taken mid-upload is kept in the test's
temporary directory and its path printed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

import browser
from peers.servers import OnwardServer
from polling import wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Page, Playwright, Request

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "src" / "onward" / "server" / "static"
MiB = 1 << 20
CHUNK = 16 * MiB  # the page's chunk size (page/src/main.js)

needs_browser = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))


def random_file(path: Path, size: int, seed: int) -> Path:
    block = hashlib.sha256(str(seed).encode()).digest() * (MiB // 32)
    with open(path, "wb") as f:
        for i in range(size // MiB):
            f.write(i.to_bytes(8, "big") + block[8:])
    return path


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class Session:
    """One page of the server in a fresh headless Chromium, with every request it made."""

    def __init__(
        self, playwright: Playwright, server: OnwardServer, profile: Path, width: int = 1024
    ) -> None:
        self.server = server
        self.context = browser.launch(playwright, profile, width=width)
        self.requests: list[Request] = []
        self.errors: list[str] = []
        self.page = self.watched(self.context.pages[0] if self.context.pages else self.context.new_page())
        self.page.goto(server.origin + "/")

    def watched(self, page: Page) -> Page:
        page.on("request", lambda r: self.requests.append(r))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        return page

    def reopen(self) -> None:
        """Close the tab and open the page again in a new one (same browser profile)."""
        spare = self.context.new_page()  # keeps the browser open while the tab is closed
        self.page.close()
        self.page = self.watched(spare)
        self.page.goto(self.server.origin + "/")

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Poll ``check`` until it is true, letting Playwright deliver the page's events meanwhile
        (a plain sleep would hold them back: the sync API dispatches only inside its own calls)."""
        return wait_until(check, timeout, what, pause=lambda: self.page.wait_for_timeout(50))

    def choose(self, *files: Path) -> None:
        self.page.set_input_files("#files", [str(f) for f in files])

    def upload_urls(self) -> list[str]:
        """The URLs of unfinished uploads in the page's resume storage (tus-js-client's)."""
        found = self.page.evaluate(
            "Object.keys(localStorage).filter(k => k.startsWith('tus::'))"
            ".map(k => JSON.parse(localStorage.getItem(k)).uploadUrl)"
        )
        return [str(u) for u in found if u]

    def finished_ids(self) -> list[str]:
        return [str(t) for t in self.page.locator("#done code").all_inner_texts()]

    def patches(self, since: int = 0) -> list[tuple[int, Request]]:
        return [(int(r.headers["upload-offset"]), r) for r in self.requests[since:] if r.method == "PATCH"]

    def start_slowly(self, src: Path) -> str:
        """Upload ``src`` at 16 MiB/s (so a test can act mid-way); the upload's URL."""
        self.network = browser.throttle_uploads(self.context, self.page, 16 * MiB)
        self.choose(src)
        return str(self.wait("the upload's URL", lambda: self.upload_urls() and self.upload_urls()[0]))

    def resumed_offsets(self, since: int) -> list[int]:
        """The offsets of the PATCHes sent after request number ``since``, which must continue
        the same upload (no POST creating a new one)."""
        created = [r for r in self.requests[since:] if r.method == "POST"]
        assert not created, "a new upload was created instead of resuming"
        return [offset for offset, _ in self.patches(since)]

    def finishes_by_itself(self, url: str, src: Path, since: int) -> None:
        """The upload at ``url`` ends intact with no action on the page, continuing (after a HEAD)
        from the offset the server held, past the first chunk, after request number ``since``."""
        upload_id = url.rsplit("/", 1)[1]
        self.wait("the upload to finish by itself", lambda: self.finished_ids() == [upload_id], timeout=180)
        assert sha256(self.server.directory / upload_id) == sha256(src)
        offsets = self.resumed_offsets(since)
        asked = [r for r in self.requests[since:] if r.method == "HEAD" and r.url == url]
        assert asked, "the page did not ask the server for its offset"
        assert offsets and offsets[0] >= CHUNK, offsets

    def wait_for_acknowledged(self, at_least: int) -> int:
        """Until the server has acknowledged ``at_least`` bytes: the page sends a PATCH from an
        offset only after the server confirmed the one before it. (A HEAD from the test would end
        the page's PATCH in flight: one writer per upload.)"""
        return int(
            self.wait(
                f"{at_least} bytes acknowledged",
                lambda: max((o for o, _ in self.patches() if o >= at_least), default=0),
            )
        )

    def assert_same_origin(self) -> None:
        origins = {"/".join(r.url.split("/")[:3]) for r in self.requests}
        assert origins == {self.server.origin}, origins
        assert not [e for e in self.errors if "Content Security Policy" in e], self.errors

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def updir(tmp_path: Path) -> Path:
    d = tmp_path / "incoming"
    d.mkdir()
    return d


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if browser.missing() is not None:
        pytest.skip(str(browser.missing()))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture
def session(playwright: Playwright, tmp_path: Path, updir: Path) -> Iterator[Session]:
    with OnwardServer(updir, "--page-title", "Footage <drop> & co").start() as server:
        s = Session(playwright, server, tmp_path / "profile")
        try:
            yield s
            s.assert_same_origin()
        finally:
            s.close()


# --- the page as plain HTTP -------------------------------------------------------------------


def test_page_is_served_with_a_strict_csp_and_no_page_turns_it_off(updir: Path) -> None:
    with OnwardServer(updir, "--page-title", "Lab <data> & co").start() as server:
        page = httpx.get(server.origin + "/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert "unsafe" not in csp
        assert "<title>Lab &lt;data&gt; &amp; co</title>" in page.text
        assert 'data-endpoint="/files/"' in page.text and 'data-token="none"' in page.text
        assert "<script>" not in page.text and "style=" not in page.text  # nothing inline
        for name in ("upload.js", "upload.css", "licenses.txt", "icon.svg"):
            asset = httpx.get(f"{server.origin}/_page/{name}")
            assert asset.status_code == 200 and asset.content == (STATIC / name).read_bytes(), name
            again = httpx.get(
                f"{server.origin}/_page/{name}", headers={"If-None-Match": asset.headers["etag"]}
            )
            assert again.status_code == 304 and again.content == b""
        assert httpx.head(server.origin + "/").headers["content-length"] == str(len(page.content))
        assert httpx.get(server.origin + "/nothing").status_code == 404
        # the upload protocol is untouched underneath
        assert httpx.options(server.url).headers["tus-version"] == "1.0.0"
    with OnwardServer(updir, "--base-path", "/in/", "--token", "t").start() as server:
        page = httpx.get(server.origin + "/")  # the page itself needs no token
        assert page.status_code == 200
        assert 'data-endpoint="/in/"' in page.text and 'data-token="required"' in page.text
    with OnwardServer(updir, "--no-page").start() as server:
        assert httpx.get(server.origin + "/").status_code == 404
        assert httpx.get(server.origin + "/_page/upload.js").status_code == 404


def test_shipped_bundle_is_what_the_lock_file_builds(tmp_path: Path) -> None:
    """scripts/build-page from page/package-lock.json gives the shipped upload.js and licences
    byte for byte (esbuild is deterministic), so what ships is what the lock file pins."""
    lock = json.loads((ROOT / "page" / "package-lock.json").read_text())
    assert lock["packages"][""]["dependencies"]["tus-js-client"] == "4.3.1"  # pinned, not a range
    built = tmp_path / "built"
    done = subprocess.run(
        [str(ROOT / "scripts" / "build-page"), str(built)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    for name in ("upload.js", "licenses.txt"):
        assert (built / name).read_bytes() == (STATIC / name).read_bytes(), (
            f"src/onward/server/static/{name} differs from what page/package-lock.json builds: "
            "run scripts/build-page and commit the result"
        )
    licences = (STATIC / "licenses.txt").read_text()
    assert "tus-js-client 4.3.1 (MIT)" in licences and "Permission is hereby granted" in licences


# --- in the browser ---------------------------------------------------------------------------


@needs_browser
def test_two_64mib_files_arrive_intact(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [random_file(tmp_path / f"take{i}.mov", 64 * MiB, seed=i) for i in (1, 2)]
    browser.throttle_uploads(session.context, session.page, 48 * MiB)  # slow enough to be seen
    session.choose(*files)
    bars = session.page.locator("#active progress")
    session.wait(
        "a progress bar half-way", lambda: float(bars.first.get_attribute("value") or 0) / (64 * MiB) > 0.2
    )
    shot = tmp_path / "page-mid-upload.png"
    session.page.screenshot(path=str(shot), full_page=True)
    with capsys.disabled():
        print(f"\nscreenshot of the upload page mid-upload: {shot}")
    status = session.page.locator("#active .status").first.inner_text()
    assert " of 64.0 MiB" in status and "/s" in status and "left" in status, status
    ids = session.wait(
        "two finished uploads", lambda: len(session.finished_ids()) == 2 and session.finished_ids()
    )
    for upload_id in ids:
        meta = json.loads((session.server.directory / f"{upload_id}.json").read_text())
        name = base64.b64decode(meta["metadata"]["filename"]).decode()
        assert sha256(session.server.directory / upload_id) == sha256(tmp_path / name), name
    assert sorted(
        base64.b64decode(
            json.loads((session.server.directory / f"{i}.json").read_text())["metadata"]["filename"]
        ).decode()
        for i in ids
    ) == ["take1.mov", "take2.mov"]
    patches = session.patches()
    assert len(patches) == 8  # 2 files x 64 MiB / 16 MiB
    assert all(r.headers.get("upload-checksum", "").startswith("sha256 ") for _, r in patches)
    assert session.page.locator("#active li").count() == 0
    assert not session.errors, session.errors


@needs_browser
@pytest.mark.parametrize("how", ["reload", "closed tab reopened"])
def test_reload_half_way_then_choosing_the_file_again_resumes_from_the_servers_offset(
    session: Session, tmp_path: Path, how: str
) -> None:
    size = 64 * MiB
    src = random_file(tmp_path / "disk.img", size, seed=3)
    url = session.start_slowly(src)
    before = session.wait_for_acknowledged(size // 2)
    if how == "reload":
        session.page.reload()
    else:
        session.reopen()
    since = len(session.requests)
    unfinished = session.page.locator("#unfinished li")
    session.wait("the unfinished upload listed", lambda: unfinished.count() == 1)
    assert "disk.img" in unfinished.inner_text()
    session.wait("the server's offset shown", lambda: "on the server" in unfinished.inner_text())
    session.page.screenshot(path=str(tmp_path / "page-after-reload.png"), full_page=True)
    session.choose(src)
    session.wait("the upload to finish", lambda: session.finished_ids() == [url.rsplit("/", 1)[1]])
    offsets = session.resumed_offsets(since)
    assert offsets and offsets[0] >= before >= size // 2, (offsets, before)
    assert offsets == sorted(set(offsets)), offsets  # nothing sent twice
    sent_after_reload = size - offsets[0]
    assert sent_after_reload <= size // 2, sent_after_reload
    assert sha256(session.server.directory / url.rsplit("/", 1)[1]) == sha256(src)
    assert session.upload_urls() == []  # a finished upload is forgotten by the page


@needs_browser
def test_server_killed_and_restarted_mid_upload_page_resumes_by_itself(
    session: Session, tmp_path: Path
) -> None:
    src = random_file(tmp_path / "scan.tif", 64 * MiB, seed=4)
    url = session.start_slowly(src)
    session.wait_for_acknowledged(CHUNK)
    session.server.kill()
    since = len(session.requests)
    session.server.start()  # same port, same directory
    session.finishes_by_itself(url, src, since)


@needs_browser
def test_network_dropped_mid_upload_page_resumes_by_itself_when_it_is_back(
    session: Session, tmp_path: Path
) -> None:
    src = random_file(tmp_path / "survey.las", 64 * MiB, seed=11)
    url = session.start_slowly(src)
    session.wait_for_acknowledged(CHUNK)
    session.network.emulate(offline=True)  # the browser's network goes away (navigator.onLine false)
    row = session.page.locator("#active li")
    session.wait(
        "the lost-connection message", lambda: "connection to the server was lost" in row.inner_text()
    )
    since = len(session.requests)
    session.network.emulate(upload_rate=16 * MiB)  # back: the 'online' event restarts the upload
    session.finishes_by_itself(url, src, since)


@needs_browser
def test_wrong_or_missing_token_shows_a_clear_message(
    playwright: Playwright, tmp_path: Path, updir: Path
) -> None:
    src = random_file(tmp_path / "notes.bin", 1 * MiB, seed=5)
    with OnwardServer(updir, "--token", "s3cret-token").start() as server:
        s = Session(playwright, server, tmp_path / "profile")
        try:
            page = s.page
            assert page.locator("#token-form").is_visible() and page.locator("#uploader").is_hidden()
            page.fill("#token", "wrong")
            page.press("#token", "Enter")
            error = page.locator("#token-error")
            s.wait("the wrong-token message", lambda: "did not accept" in error.inner_text())
            assert page.locator("#uploader").is_hidden()
            page.fill("#token", "s3cret-token")
            page.click("#token-form button")
            s.wait("the uploader", lambda: page.locator("#uploader").is_visible())
            since = len(s.requests)
            s.choose(src)
            s.wait("the upload to finish", lambda: len(s.finished_ids()) == 1)
            uploads = [r for r in s.requests[since:] if "/files/" in r.url]
            assert uploads and all(r.headers.get("authorization") == "Bearer s3cret-token" for r in uploads)
            # the token is revoked (here: replaced) while the page is open: the next upload says so
            page.evaluate("sessionStorage.setItem('onward-token', 'revoked')")
            s.choose(random_file(tmp_path / "more.bin", 1 * MiB, seed=6))
            s.wait("the refused-token message", lambda: "did not accept" in error.inner_text())
            assert "refused the access token" in page.locator("#active .error").inner_text()
            assert page.locator("#token-form").is_visible()
            s.assert_same_origin()
        finally:
            s.close()


@needs_browser
def test_keyboard_pause_and_resume_at_320_px(playwright: Playwright, tmp_path: Path, updir: Path) -> None:
    src = random_file(tmp_path / "archive.tar", 48 * MiB, seed=7)
    with OnwardServer(updir).start() as server:
        s = Session(playwright, server, tmp_path / "profile", width=320)
        try:
            page = s.page
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.id") == "files"  # the chooser is reachable
            assert page.locator("label[for=files]").inner_text() == "Choose files…"
            browser.throttle_uploads(s.context, page, 8 * MiB)
            s.choose(src)
            button = page.locator("#active button")
            s.wait(
                "some progress", lambda: float(page.locator("#active progress").get_attribute("value") or 0)
            )
            assert page.locator("#active progress").get_attribute("aria-labelledby")
            button.focus()
            page.keyboard.press("Enter")
            s.wait("the paused state", lambda: button.inner_text() == "Resume")
            assert button.get_attribute("aria-label") == "Resume archive.tar"
            assert "are on the server" in page.locator("#active .status").inner_text()
            fits = page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            page.screenshot(path=str(tmp_path / "page-320px-paused.png"), full_page=True)
            assert fits, "the page scrolls sideways at 320 px"
            page.keyboard.press("Enter")
            upload_id = s.wait("the upload to finish", lambda: s.finished_ids() and s.finished_ids()[0])
            assert sha256(server.directory / upload_id) == sha256(src)
            s.assert_same_origin()
        finally:
            s.close()


def test_build_page_script_and_lock_are_in_the_repository() -> None:
    """The page is rebuilt by one command from pinned sources; node_modules are never shipped."""
    assert os.access(ROOT / "scripts" / "build-page", os.X_OK)
    assert (ROOT / "page" / "package-lock.json").exists()
    shipped = sorted(p.name for p in STATIC.iterdir())
    assert shipped == ["icon.svg", "index.html", "licenses.txt", "upload.css", "upload.js"]


@needs_browser
def test_each_failure_gets_its_own_message_and_the_other_files_go_on(
    playwright: Playwright, tmp_path: Path, updir: Path
) -> None:
    small = random_file(tmp_path / "small.bin", 1 * MiB, seed=8)
    big = random_file(tmp_path / "big.bin", 3 * MiB, seed=9)
    with OnwardServer(updir, "--max-size", "2M").start() as server:
        s = Session(playwright, server, tmp_path / "profile")
        try:
            s.choose(big, small)
            upload_id = s.wait("the small file to finish", lambda: s.finished_ids() and s.finished_ids()[0])
            assert sha256(server.directory / upload_id) == sha256(small)
            row = s.page.locator("#active li")
            message = "The file is larger than this server accepts (2.0 MiB)."
            s.wait("the big file's message", lambda: message in row.inner_text())
            assert "big.bin" in row.inner_text() and s.page.locator("#active li").count() == 1
            assert row.locator("button").is_hidden()  # retrying cannot help
            s.assert_same_origin()
        finally:
            s.close()


@needs_browser
def test_page_makes_no_request_to_another_origin(playwright: Playwright, tmp_path: Path, updir: Path) -> None:
    """Every request the page makes, from loading to a finished upload, goes to the server's own
    origin, and every one of them succeeds (no script, style or font from a CDN)."""
    src = random_file(tmp_path / "photo.raw", 2 * MiB, seed=10)
    with OnwardServer(updir).start() as server:
        s = Session(playwright, server, tmp_path / "profile")
        failed: list[str] = []
        s.page.on("requestfailed", lambda r: failed.append(r.url))
        try:
            s.choose(src)
            s.wait("the upload to finish", lambda: len(s.finished_ids()) == 1)
            s.page.goto(server.origin + "/_page/licenses.txt")
            s.assert_same_origin()
            assert {r.resource_type for r in s.requests} >= {"document", "script", "stylesheet", "xhr"}
            assert not failed and not s.errors, (failed, s.errors)
        finally:
            s.close()

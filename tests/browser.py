"""Debian's Chromium, headless, driven by Playwright for Python: for the upload page's tests and bench.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` (``executable_path``)
with a fresh profile directory and the switches that keep it from calling home. ``missing()``
says why a browser cannot run (no Playwright, no Chromium), or None.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SWITCHES = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return "Debian's chromium is not installed (apt-get install chromium chromium-driver)"
    return None


def launch(playwright: Playwright, profile: Path, *, width: int = 1024, height: int = 768) -> BrowserContext:
    """A browser context on a new, empty profile directory (its localStorage is the page's
    resume state, so a test gets a clean one)."""
    profile.mkdir(parents=True, exist_ok=False)
    return playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        args=SWITCHES,
        headless=True,
        viewport={"width": width, "height": height},
    )


class Network:
    """The page's network as DevTools emulates it: an upload rate limit, or offline."""

    def __init__(self, context: BrowserContext, page: Page) -> None:
        self.cdp = context.new_cdp_session(page)
        self.cdp.send("Network.enable")

    def emulate(self, *, upload_rate: int = -1, offline: bool = False) -> None:
        self.cdp.send(
            "Network.emulateNetworkConditions",
            {"offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": upload_rate},
        )


def throttle_uploads(context: BrowserContext, page: Page, bytes_per_second: int) -> Network:
    """Limit what the page sends, so a test can act mid-upload."""
    network = Network(context, page)
    network.emulate(upload_rate=bytes_per_second)
    return network

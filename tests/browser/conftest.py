"""Browser fixtures: Playwright driving Debian's chromium against a real server's HTTP port."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONSOLE_DIST = PROJECT_ROOT / "console" / "dist" / "index.html"
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}

# A 2-core CI machine runs the server, the database and chromium side by side: Playwright's
# waits poll until the page shows what a test expects, and this is only how long they may poll.
expect.set_options(timeout=30_000)


def _require(ok: bool, message: str) -> None:
    """Missing here skips; CI installs both (make setup), so there it fails instead."""
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest_asyncio.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    executable = shutil.which("chromium")
    _require(executable is not None, "chromium is not installed (make setup installs it)")
    _require(CONSOLE_DIST.is_file(), "the console is not built (make setup builds it)")
    async with async_playwright() as playwright:
        # Debian's chromium, never a downloaded browser; no sandbox: CI runs as root.
        launched = await playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    # UTC and en-US: the page shows times in the browser's zone; the screenshots stay the same.
    ctx = await browser.new_context(
        viewport=VIEWPORT, timezone_id="UTC", locale="en-US", accept_downloads=True
    )
    try:
        yield ctx
    finally:
        await ctx.close()


@pytest_asyncio.fixture
async def page(context: BrowserContext) -> AsyncIterator[Page]:
    yield await context.new_page()

"""Headless Chromium for browser tests: the system's Chromium driven by Playwright.

Never downloads a browser build: it uses Debian's ``chromium`` package (``.ci/run`` installs it)
and skips the test, saying why, when no Chromium is installed.

```python
with launch() as browser:
    page = browser.new_page()
    page.goto(url)

async with launch_async() as browser:  # the same, for async tests
    page = await browser.new_page()
```
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser as AsyncBrowser
from playwright.async_api import async_playwright
from playwright.sync_api import Browser, sync_playwright

__all__ = ["CHROMIUM_ARGS", "find_chromium", "launch", "launch_async"]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def find_chromium() -> str | None:
    """The path of an installed Chromium, or None."""
    for candidate in _CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium_or_skip() -> str:
    """The installed Chromium's path; skips the test, saying how to install one, when none is."""
    executable = find_chromium()
    if executable is None:
        pytest.skip(
            f"Chromium is not installed (looked for {', '.join(_CANDIDATES)} and chromium on "
            "PATH); install Debian's chromium package, as .ci/run does"
        )
    return executable


@contextmanager
def launch() -> Iterator[Browser]:
    """A headless Chromium, closed afterwards; skips the test when none is installed."""
    executable = _chromium_or_skip()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@asynccontextmanager
async def launch_async() -> AsyncIterator[AsyncBrowser]:
    """``launch`` for async tests (Playwright's async API)."""
    executable = _chromium_or_skip()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()

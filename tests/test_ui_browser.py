"""A real browser on the configuration page: headless Chromium (Debian's ``chromium``, driven by
Playwright) loads it from ``hipchat-addon serve`` with a signed URL, changes the setting through the
form, and ``/remember`` then answers with the new value. Skipped only when Chromium is missing.

Screenshots of the configuration page and the panel go to ``tmp_path`` (or to
``ADDON_TEST_SCREENSHOTS`` when set, to look at them).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from addon.testing import FakeHipChat
from tests.browser import launch_async
from tests.helpers import REPO

pytestmark = [pytest.mark.anyio, pytest.mark.browser, pytest.mark.e2e]


def _serve(tmp_path: Path, hipchat: FakeHipChat, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ADDON_BASE_URL": f"http://127.0.0.1:{port}",
        "ADDON_STORE_URL": f"sqlite:///{tmp_path / 'addon.db'}",
        "ADDON_HIPCHAT_HOSTS": hipchat.base_url.removeprefix("http://"),
        "ADDON_INTEGRATIONS_PATH": str(REPO / "integrations"),
        "ADDON_CAPABILITIES_PATH": str(REPO / "capabilities"),
    }
    command = [sys.executable, "-m", "addon", "serve", "--port", str(port)]
    return subprocess.Popen(command, cwd=tmp_path, env=env)


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@pytest.fixture
async def served_addon(
    tmp_path: Path, live_hipchat: FakeHipChat, unused_port: int
) -> AsyncIterator[httpx.AsyncClient]:
    """``hipchat-addon serve`` with the repository's integrations, on a real socket."""
    server = _serve(tmp_path, live_hipchat, unused_port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{unused_port}") as addon:
            deadline = time.monotonic() + 30
            while True:
                assert server.poll() is None, "the add-on exited early"
                try:
                    if (await addon.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the add-on did not start"
                    await asyncio.sleep(0.1)
            yield addon
    finally:
        _stop(server)


async def test_the_configuration_page_changes_what_a_command_says(
    served_addon: httpx.AsyncClient, live_hipchat: FakeHipChat, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("ADDON_TEST_SCREENSHOTS") or tmp_path)
    room = await live_hipchat.install(served_addon, room_id=1)
    await live_hipchat.send_message(room, "/remember standup 9:30 in the blue room")
    configure = await live_hipchat.ui_url(room, "configurable")
    panel = await live_hipchat.ui_url(room, "remember-panel")

    def signed(url: str) -> str:
        return f"{url}?{urlencode({'signed_request': live_hipchat.signed_request(room)})}"

    async with launch_async() as browser:
        page = await browser.new_page(viewport={"width": 480, "height": 320})
        await page.goto(signed(configure))
        field = page.get_by_label("Reply")
        assert await field.input_value() == "Remembered"
        await field.fill("Noted in the browser:")
        await page.get_by_role("button", name="Save").click()
        await page.get_by_role("status").filter(has_text="Saved").wait_for(timeout=10_000)
        await page.screenshot(path=str(shots / "configuration.png"))
        await page.goto(signed(panel))
        await page.get_by_text("9:30 in the blue room").wait_for(timeout=10_000)
        await page.screenshot(path=str(shots / "panel.png"))

    await live_hipchat.send_message(room, "/remember lunch noon")
    assert live_hipchat.notifications(1)[-1] == "Noted in the browser: lunch."

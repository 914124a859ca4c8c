"""The playground in a real browser: ``hipchat-addon dev`` (a real subprocess, with reload) on free
ports, driven by headless Chromium (Debian's ``chromium``, through Playwright) as a user would:
install by clicking, type commands, see replies, a red failure notice, a card and a glance, and
walk the user-token approval by clicking. Skipped only when Chromium is missing.

The screenshot goes to ``tmp_path``, and to ``docs/playground.png`` when ``ADDON_TEST_SCREENSHOTS``
is set (the README shows it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser import launch
from tests.helpers import REPO

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

TROUBLE = """
from addon import Integration, RoomMessage

integration = Integration(key="trouble", name="Trouble", scopes=["send_notification"])


@integration.command("boom", help="Raises", usage="/boom")
async def boom(message: RoomMessage) -> None:
    raise RuntimeError("boom")


@integration.command("whoami", help="Asks HipChat who you are, as you", usage="/whoami")
async def whoami(message: RoomMessage) -> None:
    user = await (await message.user_client()).get_user(message.sender.id)
    await message.reply(f"you are user {user['id']}")
"""


def _integrations(folder: Path) -> Path:
    """The repository's echo, card and remember, and a failing and a user-token command."""
    folder.mkdir()
    for name in ("echo.py", "card.py", "remember.py"):
        shutil.copy(REPO / "integrations" / name, folder / name)
    shutil.copytree(REPO / "integrations" / "remember", folder / "remember")
    (folder / "trouble.py").write_text(TROUBLE, encoding="utf-8")
    return folder


def _wait_for(url: str, dev: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert dev.poll() is None, "hipchat-addon dev exited early"
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer"
        time.sleep(0.2)


@pytest.fixture
def playground(tmp_path: Path, unused_port: int) -> Iterator[str]:
    """``hipchat-addon dev`` on free ports; the playground's URL."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        hipchat_port = sock.getsockname()[1]
    env = {**os.environ, "ADDON_CAPABILITIES_PATH": str(REPO / "capabilities")}
    env.pop("ADDON_STORE_URL", None)
    command = [
        *(sys.executable, "-m", "addon", "dev", "-i", str(_integrations(tmp_path / "integ"))),
        *("--port", str(unused_port), "--hipchat-port", str(hipchat_port)),
    ]
    dev = subprocess.Popen(command, cwd=tmp_path, env=env)
    try:
        _wait_for(f"http://127.0.0.1:{unused_port}/healthz", dev)
        _wait_for(f"http://127.0.0.1:{hipchat_port}/playground", dev)
        yield f"http://127.0.0.1:{hipchat_port}/playground"
    finally:
        dev.terminate()
        try:
            dev.wait(timeout=20)
        except subprocess.TimeoutExpired:
            dev.kill()
            dev.wait()
    assert (tmp_path / ".hipchat-addon-dev" / "store.sqlite3").is_file()


def test_a_room_in_the_browser(playground: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    with launch() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        page.goto(playground)
        page.locator("#install").get_by_role("button", name="Install").click()
        messages = page.locator("#messages")
        expect(messages).to_contain_text("Installed (room 1, server-side flow)")
        expect(page.locator(".glance")).to_contain_text("0 notes")

        composer = page.locator("#composer input[name=text]")
        composer.fill("/boom")
        composer.press("Enter")
        expect(messages.locator(".color-red")).to_contain_text("/boom failed")

        composer.fill("/whoami")
        composer.press("Enter")
        link = messages.locator("a[href*='/oauth/approve']").last
        with page.context.expect_page() as opened:
            link.click()
        consent = opened.value
        expect(consent.get_by_text("User 1001")).to_be_visible()
        consent.get_by_role("link", name="Approve").click()
        expect(consent.get_by_role("heading", name="Approved")).to_be_visible()
        consent.close()
        composer.fill("/whoami")
        composer.press("Enter")
        expect(messages).to_contain_text("you are user 1001")

        composer.fill("/remember standup 9:30 in the blue room")
        composer.press("Enter")
        page.get_by_title("Load the glances again").click()
        expect(page.locator(".glance")).to_contain_text("1 note")
        page.locator(".glance-button").click()
        panel = page.frame_locator("#panel")
        expect(panel.get_by_text("9:30 in the blue room")).to_be_visible()

        composer.fill("/echo hello")
        composer.press("Enter")
        expect(messages.locator(".notification .text").last).to_have_text("hello", timeout=2000)
        composer.fill("/card Deploy to production")
        composer.press("Enter")
        expect(messages.locator(".card").last).to_contain_text("Deploy to production")
        webhook = page.locator("#log details").filter(has_text="POST /webhook/").first
        webhook.locator("summary").click()
        expect(webhook.locator("pre")).to_contain_text('"sub": 1001')

        page.screenshot(path=str(tmp_path / "playground.png"))
        if os.environ.get("ADDON_TEST_SCREENSHOTS"):
            page.screenshot(path=str(REPO / "docs" / "playground.png"))

"""The landing page at ``GET /``: commands, UI extensions, the install form; all escaped."""

from __future__ import annotations

import dataclasses
import html
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.sync_api import Route

from addon.app import create_app
from addon.context import RoomMessage
from addon.descriptor import load_capabilities
from addon.integrations import Integration, help_integration
from addon.landing import LandingPage, render_landing
from addon.settings import Settings
from addon.store import Store
from addon.testing import FakeHipChat
from tests.browser import launch
from tests.helpers import REPO

HOSTILE = '<script>alert("x")</script>&'


@pytest.fixture
async def landing_client(
    settings: Settings, sqlite_store: Store, hipchat: FakeHipChat
) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the add-on with the example integrations, on SQLite only."""
    app = create_app(settings, store=sqlite_store, transport=hipchat.transport())
    async with hipchat.connect(app, settings.base_url) as client:
        yield client
    await app.state.addon.aclose()


def command_rows(page: str) -> list[tuple[str, ...]]:
    """(usage, help, integration name) of each command row, unescaped."""
    rows = re.findall(
        r'<li class="command"><code class="usage">(.*?)</code>'
        r'<span class="help">(.*?)</span><span class="owner">(.*?)</span></li>',
        page,
    )
    return [tuple(html.unescape(cell) for cell in row) for row in rows]


@pytest.mark.anyio
async def test_every_loaded_command_is_listed_with_its_usage_and_help(
    landing_client: httpx.AsyncClient,
) -> None:
    page = await landing_client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert command_rows(page.text) == [
        ("/card <title>", "Show a card", "Card"),
        ("/echo <text>", "Repeat the text", "Echo"),
        ("/forget <key>", "Forget a value", "Remember"),
        ("/help", "List the commands", "Help"),
        ("/ping <query>", "Answer pong, and count how many times it was pinged.", "ping"),
        ("/recall <key>", "Say a remembered value", "Remember"),
        ("/remember <key> <value>", "Remember a value", "Remember"),
    ]


@pytest.mark.anyio
async def test_the_page_shows_the_descriptor_url_and_the_install_form(
    landing_client: httpx.AsyncClient, settings: Settings
) -> None:
    page = (await landing_client.get("/")).text
    assert f'<code class="url">{settings.base_url}/atlassian-connect.json</code>' in page
    form = re.search(r'<form action="/install" method="get".*?</form>', page, re.S)
    assert form is not None
    assert re.findall(r'<input name="(\w+)"', form.group(0)) == ["hipchat", "room"]
    assert "<button" in form.group(0)


@pytest.mark.anyio
async def test_the_page_runs_no_script_and_cannot_be_framed(
    landing_client: httpx.AsyncClient,
) -> None:
    page = await landing_client.get("/")
    assert "<script" not in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy
    assert "frame-ancestors 'none'" in policy


@pytest.mark.anyio
async def test_hostile_names_are_escaped_everywhere(
    settings: Settings, sqlite_store: Store, hipchat: FakeHipChat
) -> None:
    hostile = Integration("hostile", name=HOSTILE)

    @hostile.command("hostile", help=HOSTILE, usage=f"/hostile {HOSTILE}")
    async def handler(message: RoomMessage) -> None: ...

    @hostile.on_message(r"<b>(?P<x>\w+)")
    async def pattern(message: RoomMessage) -> None: ...

    capabilities = dataclasses.replace(
        load_capabilities(REPO / "capabilities"),
        name=HOSTILE,
        description=HOSTILE,
        vendor={"name": HOSTILE, "url": 'https://x.invalid/"onmouseover="alert(1)'},
        extensions={"glance": [glance("g", HOSTILE)]},
    )
    app = create_app(
        settings,
        store=sqlite_store,
        transport=hipchat.transport(),
        capabilities=capabilities,
        integrations=[hostile, help_integration([hostile])],
    )
    async with hipchat.connect(app, settings.base_url) as client:
        page = (await client.get("/")).text
    await app.state.addon.aclose()
    assert "<script" not in page and "<b>" not in page
    assert '"onmouseover' not in page
    escaped = html.escape(HOSTILE)
    assert page.count(escaped) >= 7  # title, h1, lead, help, usage, owner, glance, vendor
    assert ("/hostile " + HOSTILE, HOSTILE, HOSTILE) in command_rows(page)


def glance(key: str, name: str) -> dict[str, Any]:
    return {
        "key": key,
        "name": {"value": name},
        "queryUrl": f"/glance/{key}",
        "target": key,
        "icon": {"url": "/icon.png", "url@2x": "/icon@2x.png"},
    }


def render(capabilities: dict[str, Any], integrations: list[Integration] | None = None) -> str:
    return render_landing(
        LandingPage(
            capabilities=load_capabilities(REPO / "capabilities"),
            descriptor={"capabilities": capabilities},
            descriptor_url="https://addon.example/atlassian-connect.json",
            integrations=integrations or [],
        )
    )


def test_the_ui_extensions_the_descriptor_declares_are_listed() -> None:
    page = render(
        {
            "glance": [glance("weather", "Weather")],
            "webPanel": [{"key": "p", "name": {"value": "Forecast"}, "url": "/panel"}],
            "dialog": [{"key": "d", "title": {"value": "Pick a city"}, "url": "/dialog"}],
            "action": [{"key": "a", "name": {"value": "Share weather"}, "target": "d"}],
            "externalPage": [{"key": "e", "name": {"value": "Weather map"}, "url": "/map"}],
            "configurable": {"url": "/configure"},
            "webhook": [{"event": "room_message", "url": "/webhook/room_message"}],
        }
    )
    section = page[page.index('<section id="extensions">') : page.index('<section id="install">')]
    titles = re.findall(r"<h3>(.*?)</h3>", section)
    assert titles == ["Glances", "Web panels", "Dialogs", "Actions", "Pages", "Configuration page"]
    for name in ("Weather", "Forecast", "Pick a city", "Share weather", "Weather map"):
        assert f"<li>{name}</li>" in section
    assert "webhook" not in section


def test_without_ui_extensions_there_is_no_extensions_section() -> None:
    page = render({"webhook": [], "glance": []})
    assert 'id="extensions"' not in page
    assert "No commands are loaded." in page


def test_pattern_and_event_handlers_are_mentioned() -> None:
    watcher = Integration("watcher", name="Watcher")

    @watcher.on_message(r"(?i)\bdeploy\b")
    async def deploys(message: RoomMessage) -> None: ...

    @watcher.on_event("room_enter")
    async def greet(message: object) -> None: ...

    page = render({}, [watcher])
    assert (
        "<li><strong>Watcher</strong> reacts to messages matching <code>(?i)\\bdeploy\\b</code>"
        in page
    )
    assert "<li><strong>Watcher</strong> listens for <code>room_enter</code></li>" in page


@contextmanager
def served_addon(tmp_path: Path) -> Iterator[str]:
    """``hipchat-addon serve`` on a free port, in a subprocess; yields its base URL."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "ADDON_BASE_URL": base_url,
        "ADDON_STORE_URL": f"sqlite:///{tmp_path / 'addon.db'}",
        "ADDON_CAPABILITIES_PATH": str(REPO / "capabilities"),
        "ADDON_INTEGRATIONS_PATH": str(REPO / "integrations"),
    }
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "addon", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as output:
        server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=output, stderr=output)
    try:
        wait_until_healthy(base_url, server, log)
        yield base_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_healthy(base_url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"hipchat-addon serve exited with {server.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"hipchat-addon serve did not answer /healthz within 30 s:\n{log.read_text()}")


@pytest.mark.browser
def test_the_landing_page_in_a_browser(tmp_path: Path) -> None:
    with served_addon(tmp_path) as base_url, launch() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        install_pages: list[str] = []

        def hipchat_install_page(route: Route) -> None:
            # Stands in for HipChat's install page: nothing leaves the machine.
            install_pages.append(route.request.url)
            route.fulfill(status=200, content_type="text/html", body="<h1>HipChat</h1>")

        page.route("https://www.hipchat.com/**", hipchat_install_page)
        page.goto(base_url + "/")
        commands = page.locator("#commands .command")
        assert commands.first.is_visible()
        assert "/echo <text>" in commands.all_inner_texts()[1]
        # The UI extensions integrations/remember.py declares are listed, each under its kind.
        cards = [" ".join(card.split()) for card in page.locator(".extension").all_inner_texts()]
        for kind, name in [("Glances", "Notes"), ("Web panels", "Notes"), ("Dialogs", "Remember")]:
            assert any(card.startswith(kind) and card.endswith(name) for card in cards), cards
        page.screenshot(path=tmp_path / "landing.png", full_page=True)
        if os.environ.get("ADDON_TEST_SCREENSHOTS"):  # to refresh the README's screenshot
            page.screenshot(path=REPO / "docs" / "landing.png", full_page=True)

        page.fill("input[name=room]", "Ops & Dev")
        page.click("form.install button[type=submit]")
        page.wait_for_url("https://www.hipchat.com/**")
    descriptor = f"{base_url}/atlassian-connect.json"
    assert install_pages == [
        "https://www.hipchat.com/addons/install?"
        + urlencode({"url": descriptor, "room": "Ops & Dev"})
    ]
    assert (tmp_path / "landing.png").stat().st_size > 10_000


def test_extension_entries_are_named_by_name_title_or_key() -> None:
    page = render(
        {
            "webPanel": [
                {"key": "by-string", "name": "A plain name"},
                {"key": "by-key-only"},
                "not an entry",
            ],
        }
    )
    section = page[page.index('<section id="extensions">') : page.index('<section id="install">')]
    assert re.findall(r"<li>(.*?)</li>", section) == ["A plain name", "by-key-only"]


def test_the_vendor_is_linked_only_when_its_url_is_http() -> None:
    capabilities = load_capabilities(REPO / "capabilities")
    for vendor, expected in [
        (
            {"name": "Acme", "url": "https://acme.example/"},
            ' by <a href="https://acme.example/">Acme',
        ),
        ({"name": "Acme", "url": "javascript:alert(1)"}, " by Acme &middot;"),
        ({"name": "Acme"}, " by Acme &middot;"),
    ]:
        page = render_landing(
            LandingPage(
                capabilities=dataclasses.replace(capabilities, vendor=vendor),
                descriptor={},
                descriptor_url="https://addon.example/atlassian-connect.json",
                integrations=[],
            )
        )
        assert expected in page
        assert "javascript:" not in page

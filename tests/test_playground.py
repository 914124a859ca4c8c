"""The playground's server side, in-process: both install flows, room and global installations,
the event log, the consent page, and what it lets through of the add-on's HTML.
The browser walk-through is ``test_playground_browser.py``."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from addon.app import create_app
from addon.settings import Settings
from addon.store.sqlite import SQLiteStore
from addon.testing import AppTransport, FakeHipChat
from addon.testing.playground import PlaygroundRoom, playground_app
from addon.testing.playground.render import clean_html, text_html

pytestmark = pytest.mark.anyio


Browser = tuple[httpx.AsyncClient, PlaygroundRoom]


@pytest.fixture
async def browser(
    settings: Settings, sqlite_store: SQLiteStore, hipchat: FakeHipChat
) -> AsyncIterator[Browser]:
    """A client on the playground, whose fake HipChat and add-on talk to each other in-process."""
    async with _playground(settings, sqlite_store, hipchat) as found:
        yield found


@contextlib.asynccontextmanager
async def _playground(
    settings: Settings, store: SQLiteStore, hipchat: FakeHipChat
) -> AsyncIterator[Browser]:
    apps: dict[str, ASGIApp] = {}

    async def playground(scope: Scope, receive: Receive, send: Send) -> None:
        await apps["web"](scope, receive, send)

    addon = create_app(settings, store=store, transport=httpx.ASGITransport(playground))
    room = PlaygroundRoom(hipchat, settings.base_url, transport=AppTransport(addon))
    apps["web"] = playground_app(room)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(apps["web"]), base_url=hipchat.base_url
    ) as client:
        yield client, room
    await room.addon.aclose()
    await addon.state.addon.aclose(grace=5)


async def test_a_global_client_side_installation_answers_in_every_room(
    browser: Browser,
) -> None:
    client, room = browser
    answer = await client.post("/playground/install", data={"scope": "global", "flow": "client"})
    assert answer.json() == {"ok": True, "error": ""}
    await client.post("/playground/select", data={"room": "2", "user": "1002"})
    await client.post("/playground/send", data={"text": "/echo from room two"})

    fragments = (await client.get("/playground/fragments")).json()
    assert "global · client" in fragments["installs"]
    assert "User 1002" in fragments["messages"] and ">from room two<" in fragments["messages"]
    install = next(e for e in room.log if e.kind == "install")
    assert install.method == "GET" and install.status == 302
    assert [call.path for call in install.calls][-1] == "/v2/oauth/token"
    webhook = next(e for e in room.log if e.kind == "webhook")
    assert webhook.claims is not None and webhook.claims["sub"] == 1002

    oauth_id = room.installs[0].installed.oauth_id
    assert (await client.post("/playground/uninstall", data={"oauth_id": oauth_id})).json()["ok"]
    assert room.installs == [] and any(e.kind == "uninstall" for e in room.log)


async def test_a_server_side_room_installation_stays_in_its_room(
    browser: Browser,
) -> None:
    client, room = browser
    await client.post("/playground/install", data={"scope": "room", "flow": "server"})
    await client.post("/playground/select", data={"room": "2"})
    await client.post("/playground/send", data={"text": "/echo anyone?"})
    assert room.hipchat.notifications(2) == []
    assert "Nothing is installed in this room" in (await client.get("/playground")).text
    await client.post("/playground/select", data={"room": "1"})
    await client.post("/playground/send", data={"text": "/card Ship it"})
    fragments = (await client.get("/playground/fragments")).json()
    assert 'class="card card-compact' in fragments["messages"]

    oauth_id = room.installs[0].installed.oauth_id
    assert (await client.post("/playground/uninstall", data={"oauth_id": oauth_id})).json()["ok"]
    uninstall = room.log[-1]
    assert (uninstall.kind, uninstall.method, uninstall.status) == ("uninstall", "DELETE", 204)
    missing = await client.post("/playground/uninstall", data={"oauth_id": oauth_id})
    assert missing.status_code == 404


async def test_the_consent_page_approves_as_the_picked_user_and_hides_tokens(
    browser: Browser,
) -> None:
    client, room = browser
    await client.post("/playground/install", data={"scope": "room", "flow": "server"})
    installed = room.installs[0].installed
    query = {
        "response_type": "code",
        "client_id": installed.oauth_id,
        "redirect_uri": f"{room.addon_url}/oauth/callback",
        "state": "s",
    }
    page = await client.get("/users/authorize", params=query)
    assert "User 1001" in page.text and "Approve" in page.text
    declined = await client.get("/users/authorize", params={**query, "decision": "decline"})
    assert declined.headers["location"].endswith("?error=access_denied&state=s")
    await client.post("/playground/select", data={"user": "1003"})
    approved = await client.get("/users/authorize", params={**query, "decision": "approve"})
    assert approved.status_code == 302 and "code=" in approved.headers["location"]
    assert room.hipchat.approving_user == "1003"

    room.record_call("GET", "/v2/oauth/token/abc", 200, 1.0)  # as the recorder logs it
    assert (await client.get("/v2/oauth/token/secret-token")).status_code == 401
    assert "secret-token" not in (await client.get("/playground/fragments")).text


async def test_replies_and_rest_notifications_are_told_apart(
    settings: Settings, sqlite_store: SQLiteStore, hipchat: FakeHipChat
) -> None:
    at_once = dataclasses.replace(settings, reply_window=0)
    async with _playground(at_once, sqlite_store, hipchat) as (client, room):
        await client.post("/playground/install", data={"scope": "room"})
        await client.post("/playground/send", data={"text": "/ping later"})
        deadline = time.monotonic() + 10
        while not hipchat.notifications(1):
            assert time.monotonic() < deadline, "the REST reply never came"
            await anyio.sleep(0.05)
        messages = (await client.get("/playground/fragments")).json()["messages"]
        assert 'data-via="REST"' in messages and 'data-via="reply"' not in messages
        rest = next(e for e in room.log if e.path == "/v2/room/1/notification")
        assert rest.direction == "to HipChat" and rest.status == 204


async def test_a_glance_push_updates_the_sidebar(browser: Browser) -> None:
    client, room = browser
    await client.post("/playground/install", data={"scope": "room"})
    assert "0 notes" in (await client.get("/playground/fragments")).json()["sidebar"]
    installed = room.installs[0].installed
    dialog = await room.hipchat.page(installed, "remember-add")
    added = await dialog.call("POST", "/api/notes", json={"key": "standup", "value": "9:30"})
    assert added.json()["ok"]
    assert "1 note<" in (await client.get("/playground/fragments")).json()["sidebar"]
    assert (
        await client.get(f"/playground/open/{installed.oauth_id}/remember-panel")
    ).status_code == 302
    assert (await client.get(f"/playground/open/{installed.oauth_id}/nope")).status_code == 404


async def test_a_refused_install_and_bad_requests_are_said_plainly(browser: Browser) -> None:
    client, room = browser
    room.hipchat.fail_token_endpoint(401)
    refused = await client.post("/playground/install", data={"scope": "room"})
    assert refused.status_code == 502 and refused.json()["error"].startswith("install answered 4")
    assert (
        room.installs == []
        and "Failed: install answered 4" in (await client.get("/playground")).text
    )
    empty = await client.post("/playground/send", data={"text": "  "})
    assert empty.status_code == 400 and empty.json() == {
        "ok": False,
        "error": "Type a message first",
    }
    assert (await client.get("/atlassian-connect/all.js")).status_code == 200
    assert (await client.get("/atlassian-connect/other.js")).status_code == 404


def test_html_keeps_hipchats_tags_only() -> None:
    dirty = '<b onclick="x()">hi</b><script>alert(1)</script><a href="javascript:x">l</a><i>x'
    assert clean_html(dirty) == ('<b>hi</b>alert(1)<a target="_blank" rel="noopener">l</a><i>x')
    linked = str(text_html("@ann see https://example.com/a?b=1&c=2 <b>"))
    assert linked.startswith("<b>@ann</b> see <a href=")
    assert "&lt;b&gt;" in linked and re.search(r'href="https://example.com/a\?b=1&amp;c=2"', linked)

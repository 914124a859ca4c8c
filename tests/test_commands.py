"""Slash commands end to end: the fake HipChat types in a room, the add-on answers."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from starlette.applications import Starlette

from addon import Integration, RoomMessage
from addon.app import create_app
from addon.integrations import help_integration, load_integrations
from addon.jwt_auth import sign_jwt
from addon.settings import Settings
from addon.store import Store
from addon.testing import FakeHipChat, Installed
from tests.helpers import REPO, eventually

pytestmark = pytest.mark.anyio

trouble = Integration(key="trouble", name="Trouble")
# What /slow waits on (the ``slow_gate`` fixture makes it): the test opens it once the webhook
# response is in, so the handler outlives the reply window without a sleep.
_gates: dict[str, asyncio.Event] = {}


@trouble.command("slow", help="Answers after the reply window")
async def slow(message: RoomMessage) -> None:
    await _gates["slow"].wait()
    await message.reply("late but here")


@trouble.command("boom", help="Raises")
async def boom(message: RoomMessage) -> None:
    raise RuntimeError("internal detail with oauthSecret=hunter2")


@trouble.command("hang", help="Never answers")
async def hang(message: RoomMessage) -> None:
    await asyncio.sleep(60)


@trouble.command("count", help="Counts its runs")
async def count(message: RoomMessage) -> None:
    runs = await message.storage.get("runs", 0)
    assert isinstance(runs, int)
    await message.storage.set("runs", runs + 1)
    await message.reply(f"run {runs + 1}")


@trouble.command("whoami", help="Asks HipChat who you are, as you")
async def whoami(message: RoomMessage) -> None:
    client = await message.user_client()
    user = await client.get_user(message.sender.id)
    await message.reply(f"you are user {user['id']}")


def integrations() -> list[Integration]:
    loaded = [*load_integrations(REPO / "integrations"), trouble]
    return [*loaded, help_integration(loaded)]


@pytest.fixture
def reply_window() -> float:
    """Whole seconds: a quick command answers well inside it, however loaded the machine."""
    return 5.0


@pytest.fixture
def slow_gate() -> asyncio.Event:
    _gates["slow"] = asyncio.Event()
    return _gates["slow"]


@pytest.fixture
async def commands_app(
    settings: Settings, store: Store, hipchat: FakeHipChat, reply_window: float
) -> AsyncIterator[Starlette]:
    quick = dataclasses.replace(settings, reply_window=reply_window, command_timeout=1.0)
    app = create_app(quick, store=store, transport=hipchat.transport(), integrations=integrations())
    yield app
    await app.state.addon.aclose(grace=2)


@pytest.fixture
async def room(
    commands_app: Starlette, hipchat: FakeHipChat, settings: Settings
) -> AsyncIterator[Installed]:
    async with hipchat.connect(commands_app, settings.base_url) as addon:
        yield await hipchat.install(addon, room_id=1)


async def test_echo_answers_in_the_webhook_response(hipchat: FakeHipChat, room: Installed) -> None:
    response = await hipchat.send_message(room, "/echo hello")

    assert response is not None and response.status_code == 200
    assert response.json()["message"] == "hello"
    assert hipchat.notifications(room) == ["hello"]


@pytest.mark.parametrize("reply_window", [0.01])  # /slow waits on its gate: past any window
async def test_a_slow_reply_arrives_through_the_rest_api(
    hipchat: FakeHipChat, room: Installed, slow_gate: asyncio.Event
) -> None:
    response = await hipchat.send_message(room, "/slow")

    assert response is not None and response.status_code == 204
    slow_gate.set()
    await eventually(lambda: hipchat.notifications(room) == ["late but here"])
    posted = hipchat.api.requests_for("send_room_notification")
    assert posted[-1].headers["authorization"].startswith("Bearer ")


async def test_a_raising_command_gives_a_red_notice_without_details(
    hipchat: FakeHipChat, room: Installed, caplog: pytest.LogCaptureFixture
) -> None:
    await hipchat.send_message(room, "/boom")

    await eventually(lambda: len(hipchat.notifications(room)) == 1)
    notice = hipchat.notification_bodies(room)[0]
    assert notice["color"] == "red"
    assert "/boom" in notice["message"]
    assert "hunter2" not in notice["message"] and "Traceback" not in notice["message"]
    assert any("RuntimeError" in (r.exc_text or "") or r.exc_info for r in caplog.records)


@pytest.mark.parametrize("reply_window", [0.01])  # /hang never ends: the notice goes by REST
async def test_a_hanging_command_times_out_and_the_room_is_told(
    hipchat: FakeHipChat, room: Installed
) -> None:
    await hipchat.send_message(room, "/hang")

    await eventually(lambda: len(hipchat.notifications(room)) == 1)
    notice = hipchat.notification_bodies(room)[0]
    assert notice["color"] == "red" and "/hang" in notice["message"]


async def test_the_same_message_delivered_twice_runs_once(
    hipchat: FakeHipChat, room: Installed
) -> None:
    first = await hipchat.send_message(room, "/count", message_id="m-1")
    second = await hipchat.send_message(room, "/count", message_id="m-1")
    third = await hipchat.send_message(room, "/count", message_id="m-2")

    assert first is not None and second is not None and third is not None
    assert (first.status_code, second.status_code, third.status_code) == (200, 204, 200)
    assert hipchat.notifications(room) == ["run 1", "run 2"]


async def test_help_lists_every_command(hipchat: FakeHipChat, room: Installed) -> None:
    await hipchat.send_message(room, "/help")

    (text,) = hipchat.notifications(room)
    for command in ("/echo", "/remember", "/recall", "/forget", "/card", "/ping", "/slow", "/help"):
        assert command in text


async def test_remember_and_recall_share_storage(hipchat: FakeHipChat, room: Installed) -> None:
    await hipchat.send_message(room, "/remember color blue")
    await hipchat.send_message(room, "/recall color")
    assert hipchat.notifications(room) == ["Remembered color.", "color: blue"]


async def test_the_card_example_sends_a_card(hipchat: FakeHipChat, room: Installed) -> None:
    await hipchat.send_message(room, "/card Release 1.0")
    (body,) = hipchat.notification_bodies(room)
    assert body["card"]["title"] == "Release 1.0"
    assert body["message"]


async def test_the_seed_style_ping_runs_unchanged(hipchat: FakeHipChat, room: Installed) -> None:
    await hipchat.send_message(room, "/ping")
    await hipchat.send_message(room, "/ping again")
    assert hipchat.notifications(room) == [
        "pong (for User 1001, ping #1)",
        "pong: again (for User 1001, ping #2)",
    ]


@pytest.mark.parametrize("text", ["/../../etc/passwd", "/os", "/sys", "/__init__", "/echo/../os"])
async def test_a_command_name_cannot_select_anything_but_an_integration(
    hipchat: FakeHipChat, room: Installed, text: str
) -> None:
    client = hipchat.clients[room.oauth_id]
    body = {
        "event": "room_message",
        "item": {"message": hipchat.message(text), "room": hipchat.room(1)},
        "oauth_client_id": client.oauth_id,
    }
    token = sign_jwt(room.oauth_id, room.oauth_secret, now=time.time(), sub=1001, room_id=1)
    response = await room.addon.post(
        "/webhook/room_message", json=body, headers={"Authorization": f"JWT {token}"}
    )

    assert response.status_code == 204
    assert hipchat.notifications(room) == []


async def test_a_global_installation_answers_in_any_room(
    commands_app: Starlette, hipchat: FakeHipChat, settings: Settings
) -> None:
    async with hipchat.connect(commands_app, settings.base_url) as addon:
        group = await hipchat.install(addon)
        await hipchat.send_message(group, "/echo in five", room_id=5)
        await hipchat.send_message(group, "/echo in six", room_id=6)
    assert hipchat.notifications(5) == ["in five"]
    assert hipchat.notifications(6) == ["in six"]


async def test_messages_that_match_no_command_get_no_answer(
    hipchat: FakeHipChat, room: Installed
) -> None:
    assert await hipchat.send_message(room, "just chatting") is None
    assert hipchat.notifications(room) == []


async def test_http_clients_see_the_request_id(hipchat: FakeHipChat, room: Installed) -> None:
    response = await hipchat.send_message(room, "/echo id")
    assert response is not None and len(response.headers["x-request-id"]) == 32


async def test_a_webhook_for_another_event_path_is_refused(
    hipchat: FakeHipChat, room: Installed
) -> None:
    token = sign_jwt(room.oauth_id, room.oauth_secret, now=time.time(), sub=1001, room_id=1)
    body = {
        "event": "room_message",
        "item": {"message": hipchat.message("/echo x"), "room": hipchat.room(1)},
    }
    response = await room.addon.post(
        "/webhook/room_enter", json=body, headers={"Authorization": f"JWT {token}"}
    )
    assert response.status_code == 400
    assert hipchat.notifications(room) == []


async def test_storage_survives_an_app_restart(
    settings: Settings, hipchat: FakeHipChat, store: Store, reopen_store: Callable[[], Store]
) -> None:
    app = create_app(settings, store=store, transport=hipchat.transport())
    async with hipchat.connect(app, settings.base_url) as addon:
        room = await hipchat.install(addon, room_id=1)
        await hipchat.send_message(room, "/remember city Paris")
        await hipchat.send_message(room, "/ping")
    await app.state.addon.aclose()

    restarted = create_app(settings, store=reopen_store(), transport=hipchat.transport())
    async with hipchat.connect(restarted, settings.base_url) as addon:
        room = dataclasses.replace(room, addon=addon)
        await hipchat.send_message(room, "/recall city")
        await hipchat.send_message(room, "/ping")
    await restarted.state.addon.aclose()

    assert hipchat.notifications(1)[2:] == ["city: Paris", "pong (for User 1001, ping #2)"]


async def test_the_descriptor_declares_jwt_webhooks_for_the_commands(
    room: Installed, hipchat: FakeHipChat
) -> None:
    hooks = (await hipchat.descriptor(room.addon))["capabilities"]["webhook"]
    assert hooks and all(h["authentication"] == "jwt" for h in hooks)
    assert any(h["event"] == "room_message" and "echo" in h["pattern"] for h in hooks)


async def test_an_uninstalled_installation_runs_nothing(
    hipchat: FakeHipChat, room: Installed
) -> None:
    assert (await hipchat.uninstall(room.addon, room)).status_code == 204
    response = await hipchat.send_message(room, "/echo still there?")
    assert response is not None and response.status_code == 401
    assert hipchat.notifications(room) == []


async def test_a_request_with_a_bad_body_is_400(hipchat: FakeHipChat, room: Installed) -> None:
    def signed() -> dict[str, str]:
        token = sign_jwt(room.oauth_id, room.oauth_secret, now=time.time(), sub=1001, room_id=1)
        return {"Authorization": f"JWT {token}"}

    response = await room.addon.post("/webhook/room_message", content=b"{]", headers=signed())
    assert response.status_code == 400
    response = await room.addon.post("/webhook/room_message", json=[1], headers=signed())
    assert response.status_code == 400
    # Unsigned, the body is not even read: 401.
    assert (await room.addon.post("/webhook/room_message", content=b"{]")).status_code == 401


async def test_http_errors_name_the_reason_not_the_token(
    hipchat: FakeHipChat, room: Installed
) -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJub2JvZHkifQ.c2ln"
    response = await hipchat.send_message(room, "/echo x", token=token)
    assert response is not None and response.status_code == 401
    assert token not in response.text


async def test_a_command_needing_the_user_token_links_to_the_approval_first(
    hipchat: FakeHipChat, room: Installed
) -> None:
    await hipchat.send_message(room, "/whoami", sender_id=1001)
    (notice,) = hipchat.notification_bodies(room)
    assert notice["color"] == "yellow" and notice["message_format"] == "text"
    assert str(notice["message"]).startswith("@user1001: ")
    link = re.search(r"(http\S+/oauth/approve\S+)", str(notice["message"]))[1]  # type: ignore[index]

    async def follow(link: str, as_user: str) -> httpx.Response:
        hipchat.approving_user = as_user
        to_hipchat = await room.addon.get(link)
        async with httpx.AsyncClient(transport=hipchat.transport()) as browser:
            back = await browser.get(to_hipchat.headers["location"])
        return await room.addon.get(back.headers["location"])

    # Someone else in the room follows it first: refused, and it stays usable for 1001.
    taken = await follow(link, "1002")
    assert taken.status_code == 403 and "another HipChat user" in taken.text
    assert len(hipchat.revoked_tokens) == 1
    done = await follow(link, "1001")
    assert done.status_code == 200 and "Approved" in done.text

    await hipchat.send_message(room, "/whoami", sender_id=1001)
    assert hipchat.notifications(room)[-1] == "you are user 1001"
    user_calls = hipchat.api.requests_for("get_user")
    token = user_calls[-1].headers["authorization"].removeprefix("Bearer ")
    assert hipchat.tokens[token].user_id == "1001"


async def test_a_webhook_during_shutdown_is_503_and_runs_nothing(
    commands_app: Starlette, hipchat: FakeHipChat, room: Installed
) -> None:
    await commands_app.state.addon.dispatcher.drain(0)

    response = await hipchat.send_message(room, "/echo too late")

    assert response is not None and response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"]["type"] == "ShuttingDown"
    assert hipchat.notifications(room) == []

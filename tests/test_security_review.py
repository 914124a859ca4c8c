"""Findings of the security review, one test (or a few) each: each failed before its fix."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import Message

from addon import Integration, RoomMessage
from addon.app import create_app
from addon.dispatch import Dispatcher
from addon.errors import RequestError, ShuttingDown, UnknownInstallation
from addon.installations import InstallationRepository
from addon.jsonvalue import loads
from addon.jwt_auth import sign_jwt
from addon.seal import Sealer
from addon.settings import Secret, Settings
from addon.store import Keys, Store
from addon.store.sqlite import SQLiteStore
from addon.testing import FakeHipChat, Installed
from addon.ui.config import ConfigStore
from addon.wire import parse_webhook
from tests.conftest import FakeClock
from tests.helpers import make_app, store_snapshot
from tests.test_webhooks import RecordingRuntime
from tests.test_webhooks import installation as webhook_installation
from tests.test_webhooks import message as webhook_message

pytestmark = pytest.mark.anyio

GLANCE = "http://addon.test/ui/remember/glance/remember-count"


def _finishes(code: str, *, seconds: float = 30.0) -> bool:
    """True when Python ``code`` ends within ``seconds`` (a bound for hangs, not a speed test).

    A child process: a regular expression holds the GIL until it is done, so a thread could not
    be given up on, and the child is killed when it overruns.
    """
    try:
        subprocess.run([sys.executable, "-c", code], check=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


# -- 1. the JSON depth pre-check is linear --------------------------------------------------


def test_escaped_quotes_do_not_stall_the_json_reader() -> None:
    # An unterminated string of 200,000 escaped quotes: a few ms now; minutes for the old pattern
    # (it retried from each quote: 20 KB took 1.7 s, and four times the size sixteen times as long).
    quotes = """'"' + '\\\\"' * 200_000"""
    code = f"""
from addon.errors import RequestError
from addon.jsonvalue import is_json, loads
try:
    loads(({quotes}).encode())
except RequestError as exc:
    assert "is not valid JSON" in str(exc), exc
else:
    raise AssertionError("not refused")
assert not is_json("[" * 40_000 + {quotes})
"""
    assert _finishes(code), "loads() or is_json() is not linear in escaped quotes"


def test_escapes_and_brackets_inside_strings_do_not_count() -> None:
    assert loads('["a\\"[[", ["\\\\", {"b": "]]\\\\"}]]') == ['a"[[', ["\\", {"b": "]]\\"}]]
    inside = '"' + "[" * 100 + '"'
    assert loads(inside) == "[" * 100
    with pytest.raises(RequestError, match="nests deeper than 64"):
        loads("[" * 65 + '"\\"]"' + "]" * 65)


# -- 2. a JWT iss that is not an oauth_id is a 401, not a 500 --------------------------------

BAD_ISSUERS = ["}x", "{a}", "a:b", "a" * 65]


@pytest.fixture
async def room(addon: httpx.AsyncClient, hipchat: FakeHipChat) -> Installed:
    return await hipchat.install(addon, room_id=1)


@pytest.mark.parametrize("issuer", BAD_ISSUERS)
async def test_an_issuer_that_is_no_oauth_id_is_401_on_webhooks(
    hipchat: FakeHipChat, room: Installed, issuer: str
) -> None:
    token = sign_jwt(issuer, room.oauth_secret, now=time.time(), sub=1001, room_id=1)
    response = await hipchat.send_message(room, "/echo hi", token=token)
    assert response is not None and response.status_code == 401
    assert "'iss'" in response.json()["error"]["message"]
    assert hipchat.notifications(room) == []


@pytest.mark.parametrize("issuer", BAD_ISSUERS)
async def test_an_issuer_that_is_no_oauth_id_is_401_on_glances(
    hipchat: FakeHipChat, room: Installed, issuer: str
) -> None:
    token = sign_jwt(issuer, room.oauth_secret, now=time.time(), sub=1001, room_id=1)
    response = await hipchat.ui_get(room, GLANCE, token=token)
    assert response.status_code == 401
    assert response.json()["error"]["status"] == 401


@pytest.mark.parametrize("owner", ["}x", "{a}", "a}"])
def test_a_key_owner_with_a_brace_is_refused(owner: str) -> None:
    with pytest.raises(ValueError, match="must not contain"):
        Keys("io.hipchat-addon").installation(owner)


# -- 3. an unsigned command refused for its body does not keep its message id ---------------

COMMANDS_SECRET = "commands-secret-" + "y" * 20


async def test_a_corrected_unsigned_command_with_the_same_id_runs(
    settings: Settings, store: Store, hipchat: FakeHipChat
) -> None:
    configured = dataclasses.replace(settings, commands_secret=Secret(COMMANDS_SECRET))
    app = make_app(configured, store, hipchat)
    headers = {"Authorization": f"Bearer {COMMANDS_SECRET}"}
    async with hipchat.connect(app, settings.base_url) as addon:
        room = await hipchat.install(addon, room_id=1)
        message = hipchat.message("/echo corrected")
        body = {
            "event": "room_message",
            "item": {"message": message, "room": hipchat.room(1)},
            "oauth_client_id": room.oauth_id,
        }
        without_from = {k: v for k, v in message.items() if k != "from"}
        without_sender = {**body, "item": {"message": without_from, "room": hipchat.room(1)}}
        refused = await addon.post("/commands", json=without_sender, headers=headers)
        retried = await addon.post("/commands", json=body, headers=headers)
    await app.state.addon.aclose()

    assert refused.status_code == 400
    assert "item.message.from.id" in refused.json()["error"]["message"]
    assert retried.status_code == 200 and retried.json()["message"] == "corrected"


# -- 4. a client that goes away mid-body is a quiet 400, not a 500 --------------------------


async def test_a_client_gone_mid_body_is_a_400_not_a_500(
    app: Starlette, caplog: pytest.LogCaptureFixture
) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "server": ("addon.test", 80),
        "client": ("127.0.0.1", 5000),
        "root_path": "",
        "path": "/installable",
        "raw_path": b"/installable",
        "query_string": b"",
        "headers": [(b"host", b"addon.test"), (b"content-length", b"100")],
    }
    incoming: list[Message] = [
        {"type": "http.request", "body": b"{", "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)  # nothing escapes

    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- 5. a secret sealed with another key: a 503, and the message id is not kept -------------


async def test_a_changed_secret_key_is_a_503_and_keeps_no_claim(
    settings: Settings, store: Store, hipchat: FakeHipChat
) -> None:
    key_a = dataclasses.replace(settings, secret_key=Secret("a" * 32))
    key_b = dataclasses.replace(settings, secret_key=Secret("b" * 32))
    app_a, app_b = make_app(key_a, store, hipchat), make_app(key_b, store, hipchat)
    async with hipchat.connect(app_a) as addon_a, hipchat.connect(app_b) as addon_b:
        room = await hipchat.install(addon_a, room_id=1)
        body = {
            "event": "room_message",
            "item": {"message": hipchat.message("/echo after the key"), "room": hipchat.room(1)},
            "oauth_client_id": room.oauth_id,
        }

        def signed() -> dict[str, str]:
            token = sign_jwt(room.oauth_id, room.oauth_secret, now=time.time(), sub=1001, room_id=1)
            return {"Authorization": f"JWT {token}"}

        wrong_key = await addon_b.post("/webhook/room_message", json=body, headers=signed())
        right_key = await addon_a.post("/webhook/room_message", json=body, headers=signed())
    await app_a.state.addon.aclose()
    await app_b.state.addon.aclose()

    assert wrong_key.status_code == 503
    assert "ADDON_SECRET_KEY" in wrong_key.json()["error"]["message"]
    assert right_key.status_code == 200 and right_key.json()["message"] == "after the key"


# -- 7. nothing starts once a drain began ---------------------------------------------------


async def test_work_planned_before_a_drain_is_refused_after_it(store: Store) -> None:
    ran: list[str] = []
    integration = Integration("late")

    @integration.command("late")
    async def late(message: RoomMessage) -> None:
        ran.append(message.text)

    dispatcher = Dispatcher([integration], RecordingRuntime(store))
    plan = dispatcher.plan(parse_webhook(webhook_message("/late")))  # before the drain
    await dispatcher.drain(5)  # nothing runs yet: it returns at once
    with pytest.raises(ShuttingDown):
        await dispatcher.run(plan, webhook_installation(), request_id="req-1")
    assert ran == []


class DrainingStore(SQLiteStore):
    """An SQLiteStore that runs ``during_claim`` right after each claim (``read_and_claim``, or
    ``put_many_if_absent`` for ``POST /commands``)."""

    during_claim: Callable[[], Awaitable[None]] | None = None

    async def read_and_claim(
        self, key: str, claims: Sequence[tuple[str, str, float | None]]
    ) -> tuple[str | None, list[bool]]:
        found = await super().read_and_claim(key, claims)
        if self.during_claim is not None:
            await self.during_claim()
        return found

    async def put_many_if_absent(
        self, entries: Sequence[tuple[str, str, float | None]]
    ) -> list[bool]:
        made = await super().put_many_if_absent(entries)
        if self.during_claim is not None:
            await self.during_claim()
        return made


async def test_a_webhook_refused_by_a_drain_keeps_no_message_id(
    settings: Settings, hipchat: FakeHipChat, tmp_path: Path
) -> None:
    store = DrainingStore(f"sqlite:///{tmp_path / 'addon.db'}")
    app = make_app(settings, store, hipchat)
    addon = app.state.addon
    async with hipchat.connect(app) as client:
        room = await hipchat.install(client, room_id=1)
        store.during_claim = functools.partial(addon.dispatcher.drain, 0)
        response = await hipchat.send_message(room, "/echo during the drain")
        seen = await store.scan(f"{addon.keys.prefix}:seen:")
    await addon.aclose()

    assert response is not None and response.status_code == 503
    assert seen == []  # HipChat's next delivery (to a replica that runs) is not dropped
    assert hipchat.notifications(room) == []


async def test_an_unsigned_command_refused_by_a_drain_keeps_no_message_id(
    settings: Settings, hipchat: FakeHipChat, tmp_path: Path
) -> None:
    secret = "commands-secret-" + "d" * 20
    store = DrainingStore(f"sqlite:///{tmp_path / 'addon.db'}")
    app = make_app(dataclasses.replace(settings, commands_secret=Secret(secret)), store, hipchat)
    addon = app.state.addon
    async with hipchat.connect(app) as client:
        room = await hipchat.install(client, room_id=1)
        item = {"message": hipchat.message("/echo during the drain"), "room": hipchat.room(1)}
        payload = {"event": "room_message", "item": item, "oauth_client_id": room.oauth_id}
        store.during_claim = functools.partial(addon.dispatcher.drain, 0)
        response = await client.post(
            "/commands", json=payload, headers={"Authorization": f"Bearer {secret}"}
        )
        seen = await store.scan(f"{addon.keys.prefix}:seen:")
    await addon.aclose()

    assert response.status_code == 503 and response.json()["error"]["type"] == "ShuttingDown"
    assert seen == []  # the sender's next try (to a replica that runs) is not dropped
    assert hipchat.notifications(room) == []


# -- 6. settings and user tokens are not written after an uninstall --------------------------


@dataclasses.dataclass(frozen=True)
class Two:
    first: str = "a"
    second: str = "b"


class YieldingStore(SQLiteStore):
    """An SQLiteStore that hands the event loop round a few times after each read of settings,
    so that two saves started together would both read before either writes."""

    async def get(self, key: str) -> str | None:
        found = await super().get(key)
        if ":config:" in key:
            for _ in range(20):
                await asyncio.sleep(0)
        return found


@pytest.fixture
async def yielding_store(tmp_path: Path) -> AsyncIterator[YieldingStore]:
    store = YieldingStore(f"sqlite:///{tmp_path / 'addon.db'}")
    yield store
    await store.close()


async def test_settings_saved_after_an_uninstall_are_not_kept(store: Store) -> None:
    keys = Keys("t")
    configs, fields = ConfigStore(store, keys), Integration("two", settings=Two).settings_fields
    await store.put(keys.installation("o1"), "{}")
    await configs.save("o1", "two", fields, {"first": "x"})
    await InstallationRepository(store, keys, Sealer(None)).delete("o1")

    with pytest.raises(UnknownInstallation, match="uninstalled"):
        await configs.save("o1", "two", fields, {"first": "y"})
    assert await store_snapshot(store) == {}


async def test_two_settings_saved_at_once_are_both_kept(yielding_store: YieldingStore) -> None:
    keys = Keys("t")
    configs = ConfigStore(yielding_store, keys)
    fields = Integration("two", settings=Two).settings_fields
    await yielding_store.put(keys.installation("o1"), "{}")

    await asyncio.gather(
        configs.save("o1", "two", fields, {"first": "1"}),
        configs.save("o1", "two", fields, {"second": "2"}),
    )
    assert await configs.load("o1", "two", fields) == {"first": "1", "second": "2"}


class UninstallingTransport(httpx.AsyncBaseTransport):
    """HipChat's transport; ``before_token`` runs before the next token request goes out."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.before_token: Callable[[], Awaitable[None]] | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        hook, self.before_token = self.before_token, None
        if hook is not None and request.url.path == "/v2/oauth/token":
            await hook()
        return await self.inner.handle_async_request(request)


async def test_a_user_token_refreshed_across_an_uninstall_is_not_kept(
    settings: Settings, store: Store, clock: FakeClock
) -> None:
    fake = FakeHipChat(now=clock)
    fake.approving_user = "42"
    transport = UninstallingTransport(fake.transport())
    app = create_app(settings, store=store, transport=transport, now=clock)
    addon = app.state.addon
    mounts = {settings.base_url: httpx.ASGITransport(app=app), fake.base_url: fake.transport()}
    async with httpx.AsyncClient(mounts=mounts, base_url=settings.base_url) as browser:
        installed = await fake.install(browser, room_id=1)
        installation = await addon.installations.require(installed.oauth_id)
        to_hipchat = await browser.get(await addon.approvals.approval_url(installation, "42"))
        back = await browser.get(to_hipchat.headers["location"])
        assert (await browser.get(back.headers["location"])).status_code == 200
        assert await addon.approvals.user_token(installation, "42")

        clock.advance(7 * 86400)  # the token is due for a refresh; uninstalled meanwhile
        transport.before_token = functools.partial(
            addon.installations.delete, installation.oauth_id
        )
        with pytest.raises(UnknownInstallation, match="uninstalled"):
            await addon.approvals.user_token(installation, "42")
        left = await store_snapshot(store)
    await addon.aclose()

    assert left == {}

"""Secrets stay secret: sealed at rest, absent from logs and metrics; the admin API's door holds.

One full flow (install, commands that fetch add-on and user tokens, a storage write) runs with
``ADDON_SECRET_KEY`` set; then every raw value in the store (and, for SQLite, the database files'
bytes) and every captured log line are searched for each secret the fake HipChat handed out.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from addon import Integration, RoomMessage
from addon.app import Addon, create_app
from addon.integrations import help_integration, load_integrations
from addon.jwt_auth import sign_jwt
from addon.logs import JsonFormatter, RedactingFilter
from addon.settings import Secret, Settings
from addon.store import Store
from addon.store.keys import STORAGE_MAP_SUFFIX
from addon.store.sqlite import SQLiteStore
from addon.testing import FakeHipChat, Installed
from tests.helpers import REPO, eventually, store_snapshot

pytestmark = pytest.mark.anyio

ADMIN = "admin-token-" + "y" * 20
USER = 1001

probe = Integration(key="probe", name="Probe")


@probe.command("twice", help="Replies twice (the second reply goes through the REST API)")
async def twice(message: RoomMessage) -> None:
    await message.reply("one")
    await message.reply("two")


@probe.command("me", help="Asks HipChat who you are, as you")
async def me(message: RoomMessage) -> None:
    client = await message.user_client()
    user = await client.get_user(message.sender.id)
    await message.reply(f"you are user {user['id']}")


def integrations() -> list[Integration]:
    loaded = [*load_integrations(REPO / "integrations"), probe]
    return [*loaded, help_integration(loaded)]


@dataclasses.dataclass
class Flow:
    """The sealed add-on, the fake, a browser reaching both, and the JWTs HipChat sent."""

    app: Starlette
    hipchat: FakeHipChat
    browser: httpx.AsyncClient
    store: Store
    jwts: list[str] = dataclasses.field(default_factory=list)

    @property
    def addon(self) -> Addon:
        addon: Addon = self.app.state.addon
        return addon

    async def say(self, room: Installed, text: str) -> httpx.Response:
        signed = sign_jwt(room.oauth_id, room.oauth_secret, now=time.time(), sub=USER, room_id=1)
        self.jwts.append(signed)
        response = await self.hipchat.send_message(room, text, sender_id=USER, token=signed)
        assert response is not None and response.status_code < 500, text
        return response

    def secrets(self) -> list[str]:
        """Every credential the fake handed out or received, and each JWT sent."""
        found = [client.oauth_secret for client in self.hipchat.clients.values()]
        found += list(self.hipchat.tokens) + list(self.hipchat.refresh_tokens)
        found += [c.form["refresh_token"] for c in self.hipchat.token_requests("refresh_token")]
        found += [
            c.headers["authorization"].partition(" ")[2] for c in self.hipchat.token_requests()
        ]
        found += self.jwts
        return [s for s in found if s]


@pytest.fixture
async def flow(settings: Settings, store: Store, hipchat: FakeHipChat) -> AsyncIterator[Flow]:
    sealed = dataclasses.replace(
        settings, secret_key=Secret("k" * 32), admin_token=Secret(ADMIN), reply_window=1.0
    )
    app = create_app(
        sealed, store=store, transport=hipchat.transport(), integrations=integrations()
    )
    mounts = {
        settings.base_url: httpx.ASGITransport(app=app),
        hipchat.base_url: hipchat.transport(),
    }
    async with httpx.AsyncClient(mounts=mounts, base_url=settings.base_url) as browser:
        yield Flow(app, hipchat, browser, store)
    await app.state.addon.aclose(grace=2)


async def run_full_flow(flow: Flow) -> Installed:
    """Install; fetch add-on tokens; write storage; approve a user, use and refresh their token."""
    room = await flow.hipchat.install(flow.browser, room_id=1)
    await flow.say(room, "/remember color blue")
    # Drop the cached add-on token so the next REST reply fetches one during a command.
    for key in await flow.store.scan(flow.addon.keys.token(room.oauth_id, ())):
        await flow.store.delete(key)
    await flow.say(room, "/twice")
    installation = await flow.addon.installations.require(room.oauth_id)
    await flow.say(room, "/me")  # not approved yet: an approval notice
    flow.hipchat.approving_user = str(USER)
    to_hipchat = await flow.browser.get(
        await flow.addon.approvals.approval_url(installation, str(USER))
    )
    back = await flow.browser.get(to_hipchat.headers["location"])
    assert (await flow.browser.get(back.headers["location"])).status_code == 200
    await flow.say(room, "/me")
    flow.hipchat.expire_tokens()  # the user token must be refreshed with its refresh token
    await flow.say(room, "/me")
    await flow.say(room, "/recall color")
    await eventually(lambda: "two" in flow.hipchat.notifications(room))
    assert flow.hipchat.notifications(room).count("you are user 1001") == 2
    assert flow.hipchat.token_requests("refresh_token"), "the user token was never refreshed"
    assert flow.hipchat.token_requests("authorization_code")
    assert len(flow.hipchat.token_requests("client_credentials")) >= 2
    return room


async def test_no_secret_is_stored_in_the_clear(flow: Flow) -> None:
    await run_full_flow(flow)
    secrets = flow.secrets()
    assert len(secrets) >= 8

    snapshot = await store_snapshot(flow.store)
    raw = [*snapshot]
    for key, value in snapshot.items():
        if key.endswith(STORAGE_MAP_SUFFIX):  # a map: one field per stored name
            raw.extend(f"{k}={v}" for k, v in sorted((await flow.store.map_all(key)).items()))
        else:
            raw.extend([value] if value is not None else sorted(await flow.store.members(key)))
    everything = "\n".join(raw)
    assert "fernet:" in everything  # sealing is on: the test is not vacuous
    assert ":storage:" in everything and "blue" in everything
    for secret in secrets:
        assert secret not in everything

    if isinstance(flow.store, SQLiteStore):
        path = Path(flow.store.path)
        files = [f for f in path.parent.iterdir() if f.name.startswith(path.name)]
        data = b"".join(f.read_bytes() for f in files)
        assert b"blue" in data
        for secret in secrets:
            assert secret.encode() not in data


async def test_no_secret_reaches_the_logs_or_metrics(
    flow: Flow, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await run_full_flow(flow)
    metrics = (await flow.browser.get("/metrics")).text
    secrets = flow.secrets()

    records = caplog.records
    assert any(r.name.startswith("addon") for r in records)
    formatter, redacting = JsonFormatter(), RedactingFilter()
    lines = [metrics]
    for record in records:
        lines.append(record.getMessage())
        lines.append(formatter.format(record))
        lines.append(repr(vars(record)))
    for record in records:  # through the production filter too (it rewrites the record)
        redacting.filter(record)
        lines.append(formatter.format(record))
    text = "\n".join(lines)
    for secret in secrets:
        assert secret not in text
    assert "eyJ" not in text  # no JWT, nor the start of one


# -- the admin API's door ----------------------------------------------------------------------


def _last_changed(token: str) -> str:
    return token[:-1] + chr(ord(token[-1]) + 1)


WRONG_HEADERS: dict[str, dict[str, str | bytes]] = {
    "last-char-differs": {"Authorization": f"Bearer {_last_changed(ADMIN)}"},
    "first-char-differs": {"Authorization": f"Bearer {_last_changed(ADMIN[::-1])[::-1]}"},
    "shorter-prefix": {"Authorization": f"Bearer {ADMIN[:-1]}"},
    "much-shorter": {"Authorization": "Bearer a"},
    "empty": {"Authorization": "Bearer "},
    "scheme-only": {"Authorization": "Bearer"},
    "upper-cased": {"Authorization": f"Bearer {ADMIN.upper()}"},
    "basic-scheme": {"Authorization": f"Basic {ADMIN}"},
    "basic-encoded": {
        "Authorization": "Basic " + base64.b64encode(f"admin:{ADMIN}".encode()).decode()
    },
    "jwt-scheme": {"Authorization": f"JWT {ADMIN}"},
    "twice": {"Authorization": f"Bearer {ADMIN} {ADMIN}"},
    "non-ascii": {"Authorization": f"Bearer {ADMIN[:-1]}é".encode("latin-1")},
    "nul-byte": {"Authorization": f"Bearer {ADMIN}\x00".encode("latin-1")},
    "other-header": {"X-Admin-Token": ADMIN},
}


@pytest.mark.parametrize("headers", WRONG_HEADERS.values(), ids=WRONG_HEADERS.keys())
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_admin_refuses_near_miss_tokens_and_changes_nothing(
    flow: Flow, method: str, headers: dict[str, str | bytes]
) -> None:
    room = await flow.hipchat.install(flow.browser, room_id=1)
    await flow.say(room, "/remember color blue")
    before = await store_snapshot(flow.store)

    response = await flow.browser.request(
        method,
        "/admin/storage",
        headers=[
            (k.encode(), v if isinstance(v, bytes) else v.encode()) for k, v in headers.items()
        ],
        json={"storage": {"global/echo": {"x": 1}}},
    )

    assert response.status_code == 401, response.text
    assert response.json()["error"]["status"] == 401
    assert ADMIN not in response.text
    after = await store_snapshot(flow.store)
    assert {k: v for k, v in after.items() if ":seen:" not in k} == {
        k: v for k, v in before.items() if ":seen:" not in k
    }


async def test_admin_token_in_the_query_string_is_not_accepted(flow: Flow) -> None:
    for name in ("token", "access_token", "admin_token", "jwt"):
        response = await flow.browser.get("/admin/storage", params={name: ADMIN})
        assert response.status_code == 401


async def test_the_right_token_opens_the_admin_api(flow: Flow) -> None:
    # The positive control for the refusals above (scheme case-insensitive, padding ignored).
    for header in (f"Bearer {ADMIN}", f"bearer {ADMIN}", f"Bearer  {ADMIN} "):
        response = await flow.browser.get("/admin/storage", headers={"Authorization": header})
        assert response.status_code == 200, header


async def test_failure_paths_log_no_secret(flow: Flow, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    room = await flow.hipchat.install(flow.browser, room_id=1)
    now = time.time()
    bad_jwts = [
        sign_jwt(room.oauth_id, "not-the-secret-" * 3, now=now, sub=USER, room_id=1),
        sign_jwt(room.oauth_id, room.oauth_secret, now=now - 3600, sub=USER, room_id=1),
        sign_jwt(room.oauth_id, room.oauth_secret, now=now, sub=USER, room_id=2),
        sign_jwt("unknown-client", room.oauth_secret, now=now, sub=USER, room_id=1),
    ]
    for token in bad_jwts:
        flow.jwts.append(token)
        refused = await flow.hipchat.send_message(room, "/echo x", sender_id=USER, token=token)
        assert refused is not None and refused.status_code == 401
    # The token endpoint fails with no cached token, then the client is revoked (uninstall).
    for key in await flow.store.scan(flow.addon.keys.token(room.oauth_id, ())):
        await flow.store.delete(key)
    flow.hipchat.fail_token_endpoint(500, count=2)
    await flow.say(room, "/twice")
    await eventually(lambda: len(flow.hipchat.token_requests()) >= 2)
    # Past the token back-off (test_tokens covers it), the next command asks again.
    backoff = flow.addon.keys.token_backoff(room.oauth_id, ())
    await eventually(lambda: _has_keys(flow.store, backoff))
    await flow.store.delete(*await flow.store.scan(backoff))
    await flow.say(room, "/twice")  # the second injected failure
    await flow.say(room, "/me")
    await eventually(lambda: len(flow.hipchat.token_requests()) >= 3)
    assert (await flow.hipchat.uninstall(flow.browser, room)).status_code == 204

    assert any(r.levelno >= logging.WARNING for r in caplog.records)
    formatter = JsonFormatter()
    text = "\n".join(
        f"{r.getMessage()}\n{formatter.format(r)}\n{vars(r)!r}" for r in caplog.records
    )
    for secret in flow.secrets():
        assert secret not in text
    assert "eyJ" not in text


async def _has_keys(store: Store, prefix: str) -> bool:
    return bool(await store.scan(prefix))

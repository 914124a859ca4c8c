"""Property-based fuzzing of every door HipChat or a browser can knock on (the invariant: every bad
input gets a 4xx, a 500 is a bug).

For each input the add-on must answer below 500, and an input it refuses must leave the store as
it was. The app runs on the SQLite store with one room installation; each property keeps its
examples bounded so that the whole file stays fast.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from addon.app import Addon, create_app
from addon.jwt_auth import sign_jwt
from addon.settings import Secret, Settings
from addon.store.sqlite import SQLiteStore
from addon.testing import FakeHipChat, Installed
from tests.helpers import store_snapshot

pytestmark = pytest.mark.anyio

ADMIN = "admin-token-" + "z" * 20
fuzz = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- strategies --------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=80,
)
tricky_text = st.sampled_from(
    [
        "",
        " ",
        "/",
        "/echo",
        "/echo hi",
        "/remember a b",
        "/recall a",
        "/forget a",
        "/card",
        "/ping",
        "/help",
        "/nope",
        "\x00",
        "../../etc/passwd",
        "%00",
        "a" * 5000,
        "ünïcødé ☃",
        "http://hipchat.test/v2/capabilities",
        "http://127.0.0.1:1/",
        "file:///etc/passwd",
        "https://evil.example/",
    ]
)
some_text = tricky_text | st.text(max_size=60)


def either(valid: Any, strategy: st.SearchStrategy[Any] = json_values) -> st.SearchStrategy[Any]:
    """``valid`` most of the time, or anything JSON, or the field left out (``MISSING``)."""
    return st.one_of(st.just(valid), st.just(valid), strategy, st.just(MISSING))


MISSING = object()


def build(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not MISSING}


# -- the world ---------------------------------------------------------------------------------


@dataclasses.dataclass
class World:
    app: Starlette
    hipchat: FakeHipChat
    client: httpx.AsyncClient
    store: SQLiteStore
    room: Installed

    @property
    def addon(self) -> Addon:
        addon: Addon = self.app.state.addon
        return addon

    async def snapshot(self) -> dict[str, str | None]:
        # Delivery ids are claimed before a webhook is refused for what it asks: not data.
        return {k: v for k, v in (await store_snapshot(self.store)).items() if ":seen:" not in k}

    async def check(self, send: Any) -> httpx.Response:
        """Send a request; it must answer < 500, and change nothing when it is refused."""
        before = await self.snapshot()
        response: httpx.Response = await send()
        assert response.status_code < 500, (response.status_code, response.text)
        if response.status_code >= 400:
            assert response.headers["content-type"].startswith("application/json")
            assert "error" in response.json()
            assert await self.snapshot() == before
        return response

    def jwt(self) -> str:
        """A valid JWT for a message from user 1001 in room 1."""
        room = self.room
        return sign_jwt(room.oauth_id, room.oauth_secret, now=time.time(), sub=1001, room_id=1)


@pytest.fixture
async def world(
    settings: Settings, sqlite_store: SQLiteStore, hipchat: FakeHipChat
) -> AsyncIterator[World]:
    fuzzed = dataclasses.replace(
        settings, admin_token=Secret(ADMIN), reply_window=0.5, command_timeout=1.0
    )
    app = create_app(fuzzed, store=sqlite_store, transport=hipchat.transport())
    async with hipchat.connect(app, settings.base_url) as client:
        room = await hipchat.install(client, room_id=1)
        await hipchat.send_message(room, "/remember color blue")
        yield World(app, hipchat, client, sqlite_store, room)
    await app.state.addon.aclose(grace=1)


# -- webhooks ----------------------------------------------------------------------------------


OAUTH_ID = "<the installation's oauth_id>"  # replaced in the test: strategies are static


def webhook_bodies() -> st.SearchStrategy[Any]:
    message = st.fixed_dictionaries(
        {
            "from": either({"id": 1001, "name": "User"}),
            "message": either("/echo fuzz", some_text),
            "id": either("m-1", some_text | json_values),
            "mentions": either([]),
        }
    ).map(build)
    item = st.fixed_dictionaries(
        {"message": either({}, message | json_values), "room": either({"id": 1, "name": "R"})}
    ).map(build)
    structured = st.fixed_dictionaries(
        {
            "event": either("room_message", some_text),
            "item": either({}, item | json_values),
            "oauth_client_id": either(OAUTH_ID, some_text),
            "webhook_id": either(0),
        }
    ).map(build)
    return structured | json_values


events = st.sampled_from(["room_message", "room_enter", "room_exit", "x"]) | st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz_-.%", min_size=1, max_size=20
)


@fuzz
@given(body=webhook_bodies(), event=events)
async def test_webhook_bodies_under_a_valid_jwt(world: World, body: Any, event: str) -> None:
    if isinstance(body, dict) and body.get("oauth_client_id") == OAUTH_ID:
        body["oauth_client_id"] = world.room.oauth_id
    if isinstance(body, dict) and isinstance(body.get("item"), dict):
        message = body["item"].get("message")
        if isinstance(message, dict):
            message["id"] = f"fuzz-{time.monotonic_ns()}"  # each delivery is a new message
    token = world.jwt()
    await world.check(
        lambda: world.client.post(
            f"/webhook/{event}",
            content=json.dumps(body).encode(),
            headers={"Authorization": f"JWT {token}", "Content-Type": "application/json"},
        )
    )


@fuzz
@given(raw=st.binary(max_size=300))
async def test_webhook_raw_bytes(world: World, raw: bytes) -> None:
    token = world.jwt()
    await world.check(
        lambda: world.client.post(
            "/webhook/room_message", content=raw, headers={"Authorization": f"JWT {token}"}
        )
    )


claim_sets = st.fixed_dictionaries(
    {
        "iss": either("<iss>", some_text),
        "sub": either(1001),
        "iat": either(int(time.time())),
        "exp": either(int(time.time()) + 300),
        "context": either({"room_id": 1}),
        "prn": either("1001"),
        "jti": either("x"),
    }
).map(build)


@fuzz
@given(
    scheme=st.sampled_from(["JWT ", "jwt ", "Bearer ", "", "JWT  "]),
    kind=st.sampled_from(["text", "claims", "query"]),
    text=header_text,
    claims=claim_sets,
)
async def test_webhook_arbitrary_tokens(
    world: World, scheme: str, kind: str, text: str, claims: dict[str, Any]
) -> None:
    if claims.get("iss") == "<iss>":
        claims["iss"] = world.room.oauth_id
    token = text
    if kind == "claims":
        token = jwt.encode(claims, world.room.oauth_secret, algorithm="HS256")
    message = world.hipchat.message("/remember color red", message_id=f"t-{time.monotonic_ns()}")
    body = {
        "event": "room_message",
        "item": {"message": message, "room": world.hipchat.room(1)},
        "oauth_client_id": world.room.oauth_id,
    }
    if kind == "query":
        send = world.client.post(
            "/webhook/room_message", params={"signed_request": text}, json=body
        )
    else:
        value = (scheme + token).encode("utf-8" if kind == "claims" else "latin-1")
        send = world.client.post(
            "/webhook/room_message", json=body, headers=[(b"authorization", value)]
        )
    response = await world.check(lambda: send)
    if response.status_code < 400:  # only a correctly signed, fitting JWT gets in
        assert kind == "claims"


# -- install callbacks and client-side flows ---------------------------------------------------


def install_payloads() -> st.SearchStrategy[Any]:
    structured = st.fixed_dictionaries(
        {
            "oauthId": either("fuzz-client", some_text),
            "oauthSecret": either("fuzz-secret", some_text),
            "capabilitiesUrl": either("http://hipchat.test/v2/capabilities", some_text),
            "groupId": either(1),
            "roomId": either(1),
        }
    ).map(build)
    return structured | json_values


@fuzz
@given(payload=install_payloads(), path=st.sampled_from(["/installable", "/installable/update"]))
async def test_install_payloads(world: World, payload: Any, path: str) -> None:
    response = await world.check(
        lambda: world.client.post(path, content=json.dumps(payload).encode())
    )
    # The fake knows no client "fuzz-client": nothing may install without its real credentials.
    assert response.status_code >= 400
    assert await world.addon.installations.oauth_ids() == {world.room.oauth_id}


query_values = st.one_of(
    some_text,
    st.sampled_from(
        [
            "http://hipchat.test/v2/addon/installable/nope",
            "http://hipchat.test/addons/done",
            "http://hipchat.test.evil.example/",
            "https://evil.example/addons/done",
            "javascript:alert(1)",
            "//evil.example",
        ]
    ),
)
query_keys = st.sampled_from(["installable_url", "redirect_url", "oauth_id", "x"]) | st.text(
    max_size=10
)


@fuzz
@given(
    path=st.sampled_from(
        ["/installable/installed", "/installable/updated", "/installable/uninstalled"]
    ),
    query=st.dictionaries(query_keys, query_values, max_size=4),
)
async def test_client_side_flow_queries(world: World, path: str, query: dict[str, str]) -> None:
    response = await world.check(lambda: world.client.get(path, params=query))
    if response.status_code in (301, 302, 303, 307, 308):
        location = response.headers["location"]
        assert location.startswith(world.hipchat.base_url + "/"), location
    assert await world.addon.installations.oauth_ids() == {world.room.oauth_id}


# -- admin imports and the install trigger -----------------------------------------------------

storage_names = st.sampled_from(
    ["global/echo", "global/../x", "../../etc", "a/b/c", "global/", "/x"]
) | st.text(max_size=20)
admin_documents = (
    st.fixed_dictionaries(
        {"storage": either({}, st.dictionaries(storage_names, json_values, max_size=3))}
    ).map(build)
    | json_values
)


@fuzz
@given(document=admin_documents)
async def test_admin_imports(world: World, document: Any) -> None:
    auth = {"Authorization": f"Bearer {ADMIN}"}
    response = await world.check(
        lambda: world.client.put(
            "/admin/storage", content=json.dumps(document).encode(), headers=auth
        )
    )
    if response.status_code == 200:
        exported = (await world.client.get("/admin/storage", headers=auth)).json()
        assert isinstance(exported["storage"], dict)


@fuzz
@given(query=st.dictionaries(st.sampled_from(["hipchat", "room", "x"]), query_values, max_size=3))
async def test_install_trigger(world: World, query: dict[str, str]) -> None:
    before = await world.snapshot()
    response = await world.check(lambda: world.client.get("/install", params=query))
    assert await world.snapshot() == before  # the trigger never writes
    if response.status_code == 302:
        location = httpx.URL(response.headers["location"])
        assert location.host in world.addon.settings.hipchat_hosts, location


@fuzz
@given(
    text=some_text,
    sender=st.integers(min_value=-(2**63), max_value=2**63) | st.text(max_size=12),
    room_id=st.integers(min_value=-(2**63), max_value=2**63),
)
async def test_webhook_messages_with_matching_claims(
    world: World, text: str, sender: int | str, room_id: int
) -> None:
    # Well-formed webhooks whose JWT agrees with the body: the dispatcher, not the door, decides.
    room = world.room
    message = world.hipchat.message(text, message_id=f"w-{time.monotonic_ns()}")
    message["from"]["id"] = sender
    body = {
        "event": "room_message",
        "item": {"message": message, "room": world.hipchat.room(room_id)},
        "oauth_client_id": room.oauth_id,
    }
    token = sign_jwt(room.oauth_id, room.oauth_secret, now=time.time(), sub=sender, room_id=room_id)
    response = await world.check(
        lambda: world.client.post(
            "/webhook/room_message", json=body, headers={"Authorization": f"JWT {token}"}
        )
    )
    if room_id != 1:  # the installation is for room 1 only
        assert response.status_code == 401


@fuzz
@given(
    path=st.sampled_from(["/oauth/approve", "/oauth/callback"]),
    query=st.dictionaries(
        st.sampled_from(["state", "code", "user", "error", "x"]), query_values, max_size=4
    ),
)
async def test_approval_links(world: World, path: str, query: dict[str, str]) -> None:
    # Approval pages are HTML for a browser; a refusal still must not be a 5xx or change data.
    before = await world.snapshot()
    response = await world.client.get(path, params=query)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert await world.snapshot() == before

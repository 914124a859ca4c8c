"""HipChatClient against FakeRestAPI, served in-process: every operation, paging, retries, auth."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.applications import Starlette

from addon.errors import HipChatAPIError, UpstreamError
from addon.hipchat import HipChatAuth, HipChatClient, StaticToken, TokenSource
from addon.hipchat.operations import OPERATIONS, OPERATIONS_BY_NAME
from addon.testing.api import FakeRestAPI, RecordedRequest

BASE = "http://hipchat.test/v2/"
TOKEN = "secret-token-123"
LABEL = {"label": {"type": "html", "value": "<b>4</b> open"}}
ACTION = {"name": {"value": "Do it"}, "target": "dialog", "location": "hipchat.input.action"}


class Sleeps:
    """A ``sleep`` that records how long it was asked to wait, and does not wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def asgi(api: FakeRestAPI) -> httpx.ASGITransport:
    """The fake mounted at /v2, as FakeHipChat mounts it."""
    return httpx.ASGITransport(app=Starlette(routes=[api.mount("/v2")]))


def make_client(
    api: FakeRestAPI,
    sleeps: Sleeps,
    *,
    token: str | TokenSource = TOKEN,
    transport: httpx.AsyncBaseTransport | None = None,
    **options: Any,
) -> HipChatClient:
    return HipChatClient(
        BASE, token=token, transport=transport or asgi(api), sleep=sleeps, **options
    )


@pytest.fixture
def api() -> FakeRestAPI:
    return FakeRestAPI(rooms=[{"id": 1, "name": "Ops"}])


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def hipchat(api: FakeRestAPI, sleeps: Sleeps) -> AsyncIterator[HipChatClient]:
    async with make_client(api, sleeps) as client:
        yield client


# -- one case per operation ------------------------------------------------------------------

Call = Callable[[HipChatClient], Awaitable[object]]


@dataclasses.dataclass(frozen=True)
class Case:
    """Call the client so; the fake must then have received this request."""

    call: Call
    path: str
    query: Mapping[str, str] = dataclasses.field(default_factory=dict)
    json: object = None
    check: Callable[[RecordedRequest], None] | None = None


def _form_is_client_credentials(request: RecordedRequest) -> None:
    assert dict(parse_qsl(request.body.decode())) == {
        "grant_type": "client_credentials",
        "scope": "send_notification",
    }
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"id:pw").decode()


def _is_file_share(request: RecordedRequest) -> None:
    assert request.headers["content-type"].startswith("multipart/related; boundary=")
    assert b'name="metadata"' in request.body and b'{"message": "here"}' in request.body
    assert b'name="file"; filename="notes.txt"' in request.body
    assert b"Content-Type: text/plain" in request.body and b"\r\n\r\nDATA\r\n" in request.body


def _then(first: Call, second: Call) -> Call:
    async def both(client: HipChatClient) -> object:
        await first(client)
        return await second(client)

    return both


def _webhook_then(method: str) -> Call:
    async def call(client: HipChatClient) -> object:
        created = await client.create_room_webhook("Ops", "https://a.test/h", "room_message")
        result: object = await getattr(client, method)("Ops", created["id"])
        return result

    return call


def _extension_cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for kind, wire in (("action", "action"), ("glance", "glance"), ("web_panel", "webPanel")):
        cases.update(_extension_cases_of(kind, wire))
    return {**cases, **_extension_cases_of("dialog", "dialog")}


def _extension_cases_of(kind: str, wire: str) -> dict[str, Case]:
    cases: dict[str, Case] = {}
    body = {**ACTION, "key": "k"}
    for scope, args, prefix in (("room", ("Ops",), "/room/Ops"), ("global", (), "")):
        path = f"{prefix}/extension/{wire}/k"

        def method(verb: str, scope: str = scope, args: tuple[str, ...] = args) -> Call:
            name = f"{verb}_{scope}_{kind}"
            extra: tuple[object, ...] = (ACTION,) if verb == "create" else ()
            return lambda client: getattr(client, name)(*args, "k", *extra)

        create = method("create")
        cases[f"create_{scope}_{kind}"] = Case(create, path, json=body)
        cases[f"get_{scope}_{kind}"] = Case(_then(create, method("get")), path)
        cases[f"delete_{scope}_{kind}"] = Case(_then(create, method("delete")), path)
    return cases


PAGE = {"start-index": "0", "max-results": "100"}

CASES: dict[str, Case] = {
    # capabilities and OAuth
    "get_capabilities": Case(lambda c: c.get_capabilities(), "/capabilities"),
    "get_addon_capabilities_schema": Case(
        lambda c: c.get_addon_capabilities_schema(draft="v4"),
        "/capabilities/addon/schema",
        {"draft": "v4"},
    ),
    "generate_token": Case(
        lambda c: c.generate_token(
            "client_credentials", client_id="id", client_secret="pw", scope="send_notification"
        ),
        "/oauth/token",
        check=_form_is_client_credentials,
    ),
    "get_session": Case(lambda c: c.get_session("abc"), "/oauth/token/abc"),
    "delete_session": Case(lambda c: c.delete_session("abc"), "/oauth/token/abc"),
    # group
    "get_group": Case(lambda c: c.get_group(7), "/group/7"),
    "get_group_avatar": Case(lambda c: c.get_group_avatar(7), "/group/7/avatar"),
    "update_group_avatar": Case(
        lambda c: c.update_group_avatar(7, b"png"), "/group/7/avatar", json={"avatar": "cG5n"}
    ),
    "delete_group_avatar": Case(lambda c: c.delete_group_avatar(7), "/group/7/avatar"),
    "get_group_statistics": Case(lambda c: c.get_group_statistics(7), "/group/7/statistics"),
    "get_all_emoticons": Case(
        lambda c: c.get_all_emoticons(type="group", start_index=5, max_results=10),
        "/emoticon",
        {"type": "group", "start-index": "5", "max-results": "10"},
    ),
    "get_emoticon": Case(lambda c: c.get_emoticon("shrug"), "/emoticon/shrug"),
    "invite_user_to_group": Case(
        lambda c: c.invite_user_to_group("a@b.test", "Ann", title="CTO"),
        "/invite/user",
        json={"email": "a@b.test", "name": "Ann", "title": "CTO"},
    ),
    # add-on UI and links
    "create_integration_link": Case(
        lambda c: c.create_integration_link("https://a.test/x", 60),
        "/addon/link",
        json={"target": "https://a.test/x", "ttl": 60},
    ),
    "delete_integration_link": Case(lambda c: c.delete_integration_link("lnk"), "/addon/link/lnk"),
    "update_glance": Case(
        lambda c: c.update_glance({"g": LABEL}),
        "/addon/ui",
        json={"glance": [{"key": "g", "content": LABEL}]},
    ),
    "update_room_glance": Case(
        lambda c: c.update_room_glance("Ops", {"g": LABEL}),
        "/addon/ui/room/Ops",
        json={"glance": [{"key": "g", "content": LABEL}]},
    ),
    "update_user_glance": Case(
        lambda c: c.update_user_glance("bob@example.com", {"g": LABEL}),
        "/addon/ui/user/bob%40example.com",
        json={"glance": [{"key": "g", "content": LABEL}]},
    ),
    "update_room_user_glance": Case(
        lambda c: c.update_room_user_glance("Ops", 42, {"g": LABEL}),
        "/addon/ui/room/Ops/user/42",
        json={"glance": [{"key": "g", "content": LABEL}]},
    ),
    **_extension_cases(),
    # rooms
    "get_all_rooms": Case(
        lambda c: c.get_all_rooms(include_private=True, max_results=2),
        "/room",
        {"include-private": "true", "start-index": "0", "max-results": "2"},
    ),
    "create_room": Case(
        lambda c: c.create_room("New room", privacy="private", topic="t"),
        "/room",
        json={"name": "New room", "privacy": "private", "topic": "t"},
    ),
    "get_room": Case(lambda c: c.get_room("Ops"), "/room/Ops"),
    "update_room": Case(
        lambda c: c.update_room(
            "Ops",
            name="Ops",
            privacy="public",
            is_archived=False,
            is_guest_accessible=True,
            topic="t",
            owner_id=42,
        ),
        "/room/Ops",
        json={
            "name": "Ops",
            "privacy": "public",
            "is_archived": False,
            "is_guest_accessible": True,
            "topic": "t",
            "owner": {"id": 42},
        },
    ),
    "delete_room": Case(lambda c: c.delete_room("Ops"), "/room/Ops"),
    "set_topic": Case(lambda c: c.set_topic(1, "New"), "/room/1/topic", json={"topic": "New"}),
    "get_room_avatar": Case(lambda c: c.get_room_avatar("Ops"), "/room/Ops/avatar"),
    "update_room_avatar": Case(
        lambda c: c.update_room_avatar("Ops", "aGk="), "/room/Ops/avatar", json={"avatar": "aGk="}
    ),
    "delete_room_avatar": Case(lambda c: c.delete_room_avatar("Ops"), "/room/Ops/avatar"),
    "get_room_statistics": Case(lambda c: c.get_room_statistics("Ops"), "/room/Ops/statistics"),
    "get_all_participants": Case(
        lambda c: c.get_all_participants("Ops", include_offline=True),
        "/room/Ops/participant",
        {"include-offline": "true", **PAGE},
    ),
    "get_all_members": Case(lambda c: c.get_all_members("Ops"), "/room/Ops/member", PAGE),
    "add_member": Case(
        lambda c: c.add_member("Ops", 42, room_roles=["room_admin"]),
        "/room/Ops/member/42",
        json={"room_roles": ["room_admin"]},
    ),
    "remove_member": Case(lambda c: c.remove_member("Ops", 42), "/room/Ops/member/42"),
    "invite_user": Case(
        lambda c: c.invite_user("Ops", "@bob", "join us"),
        "/room/Ops/invite/%40bob",
        json={"reason": "join us"},
    ),
    "get_all_room_webhooks": Case(
        lambda c: c.get_all_room_webhooks("Ops"), "/room/Ops/webhook", PAGE
    ),
    "create_room_webhook": Case(
        lambda c: c.create_room_webhook(
            "Ops", "https://a.test/h", "room_message", pattern="^/echo", name="echo"
        ),
        "/room/Ops/webhook",
        json={
            "url": "https://a.test/h",
            "event": "room_message",
            "pattern": "^/echo",
            "name": "echo",
        },
    ),
    "get_room_webhook": Case(_webhook_then("get_room_webhook"), "/room/Ops/webhook/1001"),
    "delete_room_webhook": Case(_webhook_then("delete_room_webhook"), "/room/Ops/webhook/1001"),
    # messages
    "send_room_notification": Case(
        lambda c: c.send_room_notification(
            "Ops",
            "hi",
            color="green",
            notify=True,
            card={"style": "link", "id": "c1", "title": "T"},
            from_="bot",
            attach_to="m1",
        ),
        "/room/Ops/notification",
        json={
            "message": "hi",
            "message_format": "html",
            "color": "green",
            "notify": True,
            "card": {"style": "link", "id": "c1", "title": "T"},
            "from": "bot",
            "attach_to": "m1",
        },
    ),
    "send_message": Case(
        lambda c: c.send_message("Ops", "hello"), "/room/Ops/message", json={"message": "hello"}
    ),
    "reply_to_message": Case(
        lambda c: c.reply_to_message("Ops", "m1", "re"),
        "/room/Ops/reply",
        json={"parentMessageId": "m1", "message": "re"},
    ),
    "share_link_with_room": Case(
        lambda c: c.share_link_with_room("Ops", "https://a.test", "look"),
        "/room/Ops/share/link",
        json={"link": "https://a.test", "message": "look"},
    ),
    "share_file_with_room": Case(
        lambda c: c.share_file_with_room("Ops", b"DATA", "notes.txt", "here"),
        "/room/Ops/share/file",
        check=_is_file_share,
    ),
    "get_room_history": Case(
        lambda c: c.get_room_history(
            "Ops", date="recent", reverse=False, include_deleted=True, max_results=50
        ),
        "/room/Ops/history",
        {
            "date": "recent",
            "reverse": "false",
            "include_deleted": "true",
            "start-index": "0",
            "max-results": "50",
        },
    ),
    "get_recent_room_history": Case(
        lambda c: c.get_recent_room_history("Ops", not_before="m1", max_results=10),
        "/room/Ops/history/latest",
        {"not-before": "m1", "max-results": "10"},
    ),
    "get_room_message": Case(
        lambda c: c.get_room_message("Ops", "m1", timezone="UTC"),
        "/room/Ops/history/m1",
        {"timezone": "UTC"},
    ),
    # users
    "get_all_users": Case(
        lambda c: c.get_all_users(include_guests=True, include_deleted=False),
        "/user",
        {"include-guests": "true", "include-deleted": "false", **PAGE},
    ),
    "create_user": Case(
        lambda c: c.create_user("Bob", "bob@example.com", mention_name="bob"),
        "/user",
        json={"name": "Bob", "email": "bob@example.com", "mention_name": "bob"},
    ),
    "get_user": Case(lambda c: c.get_user("@bob"), "/user/%40bob"),
    "update_user": Case(
        lambda c: c.update_user(42, name="Bob", mention_name="bob", email="b@e.test", title="Dev"),
        "/user/42",
        json={"name": "Bob", "mention_name": "bob", "email": "b@e.test", "title": "Dev"},
    ),
    "delete_user": Case(lambda c: c.delete_user(42), "/user/42"),
    "get_photo": Case(lambda c: c.get_photo(42, "big"), "/user/42/photo/big"),
    "update_photo": Case(
        lambda c: c.update_photo(42, b"img"), "/user/42/photo", json={"photo": "aW1n"}
    ),
    "delete_photo": Case(lambda c: c.delete_photo(42), "/user/42/photo"),
    "get_auto_join_rooms": Case(
        lambda c: c.get_auto_join_rooms(42), "/user/42/preference/auto-join", PAGE
    ),
    "send_privatechat_message": Case(
        lambda c: c.send_privatechat_message("bob@example.com", "psst", notify=True),
        "/user/bob%40example.com/message",
        json={"message": "psst", "message_format": "text", "notify": True},
    ),
    "share_link_with_user": Case(
        lambda c: c.share_link_with_user(42, "https://a.test"),
        "/user/42/share/link",
        json={"link": "https://a.test"},
    ),
    "share_file_with_user": Case(
        lambda c: c.share_file_with_user(42, b"DATA", "notes.txt", "here"),
        "/user/42/share/file",
        check=_is_file_share,
    ),
    "get_privatechat_history": Case(
        lambda c: c.get_privatechat_history(42, end_date="2015-01-01"),
        "/user/42/history",
        {"end-date": "2015-01-01", **PAGE},
    ),
    "get_recent_privatechat_history": Case(
        lambda c: c.get_recent_privatechat_history(42), "/user/42/history/latest"
    ),
    "get_privatechat_message": Case(
        lambda c: c.get_privatechat_message(42, "m1"), "/user/42/history/m1"
    ),
}


def test_there_is_a_case_for_every_operation() -> None:
    assert set(CASES) == {op.name for op in OPERATIONS}


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(CASES))
async def test_each_operation_sends_the_right_request(
    name: str, hipchat: HipChatClient, api: FakeRestAPI
) -> None:
    case, op = CASES[name], OPERATIONS_BY_NAME[name]
    result = await case.call(hipchat)

    request = api.requests[-1]
    assert (request.operation, request.method, request.path) == (name, op.method, case.path)
    assert request.query == case.query
    assert request.json == case.json
    if case.check:
        case.check(request)
    if name != "generate_token":
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert isinstance(result, _result_type(name))


def _result_type(name: str) -> type:
    op = OPERATIONS_BY_NAME[name]
    if op.success == 204 or (op.method, op.success) == ("PUT", 201):  # extensions: nothing to use
        return type(None)
    return str if op.success == 302 else dict


# -- paging ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_iter_rooms_follows_pages_until_a_short_one(sleeps: Sleeps) -> None:
    api = FakeRestAPI(rooms=[{"id": i, "name": f"Room {i}"} for i in range(1, 26)])
    async with make_client(api, sleeps) as hipchat:
        rooms = [room async for room in hipchat.iter_rooms(page_size=10)]

    assert [room["id"] for room in rooms] == list(range(1, 26))
    assert [r.query["start-index"] for r in api.requests] == ["0", "10", "20"]
    assert rooms[0]["links"]["self"] == "http://hipchat.test/v2/room/1"


@pytest.mark.anyio
async def test_iteration_stops_when_a_full_page_has_no_next_link(sleeps: Sleeps) -> None:
    api = FakeRestAPI(users=[{"id": i, "name": f"U{i}"} for i in range(1, 21)])
    async with make_client(api, sleeps) as hipchat:
        users = [user async for user in hipchat.iter_users(page_size=10, include_guests=True)]

    assert len(users) == 20
    assert [r.query for r in api.requests] == [
        {"include-guests": "true", "start-index": "0", "max-results": "10"},
        {"include-guests": "true", "start-index": "10", "max-results": "10"},
    ]


ITERATIONS: dict[str, Callable[[HipChatClient], AsyncIterator[dict[str, Any]]]] = {
    "iter_emoticons": lambda c: c.iter_emoticons(page_size=2),
    "iter_rooms": lambda c: c.iter_rooms(page_size=2),
    "iter_participants": lambda c: c.iter_participants("Ops", page_size=2),
    "iter_members": lambda c: c.iter_members("Ops", page_size=2),
    "iter_room_webhooks": lambda c: c.iter_room_webhooks("Ops", page_size=2),
    "iter_room_history": lambda c: c.iter_room_history("Ops", page_size=2),
    "iter_users": lambda c: c.iter_users(page_size=2),
    "iter_privatechat_history": lambda c: c.iter_privatechat_history(42, page_size=2),
    "iter_auto_join_rooms": lambda c: c.iter_auto_join_rooms(42, page_size=2),
}


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(ITERATIONS))
async def test_every_iterator_pages_across_several_pages(name: str, sleeps: Sleeps) -> None:
    five = [{"id": i, "name": f"N{i}", "shortcut": f"s{i}", "message": "m"} for i in range(1, 6)]
    api = FakeRestAPI(rooms=five, users=five, history=five, emoticons=five)
    async with make_client(api, sleeps) as hipchat:
        for i in range(5):
            await hipchat.create_room_webhook("Ops", f"https://a.test/{i}", "room_message")
        items = [item async for item in ITERATIONS[name](hipchat)]

    assert len(items) == 5
    pages = [r for r in api.requests if r.method == "GET"]
    assert [r.query["start-index"] for r in pages] == ["0", "2", "4"]


@pytest.mark.anyio
async def test_a_page_size_below_one_is_refused(hipchat: HipChatClient) -> None:
    with pytest.raises(ValueError, match="page_size"):
        _ = [room async for room in hipchat.iter_rooms(page_size=0)]


# -- rate limits and retries -----------------------------------------------------------------


@pytest.mark.anyio
async def test_429_waits_as_retry_after_says_then_retries(
    hipchat: HipChatClient, api: FakeRestAPI, sleeps: Sleeps
) -> None:
    api.fail_next(429, retry_after=7)

    await hipchat.send_room_notification("Ops", "hi")

    assert sleeps.waits == [7.0]
    assert len(api.requests) == 2
    assert api.notifications("Ops") == ["hi"]


@pytest.mark.anyio
async def test_429_waits_until_x_ratelimit_reset(api: FakeRestAPI, sleeps: Sleeps) -> None:
    api.fail_next(429, ratelimit_reset=1_012)
    async with make_client(api, sleeps, now=lambda: 1_000.0) as hipchat:
        await hipchat.get_room("Ops")

    assert sleeps.waits == [12.0]
    assert len(api.requests) == 2


@pytest.mark.anyio
async def test_429_waits_are_capped_by_max_retry_wait(api: FakeRestAPI, sleeps: Sleeps) -> None:
    api.fail_next(429, retry_after=3_600)
    async with make_client(api, sleeps, max_retry_wait=30.0) as hipchat:
        await hipchat.get_room("Ops")

    assert sleeps.waits == [30.0]


@pytest.mark.anyio
async def test_429_retries_are_bounded(api: FakeRestAPI, sleeps: Sleeps) -> None:
    api.fail_next(429, retry_after=1, count=10)
    async with make_client(api, sleeps, max_retries=3) as hipchat:
        with pytest.raises(HipChatAPIError) as raised:
            await hipchat.send_room_notification("Ops", "hi")

    assert raised.value.status_code == 429
    assert sleeps.waits == [1.0, 1.0, 1.0]
    assert len(api.requests) == 4


def answers(*responses: httpx.Response) -> httpx.MockTransport:
    """A transport that answers with ``responses`` in turn (the last one from then on)."""
    queue = list(responses)
    return httpx.MockTransport(lambda request: queue.pop(0) if len(queue) > 1 else queue[0])


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"Retry-After": "Thu, 01 Jan 1970 00:16:50 GMT"}, 10.0),
        ({"X-FloodControl-Remaining": "0", "X-FloodControl-Reset": "1005"}, 5.0),
        ({"X-FloodControl-Remaining": "3", "X-Ratelimit-Reset": "1020"}, 20.0),
        ({"X-Ratelimit-Reset": "900"}, 0.0),
        ({"Retry-After": "soon"}, 0.5),
        ({}, 0.5),
    ],
    ids=["http-date", "flood-control", "rate-limit", "reset-passed", "unreadable", "no-header"],
)
async def test_429_wait_comes_from_the_headers_hipchat_sends(
    sleeps: Sleeps, headers: dict[str, str], wait: float
) -> None:
    transport = answers(httpx.Response(429, headers=headers), httpx.Response(200, json={}))
    async with HipChatClient(
        BASE, token=TOKEN, transport=transport, sleep=sleeps, now=lambda: 1_000.0
    ) as hipchat:
        await hipchat.get_room(1)

    assert sleeps.waits == [wait]


def test_negative_retry_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        HipChatClient(BASE, token=TOKEN, max_retries=-1)


@pytest.mark.anyio
async def test_5xx_on_get_is_retried_with_backoff(
    hipchat: HipChatClient, api: FakeRestAPI, sleeps: Sleeps
) -> None:
    api.fail_next(503, count=2)

    room = await hipchat.get_room("Ops")

    assert room["id"] == 1
    assert sleeps.waits == [0.5, 1.0]
    assert len(api.requests) == 3


@pytest.mark.anyio
async def test_5xx_on_get_gives_up_after_max_retries(api: FakeRestAPI, sleeps: Sleeps) -> None:
    api.fail_next(502, count=5)
    async with make_client(api, sleeps, max_retries=2) as hipchat:
        with pytest.raises(HipChatAPIError) as raised:
            await hipchat.delete_room("Ops")

    assert (raised.value.status_code, raised.value.method) == (502, "DELETE")
    assert len(api.requests) == 3


@pytest.mark.anyio
async def test_5xx_on_post_is_not_retried(
    hipchat: HipChatClient, api: FakeRestAPI, sleeps: Sleeps
) -> None:
    api.fail_next(500)

    with pytest.raises(HipChatAPIError) as raised:
        await hipchat.send_room_notification("Ops", "hi")

    assert raised.value.status_code == 500
    assert len(api.requests) == 1
    assert sleeps.waits == []


class FailingTransport(httpx.AsyncBaseTransport):
    """Raises ``error`` for the first ``failures`` requests, then passes them on."""

    def __init__(self, inner: httpx.AsyncBaseTransport, error: Exception, failures: int) -> None:
        self.inner = inner
        self.error = error
        self.failures = failures
        self.timeouts: list[object] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.timeouts.append(request.extensions.get("timeout"))
        if self.failures > 0:
            self.failures -= 1
            raise self.error
        return await self.inner.handle_async_request(request)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")],
    ids=["connect-error", "read-timeout"],
)
async def test_connection_errors_and_timeouts_on_get_are_retried(
    api: FakeRestAPI, sleeps: Sleeps, error: Exception
) -> None:
    transport = FailingTransport(asgi(api), error, failures=2)
    async with make_client(api, sleeps, transport=transport) as hipchat:
        room = await hipchat.get_room("Ops")

    assert room["name"] == "Ops"
    assert sleeps.waits == [0.5, 1.0]
    assert len(api.requests) == 1


@pytest.mark.anyio
async def test_connection_errors_on_post_are_not_retried(api: FakeRestAPI, sleeps: Sleeps) -> None:
    transport = FailingTransport(asgi(api), httpx.ConnectError("refused"), failures=1)
    async with make_client(api, sleeps, transport=transport) as hipchat:
        with pytest.raises(UpstreamError, match="ConnectError") as raised:
            await hipchat.send_room_notification("Ops", "hi")

    assert not isinstance(raised.value, HipChatAPIError)
    assert isinstance(raised.value.__cause__, httpx.ConnectError)
    assert api.requests == []
    assert sleeps.waits == []


@pytest.mark.anyio
async def test_connection_errors_give_up_after_max_retries(
    api: FakeRestAPI, sleeps: Sleeps
) -> None:
    transport = FailingTransport(asgi(api), httpx.ConnectError("refused"), failures=9)
    async with make_client(api, sleeps, transport=transport, max_retries=1) as hipchat:
        with pytest.raises(UpstreamError, match=r"GET http://hipchat.test/v2/room/Ops failed"):
            await hipchat.get_room("Ops")

    assert transport.failures == 7


@pytest.mark.anyio
async def test_every_request_carries_the_timeout(api: FakeRestAPI, sleeps: Sleeps) -> None:
    transport = FailingTransport(asgi(api), httpx.ConnectError("unused"), failures=0)
    async with make_client(api, sleeps, transport=transport, timeout=4.0) as hipchat:
        await hipchat.get_room("Ops")
        await hipchat.send_room_notification("Ops", "hi")

    expected = {"connect": 4.0, "read": 4.0, "write": 4.0, "pool": 4.0}
    assert transport.timeouts == [expected, expected]


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_error_carries_status_method_url_and_hipchats_message(
    hipchat: HipChatClient,
) -> None:
    with pytest.raises(HipChatAPIError) as raised:
        await hipchat.get_room_webhook("Ops", 99)

    error = raised.value
    assert error.status_code == 404
    assert error.method == "GET"
    assert error.url == "http://hipchat.test/v2/room/Ops/webhook/99"
    assert error.message == "Webhook 99 not found"
    assert isinstance(error.__cause__, httpx.HTTPStatusError)
    assert TOKEN not in f"{error} {error!r} {error.args}"


@pytest.mark.anyio
async def test_an_error_without_hipchats_body_carries_a_short_excerpt(sleeps: Sleeps) -> None:
    page = "<html>\n  <body>Bad gateway</body>\n</html>" + "x" * 500
    transport = httpx.MockTransport(lambda request: httpx.Response(502, text=page))
    async with HipChatClient(BASE, token=TOKEN, transport=transport, max_retries=0) as hipchat:
        with pytest.raises(HipChatAPIError) as raised:
            await hipchat.get_room("Ops")

    assert raised.value.message.startswith("<html> <body>Bad gateway</body> </html>xxx")
    assert len(raised.value.message) == 200


@pytest.mark.anyio
async def test_an_error_never_shows_a_token_from_the_path(
    hipchat: HipChatClient, api: FakeRestAPI
) -> None:
    api.fail_next(400)

    with pytest.raises(HipChatAPIError) as raised:
        await hipchat.delete_session("their-access-token")

    assert raised.value.url == "http://hipchat.test/v2/oauth/token/{access_token}"
    assert "their-access-token" not in str(raised.value)


@pytest.mark.anyio
async def test_an_error_with_an_empty_body_carries_the_reason_phrase() -> None:
    async with HipChatClient(BASE, token=TOKEN, transport=answers(httpx.Response(403))) as hipchat:
        with pytest.raises(HipChatAPIError, match="Forbidden"):
            await hipchat.get_room("Ops")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "response",
    [httpx.Response(200, json=[1, 2]), httpx.Response(200, text="<html>")],
    ids=["array", "not-json"],
)
async def test_a_body_that_is_not_an_object_is_an_upstream_error(response: httpx.Response) -> None:
    async with HipChatClient(BASE, token=TOKEN, transport=answers(response)) as hipchat:
        with pytest.raises(UpstreamError, match="get_room"):
            await hipchat.get_room("Ops")


# -- authentication ----------------------------------------------------------------------------


class RotatingTokens:
    """A ``TokenSource`` that hands out ``tokens`` in turn, moving on when one is invalidated."""

    def __init__(self, *tokens: str) -> None:
        self.tokens = list(tokens)
        self.invalidated: list[str] = []

    async def token(self) -> str:
        return self.tokens[0]

    async def invalidate(self, token: str) -> None:
        self.invalidated.append(token)
        self.tokens.remove(token)


@pytest.mark.anyio
async def test_a_401_invalidates_the_token_and_retries_once_with_a_fresh_one(
    sleeps: Sleeps,
) -> None:
    api = FakeRestAPI(is_valid_token=lambda token: token == "fresh")
    source = RotatingTokens("stale", "fresh")
    assert isinstance(source, TokenSource)
    async with make_client(api, sleeps, token=source) as hipchat:
        await hipchat.send_room_notification(1, "hi")

    assert source.invalidated == ["stale"]
    assert [r.headers["authorization"] for r in api.requests] == ["Bearer stale", "Bearer fresh"]
    assert api.notifications(1) == ["hi"]


@pytest.mark.anyio
async def test_a_second_401_raises(sleeps: Sleeps) -> None:
    api = FakeRestAPI(is_valid_token=lambda token: False)
    source = RotatingTokens("stale", "fresh", "unused")
    async with make_client(api, sleeps, token=source) as hipchat:
        with pytest.raises(HipChatAPIError) as raised:
            await hipchat.get_room(1)

    assert (raised.value.status_code, raised.value.message) == (401, "Invalid OAuth session")
    assert source.invalidated == ["stale"]
    assert len(api.requests) == 2
    assert "stale" not in str(raised.value) and "fresh" not in str(raised.value)


@pytest.mark.anyio
async def test_a_fixed_token_is_not_retried_after_a_401(sleeps: Sleeps) -> None:
    api = FakeRestAPI(is_valid_token=lambda token: False)
    async with make_client(api, sleeps) as hipchat:
        with pytest.raises(HipChatAPIError, match="401"):
            await hipchat.get_room(1)

    assert len(api.requests) == 1


@pytest.mark.anyio
async def test_the_token_travels_only_in_the_bearer_header(
    hipchat: HipChatClient, api: FakeRestAPI
) -> None:
    await hipchat.get_all_rooms()
    await hipchat.send_room_notification("Ops", "hi")
    await hipchat.get_room_history("Ops")

    for request in api.requests:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert "auth_token" not in request.query
        assert TOKEN not in request.path and TOKEN not in str(request.query)


def test_hipchat_auth_refuses_a_sync_client() -> None:
    auth = HipChatAuth(StaticToken(TOKEN))
    transport = httpx.MockTransport(lambda request: httpx.Response(204))
    with httpx.Client(transport=transport, auth=auth) as client, pytest.raises(RuntimeError):
        client.get("http://hipchat.test/")


def test_a_static_token_does_not_show_in_its_repr() -> None:
    assert TOKEN not in repr(StaticToken(TOKEN))


# -- paths ---------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("room", "path"),
    [
        ("My Room", "/room/My%20Room"),
        ("a/b", "/room/a%2Fb"),
        ("../user/1", "/room/..%2Fuser%2F1"),
        ("100%", "/room/100%25"),
        (1, "/room/1"),
    ],
    ids=["space", "slash", "dot-dot", "percent", "id"],
)
async def test_room_names_are_quoted_and_stay_one_segment(
    hipchat: HipChatClient, api: FakeRestAPI, room: str | int, path: str
) -> None:
    await hipchat.get_room(room)

    request = api.requests[-1]
    assert (request.operation, request.path) == ("get_room", path)
    assert request.path_params == {"room_id_or_name": str(room)}


@pytest.mark.anyio
async def test_a_room_name_with_a_slash_gets_its_notification(
    hipchat: HipChatClient, api: FakeRestAPI
) -> None:
    await hipchat.send_room_notification("Dev/Ops", "hi")
    assert api.notifications("Dev/Ops") == ["hi"]
    assert api.requests[-1].path == "/room/Dev%2FOps/notification"


@pytest.mark.anyio
async def test_an_empty_path_parameter_is_refused(hipchat: HipChatClient) -> None:
    with pytest.raises(ValueError, match="room_id_or_name"):
        await hipchat.get_room("")


@pytest.mark.anyio
async def test_the_base_url_works_without_a_trailing_slash(api: FakeRestAPI) -> None:
    async with HipChatClient(BASE.rstrip("/"), token=TOKEN, transport=asgi(api)) as hipchat:
        assert hipchat.base_url == "http://hipchat.test/v2"
        await hipchat.get_room("Ops")
    assert api.requests[-1].path == "/room/Ops"


# -- the client's own behaviour --------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("room", "user", "operation"),
    [
        (None, None, "update_glance"),
        ("Ops", None, "update_room_glance"),
        (None, 42, "update_user_glance"),
        ("Ops", 42, "update_room_user_glance"),
    ],
    ids=["group", "room", "user", "user-in-room"],
)
async def test_push_glance_picks_the_endpoint(
    hipchat: HipChatClient, api: FakeRestAPI, room: str | None, user: int | None, operation: str
) -> None:
    await hipchat.push_glance("g", LABEL, room=room, user=user)

    assert api.requests[-1].operation == operation
    assert api.requests[-1].json == {"glance": [{"key": "g", "content": LABEL}]}


@pytest.mark.anyio
async def test_share_file_reads_a_path_and_names_the_file_after_it(
    hipchat: HipChatClient, api: FakeRestAPI, tmp_path: Path
) -> None:
    report = tmp_path / "report.csv"
    report.write_bytes(b"a,b\n1,2\n")

    await hipchat.share_file_with_room("Ops", report)

    body = api.requests[-1].body
    assert b'filename="report.csv"' in body and b"\r\n\r\na,b\n1,2\n\r\n" in body
    assert b"Content-Type: text/csv" in body
    assert json.dumps({}).encode() in body  # metadata without a message


@pytest.mark.anyio
async def test_sharing_bytes_needs_a_filename(hipchat: HipChatClient) -> None:
    with pytest.raises(ValueError, match="filename"):
        await hipchat.share_file_with_user(42, b"DATA")


@pytest.mark.anyio
async def test_a_client_passed_in_is_used_and_left_open(api: FakeRestAPI) -> None:
    async with httpx.AsyncClient(transport=asgi(api)) as http:
        async with HipChatClient(BASE, token=TOKEN, http=http) as hipchat:
            await hipchat.get_room("Ops")
        assert not http.is_closed


@pytest.mark.anyio
async def test_http_and_transport_are_exclusive(api: FakeRestAPI) -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(ValueError, match="not both"):
            HipChatClient(BASE, token=TOKEN, http=http, transport=asgi(api))


# -- the fake itself -----------------------------------------------------------------------------


@pytest.fixture
async def raw(api: FakeRestAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Plain httpx against the fake, to see what it answers to what a client must not send."""
    async with httpx.AsyncClient(transport=asgi(api), base_url="http://hipchat.test/v2") as http:
        yield http


BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "url"),
    [
        ({}, "/room/1"),
        ({}, f"/room/1?auth_token={TOKEN}"),
        ({"Authorization": "Basic eDp5"}, "/room/1"),
    ],
    ids=["no-token", "token-in-query", "not-bearer"],
)
async def test_the_fake_wants_a_bearer_header(
    raw: httpx.AsyncClient, headers: dict[str, str], url: str
) -> None:
    response = await raw.get(url, headers=headers)

    assert response.status_code == 401
    assert response.json() == {
        "error": {"code": 401, "message": "Invalid OAuth session", "type": "Unauthorized"}
    }


@pytest.mark.anyio
async def test_the_fake_answers_unknown_paths_and_methods_like_hipchat(
    raw: httpx.AsyncClient,
) -> None:
    missing = await raw.get("/nothing/here", headers=BEARER)
    wrong_method = await raw.patch("/room/1", headers=BEARER)

    assert (missing.status_code, missing.json()["error"]["type"]) == (404, "Not Found")
    assert wrong_method.status_code == 405


@pytest.mark.anyio
async def test_the_fake_refuses_a_notification_without_a_message(
    raw: httpx.AsyncClient, api: FakeRestAPI
) -> None:
    response = await raw.post("/room/1/notification", json={"color": "red"}, headers=BEARER)

    assert response.status_code == 400
    assert "message" in response.json()["error"]["message"]
    assert api.notifications(1) == []


@pytest.mark.anyio
async def test_the_fake_sends_rate_limit_headers_and_enforces_the_limit(
    raw: httpx.AsyncClient, api: FakeRestAPI
) -> None:
    api.rate_limit = 2
    first = await raw.get("/room/1", headers=BEARER)
    await raw.get("/room/1", headers=BEARER)
    third = await raw.get("/room/1", headers=BEARER)

    assert first.headers["X-Ratelimit-Limit"] == "2"
    assert first.headers["X-Ratelimit-Remaining"] == "1"
    assert int(first.headers["X-Ratelimit-Reset"]) > 0
    assert third.status_code == 429
    assert third.headers["X-Ratelimit-Remaining"] == "0"


@pytest.mark.anyio
async def test_the_fake_finds_rooms_by_id_or_name(hipchat: HipChatClient, api: FakeRestAPI) -> None:
    await hipchat.send_room_notification("Ops", "by name")
    await hipchat.send_room_notification(1, "by id", color="red")

    assert api.notifications("Ops") == api.notifications(1) == ["by name", "by id"]
    assert api.notification_bodies(1)[1]["color"] == "red"
    assert (await hipchat.get_room(1))["name"] == "Ops"
    assert len(api.requests_for("send_room_notification")) == 2


BASIC = {"Authorization": "Basic " + base64.b64encode(b"id:pw").decode()}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "url", "options", "status", "message"),
    [
        ("POST", "/oauth/token", {"data": {"grant_type": "x"}}, 401, "client credentials"),
        ("POST", "/oauth/token", {"data": {}, "headers": BASIC}, 400, "grant_type"),
        (
            "POST",
            "/room/1/notification",
            {"content": b"{", "headers": {**BEARER, "Content-Type": "application/json"}},
            400,
            "JSON object",
        ),
        ("POST", "/room/1/notification", {"json": {"message": "x" * 10_001}}, 400, "10000"),
        ("POST", "/room/1/share/file", {"json": {"message": "no file"}}, 400, "file"),
        ("GET", "/room?start-index=x", {}, 400, "integers"),
        ("GET", "/room?max-results=5000", {}, 400, "1..1000"),
        ("GET", "/room/1/history/latest?max-results=0", {}, 400, "1..1000"),
        ("DELETE", "/room/1/webhook/5", {}, 404, "Webhook 5"),
        ("GET", "/room/1/extension/glance/nope", {}, 404, "'nope'"),
        ("GET", "/room//statistics", {}, 404, "No such resource"),
    ],
    ids=[
        "token-without-basic",
        "token-without-grant",
        "bad-json",
        "long-message",
        "share-without-file",
        "bad-start-index",
        "too-many-results",
        "too-few-recent",
        "unknown-webhook",
        "unknown-extension",
        "empty-segment",
    ],
)
async def test_the_fake_refuses_what_hipchat_refuses(
    raw: httpx.AsyncClient,
    method: str,
    url: str,
    options: dict[str, Any],
    status: int,
    message: str,
) -> None:
    headers = options.pop("headers", BEARER if "token" not in url else {})
    response = await raw.request(method, url, headers=headers, **options)

    assert response.status_code == status
    assert message in response.json()["error"]["message"]


@pytest.mark.anyio
async def test_the_fake_names_unusual_injected_statuses(
    raw: httpx.AsyncClient, api: FakeRestAPI
) -> None:
    api.fail_next(599)
    response = await raw.get("/room/1", headers=BEARER)
    assert response.json()["error"] == {
        "code": 599,
        "message": "Injected failure 599",
        "type": "Error",
    }


@pytest.mark.anyio
async def test_the_fake_finds_users_by_email_or_mention(sleeps: Sleeps) -> None:
    bob = {"id": 7, "name": "Bob", "mention_name": "bob", "email": "bob@example.com"}
    api = FakeRestAPI(users=[bob])
    async with make_client(api, sleeps) as client:
        by_email = await client.get_user("bob@example.com")
        by_mention = await client.get_user("@bob")
    assert by_email["id"] == by_mention["id"] == 7
    assert by_email["links"] == {"self": "http://hipchat.test/v2/user/7"}


@pytest.mark.anyio
async def test_the_fake_ignores_other_asgi_scopes(api: FakeRestAPI) -> None:
    async def receive() -> dict[str, Any]:
        raise AssertionError("not called")

    async def send(message: Mapping[str, Any]) -> None:
        raise AssertionError("not called")

    await api({"type": "lifespan"}, receive, send)
    assert api.requests == []


@pytest.mark.anyio
async def test_the_client_repr_shows_the_base_url_only() -> None:
    async with HipChatClient(BASE, token=TOKEN) as hipchat:
        assert repr(hipchat) == "HipChatClient('http://hipchat.test/v2')"

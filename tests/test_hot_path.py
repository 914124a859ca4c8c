"""The webhook hot path: one store round trip, claims released on refusal, statuses by class."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import httpx
import pytest
import redis.asyncio
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from addon import Integration, RoomMessage, errors
from addon.app import create_app
from addon.dispatch import Dispatcher
from addon.errors import AddonError, ConfigError, StoreUnavailable
from addon.hipchat import HipChatClient
from addon.jwt_auth import sign_jwt
from addon.routes import WebhookEndpoint, exception_handlers
from addon.server import uvicorn_options
from addon.settings import Settings
from addon.store import Store
from addon.store.redis import RedisStore
from addon.testing import AppTransport, FakeHipChat, Installed
from addon.wire import id_of, parse_webhook, room_id_of
from tests.helpers import REPO, eventually, free_port, make_app, served

pytestmark = pytest.mark.anyio


class CountingStore:
    """A ``Store`` that counts every call (each is one round trip) and passes it on."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.calls: Counter[str] = Counter()
        self.url = store.url

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await method(*args, **kwargs)

        return counted


@pytest.fixture
async def counting(store: Store) -> CountingStore:
    return CountingStore(store)


@pytest.fixture
async def counted_app(
    settings: Settings, counting: CountingStore, hipchat: FakeHipChat
) -> AsyncIterator[Starlette]:
    app = make_app(settings, cast(Store, counting), hipchat)
    yield app
    await app.state.addon.aclose(grace=5)


@pytest.fixture
async def room(
    counted_app: Starlette, hipchat: FakeHipChat, settings: Settings
) -> AsyncIterator[Installed]:
    async with hipchat.connect(counted_app, settings.base_url) as client:
        yield await hipchat.install(client, room_id=1)


async def test_an_accepted_webhook_costs_one_store_round_trip(
    hipchat: FakeHipChat, room: Installed, counting: CountingStore
) -> None:
    counting.calls.clear()
    response = await hipchat.send_message(room, "/echo once")
    assert response is not None and response.json()["message"] == "once"
    assert counting.calls == Counter({"read_and_claim": 1})
    # A message that selects no handler costs the same one round trip (the jti claim).
    counting.calls.clear()
    await hipchat.send_message(room, "just chatting")
    assert counting.calls == Counter()  # no webhook of the descriptor matches: nothing sent


async def test_a_forged_signature_releases_its_claims(
    hipchat: FakeHipChat, room: Installed, counting: CountingStore
) -> None:
    now = time.time()
    counting.calls.clear()
    forged = sign_jwt(
        room.oauth_id, "x" * 40, now=now, sub=1001, room_id=1, extra={"jti": "the-jti"}
    )
    refused = await hipchat.send_message(room, "/echo 1", message_id="m-1", token=forged)
    assert refused is not None and refused.status_code == 401
    assert counting.calls["delete"] == 1  # the claims just made, released
    # The same message id and jti, signed for real, now run: the forgery suppressed nothing.
    genuine = sign_jwt(
        room.oauth_id, room.oauth_secret, now=now, sub=1001, room_id=1, extra={"jti": "the-jti"}
    )
    accepted = await hipchat.send_message(room, "/echo 1", message_id="m-1", token=genuine)
    assert accepted is not None and accepted.status_code == 200
    assert accepted.json()["message"] == "1"
    # ...once: the jti and the message id are spent now.
    again = await hipchat.send_message(room, "/echo 1", message_id="m-1", token=genuine)
    assert again is not None and again.status_code == 401


async def test_a_token_refused_before_the_store_costs_no_round_trip(
    hipchat: FakeHipChat, room: Installed, counting: CountingStore
) -> None:
    expired = sign_jwt(room.oauth_id, room.oauth_secret, now=time.time() - 3600, sub=1001)
    counting.calls.clear()
    response = await hipchat.send_message(room, "/echo late", token=expired)
    assert response is not None and response.status_code == 401
    assert counting.calls == Counter()


STATUSES = [
    (errors.RequestError, 400),
    (errors.HostNotAllowed, 400),
    (errors.QuotaExceeded, 400),
    (errors.BodyTooLarge, 413),
    (errors.BodyTimeout, 408),
    (errors.AuthError, 401),
    (errors.InvalidJWT, 401),
    (errors.UnknownInstallation, 401),
    (errors.Forbidden, 403),
    (errors.ApprovalRequired, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.UpstreamError, 502),
    (errors.TokenError, 502),
    (errors.ClientGone, 502),
    (errors.StoreUnavailable, 503),
    (errors.ShuttingDown, 503),
    (errors.ConfigError, 500),
]


@pytest.mark.parametrize(("kind", "status"), STATUSES, ids=[k.__name__ for k, _ in STATUSES])
async def test_each_error_answers_the_status_its_class_carries(
    kind: type[AddonError], status: int
) -> None:
    async def fail(request: Request) -> Response:
        raise kind("what failed and how to fix it")

    app = Starlette(routes=[Route("/", fail)], exception_handlers=exception_handlers())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/")
    assert kind.http_status == status
    assert response.status_code == status
    assert response.json()["error"]["type"] == kind.__name__


async def test_create_room_sends_the_owner_as_a_string() -> None:
    sent: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        return httpx.Response(201, json={"id": 7, "links": {}})

    transport = httpx.MockTransport(answer)
    async with HipChatClient("http://hipchat.test/v2/", token="t", transport=transport) as client:
        await client.create_room("New", owner_user_id=5)
    assert b'"owner_user_id":"5"' in sent[0].replace(b" ", b"")


@pytest.mark.parametrize("getter", ["room", "group", "photo"])
async def test_an_avatar_redirect_without_location_raises(getter: str) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(302))
    async with HipChatClient("http://hipchat.test/v2/", token="t", transport=transport) as client:
        with pytest.raises(errors.UpstreamError, match="no Location"):
            if getter == "room":
                await client.get_room_avatar("Ops")
            elif getter == "group":
                await client.get_group_avatar(7)
            else:
                await client.get_photo(42, "big")


async def test_read_and_claim_reads_then_claims_only_what_is_free(store: Store) -> None:
    # One installation's keys share its hash tag, as Keys builds them (one slot on a cluster).
    assert await store.read_and_claim("{t}:inst", [("{t}:a", "1", 60)]) == (None, [False])
    assert await store.get("{t}:a") is None  # nothing is claimed for a missing installation
    await store.put("{t}:inst", "record")
    claims: list[tuple[str, str, float | None]] = [("{t}:a", "1", 60), ("{t}:b", "1", None)]
    assert await store.read_and_claim("{t}:inst", claims) == ("record", [True, True])
    again: list[tuple[str, str, float | None]] = [("{t}:a", "2", 60), ("{t}:c", "1", 60)]
    assert await store.read_and_claim("{t}:inst", again) == ("record", [False, True])
    assert (await store.get("{t}:a"), await store.get("{t}:c")) == ("1", "1")
    assert await store.read_and_claim("{t}:inst", []) == ("record", [])
    # The same claims sent again (a retry whose first reply was lost) find themselves made.
    assert await store.read_and_claim("{t}:inst", again) == ("record", [False, True])
    assert (await store.get("{t}:a"), await store.get("{t}:c")) == ("1", "1")


async def test_read_and_claim_survives_connections_the_server_dropped(
    redis_store: Store, redis_url: str
) -> None:
    # The webhook path sends its script on the process's lane; when Redis has closed that
    # connection, the command goes again on a new lane.
    await redis_store.put("{t}:inst", "record")
    assert await redis_store.read_and_claim("{t}:inst", []) == ("record", [])  # the lane is open
    admin = redis.asyncio.Redis.from_url(redis_url)
    try:
        killed = await admin.client_kill_filter(_type="normal", skipme=True)
    finally:
        await admin.aclose()
    assert killed >= 1
    claims: list[tuple[str, str, float | None]] = [("{t}:a", "1", 60)]
    assert await redis_store.read_and_claim("{t}:inst", claims) == ("record", [True])
    assert await redis_store.get("{t}:a") == "1"


async def test_read_and_claim_on_a_redis_that_never_answers_is_sent_twice_not_three_times() -> None:
    # A Redis that takes every command and answers none (stuck, or a network that drops
    # replies): the script goes once, and once more on a connection made afresh (redis-py's one
    # retry), so a request waits two socket timeouts for its 503, not three.
    sent: list[bytes] = []

    async def stuck_redis(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while header := await reader.readline():  # *N, then N times $len and the argument
            command = []
            for _ in range(int(header[1:])):
                size = int((await reader.readline())[1:])
                command.append((await reader.readexactly(size + 2))[:-2])
            name = command[0].upper()
            if name == b"EVALSHA":
                sent.append(name)  # and no answer
            else:  # the connection's set-up (CLIENT SETINFO...) and health check
                writer.write(b"+PONG\r\n" if name == b"PING" else b"+OK\r\n")
        writer.close()

    server = await asyncio.start_server(stuck_redis, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisStore(f"redis://127.0.0.1:{port}/0?socket_timeout=0.2")
    try:
        with pytest.raises(StoreUnavailable, match="TimeoutError"):
            await store.read_and_claim("{t}:inst", [("{t}:a", "1", 60)])
    finally:
        await store.close()
        server.close()
    assert len(sent) == 2


async def test_a_ui_request_costs_one_round_trip_for_installation_and_jti(
    hipchat: FakeHipChat, room: Installed, counting: CountingStore
) -> None:
    counting.calls.clear()
    await hipchat.glance(room, "remember-count")
    assert counting.calls["read_and_claim"] == 1
    assert counting.calls["put_if_absent"] == counting.calls["put_many_if_absent"] == 0


async def test_static_tokens_are_checked_at_start_up(
    settings: Settings, store: Store, hipchat: FakeHipChat
) -> None:
    # Settings accept ROOM:INTEGRATION:TOKEN by shape; a room that is no number is refused by
    # create_app, before any command runs.
    bad = dataclasses.replace(settings, static_tokens=("lobby:weather:t0ken",))
    with pytest.raises(ConfigError, match="ADDON_TOKENS") as caught:
        make_app(bad, store, hipchat)
    assert "t0ken" not in str(caught.value)


def test_one_rule_for_ids() -> None:
    assert [id_of(v) for v in (5, "5", "", True, 1.5, None)] == ["5", "5", None, None, None, None]
    assert [room_id_of(v) for v in (7, "7", "x7", "\u00b2", True, "1" * 19)] == [
        7,
        7,
        None,
        None,
        None,
        None,
    ]
    hook = parse_webhook(
        {
            "event": "room_message",
            "item": {
                "message": {"id": "", "from": {"id": ""}, "message": "/x"},
                "room": {"id": "3"},
            },
        }
    )
    assert (hook.message_id, hook.sender, hook.room and hook.room.id) == (None, None, 3)


async def test_read_and_claim_loads_its_script_again_after_a_flush(
    redis_store: Store, redis_url: str
) -> None:
    await redis_store.put("{t}:inst", "record")
    admin = redis.asyncio.Redis.from_url(redis_url)
    try:
        await admin.script_flush()
    finally:
        await admin.aclose()
    assert await redis_store.read_and_claim("{t}:inst", [("{t}:k", "1", 60)]) == ("record", [True])


def test_the_serving_process_tunes_its_garbage_collector(tmp_path: Any) -> None:
    # uvicorn's factory runs in the serving process: check it there, not in the test process.
    probe = (
        "import gc, json; from addon.app import GC_THRESHOLD, create_app_from_environ;"
        "before = gc.get_threshold(); create_app_from_environ();"
        "print(json.dumps([before[0], gc.get_threshold()[0], GC_THRESHOLD, gc.get_freeze_count()]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADDON_")}
    env |= {
        "ADDON_STORE_URL": f"sqlite:///{tmp_path / 'addon.db'}",
        "ADDON_CAPABILITIES_PATH": str(REPO / "capabilities"),
        "ADDON_INTEGRATIONS_PATH": str(REPO / "integrations"),
    }
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    before, after, wanted, frozen = json.loads(done.stdout.strip().splitlines()[-1])
    assert (before, after) == (700, wanted) and frozen > 10_000  # start-up's objects frozen


async def test_over_a_socket_a_command_past_the_window_is_answered_at_it_and_replies_later(
    settings: Settings, sqlite_store: Store, hipchat: FakeHipChat
) -> None:
    # The handler runs in the request's own task: the server must send the 204 at the window
    # while that task goes on, and /metrics must time the request to its response, not to the
    # handler's end. uvicorn runs in another thread, with its own loop: the handler waits on a
    # threading.Event, and the store is SQLite (a Redis connection belongs to one loop).
    store = sqlite_store
    gate = threading.Event()
    slow = Integration("slow")

    @slow.command("slow")
    def late(message: RoomMessage) -> str:
        gate.wait(10)
        return "late but here"

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    quick = dataclasses.replace(
        settings, base_url=base_url, reply_window=0.05, command_timeout=15.0
    )
    app = create_app(quick, store=store, transport=hipchat.transport(), integrations=[slow])
    with served(app, port, **uvicorn_options(quick)):
        async with httpx.AsyncClient(base_url=base_url) as addon:
            room = await hipchat.install(addon, room_id=1)
            try:
                response = await hipchat.send_message(room, "/slow")
                assert response is not None and response.status_code == 204
                answered = _http_count((await addon.get("/metrics")).text, "/webhook/{event}")
                assert answered == 1  # timed at its response, before the handler ended
                assert hipchat.notifications(room) == []  # the handler still waits
            finally:
                gate.set()
            await eventually(lambda: hipchat.notifications(room) == ["late but here"])
        await app.state.addon.aclose(grace=5)


def _http_count(text: str, route: str) -> float:
    """How many responses ``/metrics`` counted for ``route``."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "addon_http_request_duration_seconds_count"
        and sample.labels.get("route") == route
    )


async def test_webhooks_taken_past_the_router_are_answered_as_through_it(
    counted_app: Starlette, room: Installed, hipchat: FakeHipChat, settings: Settings
) -> None:
    # AddonApp takes POST /webhook/{event} straight to its endpoint; under a root_path the same
    # request goes through Starlette's router and middleware. Both must answer alike.
    def signed() -> dict[str, str]:
        token = sign_jwt(room.oauth_id, room.oauth_secret, now=time.time(), sub=1001, room_id=1)
        return {"Authorization": f"JWT {token}", "Content-Type": "application/json"}

    def echo(text: str) -> bytes:
        message = hipchat.message(text, message_id=f"m-{time.monotonic_ns()}")
        item = {"message": message, "room": {"id": 1, "name": "Room 1"}}
        return json.dumps({"event": "room_message", "item": item}).encode()

    def no_jwt() -> dict[str, str]:
        return {}

    def bad_jwt() -> dict[str, str]:
        return {"Authorization": "JWT not.a.jwt"}

    cases: list[tuple[str, Callable[[], dict[str, str]], Callable[[], bytes]]] = [
        ("/webhook/room_message", no_jwt, lambda: b"{}"),  # 401
        ("/webhook/room_message", bad_jwt, lambda: b"{}"),  # 401
        ("/webhook/room_message", signed, lambda: b""),  # not JSON: 400
        ("/webhook/room_topic_change", signed, lambda: echo("/echo hi")),  # another event: 400
        ("/webhook/room_message", signed, lambda: b"[1,"),  # 400
        ("/webhook/room_message", signed, lambda: echo("/echo hi")),  # 200 with the reply
        ("/webhook/a/b", signed, lambda: b"{}"),  # not a webhook path: the router's 404
    ]
    answers: dict[str, list[tuple[int, object]]] = {}
    for root in ("", "/mounted"):
        transport = AppTransport(counted_app, root_path=root)
        async with httpx.AsyncClient(transport=transport, base_url="http://addon.test") as client:
            answers[root] = []
            for path, headers, body in cases:
                response = await client.post(root + path, headers=headers(), content=body())
                kind = response.headers.get("content-type", "")
                shown = response.json() if kind.startswith("application/json") else response.text
                answers[root].append((response.status_code, shown))
    assert answers[""] == answers["/mounted"]
    statuses = [status for status, _ in answers[""]]
    assert statuses == [401, 401, 400, 400, 400, 200, 404]


class _RestBroken:
    """The add-on's runtime, except that posting to a room fails with a bug (not an AddonError)."""

    def __init__(self, runtime: Any) -> None:
        self._runtime = runtime

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runtime, name)

    async def post_notification(self, *args: object) -> None:
        raise RuntimeError("a bug past the response")


async def test_a_failure_after_the_response_is_logged_and_the_connection_kept(
    counted_app: Starlette,
    room: Installed,
    hipchat: FakeHipChat,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # /twice's first reply is the response; its second goes through REST, which fails with a
    # bug, and so does the notice that tells the room. The handler runs in the request's task,
    # so that error reaches the endpoint after the response: logged there, never raised to the
    # server (uvicorn would close the connection, and another request on it with it).
    twice = Integration("twice")

    @twice.command("twice")
    async def handler(message: RoomMessage) -> None:
        await message.reply("one")
        await message.reply("two")

    addon = counted_app.state.addon
    endpoint = WebhookEndpoint(
        addon.verifier,
        Dispatcher([twice], _RestBroken(addon.runtime)),
        now=time.time,
        read_timeout=settings.read_timeout,
    )

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await endpoint({**scope, "path_params": {"event": "room_message"}}, receive, send)

    token = sign_jwt(room.oauth_id, room.oauth_secret, now=time.time(), sub=1001, room_id=1)
    item = {"message": hipchat.message("/twice"), "room": {"id": 1, "name": "Room 1"}}
    body = json.dumps({"event": "room_message", "item": item}).encode()
    with caplog.at_level("ERROR", logger="addon.routes"):
        async with httpx.AsyncClient(transport=AppTransport(app)) as client:  # raises late bugs
            response = await client.post(
                "http://addon.test/webhook/room_message",
                headers={"Authorization": f"JWT {token}"},
                content=body,
            )
    assert response.status_code == 200 and response.json()["message"] == "one"
    assert "Webhook work failed after its response was sent" in caplog.text

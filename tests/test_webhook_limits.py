"""Bounded webhook input: the JWT before the body, a 64 KiB cap while it streams, read timeouts,
replays refused across replicas (issue 8, items 3 and 6)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from addon.jwt_auth import sign_jwt
from addon.routes import WEBHOOK_MAX_BYTES
from addon.server import MAX_HEADER_BYTES, HeaderTimeoutProtocol, uvicorn_options
from addon.settings import Settings
from addon.store.redis import RedisStore
from addon.testing import FakeHipChat, Installed
from tests.helpers import free_port, make_app, store_snapshot
from tests.helpers import served as serving

pytestmark = pytest.mark.anyio

CHUNK = 4096


@pytest.fixture
async def room(addon: httpx.AsyncClient, hipchat: FakeHipChat) -> Installed:
    return await hipchat.install(addon, room_id=1)


def _headers(room: Installed) -> dict[str, str]:
    token = sign_jwt(room.oauth_id, room.oauth_secret, now=time.time(), sub=1001, room_id=1)
    return {"Authorization": f"JWT {token}", "Content-Type": "application/json"}


class CountingBody:
    """A request body that counts how much of it the server pulled."""

    def __init__(self, total: int, *, stall: asyncio.Event | None = None) -> None:
        self.total = total
        self.sent = 0
        self.stall = stall

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            if self.stall is not None and self.sent:
                await self.stall.wait()  # a client that stops sending after the first chunk
            self.sent += CHUNK
            yield b" " * CHUNK


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "chunked"])
async def test_an_oversized_webhook_body_is_413_before_it_is_buffered(
    hipchat: FakeHipChat, room: Installed, with_length: bool
) -> None:
    body = CountingBody(100 * WEBHOOK_MAX_BYTES)
    headers = _headers(room)
    if with_length:
        headers["Content-Length"] = str(body.total)
    response = await room.addon.post("/webhook/room_message", content=body, headers=headers)

    assert response.status_code == 413
    assert str(WEBHOOK_MAX_BYTES) in response.json()["error"]["message"]
    # Content-Length is refused before any byte is read; a chunked body just past the cap.
    assert body.sent <= (0 if with_length else WEBHOOK_MAX_BYTES + 2 * CHUNK)


async def test_a_body_at_the_cap_is_read(hipchat: FakeHipChat, room: Installed) -> None:
    payload = {
        "event": "room_message",
        "item": {"message": hipchat.message("/echo big"), "room": hipchat.room(1)},
        "oauth_client_id": room.oauth_id,
    }
    text = json.dumps(payload)
    padded = text[:-1] + ', "pad": "' + "x" * (WEBHOOK_MAX_BYTES - len(text) - 11) + '"}'
    assert len(padded) == WEBHOOK_MAX_BYTES
    response = await room.addon.post(
        "/webhook/room_message", content=padded.encode(), headers=_headers(room)
    )
    assert response.status_code == 200 and response.json()["message"] == "big"


async def test_an_unsigned_body_is_not_read_at_all(hipchat: FakeHipChat, room: Installed) -> None:
    body = CountingBody(8 * CHUNK)
    response = await room.addon.post("/webhook/room_message", content=body)
    assert response.status_code == 401
    assert body.sent == 0


async def test_a_signed_webhook_nested_65_deep_is_400_and_runs_nothing(
    hipchat: FakeHipChat, room: Installed, app: Starlette
) -> None:
    def body(depth: int) -> bytes:
        # The object itself is one level; "pad" adds the rest (the cap is jsonvalue.MAX_DEPTH).
        payload = {
            "event": "room_message",
            "item": {"message": hipchat.message("/echo deep"), "room": hipchat.room(1)},
            "oauth_client_id": room.oauth_id,
        }
        text = json.dumps(payload)
        pad = "[" * (depth - 1) + "]" * (depth - 1)
        return (text[:-1] + f', "pad": {pad}}}').encode()

    headers = _headers(room)
    addon = app.state.addon
    before = await store_snapshot(addon.store)
    deep = await room.addon.post("/webhook/room_message", content=body(65), headers=headers)
    assert deep.status_code == 400
    assert "64 levels" in deep.json()["error"]["message"]
    # Refused before the store: no jti spent, no message id claimed, no handler ran.
    assert await store_snapshot(addon.store) == before
    # The same token with a body at the cap (64 deep) is the first use, and runs.
    ok = await room.addon.post("/webhook/room_message", content=body(64), headers=headers)
    assert ok.status_code == 200 and ok.json()["message"] == "deep"


@pytest.fixture
async def slow_app(
    settings: Settings, store: Any, hipchat: FakeHipChat
) -> AsyncIterator[Starlette]:
    app = make_app(dataclasses.replace(settings, read_timeout=0.2), store, hipchat)
    yield app
    await app.state.addon.aclose(grace=5)


async def test_a_slow_body_is_dropped_after_the_read_timeout(
    hipchat: FakeHipChat, slow_app: Starlette, settings: Settings
) -> None:
    stall = asyncio.Event()
    async with hipchat.connect(slow_app, settings.base_url) as client:
        room = await hipchat.install(client, room_id=1)
        body = CountingBody(4 * CHUNK, stall=stall)
        try:
            with anyio.fail_after(10):  # without the read timeout the request would hang
                response = await client.post(
                    "/webhook/room_message", content=body, headers=_headers(room)
                )
        finally:
            stall.set()
    assert response.status_code == 408
    assert "did not arrive within 0.2 s" in response.json()["error"]["message"]
    assert body.sent == CHUNK


async def test_a_replay_is_refused_by_another_replica_sharing_redis(
    settings: Settings, redis_url: str, hipchat: FakeHipChat
) -> None:
    namespace = f"test-{uuid.uuid4().hex}:"
    stores = [RedisStore(redis_url, namespace=namespace) for _ in range(2)]
    apps = [make_app(settings, store, hipchat) for store in stores]
    try:
        async with (
            hipchat.connect(apps[0], settings.base_url) as first,
            hipchat.connect(apps[1], settings.base_url) as second,
        ):
            room = await hipchat.install(first, room_id=1)
            headers = _headers(room)
            answers = []
            for client, text in ((first, "/echo one"), (second, "/echo two")):
                body = {
                    "event": "room_message",
                    "item": {"message": hipchat.message(text), "room": hipchat.room(1)},
                    "oauth_client_id": room.oauth_id,
                }
                response = await client.post("/webhook/room_message", json=body, headers=headers)
                answers.append(response.status_code)
    finally:
        for app in apps:
            await app.state.addon.aclose(grace=5)
        cleaner = RedisStore(redis_url, namespace=namespace)
        await cleaner.delete(*await cleaner.scan(""))
        await cleaner.close()
    assert answers == [200, 401]


# -- the server: a connection that never finishes its request head is dropped -----------------


@pytest.fixture
def served(settings: Settings) -> Iterator[int]:
    """A tiny app under uvicorn with ``serve``'s options (read timeout 0.3 s), on a socket."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):  # the whole body first, as the add-on does
            pass
        loop = type(asyncio.get_running_loop())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": f"ok {loop.__module__}".encode()})

    port = free_port()
    options = uvicorn_options(dataclasses.replace(settings, read_timeout=0.3))
    with serving(app, port, **options):
        yield port


@pytest.fixture
def answers_early(settings: Settings) -> Iterator[int]:
    """An app that answers 401 before reading the body (as the add-on does an unsigned webhook),
    under uvicorn with ``serve``'s options (read timeout 0.3 s), on a socket."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": scope["method"].encode()})

    port = free_port()
    options = uvicorn_options(dataclasses.replace(settings, read_timeout=0.3))
    with serving(app, port, **options):
        yield port


def _read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


def _read_one_response(sock: socket.socket) -> bytes:
    """One response of the tiny app (chunked: it ends with the empty last chunk)."""
    received = b""
    while not received.endswith(b"\r\n0\r\n\r\n"):
        chunk = sock.recv(4096)
        assert chunk, f"closed after {received!r}"
        received += chunk
    return received


def test_a_connection_stuck_in_its_headers_is_closed(served: int) -> None:
    with socket.create_connection(("127.0.0.1", served), timeout=10) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never ends the head
        # recv() answers b"" when the server closes; a socket timeout here fails the test.
        assert _read_until_closed(slow) == b""
    with socket.create_connection(("127.0.0.1", served), timeout=10) as quick:
        quick.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _read_until_closed(quick).startswith(b"HTTP/1.1 200 OK")


def test_serve_runs_on_uvloop_and_httptools(served: int) -> None:
    with socket.create_connection(("127.0.0.1", served), timeout=10) as quick:
        quick.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = _read_until_closed(quick)
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert b"ok uvloop" in answer
    assert issubclass(HeaderTimeoutProtocol, HttpToolsProtocol)


def test_a_request_head_past_the_bound_is_refused(served: int) -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Filler: "
    # One byte past the bound and no more, so that the server has read all of it when it closes
    # (unread bytes would turn the close into a reset that loses the answer).
    head += b"a" * (MAX_HEADER_BYTES + 1 - len(head))
    with socket.create_connection(("127.0.0.1", served), timeout=10) as greedy:
        greedy.sendall(head)
        # Answered at once, long before the 0.3 s head timer would have closed it silently.
        assert _read_until_closed(greedy).startswith(b"HTTP/1.1 400 Bad Request")


def test_the_head_timer_spares_a_request_whose_head_arrived(served: int) -> None:
    with socket.create_connection(("127.0.0.1", served), timeout=10) as waiting:
        waiting.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        # A connection opened later, stuck in its head, is closed by its timer: so the timer
        # of the first connection, armed earlier with the same delay, has fired too.
        with socket.create_connection(("127.0.0.1", served), timeout=10) as stuck:
            stuck.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            assert _read_until_closed(stuck) == b""
        waiting.sendall(b"hello")
        assert _read_one_response(waiting).startswith(b"HTTP/1.1 200 OK")
        waiting.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # kept alive: a second one
        assert _read_one_response(waiting).startswith(b"HTTP/1.1 200 OK")


def test_a_body_answered_early_is_not_taken_for_a_head_past_the_bound(answers_early: int) -> None:
    size = 4 * MAX_HEADER_BYTES
    with socket.create_connection(("127.0.0.1", answers_early), timeout=10) as sender:
        sender.sendall(f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
        assert _read_one_response(sender).startswith(b"HTTP/1.1 401 ")
        for _ in range(4):  # the body the app did not wait for, in pieces
            sender.sendall(b"b" * MAX_HEADER_BYTES)
        sender.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # and, kept alive, the next
        answer = _read_one_response(sender)
    assert answer.startswith(b"HTTP/1.1 401 ") and answer.endswith(b"GET\r\n0\r\n\r\n")


def test_a_kept_alive_connection_stuck_in_its_next_head_is_closed(served: int) -> None:
    with socket.create_connection(("127.0.0.1", served), timeout=10) as kept:
        for _ in range(3):  # each answer moves the head deadline on
            kept.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_one_response(kept).startswith(b"HTTP/1.1 200 OK")
        kept.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never ends
        # Closed by the 0.3 s head timer, well before uvicorn's keep-alive timeout (5 s) would;
        # a socket timeout here fails the test.
        kept.settimeout(3)
        assert _read_until_closed(kept) == b""


def test_serve_bounds_concurrency_and_idle_keep_alive(settings: Settings) -> None:
    # Past the bound uvicorn answers 503 at once rather than queueing (README, Security).
    options = uvicorn_options(settings)
    assert (options["limit_concurrency"], options["timeout_keep_alive"]) == (1000, 5)


@pytest.mark.parametrize(("level", "logged"), [("DEBUG", True), ("INFO", True), ("WARNING", False)])
def test_access_lines_are_built_only_at_a_level_that_writes_them(
    settings: Settings, level: str, logged: bool
) -> None:
    assert uvicorn_options(dataclasses.replace(settings, log_level=level))["access_log"] is logged


def test_connections_are_nodelay_on_a_socket_the_workers_supervisor_bound(
    settings: Settings,
) -> None:
    """Under ``--workers N`` each worker serves a socket the supervisor bound; asyncio's loop then
    leaves TCP_NODELAY off, and each response waits for a delayed ACK. serve's protocol sets it."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    options = uvicorn_options(settings)
    serves = options["http"]
    made: list[HeaderTimeoutProtocol] = []

    def protocol(*args: Any, **kwargs: Any) -> HeaderTimeoutProtocol:
        made.append(serves(*args, **kwargs))
        return made[-1]

    # asyncio's loop: uvloop sets TCP_NODELAY by itself, so it would hide a missing one.
    options.update(loop="asyncio", http=protocol)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", **options)
    config.lifespan = "off"
    shared = config.bind_socket()  # as uvicorn.run does for --workers N
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [shared]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        port = shared.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_one_response(client).startswith(b"HTTP/1.1 200 OK")
            assert len(made) == 1
            accepted = made[0].transport.get_extra_info("socket")
            assert accepted.proto == 0, "accepted from the shared socket, as a worker does"
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        shared.close()

"""Faults, on loopback and bounded in time: Redis going away, a sick token endpoint, shutdown.

- Redis stopped during traffic: every request that needs it answers 503 with Retry-After (never
  500); once Redis is back on the same port and directory, the same app serves again and the
  installation (kept in Redis' append-only file) is still there.
- The token endpoint slow, failing (500) or rate-limiting (429): a cached token keeps commands
  working; without one the failure is told (a red notice, or a 502 JSON) and heals by itself.
- Shutdown: ``aclose(grace=...)`` lets an in-flight command finish and cancels a hanging one,
  telling its room.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette

from addon import Integration, RoomMessage
from addon.app import Addon, create_app
from addon.integrations import help_integration, load_integrations
from addon.settings import Settings
from addon.store import Store
from addon.store.redis import RedisStore
from addon.testing import FakeHipChat, FakeHipChatError, Installed
from tests.helpers import REPO, redis_answers_ping

pytestmark = pytest.mark.anyio

faulty = Integration(key="faulty", name="Faulty")


@faulty.command("room", help="Reads the room through the REST API, then answers")
async def room_command(message: RoomMessage) -> None:
    room = await message.client.get_room(message.room.id)
    await message.reply(f"room {room['id']} ok")


# What /slowly waits on (the ``slowly_gate`` fixture makes it): the test opens it when the
# command must finish, so the command outlives the reply window without a sleep.
_gates: dict[str, asyncio.Event] = {}


@faulty.command("slowly", help="Answers after a while")
async def slowly(message: RoomMessage) -> None:
    await _gates["slowly"].wait()
    await message.reply("finished slowly")


@faulty.command("stuck", help="Never answers")
async def stuck(message: RoomMessage) -> None:
    await asyncio.sleep(60)


def integrations() -> list[Integration]:
    loaded = [*load_integrations(REPO / "integrations"), faulty]
    return [*loaded, help_integration(loaded)]


def addon_of(app: Starlette) -> Addon:
    addon: Addon = app.state.addon
    return addon


def no_500s(app: Starlette) -> None:
    rendered = addon_of(app).metrics.render(0).decode()
    assert 'status="500"' not in rendered, rendered


# -- Redis stopped and restarted ---------------------------------------------------------------


class PrivateRedis:
    """A redis-server of this test's own, on a fixed port and directory, that survives restarts."""

    def __init__(self, workdir: Path) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.fail("redis-server is not on PATH (apt-get install redis-server)", pytrace=False)
        self.executable = executable
        self.workdir = workdir
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        command += ["--dir", str(self.workdir)]
        log = self.workdir / "redis.log"
        with log.open("ab") as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not redis_answers_ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"private redis-server did not start:\n{log.read_text()}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()  # SIGTERM: Redis flushes its append-only file and exits
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_redis_down_gives_503s_and_service_resumes_when_it_is_back(
    private_redis: PrivateRedis, settings: Settings, hipchat: FakeHipChat
) -> None:
    on_redis = dataclasses.replace(settings, store_url=private_redis.url)
    store = RedisStore(private_redis.url, namespace=f"faults-{uuid.uuid4().hex}:")
    app = create_app(on_redis, store=store, transport=hipchat.transport())
    try:
        async with hipchat.connect(app, settings.base_url) as addon:
            room = await hipchat.install(addon, room_id=1)
            await hipchat.send_message(room, "/remember color blue")
            assert (await addon.get("/readyz")).status_code == 200

            private_redis.stop()
            started = time.monotonic()
            refused = [
                await hipchat.send_message(room, "/echo hi"),
                await hipchat.send_message(room, "/recall color"),
                await addon.get("/readyz"),
                await addon.get("/metrics"),
                await addon.delete(f"/installable/{room.oauth_id}"),
            ]
            with pytest.raises(FakeHipChatError) as failed:
                await hipchat.install(addon, room_id=2)
            refused.append(failed.value.response)
            for response in refused:
                assert response is not None
                assert response.status_code == 503, (response.request.url, response.text)
                assert int(response.headers["retry-after"]) > 0
                assert response.json()["error"]["type"] == "StoreUnavailable"
            assert time.monotonic() - started < 10  # refused promptly, not after long hangs
            assert (await addon.get("/healthz")).status_code == 200  # the process itself is up

            private_redis.start()  # same port, same directory: the append-only file is replayed
            assert (await addon.get("/readyz")).status_code == 200
            assert (await addon.get("/readyz")).status_code == 200
            recalled = await hipchat.send_message(room, "/recall color")
            assert recalled is not None and recalled.status_code == 200
            assert recalled.json()["message"] == "color: blue"
            assert await addon_of(app).installations.get(room.oauth_id) is not None
            assert hipchat.notifications(room)[-1] == "color: blue"
        no_500s(app)
    finally:
        await addon_of(app).aclose(grace=1)


# -- a sick token endpoint ---------------------------------------------------------------------

FAULTS = ["slow", "500", "429"]


def inject(hipchat: FakeHipChat, fault: str, *, count: int = 1) -> None:
    if fault == "slow":
        hipchat.token_delay = 1.0  # settings.http_timeout is 0.3 below
    else:
        hipchat.fail_token_endpoint(int(fault), count=count)


def heal(hipchat: FakeHipChat) -> None:
    hipchat.token_delay = 0.0
    hipchat.token_failures.clear()


@pytest.fixture
async def token_app(
    settings: Settings, store: Store, hipchat: FakeHipChat
) -> AsyncIterator[Starlette]:
    quick = dataclasses.replace(settings, http_timeout=0.3, reply_window=2.0, command_timeout=3.0)
    app = create_app(quick, store=store, transport=hipchat.transport(), integrations=integrations())
    yield app
    await addon_of(app).aclose(grace=1)


@pytest.fixture
async def room(
    token_app: Starlette, hipchat: FakeHipChat, settings: Settings
) -> AsyncIterator[Installed]:
    async with hipchat.connect(token_app, settings.base_url) as addon:
        yield await hipchat.install(addon, room_id=1)


async def end_backoff(app: Starlette, room: Installed) -> None:
    """What waiting out the token back-off does (test_tokens covers the back-off itself)."""
    addon = addon_of(app)
    keys = await addon.store.scan(addon.keys.token_backoff(room.oauth_id, ()))
    assert keys, "a failed token request left no back-off"
    await addon.store.delete(*keys)


async def forget_tokens(app: Starlette, room: Installed) -> None:
    addon = addon_of(app)
    keys = await addon.store.scan(addon.keys.token(room.oauth_id, ()))
    assert keys, "no cached token to forget"
    await addon.store.delete(*keys)


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_cached_token_outlives_a_sick_token_endpoint(
    hipchat: FakeHipChat, room: Installed, token_app: Starlette, fault: str
) -> None:
    asked = len(hipchat.token_requests())
    inject(hipchat, fault, count=5)

    response = await hipchat.send_message(room, "/room")

    assert response is not None and response.status_code == 200
    assert response.json()["message"] == "room 1 ok"
    assert len(hipchat.token_requests()) == asked  # the cache answered
    no_500s(token_app)


@pytest.mark.parametrize("fault", FAULTS)
async def test_without_a_cached_token_the_room_is_told_and_it_heals(
    hipchat: FakeHipChat, room: Installed, token_app: Starlette, fault: str
) -> None:
    await forget_tokens(token_app, room)
    inject(hipchat, fault, count=5)

    started = time.monotonic()
    failed = await hipchat.send_message(room, "/room")

    assert time.monotonic() - started < 2.0  # bounded by http_timeout, not the endpoint's delay
    assert failed is not None and failed.status_code == 200
    notice = failed.json()
    assert notice["color"] == "red" and "/room" in notice["message"]
    assert "HipChat could not be reached" in notice["message"]
    assert hipchat.token_requests(), "the add-on never asked for a token"

    heal(hipchat)
    await end_backoff(token_app, room)
    healed = await hipchat.send_message(room, "/room")
    assert healed is not None and healed.status_code == 200
    assert healed.json()["message"] == "room 1 ok"
    no_500s(token_app)


@pytest.mark.parametrize("fault", FAULTS)
async def test_install_and_uninstall_against_a_sick_token_endpoint_answer_502(
    hipchat: FakeHipChat, token_app: Starlette, settings: Settings, fault: str
) -> None:
    async with hipchat.connect(token_app, settings.base_url) as addon:
        inject(hipchat, fault, count=1)
        with pytest.raises(FakeHipChatError) as refused:
            await hipchat.install(addon, room_id=1)
        response = refused.value.response
        assert response is not None and response.status_code == 502
        assert response.json()["error"]["type"] == "TokenError"
        assert await addon_of(token_app).installations.oauth_ids() == set()

        heal(hipchat)
        room = await hipchat.install(addon, room_id=1)
        inject(hipchat, fault, count=1)
        gone = await addon.delete(f"/installable/{room.oauth_id}")
        assert gone.status_code == 502, gone.text
        assert await addon_of(token_app).installations.get(room.oauth_id) is not None
    no_500s(token_app)


# -- shutdown ----------------------------------------------------------------------------------


@pytest.fixture
async def shutdown_app(
    settings: Settings, store: Store, hipchat: FakeHipChat
) -> AsyncIterator[Starlette]:
    # /slowly waits on its gate and /stuck never ends: whatever the window, both outlive it.
    quick = dataclasses.replace(settings, reply_window=0.01, command_timeout=30.0)
    app = create_app(quick, store=store, transport=hipchat.transport(), integrations=integrations())
    yield app
    await addon_of(app).aclose(grace=0)  # harmless when the test already closed it


@pytest.fixture
def slowly_gate() -> asyncio.Event:
    _gates["slowly"] = asyncio.Event()
    return _gates["slowly"]


async def test_shutdown_lets_a_slow_command_finish_and_cancels_a_hanging_one(
    hipchat: FakeHipChat, shutdown_app: Starlette, settings: Settings, slowly_gate: asyncio.Event
) -> None:
    async with hipchat.connect(shutdown_app, settings.base_url) as addon:
        slow_room = await hipchat.install(addon, room_id=1)
        stuck_room = await hipchat.install(addon, room_id=2)
        slow = await hipchat.send_message(slow_room, "/slowly")
        hung = await hipchat.send_message(stuck_room, "/stuck")
        assert slow is not None and slow.status_code == 204
        assert hung is not None and hung.status_code == 204

        grace = 1.0
        started = time.monotonic()
        slowly_gate.set()  # /slowly goes on once the shutdown has begun: it must be let finish
        await addon_of(shutdown_app).aclose(grace=grace)
        elapsed = time.monotonic() - started

    assert grace <= elapsed < grace + 1.0
    assert hipchat.notifications(slow_room) == ["finished slowly"]
    (notice,) = hipchat.notification_bodies(stuck_room)
    assert notice["color"] == "red" and "/stuck" in notice["message"]
    assert "restarting" in notice["message"]


async def test_shutdown_with_only_a_slow_command_ends_when_it_does(
    hipchat: FakeHipChat, shutdown_app: Starlette, settings: Settings, slowly_gate: asyncio.Event
) -> None:
    async with hipchat.connect(shutdown_app, settings.base_url) as addon:
        room = await hipchat.install(addon, room_id=1)
        await hipchat.send_message(room, "/slowly")

        started = time.monotonic()
        slowly_gate.set()
        await addon_of(shutdown_app).aclose(grace=5.0)
        elapsed = time.monotonic() - started

    assert elapsed < 1.5  # did not sit out the whole grace period
    assert hipchat.notifications(room) == ["finished slowly"]

"""The add-on end to end on a Redis Cluster and on Redis Sentinel, and a Sentinel failover.

The store contract runs on both engines in test_store.py; here the webhook pipeline does (install,
signed commands, storage, uninstall), then the Sentinel master is stopped under a stream of
commands. What the failover test holds Redis to is written in docs/store.md ("Failover").
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from addon.settings import Settings
from addon.store import Keys, Store
from addon.store.keys import hash_tag
from addon.store.redis import RedisStore
from addon.testing import FakeHipChat, Installed
from tests.engines import RedisProcesses, sentinel_master_port, start_sentinel
from tests.helpers import make_app

pytestmark = [pytest.mark.anyio, pytest.mark.system]

_FAILOVER_TIMEOUT = 30.0  # seconds: a failover takes about 2 s (1 s down-after + an election)


@pytest.fixture(params=["sentinel", "cluster"])
def store(request: pytest.FixtureRequest) -> Store:
    """The add-on's store through Sentinel, then on a 3-master cluster."""
    backend: Store = request.getfixturevalue(f"{request.param}_store")
    return backend


async def test_install_command_storage_and_uninstall(
    hipchat: FakeHipChat, addon: httpx.AsyncClient, store: Store
) -> None:
    room = await hipchat.install(addon, room_id=1)
    other = await hipchat.install(addon, room_id=2)
    await hipchat.send_message(room, "/echo hi")
    await hipchat.send_message(room, "/remember color blue")
    await hipchat.send_message(other, "/remember color red")
    await hipchat.send_message(room, "/recall color")
    assert hipchat.notifications(room) == ["hi", "Remembered color.", "color: blue"]

    # Every key of an installation is in its hash slot (one cluster node, one atomic script).
    keys = [key for key in await store.scan("") if room.oauth_id in key]
    assert len(keys) >= 4  # installation, jti, seen message, storage (and token)
    assert {hash_tag(key) for key in keys} == {room.oauth_id}

    assert (await hipchat.uninstall(addon, room)).status_code == 204
    assert [key for key in await store.scan("") if room.oauth_id in key] == []
    await hipchat.send_message(other, "/recall color")
    assert hipchat.notifications(other)[-1] == "color: red"


async def test_a_replayed_jwt_is_refused_on_every_engine(
    hipchat: FakeHipChat, addon: httpx.AsyncClient
) -> None:
    room = await hipchat.install(addon, room_id=1)
    first = await hipchat.send_message(room, "/echo once")
    assert first is not None and first.status_code in (200, 204)
    replay = await addon.post(
        first.request.url.path + "?" + first.request.url.query.decode(),
        content=first.request.content,
        headers={k: v for k, v in first.request.headers.items() if k.lower() != "host"},
    )
    assert replay.status_code == 401
    assert hipchat.notifications(room) == ["once"]


# -- failover -----------------------------------------------------------------------------------


@pytest.fixture
def failover_set_up(tmp_path: Path) -> Iterator[tuple[RedisProcesses, str, int]]:
    """A Sentinel set-up of its own (this test stops its master): processes, URL, master port."""
    processes = RedisProcesses(tmp_path)
    try:
        url, master = start_sentinel(processes, for_failover=True)
        yield processes, url, master
    finally:
        processes.close()


@pytest.fixture
async def failover_addon(
    failover_set_up: tuple[RedisProcesses, str, int], hipchat: FakeHipChat, settings: Settings
) -> AsyncIterator[tuple[httpx.AsyncClient, RedisStore, Keys]]:
    store = RedisStore(failover_set_up[1])
    app = make_app(settings, store, hipchat)
    async with hipchat.connect(app, settings.base_url) as client:
        yield client, store, app.state.addon.keys
    await app.state.addon.aclose(grace=5)


async def test_a_sentinel_failover_answers_503_and_loses_no_acknowledged_write(
    hipchat: FakeHipChat,
    failover_set_up: tuple[RedisProcesses, str, int],
    failover_addon: tuple[httpx.AsyncClient, RedisStore, Keys],
) -> None:
    processes, url, master = failover_set_up
    addon, store, keys = failover_addon
    rooms = [await hipchat.install(addon, room_id=room_id) for room_id in (1, 2, 3)]
    statuses: list[int] = []
    sent = 0

    async def command() -> None:
        nonlocal sent
        room = rooms[sent % len(rooms)]
        response = await hipchat.send_message(room, f"/remember k{sent} v{sent}")
        sent += 1
        assert response is not None
        statuses.append(response.status_code)
        if response.status_code == 503:
            assert response.headers["Retry-After"].isdigit()

    for _ in range(10):
        await command()
    processes.stop(master, signal.SIGTERM)  # a stopping Redis 7 first lets its replica catch up
    deadline = time.monotonic() + _FAILOVER_TIMEOUT
    while sentinel_master_port(processes, url) == master or statuses[-5:] != [200] * 5:
        assert time.monotonic() < deadline, f"no failover within {_FAILOVER_TIMEOUT} s"
        await command()
        await asyncio.sleep(0.01)  # pace the stream; nothing waits on this

    assert set(statuses) <= {200, 503}, statuses  # never a 500
    assert 503 in statuses  # the failover window was seen
    await _check_nothing_acknowledged_was_lost(hipchat, rooms, store, keys)


async def _check_nothing_acknowledged_was_lost(
    hipchat: FakeHipChat, rooms: list[Installed], store: Store, keys: Keys
) -> None:
    for room in rooms:
        assert await store.get(keys.installation(room.oauth_id)) is not None
        stored = await store.map_all(keys.storage(room.oauth_id, "remember"))
        acknowledged = [
            text.removeprefix("Remembered ").removesuffix(".")
            for text in hipchat.notifications(room)
            if text.startswith("Remembered ")
        ]
        assert acknowledged
        for name in acknowledged:
            assert stored.get(name) == f'"v{name[1:]}"', name

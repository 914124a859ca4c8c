"""An integration's storage (``message.storage``): per-name values, the quota, the older format,
the nesting cap, and uninstalls that happen while a command is still running. Redis and SQLite."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable

import pytest

from addon.app import create_app
from addon.context import JSON, RoomMessage, Storage
from addon.errors import QuotaExceeded, RequestError, UnknownInstallation
from addon.integrations import Integration, load_integrations
from addon.settings import Settings
from addon.store import Keys, Store
from addon.testing import FakeHipChat
from tests.helpers import REPO, make_app

pytestmark = pytest.mark.anyio

KEYS = Keys("test-addon")


def nested(depth: int) -> JSON:
    """A list nested ``depth`` levels deep: ``nested(2) == [[0]]``."""
    value: JSON = 0
    for _ in range(depth):
        value = [value]
    return value


async def storage_of(store: Store, oauth_id: str = "oauth-1", *, quota: int = 1024) -> Storage:
    """The ``kv`` storage of an installation that exists."""
    await store.put(KEYS.installation(oauth_id), "{}")
    return Storage(store, KEYS, oauth_id, "kv", quota=quota)


async def test_each_name_is_stored_apart(store: Store) -> None:
    storage = await storage_of(store)
    await storage.set("big", "x" * 500)
    await storage.set("small", {"n": 1})
    assert await store.map_get(KEYS.storage("oauth-1", "kv"), "small") == '{"n": 1}'
    assert await storage.get("small") == {"n": 1}
    assert await storage.all() == {"big": "x" * 500, "small": {"n": 1}}


async def test_a_write_past_the_quota_is_refused_and_changes_nothing(store: Store) -> None:
    storage = await storage_of(store, quota=1024)
    await storage.set("a", "x" * 900)
    with pytest.raises(QuotaExceeded, match=r"kv .* 1024 bytes"):
        await storage.set("b", "y" * 200)
    assert await storage.all() == {"a": "x" * 900}
    await storage.set("a", "x" * 100)  # shrinking one frees room for the other
    await storage.set("b", "y" * 200)
    other = await storage_of(store, "oauth-2", quota=1024)
    await other.set("a", "z" * 900)  # the quota is per installation


async def test_the_older_one_document_format_is_read_then_moved(store: Store) -> None:
    storage = await storage_of(store)
    await store.put(KEYS.legacy_storage("oauth-1", "kv"), '{"color": "blue", "n": 2}')
    assert await storage.get("color") == "blue"
    assert await storage.get("missing", "default") == "default"
    assert await storage.all() == {"color": "blue", "n": 2}

    await storage.set("size", "big")

    assert await store.get(KEYS.legacy_storage("oauth-1", "kv")) is None
    assert await storage.all() == {"color": "blue", "n": 2, "size": "big"}
    assert await storage.delete("n") is True


async def test_values_nested_too_deep_are_refused(store: Store) -> None:
    storage = await storage_of(store)
    await storage.set("ok", nested(61))
    with pytest.raises(RequestError, match="nests deeper than 61"):
        await storage.set("deep", nested(62))
    assert await storage.get("deep") is None


async def test_writes_fail_once_the_installation_is_gone(store: Store) -> None:
    storage = await storage_of(store)
    await store.delete(KEYS.installation("oauth-1"))
    with pytest.raises(UnknownInstallation, match="uninstalled"):
        await storage.set("late", 1)
    assert await store.scan("") == []


async def test_an_uninstall_during_a_command_leaves_no_key(
    store: Store, hipchat: FakeHipChat, settings: Settings, reopen_store: Callable[[], Store]
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    integration = Integration("slow")

    @integration.command("slow")
    async def slow(message: RoomMessage) -> None:
        started.set()
        await release.wait()
        await message.storage.set("late", "write")

    app = create_app(
        settings, store=store, transport=hipchat.transport(), integrations=[integration]
    )
    async with hipchat.connect(app, settings.base_url) as addon:
        room = await hipchat.install(addon, room_id=1)
        sending = asyncio.create_task(hipchat.send_message(room, "/slow"))
        await started.wait()
        assert (await hipchat.uninstall(addon, room)).status_code == 204
        release.set()
        await sending
        await app.state.addon.aclose(grace=5)  # every handler has finished (closes the store)
    left = await reopen_store().scan("")
    assert [key for key in left if room.oauth_id in key] == []


async def test_the_room_is_told_when_storage_is_full_and_the_others_still_write(
    store: Store, hipchat: FakeHipChat, settings: Settings
) -> None:
    app = make_app(dataclasses.replace(settings, storage_quota=1024), store, hipchat)
    async with hipchat.connect(app, settings.base_url) as addon:
        room = await hipchat.install(addon, room_id=1)
        await hipchat.send_message(room, "/remember big " + "x" * 2000)
        await hipchat.send_message(room, "/remember small value")
        await hipchat.send_message(room, "/ping")  # another integration, a seed script
        await hipchat.send_message(room, "/recall small")
    await app.state.addon.aclose()
    [full, *rest] = hipchat.notifications(room)
    assert full == (
        "/remember failed: The storage of remember in this installation would exceed "
        "1024 bytes; delete some of its values first"
    )
    assert [rest[0], rest[1][:4], rest[2]] == ["Remembered small.", "pong", "small: value"]
    assert hipchat.notification_bodies(room)[0]["color"] == "red"


async def test_a_request_body_nested_too_deep_is_a_400(
    store: Store, hipchat: FakeHipChat, settings: Settings
) -> None:
    app = make_app(settings, store, hipchat)
    async with hipchat.connect(app, settings.base_url) as addon:
        deep = await addon.post("/installable", content=json.dumps(nested(65)))
        shallow = await addon.post("/installable", content=json.dumps(nested(64)))
    await app.state.addon.aclose()
    assert deep.status_code == 400
    assert "nests deeper than 64" in deep.json()["error"]["message"]
    assert shallow.status_code == 400  # not an install payload, but not refused for its depth
    assert "nests" not in shallow.json()["error"]["message"]


def test_the_default_quota_is_one_mebibyte() -> None:
    assert Settings().storage_quota == 1 << 20
    assert Settings.from_environ({"ADDON_STORAGE_QUOTA": "4096"}).storage_quota == 4096
    assert load_integrations(REPO / "integrations")  # the sample integrations still load

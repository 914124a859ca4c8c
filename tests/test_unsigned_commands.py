"""The opt-in endpoint for deployments that posted unsigned commands (off by default)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from addon.settings import Secret, Settings
from addon.store import Store
from addon.testing import FakeHipChat
from tests.helpers import make_app

pytestmark = pytest.mark.anyio

SECRET = "commands-secret-" + "y" * 20


def body(hipchat: FakeHipChat, oauth_id: str, text: str) -> dict[str, Any]:
    return {
        "event": "room_message",
        "item": {"message": hipchat.message(text), "room": hipchat.room(1)},
        "oauth_client_id": oauth_id,
    }


@pytest.mark.parametrize("secret", [None, SECRET], ids=["off", "on"])
async def test_unsigned_commands_need_the_configured_secret(
    settings: Settings, store: Store, hipchat: FakeHipChat, secret: str | None
) -> None:
    configured = dataclasses.replace(settings, commands_secret=Secret(secret) if secret else None)
    app = make_app(configured, store, hipchat)
    async with hipchat.connect(app, settings.base_url) as addon:
        room = await hipchat.install(addon, room_id=1)
        wrong = await addon.post(
            f"/commands/{'z' * 36}", json=body(hipchat, room.oauth_id, "/echo a")
        )
        right = await addon.post(
            f"/commands/{SECRET}", json=body(hipchat, room.oauth_id, "/echo b")
        )
        unknown = await addon.post(f"/commands/{SECRET}", json=body(hipchat, "nobody", "/echo c"))
    await app.state.addon.aclose()

    assert wrong.status_code == 404
    if secret is None:
        assert right.status_code == 404
        assert hipchat.notifications(1) == []
    else:
        assert right.status_code == 200 and right.json()["message"] == "b"
        assert unknown.status_code == 401

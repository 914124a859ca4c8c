"""The opt-in endpoint for deployments that posted unsigned commands (off by default)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
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


@pytest.fixture
async def commands_on(
    settings: Settings, store: Store, hipchat: FakeHipChat
) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(dataclasses.replace(settings, commands_secret=Secret(SECRET)), store, hipchat)
    async with hipchat.connect(app, settings.base_url) as addon:
        yield addon
    await app.state.addon.aclose()


async def test_the_secret_is_taken_from_a_bearer_header(
    hipchat: FakeHipChat, commands_on: httpx.AsyncClient
) -> None:
    room = await hipchat.install(commands_on, room_id=1)
    payload = body(hipchat, room.oauth_id, "/echo header")
    right = await commands_on.post(
        "/commands", json=payload, headers={"Authorization": f"Bearer {SECRET}"}
    )
    assert right.status_code == 200 and right.json()["message"] == "header"
    for headers in ({}, {"Authorization": "Bearer " + "z" * 36}, {"Authorization": SECRET}):
        wrong = await commands_on.post("/commands", json=payload, headers=headers)
        assert wrong.status_code == 401
        assert SECRET not in wrong.text
        assert "Authorization: Bearer" in wrong.json()["error"]["message"]


async def test_the_path_form_still_works_and_warns_once(
    hipchat: FakeHipChat, commands_on: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    room = await hipchat.install(commands_on, room_id=1)
    with caplog.at_level(logging.WARNING, logger="addon.routes"):
        for text in ("/echo one", "/echo two"):
            response = await commands_on.post(
                f"/commands/{SECRET}", json=body(hipchat, room.oauth_id, text)
            )
            assert response.status_code == 200
    warnings = [r for r in caplog.records if "deprecated" in r.getMessage()]
    assert len(warnings) == 1
    assert "Authorization: Bearer" in warnings[0].getMessage()
    assert SECRET not in caplog.text


async def test_the_header_form_is_404_when_commands_are_off(
    hipchat: FakeHipChat, addon: httpx.AsyncClient
) -> None:
    response = await addon.post("/commands", json={}, headers={"Authorization": f"Bearer {SECRET}"})
    assert response.status_code == 404

"""The example integrations, tested the way an integration author would test their own."""

from __future__ import annotations

import pytest

from addon import Settings, create_app
from addon.testing import FakeHipChat
from tests.helpers import settings_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def example_settings(tmp_path: object) -> Settings:
    return settings_for(f"sqlite:///{tmp_path}/examples.db")


async def test_echo(example_settings: Settings) -> None:
    hipchat = FakeHipChat()
    app = create_app(example_settings, transport=hipchat.transport())
    async with hipchat.connect(app, example_settings.base_url) as addon:
        room = await hipchat.install(addon, room_id=1)
        await hipchat.send_message(room, "/echo hi")
        await hipchat.send_message(room, "/echo inner  spaces <b>and tags</b> kept")
    await app.state.addon.aclose()
    assert hipchat.notifications(room) == ["hi", "inner  spaces <b>and tags</b> kept"]
    # Sent as text, so HipChat shows the tags instead of rendering them.
    assert hipchat.notification_bodies(room)[1]["message_format"] == "text"


async def test_remember_recall_forget(example_settings: Settings) -> None:
    hipchat = FakeHipChat()
    app = create_app(example_settings, transport=hipchat.transport())
    async with hipchat.connect(app, example_settings.base_url) as addon:
        room = await hipchat.install(addon, room_id=1)
        for text in ("/remember", "/remember lunch noon", "/recall lunch", "/forget lunch"):
            await hipchat.send_message(room, text)
        await hipchat.send_message(room, "/recall lunch")
    await app.state.addon.aclose()
    assert hipchat.notifications(room) == [
        "Usage: /remember <key> <value>",
        "Remembered lunch.",
        "lunch: noon",
        "Forgot lunch.",
        "Nothing under 'lunch'.",
    ]

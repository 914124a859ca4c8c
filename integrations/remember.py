"""``/remember``, ``/recall`` and ``/forget``: a small notebook per installation, with a UI.

Values live in the integration's storage (``message.storage``), which is kept in the add-on's store
per installation, so every room of a group-wide installation shares one notebook, and a room
installation has its own.

The UI half: a glance counting the notes, a web panel listing them, a dialog adding one (also
opened by a message action), and a configuration page whose one setting (``confirmation``) is
what ``/remember`` answers (docs/protocol.md, Glance data and Pages in HipChat). Templates and
icons: ``integrations/remember/``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from addon import Glance, Integration, Page, RoomMessage, UIRequest


@dataclasses.dataclass(frozen=True)
class RememberSettings:
    """What the configuration page edits, per installation."""

    confirmation: str = dataclasses.field(default="Remembered", metadata={"label": "Reply"})


integration = Integration(
    key="remember", name="Remember", scopes=["send_notification"], settings=RememberSettings
)


@integration.command("remember", help="Remember a value", usage="/remember <key> <value>")
async def remember(message: RoomMessage) -> None:
    """Store ``value`` under ``key``."""
    key, _, value = message.args.partition(" ")
    if not key or not value.strip():
        await message.reply("Usage: /remember <key> <value>")
        return
    await message.storage.set(key, value.strip())
    settings = await message.config(RememberSettings)
    await message.reply(f"{settings.confirmation} {key}.")


@integration.command("recall", help="Say a remembered value", usage="/recall <key>")
async def recall(message: RoomMessage) -> None:
    """Say what is stored under ``key``."""
    key = message.args.strip()
    value = await message.storage.get(key) if key else None
    await message.reply(f"{key}: {value}" if isinstance(value, str) else f"Nothing under {key!r}.")


@integration.command("forget", help="Forget a value", usage="/forget <key>")
async def forget(message: RoomMessage) -> None:
    """Delete ``key``."""
    key = message.args.strip()
    found = await message.storage.delete(key) if key else False
    await message.reply(f"Forgot {key}." if found else f"Nothing under {key!r}.")


def _count(notes: Mapping[str, object]) -> Glance:
    return Glance(f"{len(notes)} note{'s' if len(notes) != 1 else ''}")


@integration.glance("remember-count", name="Notes", icon="icons/note.png", target="remember-panel")
async def count(request: UIRequest) -> Glance:
    """The sidebar tile: how many notes there are."""
    return _count(await request.storage.all())


@integration.web_panel("remember-panel", name="Notes")
async def panel(request: UIRequest) -> Page:
    """The sidebar panel: every note."""
    notes = await request.storage.all()
    return Page("panel.html", {"notes": sorted(notes.items())}, title="Notes")


@integration.dialog(
    "remember-add", title="Remember", primary=("add", "Add"), size=("400px", "260px")
)
async def add_dialog(request: UIRequest) -> Page:
    """A form that adds one note (also opened by the message action)."""
    return Page("dialog.html", {"text": request.query.get("text", "")}, title="Remember")


integration.action(
    "remember-message",
    name="Remember this",
    target="remember-add",
    location="hipchat.message.action",
)


@integration.api("POST", "/notes")
async def add_note(request: UIRequest) -> dict[str, object]:
    """What the dialog posts: ``{"key", "value"}``; pushes the new count to the room's glance."""
    body = request.body if isinstance(request.body, dict) else {}
    key, value = str(body.get("key", "")).strip(), str(body.get("value", "")).strip()
    if not key or not value or " " in key:
        return {"ok": False, "message": "Give a key (one word) and a value"}
    await request.storage.set(key, value)
    if request.room_id is not None:
        await request.glances.update(
            "remember-count", _count(await request.storage.all()), room=request.room_id
        )
    return {"ok": True, "message": f"Remembered {key}."}


@integration.configure
async def configure(request: UIRequest) -> Page:
    """The configuration page: the built-in form for ``RememberSettings``."""
    return Page.settings("Remember settings")

"""``/remember``, ``/recall`` and ``/forget``: a small notebook per installation.

Values live in the integration's storage (``message.storage``), which is kept in the add-on's store
per installation, so every room of a group-wide installation shares one notebook, and a room
installation has its own.
"""

from __future__ import annotations

from addon import Integration, RoomMessage

integration = Integration(key="remember", name="Remember", scopes=["send_notification"])


@integration.command("remember", help="Remember a value", usage="/remember <key> <value>")
async def remember(message: RoomMessage) -> None:
    """Store ``value`` under ``key``."""
    key, _, value = message.args.partition(" ")
    if not key or not value.strip():
        await message.reply("Usage: /remember <key> <value>")
        return
    await message.storage.set(key, value.strip())
    await message.reply(f"Remembered {key}.")


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

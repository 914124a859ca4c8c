"""``/echo <text>``: repeats the text, verbatim, as a plain-text notification."""

from __future__ import annotations

from addon import Integration, RoomMessage

integration = Integration(key="echo", name="Echo", scopes=["send_notification"])


@integration.command("echo", help="Repeat the text", usage="/echo <text>")
async def echo(message: RoomMessage) -> None:
    """Reply with whatever follows ``/echo`` (or say how to use it)."""
    await message.reply(message.args or "Usage: /echo <text>")

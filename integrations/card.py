"""``/card <title>``: replies with an application card (docs/protocol.md, Cards).

HipChat clients that cannot show cards show the reply's text instead, so the text says the same.
"""

from __future__ import annotations

from html import escape

from addon import Integration, RoomMessage

integration = Integration(key="card", name="Card", scopes=["send_notification"])


@integration.command("card", help="Show a card", usage="/card <title>")
async def card(message: RoomMessage) -> None:
    """Reply with a compact application card titled with the command's text."""
    title = message.args.strip() or "Untitled"
    sender = escape(message.sender.name or message.sender.mention_name or "Someone")
    await message.reply(
        f"<b>{escape(title)}</b>, asked for by {sender}",
        html=True,
        color="purple",
        card={
            "style": "application",
            "format": "compact",
            "id": f"card-{message.message_id or message.room.id}",
            "title": title[:500],
            "description": {"format": "html", "value": f"Asked for by <b>{sender}</b>"},
            "attributes": [
                {"label": "Room", "value": {"label": message.room.name or str(message.room.id)}},
            ],
        },
    )

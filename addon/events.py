"""Webhook bodies: ``parse_webhook`` reads what HipChat POSTs into a ``Webhook``.

Reading is lenient (docs/protocol.md, Webhook payloads): ids may be ints or strings, and optional
parts may be absent. Only a body without an ``event`` is refused, with ``RequestError``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from addon.context import Room, Sender
from addon.errors import RequestError

__all__ = ["Webhook", "parse_webhook"]


@dataclasses.dataclass(frozen=True)
class Webhook:
    """A webhook body, read leniently: ids may be ints or strings, optional parts may be absent."""

    event: str
    room: Room | None
    sender: Sender | None
    text: str
    message_id: str | None
    oauth_client_id: str | None
    webhook_id: str | None
    item: Mapping[str, object]
    body: Mapping[str, object]


def parse_webhook(body: object) -> Webhook:
    """Read a webhook body (docs/protocol.md, Webhook payloads); no ``event``: ``RequestError``."""
    if not isinstance(body, Mapping) or not isinstance(body.get("event"), str):
        raise RequestError(
            "The webhook body must be a JSON object with an 'event' string, such as 'room_message'"
        )
    item = _mapping(body.get("item"))
    message = _mapping(item.get("message"))
    text = message.get("message")
    client_id = body.get("oauth_client_id")
    return Webhook(
        event=str(body["event"]),
        room=_room(item),
        sender=_sender(item),
        text=text if isinstance(text, str) else "",
        message_id=_id(message.get("id")),
        oauth_client_id=client_id if isinstance(client_id, str) else None,
        webhook_id=_id(body.get("webhook_id")),
        item=item,
        body=body,
    )


def _room(item: Mapping[str, object]) -> Room | None:
    # item.room.id only: it is the id the JWT check compares (no roomId fallback), so a reply can
    # never go to a room other than the one that was checked.
    room = _mapping(item.get("room"))
    room_id = _int(room.get("id"))
    if room_id is None:
        return None
    name = room.get("name")
    return Room(room_id, name if isinstance(name, str) else "")


def _sender(item: Mapping[str, object]) -> Sender | None:
    # room_message: item.message.from; other events: item.sender. A room_notification's
    # "from" is a label string, not a user (docs/protocol.md, Webhook payloads).
    sender = _mapping(_mapping(item.get("message")).get("from")) or _mapping(item.get("sender"))
    sender_id = _id(sender.get("id"))
    if sender_id is None:
        return None
    name, mention = sender.get("name"), sender.get("mention_name")
    return Sender(
        sender_id,
        name if isinstance(name, str) else "",
        mention if isinstance(mention, str) else "",
    )


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _id(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        return None
    return str(value)


def _int(value: object) -> int | None:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value

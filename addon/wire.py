"""What HipChat sends, parsed once at the edge into typed values (docs/protocol.md, Webhooks).

One rule each: ``id_of`` (an id is a non-empty string or an int, never a bool), ``room_id_of``
(an int, or a string of ASCII digits), ``mapping`` (anything else reads as empty) and
``sender_of`` (``item.message.from``, else ``item.sender``). ``load_body`` reads request bytes
(orjson, nesting capped at ``MAX_DEPTH``); ``parse_webhook`` turns the JSON into a ``Webhook``,
the value the JWT cross-checks, the dispatcher and the seed adapter all use.

A leaf module: it imports only ``addon.errors`` and ``addon.jsonvalue``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from addon.errors import RequestError
from addon.jsonvalue import MAX_DEPTH, check_depth

__all__ = [
    "OAUTH_ID",
    "Room",
    "Sender",
    "Webhook",
    "id_of",
    "load_body",
    "mapping",
    "parse_webhook",
    "room_id_of",
    "sender_of",
]

_EMPTY: Mapping[str, object] = {}
# An installation's oauth_id (HipChat sends a UUID; ``installations.oauth_id_from`` and the JWT
# ``iss`` check use it). The narrow alphabet keeps ':', '~', '{' and '}' (key syntax) out.
OAUTH_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


@dataclasses.dataclass(frozen=True, slots=True)
class Sender:
    """The HipChat user behind a message or event (``id`` as a string, as in JWT ``sub``)."""

    id: str
    name: str = ""
    mention_name: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Room:
    """The room a message or event happened in."""

    id: int
    name: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Webhook:
    """A webhook body, read leniently: ids may be ints or strings, optional parts may be absent."""

    event: str
    room: Room | None
    sender: Sender | None
    text: str
    message_id: str | None
    item: Mapping[str, object]
    body: Mapping[str, object]


def mapping(value: object) -> Mapping[str, object]:
    """``value`` when it is a JSON object, else an empty mapping."""
    return value if isinstance(value, Mapping) else _EMPTY


def id_of(value: object) -> str | None:
    """An id from the wire as a string (HipChat sends ints or strings); None for anything else."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def room_id_of(value: object) -> int | None:
    """A room id as an int: an int, or a string of at most 18 ASCII digits; else None."""
    if isinstance(value, str):
        return int(value) if value.isascii() and value.isdigit() and len(value) < 19 else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def sender_of(item: Mapping[str, object]) -> Mapping[str, object]:
    """The sending user's object: ``item.message.from`` for messages, else ``item.sender``.

    A room_notification's ``from`` is a label string, not a user (docs/protocol.md).
    """
    return mapping(mapping(item.get("message")).get("from")) or mapping(item.get("sender"))


def load_body(raw: bytes, *, what: str = "The request body") -> Any:
    """JSON from request bytes; ``RequestError`` when it is not JSON or nests past MAX_DEPTH."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RequestError(f"{what} is not valid UTF-8 JSON") from None
    # A value nests no deeper than the text has ``[`` and ``{`` (in strings too): a webhook has
    # a handful, so the walk over the parsed value only runs for bodies that could be too deep.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and not _is_shallow(value, MAX_DEPTH):
        check_depth(value, what=what, max_depth=MAX_DEPTH)  # raises, naming the cap
    return value


def _is_shallow(value: object, levels: int) -> bool:
    """True when ``value`` nests at most ``levels`` deep (no copies: the webhook path's check)."""
    if isinstance(value, dict):
        children: Iterable[object] = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return True
    if levels == 0:
        return False
    for child in children:
        if isinstance(child, dict | list) and not _is_shallow(child, levels - 1):
            return False
    return True


def parse_webhook(body: object) -> Webhook:
    """Read a webhook body (docs/protocol.md, Webhook payloads); no ``event``: ``RequestError``."""
    if not isinstance(body, Mapping) or not isinstance(event := body.get("event"), str):
        raise RequestError(
            "The webhook body must be a JSON object with an 'event' string, such as 'room_message'"
        )
    item = mapping(body.get("item"))
    message = mapping(item.get("message"))
    text = message.get("message")
    return Webhook(
        event=event,
        room=_room(item),
        sender=_sender(item),
        text=text if isinstance(text, str) else "",
        message_id=id_of(message.get("id")),
        item=item,
        body=body,
    )


def _room(item: Mapping[str, object]) -> Room | None:
    # item.room.id only: it is the id the JWT check compares (no roomId fallback), so a reply can
    # never go to a room other than the one that was checked.
    room = mapping(item.get("room"))
    room_id = room_id_of(room.get("id"))
    if room_id is None:
        return None
    name = room.get("name")
    return Room(room_id, name if isinstance(name, str) else "")


def _sender(item: Mapping[str, object]) -> Sender | None:
    sender = sender_of(item)
    sender_id = id_of(sender.get("id"))
    if sender_id is None:
        return None
    name, mention = sender.get("name"), sender.get("mention_name")
    return Sender(
        sender_id,
        name if isinstance(name, str) else "",
        mention if isinstance(mention, str) else "",
    )

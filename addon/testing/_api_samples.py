"""Sample data of ``FakeRestAPI``: the default rooms, users, messages and emoticons.

The ``*_DEFAULTS`` are the fields HipChat always sends with a room or a message, merged under what a
test supplies.
"""

from __future__ import annotations

import uuid
from typing import Any

_Item = dict[str, Any]


def _sample(kind: str, count: int) -> list[_Item]:
    """Default items for the list operations."""
    if kind == "room":
        return [{"id": i, "name": f"Room {i}"} for i in range(1, count + 1)]
    if kind == "user":
        return [
            {"id": i, "name": f"User {i}", "mention_name": f"user{i}"} for i in range(1, count + 1)
        ]
    if kind == "emoticon":
        return [{"id": i, "shortcut": f"emo{i}"} for i in range(1, count + 1)]
    return [{"id": str(uuid.UUID(int=i)), "message": f"Message {i}"} for i in range(1, count + 1)]


_ROOM_DEFAULTS: dict[str, Any] = {"privacy": "public", "is_archived": False}
_MESSAGE_DEFAULTS: dict[str, Any] = {
    "date": "2015-01-20T22:45:06.662545+00:00",
    "type": "message",
    "mentions": [],
}

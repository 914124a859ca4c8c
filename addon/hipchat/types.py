"""Types shared by the client's API groups. Leaf module: imports nothing from ``addon``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

__all__ = [
    "Color",
    "GlanceContent",
    "JSONObject",
    "MessageFormat",
    "RoomRef",
    "UserRef",
]

JSONObject = dict[str, Any]
"""A JSON object as HipChat sends it."""

RoomRef = int | str
"""A room: its numeric id or its name (names are URL-quoted for you)."""

UserRef = int | str
"""A user: numeric id, email address or ``@mention_name``."""

Color = Literal["yellow", "green", "red", "purple", "gray", "random"]
"""Background colour of a room notification (docs/protocol.md, Room notifications)."""

MessageFormat = Literal["html", "text"]
"""How HipChat renders a message (docs/protocol.md, Room notifications)."""

GlanceContent = Mapping[str, object]
"""What a glance shows: ``{"label": {...}, "status": {...}?, "metadata": {...}?}`` (protocol.md)."""

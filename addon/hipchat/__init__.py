"""The HipChat REST API v2 client: ``HipChatClient`` and its authentication.

The table of operations it covers is ``addon.hipchat.operations.OPERATIONS``.
"""

from __future__ import annotations

from addon.hipchat.auth import HipChatAuth, StaticToken, TokenSource
from addon.hipchat.client import HipChatClient
from addon.hipchat.messages import FileSource
from addon.hipchat.operations import Operation
from addon.hipchat.types import Color, GlanceContent, JSONObject, MessageFormat, RoomRef, UserRef

__all__ = [
    "Color",
    "FileSource",
    "GlanceContent",
    "HipChatAuth",
    "HipChatClient",
    "JSONObject",
    "MessageFormat",
    "Operation",
    "RoomRef",
    "StaticToken",
    "TokenSource",
    "UserRef",
]

"""Dynamic UI extensions: actions, glances, web panels and dialogs.

See docs/protocol.md, Dynamic extensions.

Descriptor-declared extensions cannot be changed here; these add, replace and remove extra ones,
in one room or group-wide. The body is shaped like the descriptor entry; its ``key`` is set
from the ``key`` argument.
"""

from __future__ import annotations

from collections.abc import Mapping

from addon.hipchat._api import APIGroup
from addon.hipchat.types import JSONObject, RoomRef

__all__ = ["ExtensionsAPI"]

Extension = Mapping[str, object]


def _in_room(room: RoomRef, key: str) -> dict[str, int | str]:
    return {"room_id_or_name": room, "key": key}


def _entry(key: str, extension: Extension) -> dict[str, object]:
    return {**extension, "key": key}


class ExtensionsAPI(APIGroup):
    """Room and global dynamic extensions; creating one answers 201, deleting it 204."""

    async def get_room_action(self, room: RoomRef, key: str) -> JSONObject:
        """Get an action added to a room."""
        return await self._json("get_room_action", _in_room(room, key))

    async def create_room_action(self, room: RoomRef, key: str, action: Extension) -> None:
        """Add (or replace) an action in a room."""
        await self._no_content("create_room_action", _in_room(room, key), json=_entry(key, action))

    async def delete_room_action(self, room: RoomRef, key: str) -> None:
        """Remove an action from a room."""
        await self._no_content("delete_room_action", _in_room(room, key))

    async def get_global_action(self, key: str) -> JSONObject:
        """Get an action added group-wide."""
        return await self._json("get_global_action", {"key": key})

    async def create_global_action(self, key: str, action: Extension) -> None:
        """Add (or replace) an action group-wide."""
        await self._no_content("create_global_action", {"key": key}, json=_entry(key, action))

    async def delete_global_action(self, key: str) -> None:
        """Remove an action added group-wide."""
        await self._no_content("delete_global_action", {"key": key})

    async def get_room_glance(self, room: RoomRef, key: str) -> JSONObject:
        """Get a glance added to a room."""
        return await self._json("get_room_glance", _in_room(room, key))

    async def create_room_glance(self, room: RoomRef, key: str, glance: Extension) -> None:
        """Add (or replace) a glance in a room."""
        await self._no_content("create_room_glance", _in_room(room, key), json=_entry(key, glance))

    async def delete_room_glance(self, room: RoomRef, key: str) -> None:
        """Remove a glance from a room."""
        await self._no_content("delete_room_glance", _in_room(room, key))

    async def get_global_glance(self, key: str) -> JSONObject:
        """Get a glance added group-wide."""
        return await self._json("get_global_glance", {"key": key})

    async def create_global_glance(self, key: str, glance: Extension) -> None:
        """Add (or replace) a glance group-wide."""
        await self._no_content("create_global_glance", {"key": key}, json=_entry(key, glance))

    async def delete_global_glance(self, key: str) -> None:
        """Remove a glance added group-wide."""
        await self._no_content("delete_global_glance", {"key": key})

    async def get_room_web_panel(self, room: RoomRef, key: str) -> JSONObject:
        """Get a web panel added to a room."""
        return await self._json("get_room_web_panel", _in_room(room, key))

    async def create_room_web_panel(self, room: RoomRef, key: str, web_panel: Extension) -> None:
        """Add (or replace) a web panel in a room."""
        await self._no_content(
            "create_room_web_panel", _in_room(room, key), json=_entry(key, web_panel)
        )

    async def delete_room_web_panel(self, room: RoomRef, key: str) -> None:
        """Remove a web panel from a room."""
        await self._no_content("delete_room_web_panel", _in_room(room, key))

    async def get_global_web_panel(self, key: str) -> JSONObject:
        """Get a web panel added group-wide."""
        return await self._json("get_global_web_panel", {"key": key})

    async def create_global_web_panel(self, key: str, web_panel: Extension) -> None:
        """Add (or replace) a web panel group-wide."""
        await self._no_content("create_global_web_panel", {"key": key}, json=_entry(key, web_panel))

    async def delete_global_web_panel(self, key: str) -> None:
        """Remove a web panel added group-wide."""
        await self._no_content("delete_global_web_panel", {"key": key})

    async def get_room_dialog(self, room: RoomRef, key: str) -> JSONObject:
        """Get a dialog added to a room."""
        return await self._json("get_room_dialog", _in_room(room, key))

    async def create_room_dialog(self, room: RoomRef, key: str, dialog: Extension) -> None:
        """Add (or replace) a dialog in a room."""
        await self._no_content("create_room_dialog", _in_room(room, key), json=_entry(key, dialog))

    async def delete_room_dialog(self, room: RoomRef, key: str) -> None:
        """Remove a dialog from a room."""
        await self._no_content("delete_room_dialog", _in_room(room, key))

    async def get_global_dialog(self, key: str) -> JSONObject:
        """Get a dialog added group-wide."""
        return await self._json("get_global_dialog", {"key": key})

    async def create_global_dialog(self, key: str, dialog: Extension) -> None:
        """Add (or replace) a dialog group-wide."""
        await self._no_content("create_global_dialog", {"key": key}, json=_entry(key, dialog))

    async def delete_global_dialog(self, key: str) -> None:
        """Remove a dialog added group-wide."""
        await self._no_content("delete_global_dialog", {"key": key})

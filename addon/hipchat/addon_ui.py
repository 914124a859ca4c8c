"""Add-on UI: glance updates (docs/protocol.md, Glance updates) and integration links."""

from __future__ import annotations

from collections.abc import Mapping

from addon.hipchat._api import APIGroup
from addon.hipchat.types import GlanceContent, JSONObject, RoomRef, UserRef

__all__ = ["AddonUIAPI"]


def _glance_body(glances: Mapping[str, GlanceContent]) -> dict[str, object]:
    return {"glance": [{"key": key, "content": dict(c)} for key, c in glances.items()]}


class AddonUIAPI(APIGroup):
    """Push new glance content to HipChat clients; make integration links.

    ``glances`` maps a glance key (from the descriptor) to its content,
    ``{"label": {"type": "html", "value": "..."}, "status": ..., "metadata": ...}``.
    """

    async def update_glance(self, glances: Mapping[str, GlanceContent]) -> None:
        """Update glances for the whole group (global installations)."""
        await self._no_content("update_glance", json=_glance_body(glances))

    async def update_room_glance(self, room: RoomRef, glances: Mapping[str, GlanceContent]) -> None:
        """Update glances for everyone in a room."""
        params = {"room_id_or_name": room}
        await self._no_content("update_room_glance", params, json=_glance_body(glances))

    async def update_user_glance(self, user: UserRef, glances: Mapping[str, GlanceContent]) -> None:
        """Update glances for one user, in every room."""
        params = {"user_id_or_email": user}
        await self._no_content("update_user_glance", params, json=_glance_body(glances))

    async def update_room_user_glance(
        self, room: RoomRef, user: UserRef, glances: Mapping[str, GlanceContent]
    ) -> None:
        """Update glances for one user in one room."""
        params = {"room_id_or_name": room, "user_id_or_email": user}
        await self._no_content("update_room_user_glance", params, json=_glance_body(glances))

    async def push_glance(
        self,
        key: str,
        content: GlanceContent,
        *,
        room: RoomRef | None = None,
        user: UserRef | None = None,
    ) -> None:
        """Update one glance for a room, a user, a user in a room, or (neither) the group."""
        glances = {key: content}
        if room is not None and user is not None:
            await self.update_room_user_glance(room, user, glances)
        elif room is not None:
            await self.update_room_glance(room, glances)
        elif user is not None:
            await self.update_user_glance(user, glances)
        else:
            await self.update_glance(glances)

    async def create_integration_link(self, target: str, ttl: int) -> JSONObject:
        """Create a short-lived link to ``target`` (``ttl`` in seconds)."""
        return await self._json("create_integration_link", json={"target": target, "ttl": ttl})

    async def delete_integration_link(self, token: str) -> None:
        """Delete an integration link before it expires."""
        await self._no_content("delete_integration_link", {"token": token})

"""The group: its details, avatar, statistics, emoticons and invitations."""

from __future__ import annotations

from collections.abc import AsyncIterator

from addon.hipchat._api import APIGroup, compact, encode_image
from addon.hipchat.types import JSONObject

__all__ = ["GroupsAPI"]


class GroupsAPI(APIGroup):
    """Operations on the group (the HipChat team) as a whole."""

    async def get_group(self, group_id: int | str) -> JSONObject:
        """Get a group's details."""
        return await self._json("get_group", {"group_id": group_id})

    async def get_group_avatar(self, group_id: int | str) -> str:
        """Return the URL of a group's avatar image."""
        return await self._location("get_group_avatar", {"group_id": group_id})

    async def update_group_avatar(self, group_id: int | str, avatar: bytes | str) -> None:
        """Replace a group's avatar with an image (bytes, or base64 text)."""
        body = {"avatar": encode_image(avatar)}
        await self._no_content("update_group_avatar", {"group_id": group_id}, json=body)

    async def delete_group_avatar(self, group_id: int | str) -> None:
        """Remove a group's avatar."""
        await self._no_content("delete_group_avatar", {"group_id": group_id})

    async def get_group_statistics(self, group_id: int | str) -> JSONObject:
        """Get a group's statistics."""
        return await self._json("get_group_statistics", {"group_id": group_id})

    async def get_all_emoticons(
        self, *, type: str | None = None, start_index: int = 0, max_results: int = 100
    ) -> JSONObject:
        """Get one page of emoticons (``type`` is ``global``, ``group`` or ``all``)."""
        query = {"type": type, "start-index": start_index, "max-results": max_results}
        return await self._json("get_all_emoticons", query=query)

    def iter_emoticons(
        self, *, type: str | None = None, page_size: int = 100
    ) -> AsyncIterator[JSONObject]:
        """Iterate over every emoticon, page by page."""
        return self._items("get_all_emoticons", {}, {"type": type}, page_size)

    async def get_emoticon(self, emoticon_id_or_key: int | str) -> JSONObject:
        """Get one emoticon by id or shortcut."""
        params = {"emoticon_id_or_key": emoticon_id_or_key}
        return await self._json("get_emoticon", params)

    async def invite_user_to_group(
        self, email: str, name: str, *, title: str | None = None
    ) -> JSONObject:
        """Invite someone to join the group."""
        body = compact(email=email, name=name, title=title)
        return await self._json("invite_user_to_group", json=body)

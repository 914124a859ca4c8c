"""Rooms: lifecycle, members, participants, avatar, statistics, webhooks (docs/protocol.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Literal

from addon.hipchat._api import APIGroup, compact, encode_image
from addon.hipchat.types import JSONObject, RoomRef, UserRef

__all__ = ["RoomsAPI"]

Privacy = Literal["public", "private"]


def _room(room: RoomRef) -> dict[str, int | str]:
    return {"room_id_or_name": room}


def _member(room: RoomRef, user: UserRef) -> dict[str, int | str]:
    return {"room_id_or_name": room, "user_id_or_email": user}


def _page(start_index: int, max_results: int) -> dict[str, int]:
    return {"start-index": start_index, "max-results": max_results}


class RoomsAPI(APIGroup):
    """Operations on rooms. A room is its numeric id or its name."""

    async def get_all_rooms(
        self,
        *,
        include_private: bool | None = None,
        include_archived: bool | None = None,
        start_index: int = 0,
        max_results: int = 100,
    ) -> JSONObject:
        """Get one page of the group's rooms."""
        query = {"include-private": include_private, "include-archived": include_archived}
        return await self._json("get_all_rooms", query={**query, **_page(start_index, max_results)})

    def iter_rooms(
        self,
        *,
        include_private: bool | None = None,
        include_archived: bool | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[JSONObject]:
        """Iterate over every room of the group, page by page."""
        query = {"include-private": include_private, "include-archived": include_archived}
        return self._items("get_all_rooms", {}, query, page_size)

    async def create_room(
        self,
        name: str,
        *,
        privacy: Privacy | None = None,
        topic: str | None = None,
        owner_user_id: int | str | None = None,
        guest_access: bool | None = None,
        delegate_admin_visibility: bool | None = None,
    ) -> JSONObject:
        """Create a room; return its ``{"id", "links"}``.

        ``owner_user_id`` is a user id, email or @mention; the API takes it as a string.
        """
        body = compact(
            name=name,
            privacy=privacy,
            topic=topic,
            owner_user_id=None if owner_user_id is None else str(owner_user_id),
            guest_access=guest_access,
            delegate_admin_visibility=delegate_admin_visibility,
        )
        return await self._json("create_room", json=body)

    async def get_room(self, room: RoomRef) -> JSONObject:
        """Get a room's details."""
        return await self._json("get_room", _room(room))

    async def update_room(
        self,
        room: RoomRef,
        *,
        name: str,
        privacy: Privacy,
        is_archived: bool,
        is_guest_accessible: bool,
        topic: str,
        owner_id: int | str,
        delegate_admin_visibility: bool | None = None,
    ) -> None:
        """Replace a room's settings (HipChat requires all of them)."""
        body = compact(
            name=name,
            privacy=privacy,
            is_archived=is_archived,
            is_guest_accessible=is_guest_accessible,
            topic=topic,
            owner={"id": owner_id},
            delegate_admin_visibility=delegate_admin_visibility,
        )
        await self._no_content("update_room", _room(room), json=body)

    async def delete_room(self, room: RoomRef) -> None:
        """Delete a room."""
        await self._no_content("delete_room", _room(room))

    async def set_topic(self, room: RoomRef, topic: str) -> None:
        """Set a room's topic."""
        await self._no_content("set_topic", _room(room), json={"topic": topic})

    async def get_room_avatar(self, room: RoomRef) -> str:
        """Return the URL of a room's avatar image."""
        return await self._location("get_room_avatar", _room(room))

    async def update_room_avatar(self, room: RoomRef, avatar: bytes | str) -> None:
        """Replace a room's avatar with an image (bytes, or base64 text)."""
        body = {"avatar": encode_image(avatar)}
        await self._no_content("update_room_avatar", _room(room), json=body)

    async def delete_room_avatar(self, room: RoomRef) -> None:
        """Remove a room's avatar."""
        await self._no_content("delete_room_avatar", _room(room))

    async def get_room_statistics(self, room: RoomRef) -> JSONObject:
        """Get a room's statistics (message count, last activity)."""
        return await self._json("get_room_statistics", _room(room))

    async def get_all_participants(
        self,
        room: RoomRef,
        *,
        include_offline: bool | None = None,
        start_index: int = 0,
        max_results: int = 100,
    ) -> JSONObject:
        """Get one page of the users in a room."""
        query = {"include-offline": include_offline, **_page(start_index, max_results)}
        return await self._json("get_all_participants", _room(room), query=query)

    def iter_participants(
        self, room: RoomRef, *, include_offline: bool | None = None, page_size: int = 100
    ) -> AsyncIterator[JSONObject]:
        """Iterate over the users in a room, page by page."""
        query = {"include-offline": include_offline}
        return self._items("get_all_participants", _room(room), query, page_size)

    async def get_all_members(
        self, room: RoomRef, *, start_index: int = 0, max_results: int = 100
    ) -> JSONObject:
        """Get one page of a private room's members."""
        query = _page(start_index, max_results)
        return await self._json("get_all_members", _room(room), query=query)

    def iter_members(self, room: RoomRef, *, page_size: int = 100) -> AsyncIterator[JSONObject]:
        """Iterate over a private room's members, page by page."""
        return self._items("get_all_members", _room(room), {}, page_size)

    async def add_member(
        self, room: RoomRef, user: UserRef, *, room_roles: Sequence[str] | None = None
    ) -> None:
        """Make a user a member of a private room."""
        body = compact(room_roles=None if room_roles is None else list(room_roles))
        await self._no_content("add_member", _member(room, user), json=body)

    async def remove_member(self, room: RoomRef, user: UserRef) -> None:
        """Remove a member from a private room."""
        await self._no_content("remove_member", _member(room, user))

    async def invite_user(self, room: RoomRef, user: UserRef, reason: str | None = None) -> None:
        """Invite a user to a room."""
        await self._no_content("invite_user", _member(room, user), json=compact(reason=reason))

    async def get_all_room_webhooks(
        self, room: RoomRef, *, start_index: int = 0, max_results: int = 100
    ) -> JSONObject:
        """Get one page of the webhooks registered in a room through the API."""
        query = _page(start_index, max_results)
        return await self._json("get_all_room_webhooks", _room(room), query=query)

    def iter_room_webhooks(
        self, room: RoomRef, *, page_size: int = 100
    ) -> AsyncIterator[JSONObject]:
        """Iterate over the webhooks registered in a room, page by page."""
        return self._items("get_all_room_webhooks", _room(room), {}, page_size)

    async def create_room_webhook(
        self,
        room: RoomRef,
        url: str,
        event: str,
        *,
        pattern: str | None = None,
        name: str | None = None,
        key: str | None = None,
        authentication: Literal["none", "jwt"] | None = None,
    ) -> JSONObject:
        """Register a webhook for ``event`` in a room; return its ``{"id", "links"}``."""
        body = compact(
            url=url, event=event, pattern=pattern, name=name, key=key, authentication=authentication
        )
        return await self._json("create_room_webhook", _room(room), json=body)

    async def get_room_webhook(self, room: RoomRef, webhook_id: int | str) -> JSONObject:
        """Get one of a room's webhooks."""
        params = {"room_id_or_name": room, "webhook_id": webhook_id}
        return await self._json("get_room_webhook", params)

    async def delete_room_webhook(self, room: RoomRef, webhook_id: int | str) -> None:
        """Delete one of a room's webhooks."""
        params = {"room_id_or_name": room, "webhook_id": webhook_id}
        await self._no_content("delete_room_webhook", params)

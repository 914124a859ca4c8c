"""Users: the group's people, their photos and auto-join rooms."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Literal

from addon.hipchat._api import APIGroup, compact, encode_image
from addon.hipchat.types import JSONObject, UserRef

__all__ = ["UsersAPI"]


def _user(user: UserRef) -> dict[str, int | str]:
    return {"id_or_email": user}


def _roles(roles: Sequence[str] | None) -> list[str] | None:
    return None if roles is None else list(roles)


class UsersAPI(APIGroup):
    """Operations on users. A user is a numeric id, an email address or ``@mention_name``."""

    async def get_all_users(
        self,
        *,
        include_guests: bool | None = None,
        include_deleted: bool | None = None,
        start_index: int = 0,
        max_results: int = 100,
    ) -> JSONObject:
        """Get one page of the group's users."""
        query = {
            "include-guests": include_guests,
            "include-deleted": include_deleted,
            "start-index": start_index,
            "max-results": max_results,
        }
        return await self._json("get_all_users", query=query)

    def iter_users(
        self,
        *,
        include_guests: bool | None = None,
        include_deleted: bool | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[JSONObject]:
        """Iterate over every user of the group, page by page."""
        query = {"include-guests": include_guests, "include-deleted": include_deleted}
        return self._items("get_all_users", {}, query, page_size)

    async def create_user(
        self,
        name: str,
        email: str,
        *,
        title: str | None = None,
        mention_name: str | None = None,
        is_group_admin: bool | None = None,
        timezone: str | None = None,
        password: str | None = None,
        roles: Sequence[str] | None = None,
    ) -> JSONObject:
        """Create a user; return their ``{"id", "links"}``."""
        body = compact(
            name=name,
            email=email,
            title=title,
            mention_name=mention_name,
            is_group_admin=is_group_admin,
            timezone=timezone,
            password=password,
            roles=_roles(roles),
        )
        return await self._json("create_user", json=body)

    async def get_user(self, user: UserRef) -> JSONObject:
        """Get a user's details."""
        return await self._json("get_user", _user(user))

    async def update_user(
        self,
        user: UserRef,
        *,
        name: str,
        mention_name: str,
        email: str,
        title: str | None = None,
        presence: Mapping[str, object] | None = None,
        is_group_admin: bool | None = None,
        timezone: str | None = None,
        password: str | None = None,
        roles: Sequence[str] | None = None,
    ) -> None:
        """Replace a user's details (``name``, ``mention_name`` and ``email`` are required)."""
        body = compact(
            name=name,
            mention_name=mention_name,
            email=email,
            title=title,
            presence=None if presence is None else dict(presence),
            is_group_admin=is_group_admin,
            timezone=timezone,
            password=password,
            roles=_roles(roles),
        )
        await self._no_content("update_user", _user(user), json=body)

    async def delete_user(self, user: UserRef) -> None:
        """Delete a user."""
        await self._no_content("delete_user", _user(user))

    async def get_photo(self, user: UserRef, size: Literal["small", "big"] = "small") -> str:
        """Return the URL of a user's photo."""
        return await self._location("get_photo", {"id_or_email": user, "size": size})

    async def update_photo(self, user: UserRef, photo: bytes | str) -> None:
        """Replace a user's photo with an image (bytes, or base64 text)."""
        body = {"photo": encode_image(photo)}
        await self._no_content("update_photo", _user(user), json=body)

    async def delete_photo(self, user: UserRef) -> None:
        """Remove a user's photo."""
        await self._no_content("delete_photo", _user(user))

    async def get_auto_join_rooms(
        self, user: UserRef, *, start_index: int = 0, max_results: int = 100
    ) -> JSONObject:
        """Get one page of the rooms a user joins automatically."""
        query = {"start-index": start_index, "max-results": max_results}
        return await self._json("get_auto_join_rooms", _user(user), query=query)

    def iter_auto_join_rooms(
        self, user: UserRef, *, page_size: int = 100
    ) -> AsyncIterator[JSONObject]:
        """Iterate over the rooms a user joins automatically, page by page."""
        return self._items("get_auto_join_rooms", _user(user), {}, page_size)

"""Room and private-chat history."""

from __future__ import annotations

from collections.abc import AsyncIterator

from addon.hipchat._api import APIGroup
from addon.hipchat.types import JSONObject, RoomRef, UserRef

__all__ = ["HistoryAPI"]


def _filters(
    date: str | None,
    end_date: str | None,
    timezone: str | None,
    reverse: bool | None,
    include_deleted: bool | None,
) -> dict[str, str | bool | None]:
    # The swagger file spells include_deleted with an underscore, unlike the other parameters.
    return {
        "date": date,
        "end-date": end_date,
        "timezone": timezone,
        "reverse": reverse,
        "include_deleted": include_deleted,
    }


class HistoryAPI(APIGroup):
    """Reading messages back. ``date``/``end_date`` are ISO-8601 or ``recent``."""

    async def get_room_history(
        self,
        room: RoomRef,
        *,
        date: str | None = None,
        end_date: str | None = None,
        timezone: str | None = None,
        reverse: bool | None = None,
        include_deleted: bool | None = None,
        start_index: int = 0,
        max_results: int = 100,
    ) -> JSONObject:
        """Get one page of a room's history."""
        query = {
            **_filters(date, end_date, timezone, reverse, include_deleted),
            "start-index": start_index,
            "max-results": max_results,
        }
        return await self._json("get_room_history", {"room_id_or_name": room}, query=query)

    def iter_room_history(
        self,
        room: RoomRef,
        *,
        date: str | None = None,
        end_date: str | None = None,
        timezone: str | None = None,
        reverse: bool | None = None,
        include_deleted: bool | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[JSONObject]:
        """Iterate over a room's history, page by page."""
        query = _filters(date, end_date, timezone, reverse, include_deleted)
        return self._items("get_room_history", {"room_id_or_name": room}, query, page_size)

    async def get_recent_room_history(
        self,
        room: RoomRef,
        *,
        not_before: str | None = None,
        max_results: int | None = None,
        timezone: str | None = None,
        include_deleted: bool | None = None,
    ) -> JSONObject:
        """Get a room's latest messages (after message id ``not_before``, when given)."""
        query = {
            "not-before": not_before,
            "max-results": max_results,
            "timezone": timezone,
            "include_deleted": include_deleted,
        }
        return await self._json("get_recent_room_history", {"room_id_or_name": room}, query=query)

    async def get_room_message(
        self,
        room: RoomRef,
        message_id: str,
        *,
        timezone: str | None = None,
        include_deleted: bool | None = None,
    ) -> JSONObject:
        """Get one message of a room."""
        params = {"room_id_or_name": room, "message_id": message_id}
        query = {"timezone": timezone, "include_deleted": include_deleted}
        return await self._json("get_room_message", params, query=query)

    async def get_privatechat_history(
        self,
        user: UserRef,
        *,
        date: str | None = None,
        end_date: str | None = None,
        timezone: str | None = None,
        reverse: bool | None = None,
        include_deleted: bool | None = None,
        start_index: int = 0,
        max_results: int = 100,
    ) -> JSONObject:
        """Get one page of the private chat history with a user."""
        query = {
            **_filters(date, end_date, timezone, reverse, include_deleted),
            "start-index": start_index,
            "max-results": max_results,
        }
        return await self._json("get_privatechat_history", {"id_or_email": user}, query=query)

    def iter_privatechat_history(
        self,
        user: UserRef,
        *,
        date: str | None = None,
        end_date: str | None = None,
        timezone: str | None = None,
        reverse: bool | None = None,
        include_deleted: bool | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[JSONObject]:
        """Iterate over the private chat history with a user, page by page."""
        query = _filters(date, end_date, timezone, reverse, include_deleted)
        return self._items("get_privatechat_history", {"id_or_email": user}, query, page_size)

    async def get_recent_privatechat_history(
        self,
        user: UserRef,
        *,
        not_before: str | None = None,
        max_results: int | None = None,
        timezone: str | None = None,
        include_deleted: bool | None = None,
    ) -> JSONObject:
        """Get the latest private chat messages with a user."""
        query = {
            "not-before": not_before,
            "max-results": max_results,
            "timezone": timezone,
            "include_deleted": include_deleted,
        }
        params = {"id_or_email": user}
        return await self._json("get_recent_privatechat_history", params, query=query)

    async def get_privatechat_message(
        self,
        user: UserRef,
        message_id: str,
        *,
        timezone: str | None = None,
        include_deleted: bool | None = None,
    ) -> JSONObject:
        """Get one private chat message."""
        params = {"id_or_email": user, "message_id": message_id}
        query = {"timezone": timezone, "include_deleted": include_deleted}
        return await self._json("get_privatechat_message", params, query=query)

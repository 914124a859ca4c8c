"""``HipChatClient``: every REST operation of ``operations.OPERATIONS`` as a typed method."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

import httpx

from addon.hipchat._transport import Transport
from addon.hipchat.addon_ui import AddonUIAPI
from addon.hipchat.auth import HipChatAuth, StaticToken, TokenSource
from addon.hipchat.extensions import ExtensionsAPI
from addon.hipchat.groups import GroupsAPI
from addon.hipchat.history import HistoryAPI
from addon.hipchat.messages import MessagesAPI
from addon.hipchat.oauth import OAuthAPI
from addon.hipchat.rooms import RoomsAPI
from addon.hipchat.users import UsersAPI

__all__ = ["HipChatClient"]


class HipChatClient(
    OAuthAPI,
    GroupsAPI,
    RoomsAPI,
    MessagesAPI,
    HistoryAPI,
    UsersAPI,
    AddonUIAPI,
    ExtensionsAPI,
):
    """An async client of the HipChat REST API v2, one method per operation.

    ``base_url`` is the API base from the installation's capabilities document
    (``capabilities.hipchatApiProvider.url``). ``token`` is a ``TokenSource`` (an installation's
    add-on tokens, refreshed on a 401) or a fixed personal or room token. Rate limits (429) are
    waited out; 5xx answers and network failures are retried for idempotent methods; any other
    failure raises ``HipChatAPIError`` carrying HipChat's own message.

    ```python
    async with HipChatClient("https://api.hipchat.com/v2/", token="personal-token") as hipchat:
        await hipchat.send_room_notification("Ops", "Deployed <b>v2</b>", color="green")
        async for room in hipchat.iter_rooms():
            print(room["name"])
    ```
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | TokenSource,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        max_retries: int = 3,
        max_retry_wait: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], float] = time.time,
    ) -> None:
        if http is not None and transport is not None:
            raise ValueError("Pass either http= or transport= to HipChatClient, not both")
        if max_retries < 0 or max_retry_wait < 0:
            raise ValueError("max_retries and max_retry_wait must not be negative")
        self._owns_http = http is None
        source = StaticToken(token) if isinstance(token, str) else token
        self._wire = Transport(
            base_url,
            http=http or httpx.AsyncClient(transport=transport, timeout=timeout),
            auth=HipChatAuth(source),
            timeout=timeout,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
            sleep=sleep,
            now=now,
        )

    def __repr__(self) -> str:
        return f"HipChatClient({self._wire.base_url!r})"

    @property
    def base_url(self) -> str:
        """The API base every path is relative to, without a trailing slash."""
        return self._wire.base_url

    async def aclose(self) -> None:
        """Close the HTTP connections, unless the ``httpx.AsyncClient`` was passed in."""
        if self._owns_http:
            await self._wire.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

"""``AddonRuntime``: what integrations and the dispatcher get from the running add-on.

It implements ``addon.context.Runtime`` over the real services: REST clients that act with the
installation's add-on token (or a user's token), and notifications posted through the REST API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, cast

import httpx

from addon.hipchat import HipChatClient, TokenSource
from addon.installations import Installation
from addon.settings import Settings
from addon.store import Keys, Store
from addon.tokens import TokenService

__all__ = ["AddonRuntime", "UserTokens"]

_NOTIFICATION_FIELDS = ("message_format", "color", "notify", "card", "attach_to")


class UserTokens(Protocol):
    """The user-token side ``AddonRuntime`` needs (``addon.approval.ApprovalService`` has it)."""

    def source(self, installation: Installation, user_id: str) -> TokenSource:
        """A token source acting as ``user_id``; its ``token()`` raises ``ApprovalRequired``."""
        ...


class AddonRuntime:
    """The running add-on, as integrations see it."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        keys: Keys,
        tokens: TokenService,
        http: httpx.AsyncClient,
        user_tokens: UserTokens,
    ) -> None:
        self._settings, self._store, self._keys = settings, store, keys
        self._tokens = tokens
        self._http = http
        self._user_tokens = user_tokens

    @property
    def settings(self) -> Settings:
        """The add-on's settings."""
        return self._settings

    @property
    def store(self) -> Store:
        """The shared store."""
        return self._store

    @property
    def keys(self) -> Keys:
        """The add-on's key builder."""
        return self._keys

    def client_for(self, installation: Installation) -> HipChatClient:
        """A REST client acting as the add-on in ``installation`` (shares our HTTP pool)."""
        return HipChatClient(
            installation.api_url,
            token=self._tokens.source(installation),
            http=self._http,
            timeout=self._settings.http_timeout,
        )

    async def user_client(self, installation: Installation, user_id: str) -> HipChatClient:
        """A REST client acting as ``user_id``; ``ApprovalRequired`` when they never approved."""
        source = await self._user_tokens_source(installation, user_id)
        return HipChatClient(
            installation.api_url, token=source, http=self._http, timeout=self._settings.http_timeout
        )

    async def _user_tokens_source(self, installation: Installation, user_id: str) -> TokenSource:
        source = self._user_tokens.source(installation, user_id)
        # Fail here, not on the first API call, so the reply can carry the approval link.
        await source.token()
        return source

    async def post_notification(
        self, installation: Installation, room_id: int, notification: dict[str, object]
    ) -> None:
        """Send a notification body to ``room_id`` (docs/protocol.md, Room notifications)."""
        fields = {k: notification[k] for k in _NOTIFICATION_FIELDS if k in notification}
        client = self.client_for(installation)
        await client.send_room_notification(
            room_id,
            str(notification.get("message", "")),
            from_=cast("str | None", notification.get("from")),
            **cast(Mapping[str, Any], fields),
        )

    async def addon_token(self, installation: Installation) -> str:
        """A valid add-on access token for ``installation``."""
        return (await self._tokens.addon_token(installation)).access_token

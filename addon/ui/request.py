"""``UIRequest``: what a UI handler gets, and the JWTs the add-on mints for its own pages.

HipChat loads glances and pages with ``signed_request`` (docs/protocol.md, JWT from HipChat). A
page then calls back to the add-on with a JWT the add-on minted for it (see docs/protocol.md,
JWT from our own pages): HS256, for the same user and room, valid ``PAGE_TOKEN_LIFETIME``
seconds, and with ``aud`` naming the integration, so that it opens that integration's APIs and
nothing else. Its key is derived from the installation's
secret (``page_key``), not the secret itself: a page's token can then never pass as a JWT from
HipChat (a forged webhook "from" the page's user, say).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from addon.context import Runtime, Storage
from addon.installations import Installation
from addon.jwt_auth import Claims, sign_jwt
from addon.ui.config import ConfigStore, build
from addon.ui.values import Glance

if TYPE_CHECKING:
    from addon.hipchat import HipChatClient
    from addon.integrations import Integration

__all__ = [
    "PAGE_TOKEN_LIFETIME",
    "DynamicExtensions",
    "GlancePusher",
    "UIRequest",
    "mint_page_token",
    "page_audience",
    "page_key",
]

PAGE_TOKEN_LIFETIME = 900  # seconds: "short-lived", at most 15 minutes
_S = TypeVar("_S")
ExtensionKind = Literal["glance", "webPanel", "dialog", "action"]


def page_audience(integration: str) -> str:
    """The ``aud`` of the JWTs minted for ``integration``'s pages."""
    return f"addon-page:{integration}"


def page_key(oauth_secret: str) -> str:
    """The HS256 key of page tokens: HMAC-SHA256 of a fixed label with the installation's secret."""
    return hmac.new(oauth_secret.encode(), b"hipchat-addon page token", hashlib.sha256).hexdigest()


def mint_page_token(
    installation: Installation,
    claims: Claims,
    integration: str,
    *,
    flags: Mapping[str, bool],
    now: float,
) -> str:
    """A JWT for a page to call its integration's APIs as the same user, in the same room."""
    context: dict[str, object] = {"room_id": claims.room_id, "user_tz": claims.user_tz, **flags}
    return sign_jwt(
        installation.oauth_id,
        page_key(installation.oauth_secret.value),
        now=now,
        sub=claims.sub,
        lifetime=PAGE_TOKEN_LIFETIME,
        extra={"aud": page_audience(integration), "context": context},
    )


class GlancePusher:
    """Pushes new glance content to HipChat clients with the add-on token.

    The request is in docs/protocol.md, Glance updates.

    ```python
    await request.glances.update("notes", Glance("3 notes"), room=request.room_id)
    ```
    Neither ``room`` nor ``user``: the whole group (global installations).
    """

    def __init__(self, client: HipChatClient, integration: Integration, static_url: str) -> None:
        self._client = client
        self._integration = integration
        self._static_url = static_url

    async def update(
        self,
        key: str,
        content: Glance,
        *,
        room: int | str | None = None,
        user: int | str | None = None,
    ) -> None:
        """Replace glance ``key``'s content for a room, a user, a user in a room, or the group."""
        if self._integration.extension("glance", key) is None:
            raise ValueError(
                f"Integration {self._integration.key!r} declares no glance {key!r}; "
                "declare it with @integration.glance"
            )
        body = content.to_json(self._resolve)
        await self._client.push_glance(key, body, room=room, user=user)

    def _resolve(self, path: str) -> str:
        return path if "://" in path else f"{self._static_url}/{path.lstrip('/')}"


class DynamicExtensions:
    """Add or remove extensions at run time, in one room or group-wide.

    See docs/protocol.md, Dynamic extensions.
    """

    def __init__(self, client: HipChatClient) -> None:
        self._client = client

    async def put(
        self,
        kind: ExtensionKind,
        key: str,
        entry: Mapping[str, Any],
        *,
        room: int | str | None = None,
    ) -> None:
        """Add (or replace) the ``kind`` extension ``key`` described by ``entry``.

        ``entry`` has the descriptor's shape (docs/protocol.md, Descriptor capabilities).
        """
        method = getattr(self._client, _method("create", kind, room))
        await (method(key, entry) if room is None else method(room, key, entry))

    async def delete(self, kind: ExtensionKind, key: str, *, room: int | str | None = None) -> None:
        """Remove the ``kind`` extension ``key``."""
        method = getattr(self._client, _method("delete", kind, room))
        await (method(key) if room is None else method(room, key))


def _method(verb: str, kind: ExtensionKind, room: object) -> str:
    names = {"glance": "glance", "webPanel": "web_panel", "dialog": "dialog", "action": "action"}
    return f"{verb}_{'global' if room is None else 'room'}_{names[kind]}"


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class UIRequest:
    """A verified request from HipChat's client (or from one of the integration's pages).

    ``room_id``, ``user_id`` and ``user_tz`` come from the signed token; ``query`` is the URL's
    query without ``signed_request``; ``body`` is the JSON an API call sent (None otherwise).
    """

    integration: Integration = dataclasses.field(repr=False)
    installation: Installation = dataclasses.field(repr=False)
    room_id: int | None
    user_id: str | None
    user_tz: str | None
    is_admin: bool | None
    """What the token's context said about the user (``user_is_admin``/``user_is_room_owner``)."""
    query: Mapping[str, str]
    body: Any = None
    runtime: Runtime = dataclasses.field(repr=False)
    configs: ConfigStore = dataclasses.field(repr=False)
    static_url: str = dataclasses.field(repr=False)
    log: logging.LoggerAdapter[logging.Logger] = dataclasses.field(repr=False)

    @property
    def client(self) -> HipChatClient:
        """The HipChat REST client, acting with the installation's add-on token."""
        return self.runtime.client_for(self.installation)

    @property
    def storage(self) -> Storage:
        """The integration's storage in this installation (the one its commands use)."""
        return Storage.of(self.runtime, self.installation, self.integration.key)

    @property
    def glances(self) -> GlancePusher:
        """Push glance updates (``await request.glances.update(key, Glance(...), room=...)``)."""
        return GlancePusher(self.client, self.integration, self.static_url)

    @property
    def extensions(self) -> DynamicExtensions:
        """Add or remove dynamic extensions."""
        return DynamicExtensions(self.client)

    @overload
    async def config(self) -> dict[str, Any]: ...
    @overload
    async def config(self, schema: type[_S]) -> _S: ...
    async def config(self, schema: type[Any] | None = None) -> Any:
        """The integration's settings in this installation (as ``schema`` when given)."""
        integration = self.integration
        values = await self.configs.load(
            self.installation.oauth_id, integration.key, integration.settings_fields
        )
        return values if schema is None else build(integration.settings_type(schema), values)

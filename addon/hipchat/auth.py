"""Bearer authentication for the REST client.

HipChat takes the token in an ``Authorization: Bearer`` header or an ``auth_token`` query
parameter (docs/protocol.md, Using tokens); we only ever use the header, so tokens stay out of
URLs and logs.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import Protocol, runtime_checkable

import httpx

__all__ = ["HipChatAuth", "StaticToken", "TokenSource"]


@runtime_checkable
class TokenSource(Protocol):
    """Where the client gets its bearer token, e.g. an installation's cached add-on token."""

    async def token(self) -> str:
        """Return a token that is valid now, fetching a new one if needed."""
        ...

    async def invalidate(self, token: str) -> None:
        """Forget ``token``, which HipChat refused (401): ``token()`` must not return it again."""
        ...


class StaticToken:
    """A fixed token (personal access token, room notification token) as a ``TokenSource``."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "StaticToken('**********')"

    async def token(self) -> str:
        """Return the fixed token."""
        return self._token

    async def invalidate(self, token: str) -> None:
        """Do nothing: there is no other token to fall back on."""


class HipChatAuth(httpx.Auth):
    """Send ``Authorization: Bearer <token>``; on a 401, invalidate the token and retry once."""

    def __init__(self, source: TokenSource) -> None:
        self.source = source

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        """Refuse synchronous clients: token sources are async."""
        raise RuntimeError("HipChatAuth needs an httpx.AsyncClient")
        yield request  # pragma: no cover (makes this a generator)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Authenticate ``request``, and retry it once with a fresh token after a 401."""
        token = await self.source.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            return
        await self.source.invalidate(token)
        fresh = await self.source.token()
        if fresh == token:  # a static token: asking again would only repeat the 401
            return
        request.headers["Authorization"] = f"Bearer {fresh}"
        yield request

"""Capabilities and OAuth sessions (docs/protocol.md, Capabilities document and Tokens)."""

from __future__ import annotations

import logging
import re

import httpx

from addon.hipchat._api import APIGroup, json_object
from addon.hipchat.types import JSONObject

__all__ = ["OAuthAPI"]

_SESSION_PATH = re.compile(r"(/oauth/token/)[^\s?#/\"']+")


class _SessionPathFilter(logging.Filter):
    """Masks the token in the session URLs httpx logs (``GET …/oauth/token/{access_token}``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/oauth/token/" in message:
            record.msg, record.args = _SESSION_PATH.sub(r"\1{access_token}", message), None
        return True


# The session operations carry the token in their path; httpx logs every request's URL at INFO.
_httpx_log = logging.getLogger("httpx")
if not any(isinstance(f, _SessionPathFilter) for f in _httpx_log.filters):
    _httpx_log.addFilter(_SessionPathFilter())


class OAuthAPI(APIGroup):
    """HipChat's capabilities document, its add-on schema, tokens and OAuth sessions."""

    async def get_capabilities(self) -> JSONObject:
        """Get HipChat's capabilities document (API and token URLs, scopes)."""
        return await self._json("get_capabilities")

    async def get_addon_capabilities_schema(self, *, draft: str | None = None) -> JSONObject:
        """Get the JSON schema add-on descriptors must satisfy (``draft`` is ``v2`` or ``v4``)."""
        return await self._json("get_addon_capabilities_schema", query={"draft": draft})

    async def generate_token(
        self, grant_type: str, *, client_id: str, client_secret: str, **fields: str
    ) -> JSONObject:
        """Ask the token endpoint for a token, as OAuth client ``client_id``.

        See docs/protocol.md, Token endpoint.

        ``fields`` are the grant's form fields (``scope``, ``code``, ``refresh_token``...). This
        is the raw operation: add-on tokens are cached and refreshed by ``addon.tokens``.
        """
        response = await self._wire.send(
            "generate_token",
            {},
            data={"grant_type": grant_type, **fields},
            auth=httpx.BasicAuth(client_id, client_secret),
        )
        return json_object("generate_token", response)

    async def get_session(self, access_token: str) -> JSONObject:
        """Get what HipChat knows of a token: its scopes, owner and expiry."""
        return await self._json("get_session", {"access_token": access_token})

    async def delete_session(self, access_token: str) -> None:
        """Revoke a token (it stops working at once, and so does its refresh token)."""
        await self._no_content("delete_session", {"access_token": access_token})

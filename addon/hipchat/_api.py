"""The base of the client's API groups: turns operations' responses into Python values."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping

import httpx

from addon.errors import UpstreamError
from addon.hipchat._transport import PathParams, Query, Transport
from addon.hipchat.types import JSONObject

__all__ = ["APIGroup", "compact", "encode_image", "json_object"]


def compact(**fields: object) -> dict[str, object]:
    """A JSON body of the fields that are not None."""
    return {name: value for name, value in fields.items() if value is not None}


def encode_image(image: bytes | str) -> str:
    """An avatar or photo as HipChat wants it: base64 (a ``str`` is taken as base64 already)."""
    return image if isinstance(image, str) else base64.b64encode(image).decode("ascii")


def json_object(name: str, response: httpx.Response) -> JSONObject:
    """The JSON object body of ``response`` to operation ``name``."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise UpstreamError(f"HipChat answered {name} with a body that is not a JSON object")
    return body


class APIGroup:
    """Base of the client's API groups: turns responses into Python values."""

    _wire: Transport  # the HTTP side of the client (``HipChatClient(transport=)`` is httpx's)

    async def _json(
        self,
        name: str,
        params: PathParams | None = None,
        *,
        query: Query | None = None,
        json: object = None,
    ) -> JSONObject:
        """Send operation ``name`` and return its JSON object body."""
        response = await self._wire.send(name, params or {}, query=query, json=json)
        return json_object(name, response)

    async def _no_content(
        self,
        name: str,
        params: PathParams | None = None,
        *,
        json: object = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send operation ``name`` and ignore its (empty) body."""
        await self._wire.send(name, params or {}, json=json, content=content, headers=headers)

    async def _location(self, name: str, params: PathParams) -> str:
        """Send a redirecting operation and return where it points.

        ``UpstreamError`` when HipChat answers a redirect without a ``Location``.
        """
        response = await self._wire.send(name, params)
        location = response.headers.get("location", "")
        if not location:
            raise UpstreamError(
                f"HipChat answered {name} with {response.status_code} but no Location; "
                "try again later"
            )
        return str(location)

    async def _items(
        self, name: str, params: PathParams, query: Query, page_size: int
    ) -> AsyncIterator[JSONObject]:
        """Yield the items of a paged operation, page by page (``start-index``/``max-results``)."""
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        start = 0
        while True:
            paging = {"start-index": start, "max-results": page_size}
            page = await self._json(name, params, query={**query, **paging})
            items = page.get("items") or []
            for item in items:
                yield item
            links = page.get("links")
            if len(items) < page_size or (isinstance(links, dict) and not links.get("next")):
                return
            start += len(items)

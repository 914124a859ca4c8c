"""The installation lifecycle: install, update and uninstall, server-side and client-side.

Every URL HipChat hands us passes the ``HostPolicy`` before it is fetched or
redirected to; documents are fetched with a timeout and a size cap and without following redirects.
An install is stored only after the capabilities document checks out and the token endpoint accepted
the credentials; an uninstall removes the installation only once the token endpoint refuses them.

See docs/protocol.md, Installation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from addon.bodies import read_capped
from addon.descriptor import Capabilities
from addon.errors import (
    AddonError,
    ClientGone,
    Forbidden,
    InstallRefused,
    UpstreamError,
)
from addon.hosts import HostPolicy
from addon.installations import Installation, InstallationRepository, InstallPayload, oauth_id_from
from addon.tokens import TokenService, client_credentials

__all__ = ["Lifecycle", "fetch_document"]

log = logging.getLogger("addon.lifecycle")


async def fetch_document(
    http: httpx.AsyncClient, url: str, *, what: str, max_bytes: int, seconds: float
) -> Any:
    """GET ``url`` and parse its JSON body; raise ``InstallRefused`` on any failure.

    The whole exchange must finish within ``seconds`` (a slow drip of bytes counts too), the body
    is refused past ``max_bytes`` decoded bytes, and redirects are not followed. Every failure
    gives the caller the same message, whatever answered or did not (an open port, a closed one,
    a host that resolves to our network): the install endpoint must not work as a port scanner.
    The reason goes to the log only.
    """
    try:
        async with asyncio.timeout(seconds):
            return json.loads(await _read_capped(http, url, max_bytes=max_bytes))
    except (
        TimeoutError,
        ValueError,
        RecursionError,
        httpx.HTTPError,
        httpx.InvalidURL,
        AddonError,
    ) as exc:
        subject = what[:1].lower() + what[1:]  # "The capabilities document" mid-sentence
        reason = str(exc) if isinstance(exc, AddonError) else type(exc).__name__
        log.warning("could not fetch %s: %s", subject, reason)
        raise InstallRefused(
            f"Could not fetch {subject}; check that its URL answers 200 with a JSON document "
            f"of at most {max_bytes} bytes"
        ) from exc


async def _read_capped(http: httpx.AsyncClient, url: str, *, max_bytes: int) -> bytes:
    async with http.stream("GET", url, follow_redirects=False) as response:
        if response.status_code != 200:
            raise UpstreamError(f"it answered {response.status_code}; expected 200")
        return await read_capped(response, max_bytes=max_bytes, error=UpstreamError)


@dataclasses.dataclass(frozen=True)
class _Endpoints:
    token_url: str
    authorization_url: str | None
    api_url: str


class Lifecycle:
    """Installs, updates and uninstalls; one per app."""

    def __init__(
        self,
        *,
        repository: InstallationRepository,
        tokens: TokenService,
        http: httpx.AsyncClient,
        hosts: HostPolicy,
        capabilities: Capabilities,
        scopes: tuple[str, ...],
        max_document_bytes: int,
        timeout: float,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.repository, self.tokens, self.http, self.hosts = repository, tokens, http, hosts
        self.capabilities = capabilities
        self.scopes = tuple(sorted(scopes))
        self.max_document_bytes = max_document_bytes
        self.timeout = timeout
        self.now = now

    async def install(self, payload: InstallPayload, *, update: bool = False) -> Installation:
        """Check ``payload`` against HipChat and store it; return the stored installation."""
        self._check_kind(payload)
        previous = await self.repository.get(payload.oauth_id)
        if previous is not None:  # refused before anything is fetched; ``claim`` checks again
            previous.check_reinstall_from(payload.capabilities_url)
        endpoints = await self._endpoints(payload.capabilities_url)
        installation = Installation(
            oauth_id=payload.oauth_id,
            oauth_secret=payload.oauth_secret,
            group_id=payload.group_id,
            room_id=payload.room_id,
            capabilities_url=payload.capabilities_url,
            token_url=endpoints.token_url,
            authorization_url=endpoints.authorization_url,
            api_url=endpoints.api_url,
            scopes=self.scopes,
            installed_at=previous.installed_at if previous else self.now(),
        )
        try:
            token = await self.tokens.grant(installation, client_credentials(self.scopes))
        except ClientGone as exc:
            raise InstallRefused(
                f"The token endpoint refused the credentials of {payload.oauth_id!r}; not installed"
            ) from exc
        installation = dataclasses.replace(
            installation,
            group_name=token.group_name,
            group_id=payload.group_id or token.group_id or 0,
        )
        await self.repository.claim(installation)
        await self.tokens.remember(installation, token)
        log.info(
            "updated" if update or previous else "installed",
            extra={"oauth_id": installation.oauth_id, "room_id": installation.room_id},
        )
        return installation

    async def uninstall(self, oauth_id: str) -> bool:
        """Remove ``oauth_id`` once HipChat confirms its client is gone; False when unknown.

        The DELETE is not signed and an oauth_id is no secret, so the token endpoint decides: when
        it still accepts the stored credentials, the client is alive and the request is refused.
        """
        installation = await self.repository.get(oauth_id)
        if installation is None:
            return False
        try:
            await self.tokens.grant(installation, client_credentials(installation.scopes))
        except ClientGone:
            await self.repository.delete(oauth_id)
            log.info("uninstalled", extra={"oauth_id": oauth_id, "room_id": installation.room_id})
            return True
        log.warning("refused uninstall of a live client", extra={"oauth_id": oauth_id})
        raise Forbidden(
            f"Installation {oauth_id!r} still holds valid credentials; HipChat revokes them "
            "before it uninstalls, so this request is refused"
        )

    async def install_from(self, query: Mapping[str, str], *, update: bool = False) -> str:
        """Client-side flow: fetch ``installable_url`` once, install, return ``redirect_url``."""
        installable_url, redirect_url = self._client_side_urls(query)
        payload = InstallPayload.from_json(await self._installable(installable_url))
        await self.install(payload, update=update)
        return redirect_url

    async def uninstall_from(self, query: Mapping[str, str]) -> str:
        """Client-side uninstall: learn the oauth_id, confirm, delete; return ``redirect_url``."""
        installable_url, redirect_url = self._client_side_urls(query)
        data = await self._installable(installable_url)
        oauth_id = oauth_id_from(data.get("oauthId") if isinstance(data, dict) else None)
        await self.uninstall(oauth_id)
        return redirect_url

    def _check_kind(self, payload: InstallPayload) -> None:
        if payload.room_id is not None and not self.capabilities.allow_room:
            raise InstallRefused("This add-on cannot be installed in a room (allowRoom is false)")
        if payload.room_id is None and not self.capabilities.allow_global:
            raise InstallRefused(
                "This add-on can only be installed in a room (allowGlobal is false)"
            )

    async def _endpoints(self, capabilities_url: str) -> _Endpoints:
        self.hosts.check(capabilities_url, what="capabilitiesUrl")
        doc = await fetch_document(
            self.http,
            capabilities_url,
            what="The capabilities document",
            max_bytes=self.max_document_bytes,
            seconds=self.timeout,
        )
        self_link = _dig(doc, "links", "self")
        if self_link != capabilities_url:
            raise InstallRefused(
                "The capabilities document's links.self does not match capabilitiesUrl; refused"
            )
        token_url = _dig(doc, "capabilities", "oauth2Provider", "tokenUrl")
        api_url = _dig(doc, "capabilities", "hipchatApiProvider", "url")
        authorization_url = _dig(doc, "capabilities", "oauth2Provider", "authorizationUrl")
        return _Endpoints(
            token_url=self.hosts.check(token_url, what="oauth2Provider.tokenUrl"),
            api_url=self.hosts.check(api_url, what="hipchatApiProvider.url"),
            authorization_url=(
                None
                if authorization_url is None
                else self.hosts.check(authorization_url, what="oauth2Provider.authorizationUrl")
            ),
        )

    def _client_side_urls(self, query: Mapping[str, str]) -> tuple[str, str]:
        # Both are checked before anything is fetched: no open redirect, no request to our network.
        installable_url = self.hosts.check(query.get("installable_url"), what="installable_url")
        redirect_url = self.hosts.check(query.get("redirect_url"), what="redirect_url")
        return installable_url, redirect_url

    async def _installable(self, url: str) -> Any:
        return await fetch_document(
            self.http,
            url,
            what="The installable document",
            max_bytes=self.max_document_bytes,
            seconds=self.timeout,
        )


def _dig(document: object, *path: str) -> Any:
    for name in path:
        if not isinstance(document, dict):
            return None
        document = document.get(name)
    return document

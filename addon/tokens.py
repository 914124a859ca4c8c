"""Add-on tokens from the OAuth token endpoint, cached and refreshed once per expiry.

``fetch_token`` is the one place that talks to ``tokenUrl`` (protocol reference §4.1).
``TokenService`` caches add-on tokens (``client_credentials``) in the store for ``expires_in`` less
a margin, and refreshes them single-flight: one asyncio lock per (installation, scopes) inside a
process, and a store lock with a re-check after acquiring it across processes and replicas.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence

import httpx

from addon.errors import ClientGone, RequestError, TokenError
from addon.installations import Installation
from addon.seal import Sealer
from addon.store import Keys, Store, lock

__all__ = ["AccessToken", "AddonTokenSource", "TokenService", "fetch_token"]

log = logging.getLogger("addon.tokens")

#: Refresh this long before HipChat says a token expires (the samples used 60-120 s).
DEFAULT_MARGIN = 120.0


@dataclasses.dataclass(frozen=True)
class AccessToken:
    """A bearer token and when it stops being usable (epoch seconds)."""

    access_token: str = dataclasses.field(repr=False)
    expires_at: float
    scopes: tuple[str, ...]
    refresh_token: str | None = dataclasses.field(default=None, repr=False)
    group_id: int | None = None
    group_name: str | None = None

    def to_record(self, sealer: Sealer) -> str:
        """Serialise for the store, the token values sealed."""
        record = dataclasses.asdict(self)
        record["access_token"] = sealer.seal(self.access_token)
        if self.refresh_token is not None:
            record["refresh_token"] = sealer.seal(self.refresh_token)
        return json.dumps(record)

    @classmethod
    def from_record(cls, raw: str, sealer: Sealer) -> AccessToken:
        """Read what ``to_record`` wrote."""
        record = json.loads(raw)
        record["access_token"] = sealer.open(record["access_token"])
        if record.get("refresh_token") is not None:
            record["refresh_token"] = sealer.open(record["refresh_token"])
        record["scopes"] = tuple(record["scopes"])
        return cls(**record)


async def fetch_token(
    http: httpx.AsyncClient,
    installation: Installation,
    form: Mapping[str, str],
    *,
    now: float,
) -> AccessToken:
    """POST ``form`` to the installation's token endpoint with HTTP Basic client authentication.

    A 401 raises ``ClientGone`` (the OAuth client was deleted); any other failure ``TokenError``.
    """
    auth = httpx.BasicAuth(installation.oauth_id, installation.oauth_secret.value)
    where = f"the token endpoint of {installation.oauth_id!r}"
    try:
        response = await http.post(installation.token_url, data=dict(form), auth=auth)
    except httpx.HTTPError as exc:
        raise TokenError(f"{where} could not be reached ({type(exc).__name__})") from exc
    if response.status_code == 401:
        raise ClientGone(f"{where} refused the client credentials; was the add-on uninstalled?")
    if response.status_code != 200:
        raise TokenError(f"{where} answered {response.status_code} to a {form['grant_type']} grant")
    return _parse_token(response, now=now, where=where)


def _parse_token(response: httpx.Response, *, now: float, where: str) -> AccessToken:
    try:
        data = response.json()
        token, expires_in = data["access_token"], float(data.get("expires_in", 3600))
        if not isinstance(token, str) or not token or expires_in <= 0:
            raise ValueError("empty token or lifetime")
    except (ValueError, KeyError, TypeError) as exc:
        raise TokenError(f"{where} answered a token response we cannot read") from exc
    refresh = data.get("refresh_token")
    group_id = data.get("group_id")
    return AccessToken(
        access_token=token,
        expires_at=now + expires_in,
        scopes=tuple(sorted(str(data.get("scope") or "").split())),
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        group_id=group_id if isinstance(group_id, int) else None,
        group_name=data.get("group_name") if isinstance(data.get("group_name"), str) else None,
    )


def cache_lifetime(token: AccessToken, *, now: float, margin: float) -> float:
    """How long to keep ``token``: its lifetime less ``margin`` (at most half its lifetime)."""
    lifetime = token.expires_at - now
    return max(lifetime - min(margin, lifetime / 2), 0.0)


class TokenService:
    """Add-on tokens per (installation, scopes): cached, single-flight, dropped on 401."""

    def __init__(
        self,
        store: Store,
        keys: Keys,
        sealer: Sealer,
        http: httpx.AsyncClient,
        *,
        margin: float = DEFAULT_MARGIN,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.keys, self.sealer, self.http = store, keys, sealer, http
        self.margin = margin
        self.now = now
        self._locks: dict[str, asyncio.Lock] = {}

    async def addon_token(
        self, installation: Installation, scopes: Sequence[str] | None = None
    ) -> AccessToken:
        """A valid add-on token for ``installation`` with ``scopes`` (default: all granted)."""
        wanted = self._scopes(installation, scopes)
        key = self.keys.token(installation.oauth_id, wanted)
        cached = await self._cached(key)
        if cached is not None:
            return cached
        local = self._locks.setdefault(key, asyncio.Lock())
        async with local:
            cached = await self._cached(key)
            if cached is not None:
                return cached
            lock_key = self.keys.token_lock(installation.oauth_id, wanted)
            async with lock(self.store, lock_key, ttl=30.0, wait=30.0):
                cached = await self._cached(key)
                if cached is not None:
                    return cached
                return await self._refresh(installation, wanted, key)

    async def remember(self, installation: Installation, token: AccessToken) -> None:
        """Cache ``token`` (obtained elsewhere, e.g. while installing) for its scopes."""
        key = self.keys.token(installation.oauth_id, self._scopes(installation, None))
        await self._store(key, token)

    async def invalidate(self, installation: Installation, access_token: str) -> None:
        """Drop the cached token when it is ``access_token`` (HipChat answered 401 to it)."""
        for key in await self.store.scan(self.keys.token(installation.oauth_id, ())):
            raw = await self.store.get(key)
            if raw is not None and AccessToken.from_record(raw, self.sealer).access_token == (
                access_token
            ):
                await self.store.delete(key)

    def source(
        self, installation: Installation, scopes: Sequence[str] | None = None
    ) -> AddonTokenSource:
        """A token source for ``HipChatClient`` acting as the add-on in ``installation``."""
        return AddonTokenSource(self, installation, scopes)

    async def _cached(self, key: str) -> AccessToken | None:
        raw = await self.store.get(key)
        if raw is None:
            return None
        token = AccessToken.from_record(raw, self.sealer)
        return token if token.expires_at - self.now() > 0 else None

    async def _refresh(
        self, installation: Installation, scopes: tuple[str, ...], key: str
    ) -> AccessToken:
        form = {"grant_type": "client_credentials", "scope": " ".join(scopes)}
        try:
            token = await fetch_token(self.http, installation, form, now=self.now())
        except ClientGone:
            await self.store.put(self.keys.client_gone(installation.oauth_id), "1", ttl=86400)
            raise
        if not token.scopes:
            token = dataclasses.replace(token, scopes=scopes)
        await self._store(key, token)
        log.info("fetched add-on token", extra={"oauth_id": installation.oauth_id})
        return token

    async def _store(self, key: str, token: AccessToken) -> None:
        ttl = cache_lifetime(token, now=self.now(), margin=self.margin)
        if ttl > 0:
            stored = dataclasses.replace(token, expires_at=self.now() + ttl)
            await self.store.put(key, stored.to_record(self.sealer), ttl=ttl)

    @staticmethod
    def _scopes(installation: Installation, scopes: Sequence[str] | None) -> tuple[str, ...]:
        wanted = tuple(sorted(set(installation.scopes if scopes is None else scopes)))
        extra = set(wanted) - set(installation.scopes)
        if extra:
            raise RequestError(
                f"Scopes {sorted(extra)} were not granted to installation "
                f"{installation.oauth_id!r}; declare them in the descriptor"
            )
        return wanted


@dataclasses.dataclass
class AddonTokenSource:
    """Hands ``HipChatClient`` the add-on token of one installation, and drops it on a 401."""

    service: TokenService
    installation: Installation
    scopes: Sequence[str] | None = None

    async def token(self) -> str:
        """A valid access token."""
        return (await self.service.addon_token(self.installation, self.scopes)).access_token

    async def invalidate(self, token: str) -> None:
        """Forget ``token``; the next ``token()`` fetches a new one."""
        await self.service.invalidate(self.installation, token)

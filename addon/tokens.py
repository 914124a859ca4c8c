"""Add-on tokens from the OAuth token endpoint, cached and refreshed once per expiry.

``fetch_token`` is the one place that talks to ``tokenUrl`` (docs/protocol.md, Token endpoint).
``TokenService`` caches add-on tokens (``client_credentials``) in the store for ``expires_in`` less
a margin, and refreshes them single-flight: one asyncio lock per (installation, scopes) inside a
process, and a store lock with a re-check after acquiring it across processes and replicas.
User tokens (``authorization_code``/``refresh_token``) are kept by ``addon.approval``.

How the token endpoint's refusals are read:

- a 401 to ``client_credentials`` raises ``ClientGone``: the OAuth client was deleted
  (docs/protocol.md, Uninstallation);
- a 400 or 401 to a user grant raises ``ApprovalRequired``: the code or refresh token is spent
  or revoked, and only the user approving again helps;
- anything else (another status, a timeout, a body we cannot read) raises ``TokenError``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import time
import weakref
from collections.abc import Callable, Mapping, Sequence

import httpx

from addon.bodies import read_capped
from addon.errors import ApprovalRequired, ClientGone, HostNotAllowed, RequestError, TokenError
from addon.installations import Installation
from addon.metrics import Metrics
from addon.seal import Sealer
from addon.store import Keys, Store, lock

__all__ = [
    "AccessToken",
    "AddonTokenSource",
    "TokenService",
    "cache_lifetime",
    "client_credentials",
    "fetch_token",
    "request_deadline",
]

log = logging.getLogger("addon.tokens")

#: Refresh this long before HipChat says a token expires (the samples used 60-120 s).
DEFAULT_MARGIN = 120.0
#: How long a refresh may hold the store lock; longer than any token request may take.
LOCK_TTL = 30.0
#: The most a token response may hold once decoded; HipChat's are well under 1 KiB.
MAX_TOKEN_BYTES = 64 * 1024
#: After the token endpoint failed, nobody asks it again for this long (or its Retry-After,
#: at most MAX_BACKOFF): a sick endpoint sees one request per installation per back-off, not one
#: per command.
DEFAULT_BACKOFF = 5.0
MAX_BACKOFF = 60.0
_USER_GRANTS = frozenset({"authorization_code", "refresh_token"})


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


def client_credentials(scopes: Sequence[str]) -> dict[str, str]:
    """The form of an add-on token request for ``scopes`` (docs/protocol.md, Token endpoint)."""
    return {"grant_type": "client_credentials", "scope": " ".join(scopes)}


async def fetch_token(
    http: httpx.AsyncClient,
    installation: Installation,
    form: Mapping[str, str],
    *,
    now: float,
) -> AccessToken:
    """POST ``form`` to the installation's token endpoint with HTTP Basic client authentication.

    The whole exchange must finish within the client's timeout. Refusals raise ``ClientGone`` or
    ``ApprovalRequired`` as the module docstring says; any other failure raises ``TokenError``.
    """
    grant = form["grant_type"]
    where = f"the token endpoint of {installation.oauth_id!r}"
    auth = httpx.BasicAuth(installation.oauth_id, installation.oauth_secret.value)
    try:
        # httpx times each read on its own (and ASGITransport not at all): bound the whole call.
        async with asyncio.timeout(request_deadline(http)):
            status, body, retry_after = await _post_capped(
                http, installation.token_url, form, auth, where
            )
    except (httpx.HTTPError, httpx.InvalidURL, TimeoutError, HostNotAllowed) as exc:
        raise TokenError(f"{where} could not be reached ({type(exc).__name__})") from exc
    if grant in _USER_GRANTS and status in (400, 401):
        raise ApprovalRequired(f"{where} refused the {grant} grant; the user must approve again")
    if status == 401:
        raise ClientGone(f"{where} refused the client credentials; was the add-on uninstalled?")
    if status != 200:
        raise TokenError(f"{where} answered {status} to a {grant} grant", retry_after=retry_after)
    return _parse_token(body, now=now, where=where)


async def _post_capped(
    http: httpx.AsyncClient, url: str, form: Mapping[str, str], auth: httpx.Auth, where: str
) -> tuple[int, bytes, float | None]:
    """POST ``form``: the status, the body of a 200 (at most ``MAX_TOKEN_BYTES`` decoded), and
    the answer's ``Retry-After`` in seconds when it is a number."""
    async with http.stream("POST", url, data=dict(form), auth=auth) as response:
        if response.status_code != 200:
            return response.status_code, b"", _retry_after(response.headers.get("retry-after"))

        def too_large(reason: str) -> TokenError:
            return TokenError(f"{where} sent a token response we refuse: {reason}")

        body = await read_capped(response, max_bytes=MAX_TOKEN_BYTES, error=too_large)
        return 200, body, None


def _retry_after(value: str | None) -> float | None:
    # Only the delta-seconds form: an HTTP date from a token endpoint is not worth parsing.
    if value is None or not value.strip().isascii() or not value.strip().isdigit():
        return None
    return float(value.strip())


def request_deadline(http: httpx.AsyncClient) -> float | None:
    """The longest of ``http``'s timeouts: what one whole request may take (None: no limit)."""
    timeout = http.timeout
    limits = [t for t in (timeout.connect, timeout.read, timeout.write, timeout.pool) if t]
    return max(limits) if limits else None


def _parse_token(body: bytes, *, now: float, where: str) -> AccessToken:
    try:
        data = json.loads(body)
        token, expires_in = data["access_token"], float(data.get("expires_in", 3600))
        if not isinstance(token, str) or not token or not 0 < expires_in < math.inf:
            raise ValueError("empty token or lifetime")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
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
        backoff: float = DEFAULT_BACKOFF,
        now: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.store, self.keys, self.sealer, self.http = store, keys, sealer, http
        self.metrics = metrics or Metrics()
        self.margin = margin
        self.backoff = backoff
        self.now = now
        # One lock per key while someone waits on it; idle locks go away with their last user.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def addon_token(
        self, installation: Installation, scopes: Sequence[str] | None = None
    ) -> AccessToken:
        """A valid add-on token for ``installation`` with ``scopes`` (None or empty: all granted).

        Raises ``RequestError`` for scopes the installation was not granted, ``ClientGone`` when
        the OAuth client was deleted, and ``TokenError`` when the token endpoint fails.
        """
        wanted = self._scopes(installation, scopes)
        key = self.keys.token(installation.oauth_id, wanted)
        cached = await self._cached(key)
        if cached is not None:
            return cached
        async with self.local_lock(key):
            cached = await self._cached(key)
            if cached is not None:
                return cached
            lock_key = self.keys.token_lock(installation.oauth_id, wanted)
            # Without the store lock after ``wait`` (a stuck holder), fetch anyway: a second
            # client_credentials token costs nothing, while failing the request would.
            async with lock(self.store, lock_key, ttl=LOCK_TTL, wait=LOCK_TTL):
                cached = await self._cached(key)
                if cached is not None:
                    return cached
                backoff_key = self.keys.token_backoff(installation.oauth_id, wanted)
                if await self.store.get(backoff_key) is not None:
                    raise TokenError(
                        f"The token endpoint of {installation.oauth_id!r} failed moments ago; "
                        "try again shortly"
                    )
                return await self._refresh(installation, wanted, key, backoff_key)

    async def grant(self, installation: Installation, form: Mapping[str, str]) -> AccessToken:
        """POST one grant to ``installation``'s token endpoint (``fetch_token`` on our client)."""
        with self.metrics.token_request(form["grant_type"]):
            return await fetch_token(self.http, installation, form, now=self.now())

    async def remember(self, installation: Installation, token: AccessToken) -> None:
        """Cache ``token`` (obtained elsewhere, e.g. while installing) for its scopes."""
        key = self.keys.token(installation.oauth_id, self._scopes(installation, None))
        await self._save(key, token)

    async def invalidate(self, installation: Installation, access_token: str) -> None:
        """Drop the cached token when it is ``access_token`` (HipChat answered 401 to it)."""
        for key in await self.store.scan(self.keys.token(installation.oauth_id, ())):
            raw = await self.store.get(key)
            if raw is None or AccessToken.from_record(raw, self.sealer).access_token != (
                access_token
            ):
                continue
            # Only that very record: a token another replica fetched meanwhile stays.
            await self.store.delete_if_equal(key, raw)

    def source(
        self, installation: Installation, scopes: Sequence[str] | None = None
    ) -> AddonTokenSource:
        """A token source for ``HipChatClient`` acting as the add-on in ``installation``."""
        return AddonTokenSource(self, installation, scopes)

    def local_lock(self, key: str) -> asyncio.Lock:
        """This process's lock for ``key`` (the first level of single-flight)."""
        found = self._locks.get(key)
        if found is None:
            found = self._locks[key] = asyncio.Lock()
        return found

    async def _cached(self, key: str) -> AccessToken | None:
        raw = await self.store.get(key)
        if raw is None:
            return None
        token = AccessToken.from_record(raw, self.sealer)
        return token if token.expires_at > self.now() else None

    async def _refresh(
        self, installation: Installation, scopes: tuple[str, ...], key: str, backoff_key: str
    ) -> AccessToken:
        form = client_credentials(scopes)
        # Markers are written only while the installation exists: an uninstall (which HipChat's
        # 401 often means) that finished meanwhile must not find one left behind.
        guard = self.keys.installation(installation.oauth_id)
        try:
            token = await self.grant(installation, form)
        except ClientGone:
            client_gone = self.keys.client_gone(installation.oauth_id)
            await self.store.put_guarded(client_gone, "1", guard=guard, ttl=86400)
            raise
        except TokenError as exc:  # the endpoint is sick or slow: back off, on every replica
            wait = min(max(exc.retry_after or self.backoff, 1.0), MAX_BACKOFF)
            await self.store.put_guarded(backoff_key, "1", guard=guard, ttl=wait)
            raise
        if not token.scopes:
            token = dataclasses.replace(token, scopes=scopes)
        log.info("fetched add-on token", extra={"oauth_id": installation.oauth_id})
        return await self._save(key, token)

    async def _save(self, key: str, token: AccessToken) -> AccessToken:
        """Cache ``token``; return it as cached (``expires_at`` is when the cache gives it up)."""
        now = self.now()
        ttl = cache_lifetime(token, now=now, margin=self.margin)
        stored = dataclasses.replace(token, expires_at=now + ttl)
        if ttl > 0:
            await self.store.put(key, stored.to_record(self.sealer), ttl=ttl)
        return stored

    @staticmethod
    def _scopes(installation: Installation, scopes: Sequence[str] | None) -> tuple[str, ...]:
        if isinstance(scopes, str):
            raise TypeError(f"scopes must be a list of scope names, not the string {scopes!r}")
        wanted = tuple(sorted(set(scopes or installation.scopes)))
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

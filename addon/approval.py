"""User tokens through the approval redirect (docs/protocol.md, User approval).

An add-on acts *as a user* only after that user approved it in HipChat:

1. ``approval_url(installation, user_id)`` stores a pending approval under a random, single-use
   ``state`` (it expires after ``STATE_TTL``) and returns a link to our ``GET /oauth/approve``.
2. Following it redirects the browser to the installation's ``authorizationUrl`` with
   ``response_type=code``, ``client_id``, ``scope``, ``redirect_uri`` and ``state``.
3. HipChat sends the browser back to ``GET /oauth/callback?code=…&state=…``; ``complete``
   exchanges the code, asks HipChat who owns the token (``GET /oauth/token/{token}``, the session's
   ``owner.id``) and stores access + refresh token only when the owner is the user the state names.
   A token owned by anyone else, or by no user, is revoked (``DELETE /oauth/token/{token}``).
   The state is taken (single use, across replicas) only then: a declined, altered or hijacked
   callback leaves the right user's pending approval usable.
4. ``user_token`` returns the stored token, refreshing it single-flight shortly before it expires;
   a refused refresh forgets the token and raises ``ApprovalRequired`` with a fresh link.

The state names one installation and one user, and only that user's own HipChat account can
complete it; still, send the link to that user alone where possible.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlencode, urlsplit

from addon.errors import (
    AddonError,
    ApprovalRequired,
    Forbidden,
    NotFound,
    RequestError,
    TokenError,
    UnknownInstallation,
)
from addon.hipchat import HipChatClient, JSONObject
from addon.installations import Installation, InstallationRepository
from addon.store import lock
from addon.tokens import LOCK_TTL, AccessToken, TokenService, cache_lifetime, request_deadline

__all__ = [
    "APPROVE_PATH",
    "CALLBACK_PATH",
    "STATE_TTL",
    "ApprovalService",
    "Approved",
    "PendingApproval",
    "UserTokenSource",
]

log = logging.getLogger("addon.approval")

APPROVE_PATH = "/oauth/approve"
CALLBACK_PATH = "/oauth/callback"
#: How long an approval link stays usable (seconds).
STATE_TTL = 600.0
_STATE = re.compile(r"[A-Za-z0-9._-]{1,128}~[A-Za-z0-9_-]{16,64}")
# HipChat user ids are integers (JWT ``sub``); they end up in store keys, so keep them narrow.
_USER_ID = re.compile(r"[A-Za-z0-9_.@+-]{1,128}")


@dataclasses.dataclass(frozen=True)
class PendingApproval:
    """What a ``state`` stands for: who is approving, for which installation, since when."""

    oauth_id: str
    user_id: str
    created: float

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> PendingApproval:
        """Read what ``to_json`` wrote."""
        data = json.loads(raw)
        return cls(str(data["oauth_id"]), str(data["user_id"]), float(data["created"]))


@dataclasses.dataclass(frozen=True)
class Approved:
    """A completed approval: ``user_id`` now has a token in ``installation``."""

    installation: Installation = dataclasses.field(repr=False)
    user_id: str


class ApprovalService:
    """Approval links, the OAuth callback, and each user's stored token (refreshed on demand)."""

    def __init__(
        self,
        tokens: TokenService,
        repository: InstallationRepository,
        *,
        base_url: str,
        state_ttl: float = STATE_TTL,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.tokens, self.repository = tokens, repository
        self.store, self.keys, self.sealer = tokens.store, tokens.keys, tokens.sealer
        self.base_url = base_url.rstrip("/")
        self.redirect_uri = self.base_url + CALLBACK_PATH
        self.state_ttl = state_ttl
        self.now = now

    async def approval_url(self, installation: Installation, user_id: str) -> str:
        """A link that sends ``user_id`` to approve the add-on; usable once, for ``state_ttl``."""
        user_id = _checked_user_id(user_id)
        _authorization_url(installation)  # fail now rather than when the user clicks
        state = f"{installation.oauth_id}~{secrets.token_urlsafe(24)}"
        pending = PendingApproval(installation.oauth_id, user_id, self.now())
        await self.store.put(self.keys.oauth_state(state), pending.to_json(), ttl=self.state_ttl)
        query = urlencode({"user": user_id, "state": state})
        return f"{self.base_url}{APPROVE_PATH}?{query}"

    async def authorize_url(self, query: Mapping[str, str]) -> str:
        """``GET /oauth/approve``: where to send the browser; the link's state stays pending."""
        state = _checked_state(query.get("state"))
        pending = self._live(await self.store.get(self.keys.oauth_state(state)))
        if query.get("user") != pending.user_id:
            # Refused, not burnt: anyone who saw the link could otherwise spoil it for its user.
            raise RequestError(
                "This approval link was altered; open it exactly as it was posted in HipChat"
            )
        installation = await self._installation(pending)
        params = {
            "response_type": "code",
            "client_id": installation.oauth_id,
            "scope": " ".join(installation.scopes),
            "redirect_uri": self.redirect_uri,
            "state": state,
        }
        return _with_query(_authorization_url(installation), params)

    async def complete(self, query: Mapping[str, str]) -> Approved:
        """``GET /oauth/callback``: exchange the code, check who approved, store the user's token.

        The state is taken only when the token's owner is the user it was made for. Raises
        ``RequestError``/``Forbidden``/``NotFound``/``TokenError``; nothing is stored then.
        """
        state = _checked_state(query.get("state"))
        key = self.keys.oauth_state(state)
        pending = self._live(await self.store.get(key))
        if query.get("error"):
            raise Forbidden("The approval was declined in HipChat; nothing was stored")
        code = query.get("code")
        if not code:
            raise RequestError("HipChat sent no authorization code; start again from the link")
        installation = await self._installation(pending)
        token = await self._exchange(installation, code)
        await self._check_owner(installation, token, pending.user_id)
        if await self.store.take(key) is None:  # another callback completed it meanwhile
            await self._revoke(installation, token)
            raise RequestError("This approval link was already used; nothing more was stored")
        await self._save(installation, pending.user_id, token)
        log.info(
            "user approved", extra={"oauth_id": installation.oauth_id, "user_id": pending.user_id}
        )
        return Approved(installation, pending.user_id)

    async def user_token(self, installation: Installation, user_id: str) -> AccessToken:
        """``user_id``'s valid token in ``installation``; ``ApprovalRequired`` when there is none.

        Refreshes shortly before expiry, once however many callers and replicas ask at the time.
        """
        key = self.keys.user_token(installation.oauth_id, _checked_user_id(user_id))
        token = await self._stored(key)
        if token is None:
            raise await self._approval_required(installation, user_id, "has no token")
        if token.expires_at > self.now():
            return token
        async with self.tokens.local_lock(key):
            lock_key = self.keys.user_token_lock(installation.oauth_id, user_id)
            async with lock(self.store, lock_key, ttl=LOCK_TTL, wait=LOCK_TTL) as acquired:
                token = await self._stored(key)
                if token is None:
                    raise await self._approval_required(installation, user_id, "has no token")
                if token.expires_at > self.now():
                    return token
                if not acquired:  # refreshing beside the holder would spend its refresh token
                    raise TokenError(f"Another replica is stuck refreshing {user_id!r}'s token")
                return await self._refresh(installation, user_id, key, token)

    async def invalidate(self, installation: Installation, user_id: str, access_token: str) -> None:
        """HipChat refused ``access_token`` (401): refresh it on the next ``user_token`` call."""
        key = self.keys.user_token(installation.oauth_id, _checked_user_id(user_id))
        lock_key = self.keys.user_token_lock(installation.oauth_id, user_id)
        async with (
            self.tokens.local_lock(key),
            lock(self.store, lock_key, ttl=LOCK_TTL, wait=LOCK_TTL) as acquired,
        ):
            token = await self._stored(key)
            # Without the lock a refresh may be under way; writing could undo its rotation.
            if acquired and token is not None and token.access_token == access_token:
                await self._put(installation, key, dataclasses.replace(token, expires_at=0.0))

    async def forget(self, installation: Installation, user_id: str) -> None:
        """Delete ``user_id``'s stored token in ``installation``."""
        await self.store.delete(self.keys.user_token(installation.oauth_id, user_id))

    def source(self, installation: Installation, user_id: str) -> UserTokenSource:
        """A token source for ``HipChatClient`` acting as ``user_id``."""
        return UserTokenSource(self, installation, user_id)

    async def _exchange(self, installation: Installation, code: str) -> AccessToken:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri}
        try:
            return await self.tokens.grant(installation, form)
        except ApprovalRequired:
            raise RequestError(
                "HipChat refused the authorization code (used, expired or not for this "
                "installation); start again from the link"
            ) from None

    async def _check_owner(
        self, installation: Installation, token: AccessToken, user_id: str
    ) -> None:
        """Revoke ``token`` and raise ``Forbidden`` unless HipChat says ``user_id`` owns it."""
        try:
            owner = _owner_id(
                await self._session(installation, token).get_session(token.access_token)
            )
        except AddonError:
            await self._revoke(installation, token)
            raise
        if owner == user_id:
            return
        await self._revoke(installation, token)
        log.warning(
            "approval by another user refused",
            extra={"oauth_id": installation.oauth_id, "user_id": user_id},
        )
        if owner is None:
            raise Forbidden(
                "HipChat did not say which user approved; nothing was stored. "
                "Start again from the link in HipChat"
            )
        raise Forbidden(
            "This approval link was made for another HipChat user; nothing was stored. "
            "Only the user it was sent to can approve; run the command yourself for your own link"
        )

    async def _revoke(self, installation: Installation, token: AccessToken) -> None:
        """Revoke ``token`` at HipChat; a failure is logged (the token is not stored anyway)."""
        try:
            await self._session(installation, token).delete_session(token.access_token)
        except AddonError as exc:
            log.warning(
                "could not revoke a refused user token: %s",
                type(exc).__name__,
                extra={"oauth_id": installation.oauth_id},
            )

    def _session(self, installation: Installation, token: AccessToken) -> HipChatClient:
        """A REST client acting with ``token`` itself, on our shared HTTP pool."""
        return HipChatClient(
            installation.api_url,
            token=token.access_token,
            http=self.tokens.http,
            timeout=request_deadline(self.tokens.http) or 10.0,
            max_retries=1,
        )

    async def _refresh(
        self, installation: Installation, user_id: str, key: str, token: AccessToken
    ) -> AccessToken:
        if token.refresh_token is None:
            await self.store.delete(key)
            raise await self._approval_required(installation, user_id, "has no refresh token")
        form = {"grant_type": "refresh_token", "refresh_token": token.refresh_token}
        try:
            fresh = await self.tokens.grant(installation, form)
        except ApprovalRequired:
            await self.store.delete(key)
            raise await self._approval_required(installation, user_id, "was revoked") from None
        # HipChat may keep the refresh token; if it rotated it, the old one is dead from now on.
        fresh = dataclasses.replace(
            fresh,
            refresh_token=fresh.refresh_token or token.refresh_token,
            scopes=fresh.scopes or token.scopes,
        )
        log.info("refreshed user token", extra={"oauth_id": installation.oauth_id})
        return await self._put(installation, key, fresh)

    async def _save(self, installation: Installation, user_id: str, token: AccessToken) -> None:
        if token.refresh_token is None:
            log.warning(
                "user token without refresh token", extra={"oauth_id": installation.oauth_id}
            )
        if not token.scopes:
            token = dataclasses.replace(token, scopes=installation.scopes)
        await self._put(installation, self.keys.user_token(installation.oauth_id, user_id), token)

    async def _put(self, installation: Installation, key: str, token: AccessToken) -> AccessToken:
        """Store ``token`` in one write; ``expires_at`` becomes the time to refresh it.

        Only while the installation exists: a token must not outlive an uninstall that finished
        during the exchange or refresh (``UnknownInstallation`` then).
        """
        now = self.now()
        refresh_at = now + cache_lifetime(token, now=now, margin=self.tokens.margin)
        stored = dataclasses.replace(token, expires_at=min(token.expires_at, refresh_at))
        guard = self.keys.installation(installation.oauth_id)
        if not await self.store.put_guarded(key, stored.to_record(self.sealer), guard=guard):
            raise UnknownInstallation(
                f"Installation {installation.oauth_id!r} was uninstalled; no user token was kept"
            )
        return stored

    async def _stored(self, key: str) -> AccessToken | None:
        raw = await self.store.get(key)
        return None if raw is None else AccessToken.from_record(raw, self.sealer)

    def _live(self, raw: str | None) -> PendingApproval:
        if raw is None:
            raise RequestError(
                "This approval link is unknown, already used or expired; ask for a new one"
            )
        pending = PendingApproval.from_json(raw)
        if self.now() - pending.created > self.state_ttl:
            raise RequestError("This approval link has expired; ask for a new one in HipChat")
        return pending

    async def _installation(self, pending: PendingApproval) -> Installation:
        installation = await self.repository.get(pending.oauth_id)
        if installation is None:
            raise NotFound("The add-on was uninstalled since this approval link was made")
        return installation

    async def _approval_required(
        self, installation: Installation, user_id: str, why: str
    ) -> ApprovalRequired:
        message = f"User {user_id!r} {why} in installation {installation.oauth_id!r}"
        if installation.authorization_url is None:
            return ApprovalRequired(f"{message}; HipChat offers no authorizationUrl")
        url = await self.approval_url(installation, user_id)
        return ApprovalRequired(f"{message}; they must approve the add-on", approval_url=url)


@dataclasses.dataclass
class UserTokenSource:
    """Hands ``HipChatClient`` a user's token, and has it refreshed after a 401."""

    service: ApprovalService
    installation: Installation
    user_id: str

    async def token(self) -> str:
        """A valid access token; ``ApprovalRequired`` when the user must approve first."""
        return (await self.service.user_token(self.installation, self.user_id)).access_token

    async def invalidate(self, token: str) -> None:
        """HipChat refused ``token``; the next ``token()`` refreshes it."""
        await self.service.invalidate(self.installation, self.user_id, token)


def _owner_id(session: JSONObject) -> str | None:
    """The session owner's user id as text (HipChat may send an int or a string); None if none."""
    owner = session.get("owner")
    found = owner.get("id") if isinstance(owner, dict) else None
    if isinstance(found, bool) or not isinstance(found, int | str) or found == "":
        return None
    return str(found)


def _checked_state(value: str | None) -> str:
    if not value or not _STATE.fullmatch(value):
        raise RequestError("The approval has no valid state; start again from the link in HipChat")
    return value


def _checked_user_id(value: str) -> str:
    if not _USER_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a HipChat user id")
    return value


def _authorization_url(installation: Installation) -> str:
    if installation.authorization_url is None:
        raise TokenError(
            f"Installation {installation.oauth_id!r} has no authorizationUrl in its capabilities "
            "document; users cannot approve the add-on"
        )
    return installation.authorization_url


def _with_query(url: str, params: Mapping[str, str]) -> str:
    separator = "&" if urlsplit(url).query else "?"
    return f"{url}{separator}{urlencode(params)}"

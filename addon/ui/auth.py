"""Who is calling a UI endpoint: the JWT verified exactly as the webhook route verifies it.

HipChat's client signs glance and page loads (``signed_request``, see
docs/protocol.md, JWT from HipChat): HS256 with the installation's secret, found through the same
installation lookup as webhooks, and the ``jti`` accepted once (``UIAuth.accept_once``, the single
call site of the replay claim). A page calls back with the JWT the add-on minted for it (``aud``
names its integration, see docs/protocol.md, JWT from our own pages): reusable until it expires,
at most ``PAGE_TOKEN_LIFETIME`` after it was issued.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jwt

from addon.errors import InvalidJWT
from addon.installations import Installation
from addon.jwt_auth import Claims, extract_jwt, verify_jwt
from addon.routes import _InstallationLookup  # the webhook route's lookup, shared on purpose
from addon.ui.request import PAGE_TOKEN_LIFETIME, page_audience, page_key

if TYPE_CHECKING:
    from addon.app import Addon

__all__ = ["UIAuth", "Verified"]

_FLAGS = ("user_is_admin", "user_is_room_owner")
_MAX_JTI = 128


@dataclasses.dataclass(frozen=True)
class Verified:
    """A verified UI request: its claims, installation and admin flags."""

    claims: Claims
    installation: Installation
    flags: Mapping[str, bool]


class UIAuth:
    """Verifies UI requests for one add-on."""

    def __init__(self, addon: Addon) -> None:
        self.addon = addon

    async def verify(
        self,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        integration: str,
        *,
        page_token_ok: bool,
    ) -> Verified:
        """Verify the request's JWT as the webhook route does; ``AuthError`` when it does not.

        ``page_token_ok``: also accept the JWT minted for ``integration``'s pages (page APIs).
        """
        addon = self.addon
        token = extract_jwt(headers, query, None)
        audience = _unverified(token).get("aud")
        lookup = _InstallationLookup(addon)

        async def secret_for(oauth_id: str) -> str | None:
            # A page token is signed with a key derived from the secret (see page_key), so
            # that no verifier of HipChat's own JWTs (the webhook route) ever accepts one.
            secret = await lookup.secret_for(oauth_id)
            return page_key(secret) if secret is not None and audience is not None else secret

        claims = await verify_jwt(
            token, secret_for, now=addon.now(), leeway=addon.settings.jwt_leeway
        )
        installation = lookup.found or await addon.installations.require(claims.iss)
        payload = _unverified(token)  # verified just above
        if audience is None:
            await self.accept_once(claims)
        elif audience != page_audience(integration) or not page_token_ok:
            raise InvalidJWT(f"The JWT from {claims.iss!r} is a page token for another use")
        elif claims.exp - claims.iat > PAGE_TOKEN_LIFETIME:
            raise InvalidJWT(f"The page token from {claims.iss!r} lives longer than allowed")
        if installation.room_id is not None and claims.room_id not in (None, installation.room_id):
            raise InvalidJWT(f"Installation {claims.iss!r} is installed in one other room only")
        context = payload.get("context")
        flags = {
            k: v for k, v in (context if isinstance(context, dict) else {}).items() if k in _FLAGS
        }
        return Verified(
            claims, installation, {k: v for k, v in flags.items() if isinstance(v, bool)}
        )

    async def accept_once(self, claims: Claims) -> None:
        """Replay protection: a HipChat-signed UI request's ``jti`` is accepted once.

        The same ``jti`` key as the webhook route's claim, so a token is accepted once, whichever
        endpoint sees it first.
        """
        if claims.jti is None or len(claims.jti) > _MAX_JTI:
            raise InvalidJWT(f"The JWT from {claims.iss!r} has no usable 'jti'; sign a fresh one")
        addon = self.addon
        ttl = max(1.0, claims.exp - addon.now() + addon.settings.jwt_leeway)
        key = addon.keys.jwt_id(claims.iss, claims.jti)
        if not await addon.store.put_if_absent(key, "1", ttl=ttl):
            raise InvalidJWT(f"The JWT from {claims.iss!r} was already used; sign a fresh one")


def _unverified(token: str) -> dict[str, Any]:
    try:
        payload = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return {}  # verify_jwt refuses it, saying why
    return payload if isinstance(payload, dict) else {}

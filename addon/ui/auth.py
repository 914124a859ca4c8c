"""Who is calling a UI endpoint: the JWT verified exactly as the webhook route verifies it.

HipChat's client signs glance and page loads (``signed_request``, docs/protocol.md): the same
pipeline as webhooks, minus the body (``addon.verification``): the token's claims are checked
without a store, then one round trip reads the installation and claims the ``jti`` (accepted once,
whichever endpoint sees it first), then the HS256 signature is verified with the installation's
secret. A page calls back with the JWT the add-on minted for it (``aud`` names its integration):
reusable until it expires, at most ``PAGE_TOKEN_LIFETIME`` after it was issued, and signed with a
key derived from the secret (``page_key``), so no verifier of HipChat's own JWTs accepts one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from addon.errors import InvalidJWT
from addon.installations import Installation
from addon.jwt_auth import Claims, extract_jwt
from addon.ui.request import PAGE_TOKEN_LIFETIME, page_audience, page_key
from addon.verification import Verifier

__all__ = ["UIAuth", "Verified"]

_FLAGS = ("user_is_admin", "user_is_room_owner")


@dataclasses.dataclass(frozen=True)
class Verified:
    """A verified UI request: its claims, installation and admin flags."""

    claims: Claims
    installation: Installation
    flags: Mapping[str, bool]


class UIAuth:
    """Verifies UI requests for one add-on."""

    def __init__(self, verifier: Verifier, *, now: Callable[[], float]) -> None:
        self._verifier = verifier
        self._now = now

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
        now = self._now()
        token = self._verifier.read(extract_jwt(headers, query, None), now=now)
        audience = token.payload.get("aud")
        is_page_token = audience is not None
        accepted = await self._verifier.accept(
            token, now=now, is_once=not is_page_token, key_of=page_key if is_page_token else None
        )
        claims, installation = accepted.claims, accepted.installation
        if is_page_token and (audience != page_audience(integration) or not page_token_ok):
            raise InvalidJWT(f"The JWT from {claims.iss!r} is a page token for another use")
        if is_page_token and claims.exp - claims.iat > PAGE_TOKEN_LIFETIME:
            raise InvalidJWT(f"The page token from {claims.iss!r} lives longer than allowed")
        if installation.room_id is not None and claims.room_id not in (None, installation.room_id):
            raise InvalidJWT(f"Installation {claims.iss!r} is installed in one other room only")
        context = token.payload.get("context")
        flags = {
            k: v
            for k, v in (context if isinstance(context, dict) else {}).items()
            if k in _FLAGS and isinstance(v, bool)
        }
        return Verified(claims, installation, flags)

"""Signed requests, verified with one store round trip per request.

The steps, in order (``jwt_auth`` does the pure parts):

1. ``jwt_auth.read_token``: the token's shape and claims, no secret, no store (the caller does it
   before it reads any body);
2. ``Verifier.accept``: one ``Store.read_and_claim`` reads the installation and claims the
   ``jti`` (accepted once) and, for a webhook, the message id (run once);
3. the HS256 signature is verified with the installation's secret. When it does not verify, the
   ``jti`` was used before, or the secret does not open (``SecretKeyMismatch``), the claims just
   made are released (one more round trip, on the failure path only) and the request is refused:
   claiming before verifying lets nobody suppress a future message, since message ids and ``jti``
   values are unguessable.

No cache of installations: every replica sees an uninstall at once.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable

from addon.errors import AddonError, InvalidJWT, UnknownInstallation
from addon.installations import Installation, RecordReader
from addon.jwt_auth import Claims, Token, read_token, verify
from addon.seal import Sealer
from addon.store import Keys, Store

__all__ = ["SEEN_TTL", "Accepted", "Verifier"]

SEEN_TTL = 3600.0  # how long a message id is remembered, so a redelivery does not run twice


@dataclasses.dataclass(frozen=True, slots=True)
class Accepted:
    """A verified signed request: its claims and installation.

    ``is_first_delivery`` is False when the message id it claimed had run already (a redelivery).
    ``claimed`` are the keys this request claimed (``Verifier.release`` frees them).
    """

    claims: Claims
    installation: Installation
    is_first_delivery: bool = True
    claimed: tuple[str, ...] = ()


class Verifier:
    """Accepts signed requests for one add-on: installation read and claims in one round trip."""

    def __init__(self, store: Store, keys: Keys, sealer: Sealer, *, leeway: float) -> None:
        self._store = store
        self._keys = keys
        self._records = RecordReader(sealer)
        self._leeway = leeway

    def read(self, token: str, *, now: float) -> Token:
        """Step 1 (``jwt_auth.read_token``) with this add-on's leeway: no store, no secret."""
        return read_token(token, now=now, leeway=self._leeway)

    async def accept(
        self,
        token: Token,
        *,
        now: float,
        message_id: str | None = None,
        is_once: bool = True,
        key_of: Callable[[str], str] | None = None,
        stamp: str | None = None,
    ) -> Accepted:
        """Verify ``token`` (from ``read_token``) with its installation's secret.

        ``is_once``: claim the ``jti`` (HipChat's own tokens); a reused one is ``InvalidJWT``.
        ``message_id``: claim it too (a webhook that will run something). ``key_of`` derives
        the verifying key from the secret (page tokens). ``stamp`` is the value the claims hold,
        the caller's own (its request id; a random one by default): a store call sent again
        after a lost reply finds its own claims made, never another request's.
        """
        claims = token.claims
        if stamp is None:
            stamp = secrets.token_hex(8)
        entries = self._claims(claims, now=now, message_id=message_id, is_once=is_once, stamp=stamp)
        raw, claimed = await self._store.read_and_claim(
            self._keys.installation(claims.iss), entries
        )
        if raw is None:
            raise UnknownInstallation(
                f"No installation for oauth_id {claims.iss!r}; was the add-on uninstalled?"
            )
        made = tuple(
            key for (key, _v, _t), is_mine in zip(entries, claimed, strict=True) if is_mine
        )
        try:
            # Inside: a secret sealed with another ADDON_SECRET_KEY must not keep the claims.
            installation = self._records.read(raw)
            secret = installation.oauth_secret.value
            verify(token, secret if key_of is None else key_of(secret))
            if is_once and not claimed[0]:
                raise InvalidJWT(
                    f"The JWT from {claims.iss!r} was already used; "
                    "sign every request with a fresh jti"
                )
        except AddonError:
            await self._forget(made)
            raise
        return Accepted(claims, installation, message_id is None or claimed[-1], made)

    async def release(self, accepted: Accepted) -> None:
        """Delete the claims ``accepted`` made: the request was refused after all."""
        await self._forget(accepted.claimed)

    async def _forget(self, claimed: tuple[str, ...]) -> None:
        if claimed:
            await self._store.delete(*claimed)

    def _claims(
        self, claims: Claims, *, now: float, message_id: str | None, is_once: bool, stamp: str
    ) -> list[tuple[str, str, float | None]]:
        entries: list[tuple[str, str, float | None]] = []
        if is_once:
            # Remembered until the token could no longer pass verification: exp + leeway.
            ttl = max(claims.exp + self._leeway - now, 1.0)
            entries.append((self._keys.jwt_id(claims.iss, claims.jti), stamp, ttl))
        if message_id is not None:
            entries.append((self._keys.seen_message(claims.iss, message_id), stamp, SEEN_TTL))
        return entries

"""Signed requests: the JWTs HipChat puts on webhooks, glances and pages (docs/protocol.md, JWT).

HipChat signs with HS256 and the installation's ``oauthSecret``; ``iss`` is the installation's
``oauth_id``. ``verify_jwt`` reads ``iss`` from the unverified token only to find that secret,
then verifies the signature with it and nothing else. Every refusal is an ``InvalidJWT`` (or
``UnknownInstallation``) whose message says why, and never contains the token.

No web framework here: ``extract_jwt`` takes plain mappings of headers, query and form.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import jwt

from addon.errors import InvalidJWT, RequestError, UnknownInstallation

if TYPE_CHECKING:
    from jwt.types import Options

__all__ = [
    "MAX_LIFETIME",
    "Claims",
    "check_webhook_claims",
    "extract_jwt",
    "sign_jwt",
    "verify_jwt",
]

ALGORITHM = "HS256"
# HipChat always sends sub and jti too (docs/protocol.md, JWT from HipChat): ``_claims`` requires
# them (``sub`` may come as ``prn``), since a token without them cannot name a sender nor be
# accepted only once.
_REQUIRED = ["iss", "iat", "exp"]
MAX_LIFETIME = (
    3600.0  # HipChat's tokens are short-lived: exp - iat beyond 1 h (+ leeway) is refused
)
_MAX_JTI = 128
_MAX_TIME = 2**53  # an int JSON gives us; beyond this a float comparison is no longer exact
_MAX_ISSUER = 128  # an oauth_id is at most 128 characters (installations.oauth_id_from)
# Times are checked against the injected ``now``, so PyJWT's own clock checks are off. ``sub`` may
# be an int on HipChat, which defines no ``aud`` (docs/protocol.md, JWT from HipChat): PyJWT's
# checks of those are off too.
_DECODE_OPTIONS: Options = {
    "require": _REQUIRED,
    "verify_exp": False,
    "verify_iat": False,
    "verify_nbf": False,
    "verify_aud": False,
    "verify_sub": False,
    "verify_jti": False,
}


@dataclasses.dataclass(frozen=True)
class Claims:
    """The verified claims of a HipChat JWT (``sub`` accepts ``prn`` as an alias)."""

    iss: str
    sub: str
    iat: float
    exp: float
    jti: str
    room_id: int | None = None
    user_tz: str | None = None


class RoomScoped(Protocol):
    """Anything that says which room it is limited to (an ``Installation``)."""

    @property
    def room_id(self) -> int | None: ...


def extract_jwt(
    headers: Mapping[str, str], query: Mapping[str, str], form: Mapping[str, str] | None = None
) -> str:
    """The JWT from ``Authorization: JWT <t>``, or a ``signed_request`` query or form field."""
    token = (
        _from_authorization(_header(headers, "authorization"))
        or query.get("signed_request")
        or (form or {}).get("signed_request")
    )
    if not token or not token.strip():
        raise InvalidJWT(
            "The request's JWT is missing; "
            "send it as 'Authorization: JWT <token>' or a signed_request parameter"
        )
    return token.strip()


async def verify_jwt(
    token: str,
    secret_for: Callable[[str], Awaitable[str | None]],
    *,
    now: float,
    leeway: float,
) -> Claims:
    """Verify ``token`` with its issuer's secret (HS256 only) and return its claims."""
    issuer = _unverified_issuer(token)
    secret = await secret_for(issuer)
    if secret is None:
        raise UnknownInstallation(
            f"No installation for oauth_id {issuer!r}; was the add-on uninstalled?"
        )
    try:
        payload = jwt.decode(token, secret, algorithms=[ALGORITHM], options=_DECODE_OPTIONS)
    except jwt.InvalidTokenError as exc:
        raise InvalidJWT(f"The JWT from {issuer!r} does not verify: {_reason(exc)}") from exc
    _check_times(payload, issuer, now=now, leeway=leeway)
    return _claims(payload, issuer)


def check_webhook_claims(
    claims: Claims, body: Mapping[str, object], installation: RoomScoped
) -> None:
    """Refuse a webhook whose body names another client, sender or room than its JWT.

    Another client or room is an ``InvalidJWT`` (the token was not made for this body); another
    sender is a ``RequestError``: the sender is the JWT's ``sub``, and a body without one takes it.
    """
    client_id = body.get("oauth_client_id")
    if client_id is not None and client_id != claims.iss:
        raise InvalidJWT(f"The webhook's oauth_client_id is not the JWT issuer {claims.iss!r}")
    item = _mapping(body.get("item"))
    sender = _body_id(_sender(item).get("id"), "sender id", claims.iss)
    if sender is not None and sender != claims.sub:
        raise RequestError(
            f"The webhook's sender {sender[:32]!r} is not the JWT's sub {claims.sub[:32]!r}; "
            "send the message as the user who signed it"
        )
    room = _body_id(_mapping(item.get("room")).get("id"), "room id", claims.iss)
    context_room = _id(claims.room_id)
    if room is not None and context_room is not None and room != context_room:
        raise InvalidJWT(f"The webhook's room is not the JWT's context.room_id ({claims.iss!r})")
    allowed = _id(installation.room_id)
    for named in (room, context_room):
        if allowed is not None and named is not None and named != allowed:
            raise InvalidJWT(
                f"Installation {claims.iss!r} is installed in room {allowed} only; "
                f"the webhook is for room {named}"
            )


def sign_jwt(
    oauth_id: str,
    secret: str,
    *,
    now: float,
    sub: str | int | None = None,
    room_id: int | None = None,
    lifetime: float = 300,
    extra: Mapping[str, object] | None = None,
) -> str:
    """A JWT as HipChat signs it (HS256 with the ``oauthSecret``), for the fake and for tests.

    Every call makes a fresh random ``jti``: a signed request is accepted once.
    """
    claims: dict[str, object] = {
        "iss": oauth_id,
        "iat": int(now),
        "exp": int(now + lifetime),
        "jti": secrets.token_urlsafe(15),
    }
    if sub is not None:
        claims["sub"] = sub
    if room_id is not None:
        claims["context"] = {"room_id": room_id}
    claims.update(extra or {})
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # Starlette's Headers are case-insensitive; a plain dict may not be.
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def _from_authorization(value: str | None) -> str | None:
    scheme, _, rest = (value or "").strip().partition(" ")
    if scheme.lower() != "jwt":
        return None
    rest = rest.strip()
    if rest.startswith("token="):
        rest = rest.removeprefix("token=").strip('"')
    return rest or None


def _unverified_issuer(token: str) -> str:
    try:
        header = jwt.get_unverified_header(token)
        payload = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise InvalidJWT(f"The JWT is malformed: {_reason(exc)}") from exc
    algorithm = header.get("alg")
    if algorithm != ALGORITHM:
        raise InvalidJWT(
            f"The JWT is signed with {str(algorithm)[:16]!r}; only {ALGORITHM} is accepted"
        )
    issuer = payload.get("iss")
    if not isinstance(issuer, str) or not 0 < len(issuer) <= _MAX_ISSUER:
        raise InvalidJWT(
            "The JWT has no usable 'iss' claim; it must be the installation's oauth_id"
        )
    return issuer


def _check_times(payload: Mapping[str, object], issuer: str, *, now: float, leeway: float) -> None:
    expires, issued = _time(payload, "exp", issuer), _time(payload, "iat", issuer)
    if expires <= now - leeway:
        raise InvalidJWT(f"The JWT from {issuer!r} has expired; sign a fresh one")
    if issued > now + leeway:
        raise InvalidJWT(f"The JWT from {issuer!r} is issued in the future; check the clocks")
    if expires - issued > MAX_LIFETIME + leeway:
        raise InvalidJWT(
            f"The JWT from {issuer!r} is valid for more than {MAX_LIFETIME:g} s (exp - iat); "
            "sign one that expires sooner"
        )
    if "nbf" in payload and _time(payload, "nbf", issuer) > now + leeway:
        raise InvalidJWT(f"The JWT from {issuer!r} is not valid yet (nbf)")


def _claims(payload: Mapping[str, object], issuer: str) -> Claims:
    subject = _id(payload.get("sub", payload.get("prn")))
    if subject is None or subject == "":
        raise InvalidJWT(f"The JWT from {issuer!r} has a 'sub' that is not a user id")
    jti = payload.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= _MAX_JTI:
        raise InvalidJWT(
            f"The JWT from {issuer!r} has no usable 'jti'; sign every request with a fresh one"
        )
    context = _mapping(payload.get("context"))
    room_id = _id(context.get("room_id"))
    user_tz = context.get("user_tz")
    return Claims(
        iss=issuer,
        sub=subject,
        iat=_time(payload, "iat", issuer),
        exp=_time(payload, "exp", issuer),
        jti=jti,
        room_id=(
            int(room_id)
            if room_id is not None and room_id.isascii() and room_id.isdigit() and len(room_id) < 19
            else None
        ),
        user_tz=user_tz if isinstance(user_tz, str) else None,
    )


def _time(payload: Mapping[str, object], name: str, issuer: str) -> float:
    """A NumericDate as HipChat sends it: whole epoch seconds (no float, bool, string, NaN...)."""
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TIME:
        raise InvalidJWT(
            f"The JWT from {issuer!r} has a {name!r} claim that is not whole epoch seconds"
        )
    return float(value)


def _id(value: object) -> str | None:
    """An id from the wire as a string: HipChat sends ints or strings (docs/protocol.md, JWT)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    return str(value)


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _body_id(value: object, what: str, issuer: str) -> str | None:
    identifier = _id(value)
    if value is not None and identifier is None:
        raise InvalidJWT(f"The webhook's {what} is not an id (from {issuer!r})")
    return identifier


def _sender(item: Mapping[str, object]) -> Mapping[str, object]:
    # room_message: item.message.from; other events: item.sender. A room_notification's "from" is
    # a label string, not a user (docs/protocol.md, Webhook payloads).
    return _mapping(_mapping(item.get("message")).get("from")) or _mapping(item.get("sender"))


def _reason(exc: jwt.InvalidTokenError) -> str:
    # PyJWT's messages name the failed check and never echo the token; keep them short anyway.
    return str(exc)[:120] or type(exc).__name__

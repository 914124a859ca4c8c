"""Signed requests: the JWTs HipChat puts on webhooks, glances and pages (docs/protocol.md, JWT).

HipChat signs with HS256 and the installation's ``oauthSecret``; ``iss`` is the installation's
``oauth_id``. Two pure steps, with the caller's store access between them:

1. ``read_token(token, now=, leeway=)`` splits and decodes the token once and checks the shape of
   every claim (``iss``, ``sub``, ``jti``, whole-second times, not expired, ``exp - iat`` capped);
2. ``verify(read, secret)`` checks the HS256 signature with the issuer's secret (constant time).

Every refusal is an ``InvalidJWT`` whose message says why, and never contains the token. No web
framework and no store here: ``extract_jwt`` takes plain mappings of headers, query and form.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypeVar

import orjson

from addon.errors import InvalidJWT, RequestError, UnknownInstallation
from addon.wire import OAUTH_ID, id_of, mapping, room_id_of, sender_of

__all__ = [
    "MAX_LIFETIME",
    "Claims",
    "Token",
    "check_webhook_claims",
    "extract_jwt",
    "read_token",
    "sign_jwt",
    "verify",
    "verify_jwt",
]

ALGORITHM = "HS256"
# HipChat's tokens are short-lived: exp - iat beyond 1 h (+ leeway) is refused.
MAX_LIFETIME = 3600.0
_MAX_JTI = 128
_MAX_TIME = 2**53  # an int JSON gives us; beyond this a float comparison is no longer exact
_I = TypeVar("_I", str, int)


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


@dataclasses.dataclass(frozen=True, slots=True)
class Token:
    """A JWT whose shape and claims are checked but whose signature is not yet (``read_token``).

    ``claims`` are what the token says; they are true only once ``verify`` returned them.
    ``payload`` is the decoded claim set (``aud``, ``context`` flags for UI requests).
    """

    claims: Claims
    payload: Mapping[str, object]
    signing_input: bytes
    signature: bytes


def read_token(token: str, *, now: float, leeway: float) -> Token:
    """Split and decode ``token`` once and check every claim's shape and time; no secret needed.

    Garbage, another algorithm than HS256, an expired token, ``exp - iat`` past ``MAX_LIFETIME``
    and tokens without ``sub`` or ``jti`` are refused here (``InvalidJWT``), before any store
    access or body read.
    """
    header_part, payload_part, signature = _split(token)
    algorithm = _algorithm(header_part)
    if algorithm != ALGORITHM:
        raise InvalidJWT(
            f"The JWT is signed with {str(algorithm)[:16]!r}; only {ALGORITHM} is accepted"
        )
    payload = _json_part(payload_part, "payload")
    issuer = payload.get("iss")
    if not isinstance(issuer, str) or not OAUTH_ID.fullmatch(issuer):
        raise InvalidJWT(
            "The JWT has no usable 'iss' claim; it must be the installation's oauth_id "
            "(1 to 64 ASCII letters, digits or '-')"
        )
    _check_times(payload, issuer, now=now, leeway=leeway)
    claims = _claims(payload, issuer)
    return Token(claims, payload, f"{header_part}.{payload_part}".encode(), signature)


def verify(token: Token, secret: str) -> Claims:
    """``token``'s claims once its HS256 signature verifies with ``secret``; else ``InvalidJWT``."""
    expected = hmac.new(secret.encode(), token.signing_input, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, token.signature):
        raise InvalidJWT(
            f"The JWT from {token.claims.iss!r} does not verify: Signature verification failed"
        )
    return token.claims


async def verify_jwt(
    token: str,
    secret_for: Callable[[str], Awaitable[str | None]],
    *,
    now: float,
    leeway: float,
) -> Claims:
    """``read_token`` then ``verify`` with the secret ``secret_for(iss)`` finds (tests, tools).

    The routes do not use it: they read the installation and claim the ``jti`` in one store
    round trip between the two steps (``addon.verification``).
    """
    read = read_token(token, now=now, leeway=leeway)
    secret = await secret_for(read.claims.iss)
    if secret is None:
        raise UnknownInstallation(
            f"No installation for oauth_id {read.claims.iss!r}; was the add-on uninstalled?"
        )
    return verify(read, secret)


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
    item = mapping(body.get("item"))
    sender = _body_id(sender_of(item).get("id"), id_of, "sender id", claims.iss)
    if sender is not None and sender != claims.sub:
        raise RequestError(
            f"The webhook's sender {sender[:32]!r} is not the JWT's sub {claims.sub[:32]!r}; "
            "send the message as the user who signed it"
        )
    room = _body_id(mapping(item.get("room")).get("id"), room_id_of, "room id", claims.iss)
    if room is not None and claims.room_id is not None and room != claims.room_id:
        raise InvalidJWT(f"The webhook's room is not the JWT's context.room_id ({claims.iss!r})")
    allowed = installation.room_id
    for named in (room, claims.room_id):
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
    return _encode(claims, secret)


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


_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")


def _encode(claims: Mapping[str, object], secret: str) -> str:
    # HS256 by hand, as ``verify`` checks it (PyJWT stays out of the import path of the app).
    try:
        raw = orjson.dumps(dict(claims))
    except (TypeError, orjson.JSONEncodeError):  # ints past 64 bits, NaN: what tests send
        raw = json.dumps(dict(claims), separators=(",", ":")).encode()
    payload = base64.urlsafe_b64encode(raw).rstrip(b"=")
    signing_input = _HEADER + b"." + payload
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()


def _split(token: str) -> tuple[str, str, bytes]:
    header, payload, signature = _parts(token)
    return header, payload, _b64decode(signature, "signature")


def _parts(token: str) -> tuple[str, str, str]:
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidJWT("The JWT is malformed: it needs three dot-separated parts")
    return parts[0], parts[1], parts[2]


def _b64decode(part: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (ValueError, binascii.Error):
        raise InvalidJWT(f"The JWT is malformed: its {what} is not base64url") from None


@functools.lru_cache(maxsize=64)
def _algorithm(header_part: str) -> object:
    """The ``alg`` of a header segment. Nearly every token has the same header (a few per
    sender: their key order and spacing), so each is read once; the least recently used goes
    first, so headers nobody signed cannot crowd out the ones in use."""
    return _json_part(header_part, "header").get("alg")


def _json_part(part: str, what: str) -> Mapping[str, object]:
    raw = _b64decode(part, what)
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # Python's json reads NaN and Infinity too: such a claim reaches the checks that name it.
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            raise InvalidJWT(f"The JWT is malformed: its {what} is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidJWT(f"The JWT is malformed: its {what} is not a JSON object")
    return value


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
    subject = id_of(payload.get("sub", payload.get("prn")))
    if subject is None:
        raise InvalidJWT(f"The JWT from {issuer!r} has a 'sub' that is not a user id")
    jti = payload.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= _MAX_JTI:
        raise InvalidJWT(
            f"The JWT from {issuer!r} has no usable 'jti'; sign every request with a fresh one"
        )
    context = mapping(payload.get("context"))
    user_tz = context.get("user_tz")
    return Claims(
        iss=issuer,
        sub=subject,
        iat=_time(payload, "iat", issuer),
        exp=_time(payload, "exp", issuer),
        jti=jti,
        room_id=room_id_of(context.get("room_id")),
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


def _body_id(
    value: object, rule: Callable[[object], _I | None], what: str, issuer: str
) -> _I | None:
    identifier = rule(value)
    if value is not None and identifier is None:
        raise InvalidJWT(f"The webhook's {what} is not an id (from {issuer!r})")
    return identifier

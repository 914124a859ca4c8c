"""JWT verification: every way a signed request is refused, and the ways it is accepted."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Mapping

import jwt
import pytest

from addon import jwt_auth
from addon.errors import AddonError, InvalidJWT, RequestError, UnknownInstallation
from addon.jwt_auth import (
    MAX_LIFETIME,
    Claims,
    check_webhook_claims,
    extract_jwt,
    sign_jwt,
    verify_jwt,
)

NOW = 1_700_000_000.0
LEEWAY = 10.0
OAUTH_ID = "oauth-1"
SECRET = "installation-secret-0123456789abcdef"  # >= 32 bytes: PyJWT warns below that
OTHER_SECRET = "another-secret-0123456789abcdefghij"


@dataclasses.dataclass(frozen=True)
class _Installed:
    room_id: int | None = None


async def _secret_for(oauth_id: str) -> str | None:
    return SECRET if oauth_id == OAUTH_ID else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _handmade(header: Mapping[str, object], claims: Mapping[str, object], key: str | None) -> str:
    """A token built by hand, as an attacker would: any header, an HMAC-SHA256 signature or none."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = b"" if key is None else _hmac(key, signing_input)
    return f"{signing_input}.{_b64(signature)}"


def _hmac(key: str, text: str) -> bytes:
    return hmac.new(key.encode(), text.encode(), hashlib.sha256).digest()


def _claims(**extra: object) -> dict[str, object]:
    claims = {"iss": OAUTH_ID, "iat": int(NOW), "exp": int(NOW) + 300, "sub": "5", "jti": "j1"}
    return {**claims, **extra}


def _signed(**changes: object) -> dict[str, str]:
    """A correctly signed token whose claims are ``_claims`` with ``changes`` (None drops one).

    Built by hand, so that JSON's ``Infinity`` and ``NaN`` reach the verifier as an attacker
    would send them (Python's json writes and reads both).
    """
    claims = {k: v for k, v in _claims(**changes).items() if v is not None}
    return _jwt(_handmade({"alg": "HS256", "typ": "JWT"}, claims, SECRET))


def _tampered() -> str:
    header, _claims_part, signature = sign_jwt(OAUTH_ID, SECRET, now=NOW, sub=5).split(".")
    forged = _b64(json.dumps(_claims(sub="1")).encode())
    return f"{header}.{forged}.{signature}"


def _message_body(*, sender: object = 5, room: object = 10) -> dict[str, object]:
    return {
        "event": "room_message",
        "item": {"message": {"from": {"id": sender}, "message": "/x"}, "room": {"id": room}},
        "oauth_client_id": OAUTH_ID,
    }


async def _authenticate(
    headers: Mapping[str, str],
    body: Mapping[str, object] | None = None,
    room_installation: int | None = None,
) -> Claims:
    """What the webhook route does: extract, verify, cross-check the body."""
    token = extract_jwt(headers, {}, None)
    claims = await verify_jwt(token, _secret_for, now=NOW, leeway=LEEWAY)
    check_webhook_claims(claims, body or {}, _Installed(room_installation))
    return claims


def _jwt(token: str) -> dict[str, str]:
    return {"Authorization": f"JWT {token}"}


_VALID = sign_jwt(OAUTH_ID, SECRET, now=NOW, sub=5, room_id=10)

REFUSED = [
    pytest.param(
        _jwt(sign_jwt(OAUTH_ID, SECRET, now=NOW - 3600)), None, None, InvalidJWT, "expired",
        id="expired",
    ),
    pytest.param(
        _jwt(sign_jwt(OAUTH_ID, SECRET, now=NOW + 600)), None, None, InvalidJWT, "future",
        id="iat in the future",
    ),
    pytest.param(
        _jwt(sign_jwt(OAUTH_ID, OTHER_SECRET, now=NOW, sub=5)), None, None, InvalidJWT,
        "does not verify", id="wrong secret",
    ),
    pytest.param(
        _jwt(_handmade({"alg": "none", "typ": "JWT"}, _claims(), None)), None, None, InvalidJWT,
        "'none'", id="alg none",
    ),
    pytest.param(
        _jwt(jwt.encode(_claims(), SECRET + SECRET, algorithm="HS512")), None, None, InvalidJWT,
        "'HS512'", id="HS512",
    ),
    pytest.param(
        _jwt(_handmade({"alg": "RS256", "typ": "JWT"}, _claims(), SECRET)), None, None, InvalidJWT,
        "'RS256'", id="RS256 with the secret as public key",
    ),
    pytest.param(
        _jwt(sign_jwt("stranger", SECRET, now=NOW, sub=5)), None, None, UnknownInstallation,
        "stranger", id="unknown iss",
    ),
    pytest.param({}, None, None, InvalidJWT, "missing", id="missing"),
    pytest.param(_jwt("not-a-jwt"), None, None, InvalidJWT, "malformed", id="malformed"),
    pytest.param(_jwt(_tampered()), None, None, InvalidJWT, "does not verify", id="tampered"),
    pytest.param(
        _jwt(jwt.encode({"iss": OAUTH_ID, "iat": int(NOW)}, SECRET)), None, None, InvalidJWT,
        "exp", id="no exp",
    ),
    pytest.param(
        _jwt(jwt.encode({"iat": int(NOW), "exp": int(NOW) + 60}, SECRET)), None, None,
        InvalidJWT, "iss", id="no iss",
    ),
    pytest.param(
        _jwt(sign_jwt(OAUTH_ID, SECRET, now=NOW, sub=5, extra={"nbf": int(NOW) + 60})), None, None,
        InvalidJWT, "not valid yet", id="nbf in the future",
    ),
    pytest.param(
        _jwt(sign_jwt(OAUTH_ID, SECRET, now=NOW, extra={"iat": "soon"})), None, None, InvalidJWT,
        "'iat' claim that is not whole epoch seconds", id="iat not a number",
    ),
    pytest.param(
        _signed(exp=int(NOW) + 100 * 365 * 86400), None, None, InvalidJWT, "more than 3600 s",
        id="exp 100 years ahead",
    ),
    pytest.param(
        _signed(exp=int(NOW + MAX_LIFETIME + LEEWAY) + 1), None, None, InvalidJWT,
        "more than 3600 s", id="exp - iat over 1 h plus leeway",
    ),
    pytest.param(
        _signed(exp=float("inf")), None, None, InvalidJWT, "'exp' claim that is not whole",
        id="exp Infinity",
    ),
    pytest.param(
        _signed(iat=float("nan")), None, None, InvalidJWT, "'iat' claim that is not whole",
        id="iat NaN",
    ),
    pytest.param(
        _signed(exp=NOW + 60.5), None, None, InvalidJWT, "'exp' claim that is not whole",
        id="exp a float",
    ),
    pytest.param(
        _signed(iat=str(int(NOW))), None, None, InvalidJWT, "'iat' claim that is not whole",
        id="iat a string",
    ),
    pytest.param(
        _signed(exp=True), None, None, InvalidJWT, "'exp' claim that is not whole",
        id="exp a bool",
    ),
    pytest.param(
        _signed(iat=-1), None, None, InvalidJWT, "'iat' claim that is not whole",
        id="iat negative",
    ),
    pytest.param(_signed(sub=None), None, None, InvalidJWT, "'sub'", id="no sub"),
    pytest.param(_signed(sub=""), None, None, InvalidJWT, "'sub'", id="empty sub"),
    pytest.param(_signed(jti=None), None, None, InvalidJWT, "'jti'", id="no jti"),
    pytest.param(_signed(jti=7), None, None, InvalidJWT, "'jti'", id="jti not a string"),
    pytest.param(_signed(jti="j" * 129), None, None, InvalidJWT, "'jti'", id="jti too long"),
    pytest.param(
        _jwt(_VALID), _message_body(sender=6), None, RequestError, "sender '6' is not the JWT",
        id="body names another sender",
    ),
    pytest.param(
        _jwt(_VALID), _message_body(room=11), None, InvalidJWT, "context.room_id",
        id="room != context",
    ),
    pytest.param(
        _jwt(sign_jwt(OAUTH_ID, SECRET, now=NOW, sub=5, room_id=11)), _message_body(room=11), 10,
        InvalidJWT, "room 10 only", id="another room for a room installation",
    ),
    pytest.param(
        _jwt(_VALID), {**_message_body(), "oauth_client_id": "other"}, None, InvalidJWT,
        "oauth_client_id", id="oauth_client_id != iss",
    ),
    pytest.param(
        _jwt(_VALID), _message_body(room={"id": 10}), None, InvalidJWT, "room id",
        id="room id not an id",
    ),
]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize(("headers", "body", "room_installation", "error", "reason"), REFUSED)
async def test_refused(
    headers: Mapping[str, str],
    body: Mapping[str, object] | None,
    room_installation: int | None,
    error: type[AddonError],
    reason: str,
) -> None:
    with pytest.raises(error, match=reason) as caught:
        await _authenticate(headers, body, room_installation)
    token = headers.get("Authorization", "JWT ").removeprefix("JWT ")
    assert not token or token not in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.anyio
async def test_a_valid_webhook_is_accepted_with_its_claims() -> None:
    claims = await _authenticate(_jwt(_VALID), _message_body(), room_installation=10)
    assert claims == Claims(
        iss=OAUTH_ID, sub="5", iat=NOW, exp=NOW + 300, room_id=10, jti=claims.jti
    )
    assert len(claims.jti) == 20


@pytest.mark.anyio
async def test_headers_nobody_signed_neither_crowd_out_the_one_in_use_nor_pass_alg_none() -> None:
    read = jwt_auth._algorithm
    for index in range(200):  # unsigned tokens, each with a header of its own
        with pytest.raises(InvalidJWT):
            await verify_jwt(
                _handmade({"alg": "HS256", "kid": str(index)}, _claims(), None),
                _secret_for, now=NOW, leeway=LEEWAY,
            )  # fmt: skip
        with pytest.raises(InvalidJWT, match="'none'"):
            await verify_jwt(
                _handmade({"alg": "none", "kid": str(index)}, _claims(), None),
                _secret_for, now=NOW, leeway=LEEWAY,
            )  # fmt: skip
        await verify_jwt(_VALID, _secret_for, now=NOW, leeway=LEEWAY)
    before = read.cache_info()
    await verify_jwt(_VALID, _secret_for, now=NOW, leeway=LEEWAY)
    after = read.cache_info()
    assert after.hits == before.hits + 1 and after.misses == before.misses  # not read again


@pytest.mark.anyio
async def test_every_signed_token_has_a_fresh_jti() -> None:
    tokens = [sign_jwt(OAUTH_ID, SECRET, now=NOW, sub=5) for _ in range(50)]
    claims = [await verify_jwt(t, _secret_for, now=NOW, leeway=LEEWAY) for t in tokens]
    assert len({c.jti for c in claims}) == 50


@pytest.mark.anyio
async def test_a_lifetime_of_one_hour_plus_the_leeway_is_accepted() -> None:
    headers = _signed(exp=int(NOW + MAX_LIFETIME + LEEWAY))
    claims = await verify_jwt(headers["Authorization"][4:], _secret_for, now=NOW, leeway=LEEWAY)
    assert claims.exp - claims.iat == MAX_LIFETIME + LEEWAY


@pytest.mark.anyio
@pytest.mark.parametrize(
    "token",
    [
        pytest.param(
            sign_jwt(OAUTH_ID, SECRET, now=NOW - 300 - 5, sub=5), id="expired within leeway"
        ),
        pytest.param(sign_jwt(OAUTH_ID, SECRET, now=NOW + 5, sub=5), id="iat within leeway"),
    ],
)
async def test_leeway_is_accepted(token: str) -> None:
    claims = await verify_jwt(token, _secret_for, now=NOW, leeway=LEEWAY)
    assert claims.iss == OAUTH_ID


@pytest.mark.anyio
async def test_claims_are_read_leniently() -> None:
    extra = {"prn": 1661743, "context": {"room_id": "42", "user_tz": "Europe/Paris"}}
    token = sign_jwt(OAUTH_ID, SECRET, now=NOW, extra=extra)
    claims = await verify_jwt(token, _secret_for, now=NOW, leeway=LEEWAY)
    assert (claims.sub, claims.room_id, claims.user_tz) == ("1661743", 42, "Europe/Paris")


@pytest.mark.anyio
async def test_a_sub_that_is_no_user_id_is_refused() -> None:
    token = sign_jwt(OAUTH_ID, SECRET, now=NOW, extra={"sub": {"id": 1}})
    with pytest.raises(InvalidJWT, match="sub"):
        await verify_jwt(token, _secret_for, now=NOW, leeway=LEEWAY)


@pytest.mark.parametrize(
    ("headers", "query", "form"),
    [
        pytest.param({"Authorization": "JWT tok"}, {}, None, id="authorization header"),
        pytest.param({"authorization": "jwt token=tok"}, {}, None, id="JWT token= form"),
        pytest.param({}, {"signed_request": "tok"}, None, id="query"),
        pytest.param({}, {}, {"signed_request": "tok"}, id="form"),
        pytest.param({"Authorization": "Bearer x"}, {"signed_request": "tok"}, None, id="bearer"),
    ],
)
def test_every_transport_is_extracted(
    headers: Mapping[str, str], query: Mapping[str, str], form: Mapping[str, str] | None
) -> None:
    assert extract_jwt(headers, query, form) == "tok"


def test_the_header_wins_over_the_query() -> None:
    assert extract_jwt({"Authorization": "JWT a"}, {"signed_request": "b"}, None) == "a"


@pytest.mark.parametrize("value", ["JWT ", "JWT token=", "Basic abc"])
def test_an_empty_or_foreign_authorization_is_missing(value: str) -> None:
    with pytest.raises(InvalidJWT, match="missing"):
        extract_jwt({"Authorization": value}, {}, None)


def test_webhook_checks_accept_what_they_cannot_compare() -> None:
    claims = Claims(iss=OAUTH_ID, sub="9", iat=NOW, exp=NOW + 60, jti="j")
    room_event = {"event": "room_enter", "item": {"sender": {"id": 9}, "room": {"id": 3}}}
    notification = {"item": {"message": {"from": "a bot label"}, "room": {"id": "3"}}}
    check_webhook_claims(claims, room_event, _Installed())
    check_webhook_claims(claims, notification, _Installed(room_id=3))

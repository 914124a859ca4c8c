"""Every signed webhook is verified: a table of bad tokens, each 401 and running nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

import httpx
import jwt
import pytest

from addon.jwt_auth import sign_jwt
from addon.testing import FakeHipChat, Installed

pytestmark = pytest.mark.anyio

NOW = time.time()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rs256_with_secret(room: Installed) -> str:
    """The classic algorithm-confusion token: RS256 in the header, HMAC'd with the secret."""
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    claims = {"iss": room.oauth_id, "iat": int(NOW), "exp": int(NOW) + 60, "sub": 1001}
    body = _b64(json.dumps(claims).encode())
    signature = hmac.new(room.oauth_secret.encode(), f"{header}.{body}".encode(), hashlib.sha256)
    return f"{header}.{body}.{_b64(signature.digest())}"


def claims(room: Installed, **changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "iss": room.oauth_id,
        "iat": int(NOW),
        "exp": int(NOW) + 300,
        "sub": 1001,
        "context": {"room_id": 1},
    }
    return {**base, **changes}


BAD_TOKENS: list[tuple[str, Callable[[Installed], str]]] = [
    ("expired", lambda r: sign_jwt(r.oauth_id, r.oauth_secret, now=NOW - 3600, sub=1001)),
    ("iat-in-future", lambda r: sign_jwt(r.oauth_id, r.oauth_secret, now=NOW + 3600, sub=1001)),
    ("wrong-secret", lambda r: sign_jwt(r.oauth_id, "x" * 40, now=NOW, sub=1001)),
    ("alg-none", lambda r: jwt.encode(claims(r), "", algorithm="none")),
    ("hs512", lambda r: jwt.encode(claims(r), r.oauth_secret * 2, algorithm="HS512")),
    ("rs256-secret-as-key", rs256_with_secret),
    ("unknown-iss", lambda r: sign_jwt("someone-else", r.oauth_secret, now=NOW, sub=1001)),
    ("malformed", lambda r: "not.a.jwt"),
    ("garbage", lambda r: "%%%"),
    ("sender-not-sub", lambda r: sign_jwt(r.oauth_id, r.oauth_secret, now=NOW, sub=666)),
    (
        "room-not-context",
        lambda r: sign_jwt(r.oauth_id, r.oauth_secret, now=NOW, sub=1001, room_id=77),
    ),
    (
        "tampered",
        lambda r: sign_jwt(r.oauth_id, r.oauth_secret, now=NOW, sub=1001)[:-3] + "AAA",
    ),
    ("no-exp", lambda r: jwt.encode({"iss": r.oauth_id, "iat": int(NOW)}, r.oauth_secret)),
]


@pytest.fixture
async def room(addon: httpx.AsyncClient, hipchat: FakeHipChat) -> Installed:
    return await hipchat.install(addon, room_id=1)


@pytest.mark.parametrize("make_token", [t for _, t in BAD_TOKENS], ids=[i for i, _ in BAD_TOKENS])
async def test_bad_tokens_get_401_and_run_nothing(
    hipchat: FakeHipChat, room: Installed, make_token: Callable[[Installed], str]
) -> None:
    response = await hipchat.send_message(room, "/echo secret plans", token=make_token(room))

    assert response is not None and response.status_code == 401
    assert response.json()["error"]["message"]
    assert hipchat.notifications(room) == []


async def test_a_missing_token_is_401(hipchat: FakeHipChat, room: Installed) -> None:
    body = {
        "event": "room_message",
        "item": {"message": hipchat.message("/echo x"), "room": hipchat.room(1)},
    }
    response = await room.addon.post("/webhook/room_message", json=body)
    assert response.status_code == 401
    assert hipchat.notifications(room) == []


async def test_another_room_for_a_room_installation_is_401(
    hipchat: FakeHipChat, room: Installed
) -> None:
    # Signed correctly, consistent with itself, but for a room the installation is not in.
    token = sign_jwt(room.oauth_id, room.oauth_secret, now=time.time(), sub=1001, room_id=2)
    response = await hipchat.send_message(room, "/echo x", room_id=2, token=token)
    assert response is not None and response.status_code == 401
    assert hipchat.notifications(2) == []


@pytest.mark.parametrize("transport", ["header-token=", "query"])
async def test_the_other_transports_are_accepted(
    hipchat: FakeHipChat, room: Installed, transport: str
) -> None:
    token = sign_jwt(room.oauth_id, room.oauth_secret, now=time.time(), sub=1001, room_id=1)
    body = {
        "event": "room_message",
        "item": {"message": hipchat.message("/echo via " + transport), "room": hipchat.room(1)},
    }
    if transport == "query":
        response = await room.addon.post(
            "/webhook/room_message", json=body, params={"signed_request": token}
        )
    else:
        response = await room.addon.post(
            "/webhook/room_message", json=body, headers={"Authorization": f"JWT token={token}"}
        )
    assert response.status_code == 200
    assert response.json()["message"] == "via " + transport


async def test_a_small_clock_skew_is_tolerated(hipchat: FakeHipChat, room: Installed) -> None:
    token = sign_jwt(room.oauth_id, room.oauth_secret, now=time.time() + 5, sub=1001, room_id=1)
    response = await hipchat.send_message(room, "/echo skewed", token=token)
    assert response is not None and response.status_code == 200


async def test_unicode_digits_in_ids_are_refused_not_crashed(
    hipchat: FakeHipChat, room: Installed
) -> None:
    claims = {"iss": room.oauth_id, "iat": int(time.time()), "exp": int(time.time()) + 60}
    token = jwt.encode({**claims, "sub": 1001, "context": {"room_id": "\u00b2"}}, room.oauth_secret)
    body = {
        "event": "room_message",
        "item": {"message": hipchat.message("/echo x"), "room": {"id": "\u00b2", "name": "x"}},
    }
    response = await room.addon.post(
        "/webhook/room_message", json=body, headers={"Authorization": f"JWT {token}"}
    )
    assert 400 <= response.status_code < 500
    assert hipchat.notifications(room) == []

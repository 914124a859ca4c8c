"""Every signed webhook is verified: a table of bad tokens, each 401 and running nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from starlette.applications import Starlette

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


def _signed(room: Installed, **extra: object) -> dict[str, str]:
    token = sign_jwt(
        room.oauth_id, room.oauth_secret, now=time.time(), sub=1001, room_id=1, extra=extra
    )
    return {"Authorization": f"JWT {token}"}


def _message_body(hipchat: FakeHipChat, room: Installed, text: str, **item: Any) -> dict[str, Any]:
    return {
        "event": "room_message",
        "item": {"message": hipchat.message(text), "room": hipchat.room(1), **item},
        "oauth_client_id": room.oauth_id,
    }


async def test_a_replayed_jwt_is_401_with_a_new_message_id_or_the_same(
    hipchat: FakeHipChat, room: Installed
) -> None:
    headers = _signed(room)
    first = _message_body(hipchat, room, "/echo once")
    response = await room.addon.post("/webhook/room_message", json=first, headers=headers)
    assert response.status_code == 200
    replays = [first, _message_body(hipchat, room, "/echo twice")]
    for body in replays:
        again = await room.addon.post("/webhook/room_message", json=body, headers=headers)
        assert again.status_code == 401
        assert "already used" in again.json()["error"]["message"]
    # The query transport is the same token: refused too.
    token = headers["Authorization"].removeprefix("JWT ")
    query = await room.addon.post(
        "/webhook/room_message", json=replays[1], params={"signed_request": token}
    )
    assert query.status_code == 401


async def test_a_jti_is_per_installation_and_gone_after_uninstall(
    hipchat: FakeHipChat, room: Installed, app: Starlette
) -> None:
    assert (await hipchat.send_message(room, "/echo hi")) is not None
    addon = app.state.addon
    assert await addon.store.scan(f"{addon.keys.prefix}:jti:{{{room.oauth_id}}}:")
    assert (await hipchat.uninstall(room.addon, room)).status_code == 204
    assert await addon.store.scan(f"{addon.keys.prefix}:jti:") == []


async def test_a_body_naming_another_sender_is_400(hipchat: FakeHipChat, room: Installed) -> None:
    token = sign_jwt(room.oauth_id, room.oauth_secret, now=NOW, sub=666, room_id=1)
    response = await hipchat.send_message(room, "/echo not me", token=token)
    assert response is not None and response.status_code == 400
    assert "sub" in response.json()["error"]["message"]
    assert hipchat.notifications(room) == []


async def test_a_body_without_a_sender_is_the_jwt_subject(
    hipchat: FakeHipChat, room: Installed
) -> None:
    body = _message_body(hipchat, room, "/echo from sub")
    del body["item"]["message"]["from"]
    response = await room.addon.post("/webhook/room_message", json=body, headers=_signed(room))
    assert response.status_code == 200 and response.json()["message"] == "from sub"


async def test_a_jwt_without_sub_or_jti_is_401(hipchat: FakeHipChat, room: Installed) -> None:
    base = {"iss": room.oauth_id, "iat": int(time.time()), "exp": int(time.time()) + 60}
    for claims_ in ({**base, "jti": "abc"}, {**base, "sub": 1001}):
        token = jwt.encode(claims_, room.oauth_secret, algorithm="HS256")
        response = await hipchat.send_message(room, "/echo x", token=token)
        assert response is not None and response.status_code == 401
    assert hipchat.notifications(room) == []


async def test_the_reply_goes_to_the_checked_room_not_roomid(
    hipchat: FakeHipChat, room: Installed
) -> None:
    # Room installation in room 1; the body has no item.room but a roomId naming room 2.
    body = _message_body(hipchat, room, "/echo where", roomId=2)
    del body["item"]["room"]
    body["roomId"] = 2
    response = await room.addon.post("/webhook/room_message", json=body, headers=_signed(room))
    assert response.status_code == 200 and response.json()["message"] == "where"
    assert hipchat.notifications(2) == []

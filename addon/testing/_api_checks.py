"""What ``FakeRestAPI`` accepts: requests matched to operations, bodies checked, HipChat errors.

A request no operation fits gets a 404 (405 when only the method is wrong); a POST or PUT whose
body is not what the operation takes gets a 400, with HipChat's error body (docs/protocol.md).
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import unquote

from addon.hipchat.operations import OPERATIONS

if TYPE_CHECKING:
    from addon.testing.api import RecordedRequest


_Answer = tuple[int, object, dict[str, str]]  # status, JSON body (None: empty), extra headers

_NOT_JSON = frozenset({"generate_token", "share_file_with_room", "share_file_with_user"})
_REQUIRED: dict[str, tuple[str, ...]] = {
    "send_room_notification": ("message",),
    "send_message": ("message",),
    "send_privatechat_message": ("message",),
    "reply_to_message": ("parentMessageId", "message"),
    "share_link_with_room": ("link",),
    "share_link_with_user": ("link",),
    "create_room": ("name",),
    "update_room": ("name", "privacy", "is_archived", "is_guest_accessible", "topic", "owner"),
    "set_topic": ("topic",),
    "create_user": ("name", "email"),
    "update_user": ("name", "mention_name", "email"),
    "create_room_webhook": ("url", "event"),
    "invite_user_to_group": ("email", "name"),
    "create_integration_link": ("target", "ttl"),
    "update_group_avatar": ("avatar",),
    "update_room_avatar": ("avatar",),
    "update_photo": ("photo",),
    **{n: ("glance",) for n in ("update_glance", "update_room_glance", "update_user_glance")},
    "update_room_user_glance": ("glance",),
    **{op.name: ("key",) for op in OPERATIONS if "/extension/" in op.path and op.method == "PUT"},
}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> _Answer:
    """HipChat's error body (docs/protocol.md, Error bodies); ``type`` is the reason phrase."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body = {"error": {"code": status, "message": message, "type": phrase}}
    return status, body, headers or {}


def _fit(template_path: str, path: tuple[str, ...]) -> dict[str, str] | None:
    """The decoded parameters when ``path`` fits the template segment by segment, else None."""
    template = template_path.split("/")
    if len(template) != len(path):
        return None
    params: dict[str, str] = {}
    for want, got in zip(template, path, strict=True):
        if want.startswith("{"):
            if not got:
                return None
            params[want[1:-1]] = unquote(got)
        elif want != got:
            return None
    return params


def _unmatched(request: RecordedRequest) -> _Answer:
    segments = tuple(request.path.split("/"))
    if any(_fit(op.path, segments) is not None for op in OPERATIONS):
        return _error(405, f"Method {request.method} not allowed on {request.path}")
    return _error(404, f"No such resource: {request.path}")


def _json_or_none(content_type: str, body: bytes) -> object | None:
    if not content_type.startswith("application/json") or not body:
        return None
    try:
        parsed: object = json.loads(body)
    except ValueError:
        return None
    return parsed


def _check_body(request: RecordedRequest) -> _Answer | None:
    """A 400 when the body is not what the operation takes, else None."""
    if request.method not in ("POST", "PUT"):
        return None
    if request.operation in ("share_file_with_room", "share_file_with_user"):
        ok = request.headers.get("content-type", "").startswith("multipart/")
        return None if ok and b'name="file"' in request.body else _error(400, "No file part")
    if request.operation in _NOT_JSON:
        return None
    if not isinstance(request.json, dict):
        return _error(400, "The request body must be a JSON object")
    missing = [f for f in _REQUIRED.get(request.operation, ()) if f not in request.json]
    if missing:
        return _error(400, f"Missing required field(s): {', '.join(missing)}")
    message = request.json.get("message")
    if request.operation == "send_room_notification" and not 0 < len(str(message)) <= 10_000:
        return _error(400, "message must be 1 to 10000 characters")
    return None

"""Every HipChat REST API v2 operation the client speaks, as data.

The table is written by hand from the swagger file
(``tests/data/hipchat_swagger/hipchat_api_v2.yaml``, one row per path x method) plus the operations
the swagger file lacks but HipChat documented (docs/protocol.md, Operations): room topic, REST
webhooks, file shares and glance/webPanel/dialog extensions.
``tests/test_hipchat_operations.py`` checks it against the swagger file.

Names are the client's method names: the swagger summary in snake_case ("Get all rooms" ->
``get_all_rooms``), except the add-on UI updates, named after the glances they push
(``update_room_glance``); operations the swagger lacks are named in the same manner.
Paths are relative to the API base (``https://api.hipchat.com/v2/``) and keep the swagger's
parameter names.

``scope`` is the OAuth scope an add-on requests for the operation. HipChat documented it only
for listing rooms, sending notifications and webhooks (docs/protocol.md, Operations); others are
inferred, rows marked ``# inferred here`` without any source to go on. ``None`` means
no scope: the operation is unauthenticated (capabilities), authenticated with the OAuth client's
Basic credentials (token endpoint), or open to any add-on token (add-on UI, links, extensions).
Where HipChat accepts one of several scopes, the narrowest is named and the others noted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

__all__ = ["OPERATIONS", "OPERATIONS_BY_NAME", "HTTPMethod", "Operation"]

HTTPMethod = Literal["GET", "POST", "PUT", "DELETE"]


@dataclasses.dataclass(frozen=True)
class Operation:
    """One REST operation: its name, HTTP method, path template, scope and success status."""

    name: str
    method: HTTPMethod
    path: str
    scope: str | None
    success: int
    paged: bool = False
    """True when the operation pages with ``start-index``/``max-results`` (docs/protocol.md)."""


def _op(name: str, method: HTTPMethod, path: str, scope: str | None, success: int) -> Operation:
    return Operation(name, method, path, scope, success)


def _paged(name: str, path: str, scope: str) -> Operation:
    return Operation(name, "GET", path, scope, 200, paged=True)


_R = "/room/{room_id_or_name}"
_U = "/user/{id_or_email}"


def _extensions(kind: str, path_kind: str) -> tuple[Operation, ...]:
    """Room and global dynamic extensions of one kind: get, create (PUT), delete.

    See docs/protocol.md, Dynamic extensions.
    """
    room = f"{_R}/extension/{path_kind}/{{key}}"
    glob = f"/extension/{path_kind}/{{key}}"
    return (
        _op(f"get_room_{kind}", "GET", room, None, 200),
        _op(f"create_room_{kind}", "PUT", room, None, 201),
        _op(f"delete_room_{kind}", "DELETE", room, None, 204),
        _op(f"get_global_{kind}", "GET", glob, None, 200),
        _op(f"create_global_{kind}", "PUT", glob, None, 201),
        _op(f"delete_global_{kind}", "DELETE", glob, None, 204),
    )


_CAPABILITIES_AND_OAUTH = (
    _op("get_capabilities", "GET", "/capabilities", None, 200),
    _op("get_addon_capabilities_schema", "GET", "/capabilities/addon/schema", None, 200),
    _op("generate_token", "POST", "/oauth/token", None, 200),
    # The session endpoints take the token itself in the path; no scope is needed (inferred here).
    _op("get_session", "GET", "/oauth/token/{access_token}", None, 200),
    _op("delete_session", "DELETE", "/oauth/token/{access_token}", None, 204),
)

_GROUP = (
    _op("get_group", "GET", "/group/{group_id}", "view_group", 200),
    _op("get_group_avatar", "GET", "/group/{group_id}/avatar", "view_group", 302),  # inferred here
    _op("update_group_avatar", "PUT", "/group/{group_id}/avatar", "admin_group", 204),
    _op("delete_group_avatar", "DELETE", "/group/{group_id}/avatar", "admin_group", 204),
    _op("get_group_statistics", "GET", "/group/{group_id}/statistics", "view_group", 200),
    _paged("get_all_emoticons", "/emoticon", "view_group"),
    _op("get_emoticon", "GET", "/emoticon/{emoticon_id_or_key}", "view_group", 200),
    _op("invite_user_to_group", "POST", "/invite/user", "admin_group", 200),
)

_ADDON = (
    _op("create_integration_link", "POST", "/addon/link", None, 200),
    _op("delete_integration_link", "DELETE", "/addon/link/{token}", None, 204),
    # Add-on UI updates (docs/protocol.md, Glance updates); named after the wire key ``glance``.
    _op("update_glance", "POST", "/addon/ui", None, 204),
    _op("update_room_glance", "POST", "/addon/ui/room/{room_id_or_name}", None, 204),
    _op("update_user_glance", "POST", "/addon/ui/user/{user_id_or_email}", None, 204),
    _op(
        "update_room_user_glance",
        "POST",
        "/addon/ui/room/{room_id_or_name}/user/{user_id_or_email}",
        None,
        204,
    ),
    *_extensions("action", "action"),
    *_extensions("glance", "glance"),
    *_extensions("web_panel", "webPanel"),
    *_extensions("dialog", "dialog"),
)

_ROOMS = (
    # GET /room: HipChat's 403 names view_group or view_room (documented).
    _paged("get_all_rooms", "/room", "view_group"),
    _op("create_room", "POST", "/room", "manage_rooms", 201),
    _op("get_room", "GET", _R, "view_room", 200),  # or view_group
    _op("update_room", "PUT", _R, "admin_room", 204),
    _op("delete_room", "DELETE", _R, "manage_rooms", 204),
    _op("set_topic", "PUT", f"{_R}/topic", "admin_room", 204),
    # The swagger file says 304 here; HipChat redirects to the image like the group avatar.
    _op("get_room_avatar", "GET", f"{_R}/avatar", "view_room", 302),  # inferred here
    _op("update_room_avatar", "PUT", f"{_R}/avatar", "admin_room", 204),
    _op("delete_room_avatar", "DELETE", f"{_R}/avatar", "admin_room", 204),
    _op("get_room_statistics", "GET", f"{_R}/statistics", "view_group", 200),
    _paged("get_all_participants", f"{_R}/participant", "view_room"),
    _paged("get_all_members", f"{_R}/member", "view_room"),  # or admin_room
    _op("add_member", "PUT", f"{_R}/member/{{user_id_or_email}}", "admin_room", 204),
    _op("remove_member", "DELETE", f"{_R}/member/{{user_id_or_email}}", "admin_room", 204),
    _op("invite_user", "POST", f"{_R}/invite/{{user_id_or_email}}", "admin_room", 204),
    # REST webhooks (docs/protocol.md, REST webhooks; admin_room is documented).
    _paged("get_all_room_webhooks", f"{_R}/webhook", "admin_room"),
    _op("create_room_webhook", "POST", f"{_R}/webhook", "admin_room", 201),
    _op("get_room_webhook", "GET", f"{_R}/webhook/{{webhook_id}}", "admin_room", 200),
    _op("delete_room_webhook", "DELETE", f"{_R}/webhook/{{webhook_id}}", "admin_room", 204),
)

_ROOM_MESSAGES = (
    _op("send_room_notification", "POST", f"{_R}/notification", "send_notification", 204),  # ✓
    _op("send_message", "POST", f"{_R}/message", "send_message", 201),
    _op("reply_to_message", "POST", f"{_R}/reply", "send_message", 204),
    _op("share_link_with_room", "POST", f"{_R}/share/link", "send_message", 204),
    _op("share_file_with_room", "POST", f"{_R}/share/file", "send_message", 204),
    _paged("get_room_history", f"{_R}/history", "view_messages"),
    _op("get_recent_room_history", "GET", f"{_R}/history/latest", "view_messages", 200),
    _op("get_room_message", "GET", f"{_R}/history/{{message_id}}", "view_messages", 200),
)

_USERS = (
    _paged("get_all_users", "/user", "view_group"),
    _op("create_user", "POST", "/user", "admin_group", 201),
    _op("get_user", "GET", _U, "view_group", 200),
    _op("update_user", "PUT", _U, "admin_group", 204),
    _op("delete_user", "DELETE", _U, "admin_group", 204),
    _op("get_photo", "GET", f"{_U}/photo/{{size}}", "view_group", 302),
    _op("update_photo", "PUT", f"{_U}/photo", "admin_group", 204),  # inferred here
    _op("delete_photo", "DELETE", f"{_U}/photo", "admin_group", 204),  # inferred here
    _paged("get_auto_join_rooms", f"{_U}/preference/auto-join", "view_group"),
    _op("send_privatechat_message", "POST", f"{_U}/message", "send_message", 204),
    _op("share_link_with_user", "POST", f"{_U}/share/link", "send_message", 204),
    _op("share_file_with_user", "POST", f"{_U}/share/file", "send_message", 204),
    _paged("get_privatechat_history", f"{_U}/history", "view_messages"),
    _op("get_recent_privatechat_history", "GET", f"{_U}/history/latest", "view_messages", 200),
    _op("get_privatechat_message", "GET", f"{_U}/history/{{message_id}}", "view_messages", 200),
)

OPERATIONS: tuple[Operation, ...] = (
    *_CAPABILITIES_AND_OAUTH,
    *_GROUP,
    *_ADDON,
    *_ROOMS,
    *_ROOM_MESSAGES,
    *_USERS,
)
"""Every operation, grouped as the client's modules are."""

OPERATIONS_BY_NAME: Mapping[str, Operation] = {op.name: op for op in OPERATIONS}
"""``OPERATIONS`` keyed by name."""

"""The operations table against the swagger file, and the client against the table.

The swagger file is vendored in ``tests/data/hipchat_swagger/`` (from ymtszw/hipchat_swagger, MIT;
its licence and provenance are beside it), so these tests run in a clean clone.
"""

from __future__ import annotations

import inspect
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

import addon.hipchat
from addon.hipchat import HipChatClient
from addon.hipchat.operations import OPERATIONS, OPERATIONS_BY_NAME, Operation

SWAGGER = Path(__file__).resolve().parent / "data" / "hipchat_swagger" / "hipchat_api_v2.yaml"

SCOPES = {
    "admin_group",
    "admin_room",
    "manage_rooms",
    "send_message",
    "send_notification",
    "view_group",
    "view_messages",
    "view_room",
}

# Operations HipChat documented but the swagger file lacks (docs/protocol.md, Operations).
ADDED = {
    ("PUT", "/room/{room_id_or_name}/topic"),
    ("GET", "/room/{room_id_or_name}/webhook"),
    ("POST", "/room/{room_id_or_name}/webhook"),
    ("GET", "/room/{room_id_or_name}/webhook/{webhook_id}"),
    ("DELETE", "/room/{room_id_or_name}/webhook/{webhook_id}"),
    ("POST", "/room/{room_id_or_name}/share/file"),
    ("POST", "/user/{id_or_email}/share/file"),
    *(
        (method, f"{prefix}/extension/{kind}/{{key}}")
        for prefix in ("", "/room/{room_id_or_name}")
        for kind in ("glance", "webPanel", "dialog")
        for method in ("GET", "PUT", "DELETE")
    ),
}

# Where a name is not the swagger summary in snake_case, and why.
RENAMED = {
    "Addon UI update": "update_glance",  # named after the glances pushed (wire key "glance")
    "Room Addon UI update": "update_room_glance",
    "User Addon UI update": "update_user_glance",
    "User in Room Addon UI update": "update_room_user_glance",
}

# The swagger file says 304 (Not Modified) for a first fetch; HipChat redirects, as for groups.
SUCCESS_FIXED = {"get_room_avatar": (304, 302)}

ITERATORS = {
    "get_all_emoticons": "iter_emoticons",
    "get_all_rooms": "iter_rooms",
    "get_all_participants": "iter_participants",
    "get_all_members": "iter_members",
    "get_all_room_webhooks": "iter_room_webhooks",
    "get_room_history": "iter_room_history",
    "get_all_users": "iter_users",
    "get_privatechat_history": "iter_privatechat_history",
    "get_auto_join_rooms": "iter_auto_join_rooms",
}

# Public client methods that are not one operation.
HELPERS = {"aclose", "push_glance", "base_url"}


def _swagger_operations() -> dict[tuple[str, str], dict[str, Any]]:
    spec = yaml.safe_load(SWAGGER.read_text(encoding="utf-8"))
    return {
        (method.upper(), path): operation
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    }


def _snake(summary: str) -> str:
    return re.sub(r"\W+", "_", summary.split("#")[0].strip().lower())


def test_the_table_covers_every_swagger_operation() -> None:
    table = {(op.method, op.path) for op in OPERATIONS}
    swagger = set(_swagger_operations())
    assert swagger - table == set()
    assert table - swagger == ADDED


def test_names_are_the_swagger_summaries_in_snake_case() -> None:
    for (method, path), spec in _swagger_operations().items():
        op = next(op for op in OPERATIONS if (op.method, op.path) == (method, path))
        summary = str(spec["summary"])
        assert op.name == RENAMED.get(summary, _snake(summary)), (method, path)


def test_success_statuses_match_the_swagger_file() -> None:
    for (method, path), spec in _swagger_operations().items():
        op = next(op for op in OPERATIONS if (op.method, op.path) == (method, path))
        documented = int(next(iter(spec["responses"])))
        assert (documented, op.success) == SUCCESS_FIXED.get(op.name, (op.success, op.success))


def test_paged_operations_are_those_with_a_start_index() -> None:
    paged = {
        (method, path)
        for (method, path), spec in _swagger_operations().items()
        if any(p["name"] == "start-index" for p in spec.get("parameters", []))
    }
    table = {(op.method, op.path) for op in OPERATIONS if op.paged}
    assert table == paged | {("GET", "/room/{room_id_or_name}/webhook")}


def test_names_are_unique() -> None:
    counts = Counter(op.name for op in OPERATIONS)
    assert [name for name, count in counts.items() if count > 1] == []
    assert set(OPERATIONS_BY_NAME) == set(counts)


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.name)
def test_operation_fields_are_well_formed(op: Operation) -> None:
    assert op.method in {"GET", "POST", "PUT", "DELETE"}
    assert op.path.startswith("/") and not op.path.startswith("/v2")
    assert op.scope is None or op.scope in SCOPES
    assert op.success in {200, 201, 204, 302}
    assert not op.paged or op.method == "GET"


def test_there_are_85_operations() -> None:
    assert len(OPERATIONS) == 85


CLIENT_METHODS = {op.name: getattr(HipChatClient, op.name, None) for op in OPERATIONS}


def test_every_operation_has_a_client_method() -> None:
    missing = [name for name, method in CLIENT_METHODS.items() if method is None]
    assert missing == []
    assert all(inspect.iscoroutinefunction(method) for method in CLIENT_METHODS.values())


def test_every_paged_operation_has_an_iterator() -> None:
    assert set(ITERATORS) == {op.name for op in OPERATIONS if op.paged}
    assert all(callable(getattr(HipChatClient, name, None)) for name in ITERATORS.values())


def test_every_public_client_method_is_an_operation_an_iterator_or_a_helper() -> None:
    public = {name for name in dir(HipChatClient) if not name.startswith("_")}
    assert public == set(CLIENT_METHODS) | set(ITERATORS.values()) | HELPERS


def test_every_public_client_method_has_a_docstring() -> None:
    for name in dir(HipChatClient):
        if not name.startswith("_"):
            assert getattr(HipChatClient, name).__doc__, name


def test_public_names_are_sorted_and_exported() -> None:
    assert addon.hipchat.__all__ == sorted(addon.hipchat.__all__)
    assert all(hasattr(addon.hipchat, name) for name in addon.hipchat.__all__)

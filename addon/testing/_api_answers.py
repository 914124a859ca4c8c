"""The success answers of ``FakeRestAPI``: one per operation, or one that fits its kind.

``_Responder`` answers one authenticated, well-formed request: lists are paged, created things get
new ids, and rooms' notifications, webhooks and extensions are kept on the ``FakeRestAPI``.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from addon.hipchat.operations import OPERATIONS_BY_NAME
from addon.testing._api_checks import _Answer, _error
from addon.testing._api_samples import _MESSAGE_DEFAULTS, _ROOM_DEFAULTS, _Item

if TYPE_CHECKING:
    from addon.testing.api import FakeRestAPI, RecordedRequest


class _Responder:
    """Builds the success answer to one authenticated, well-formed request."""

    def __init__(self, api: FakeRestAPI, request: RecordedRequest, base: str) -> None:
        self.api = api
        self.request = request
        self.op = OPERATIONS_BY_NAME[request.operation]
        self.params = request.path_params
        self.base = base

    def answer(self) -> _Answer:
        """The answer: an operation's own handler, else one that fits its kind."""
        handler = _HANDLERS.get(self.op.name)
        if handler is not None:
            return handler(self)
        if "/extension/" in self.op.path:
            return self._extension()
        if self.op.paged:
            return self._page(*self._list())
        if self.op.name.startswith("get_recent_"):
            return self._recent()
        return self._default()

    def _default(self) -> _Answer:
        if self.op.success == 201:
            new_id = self.api._new_id()
            return 201, {"id": new_id, "links": {"self": f"{self.url()}/{new_id}"}}, {}
        if self.op.success == 302:
            return 302, None, {"Location": f"{self.base}/files{self.request.path}.png"}
        if self.op.success == 200:
            return 200, {"id": next(iter(self.params.values()), "1"), "links": self._links()}, {}
        return self.op.success, None, {}

    def _recent(self) -> _Answer:
        """The latest messages; HipChat's default ``max-results`` here is 75."""
        count = self.request.query.get("max-results", "75")
        if not count.isdigit() or not 0 < int(count) <= 1000:
            return _error(400, "max-results must be within 1..1000")
        items = self._with_links(self.api.history[-int(count) :], "message")
        return 200, {"items": items, "maxResults": int(count), "links": self._links()}, {}

    def body(self) -> dict[str, Any]:
        """The JSON object body (``_check_body`` let only objects through)."""
        return self.request.json if isinstance(self.request.json, dict) else {}

    def room(self) -> str:
        """The addressed room's key (its id when the room is known)."""
        return self.api._room_key(self.params["room_id_or_name"])

    # -- lists -------------------------------------------------------------------------------

    def _list(self) -> tuple[list[_Item], str]:
        if self.op.name == "get_all_room_webhooks":
            return self.api.webhooks.get(self.room(), []), "webhook"
        if self.op.name in ("get_all_rooms", "get_auto_join_rooms"):
            return self.api.rooms, "room"
        if self.op.name == "get_all_emoticons":
            return self.api.emoticons, "emoticon"
        if self.op.name in ("get_room_history", "get_privatechat_history"):
            return self.api.history, "message"
        return self.api.users, "user"

    def _page(self, items: list[_Item], kind: str) -> _Answer:
        try:
            start = int(self.request.query.get("start-index", "0"))
            size = int(self.request.query.get("max-results", "100"))
        except ValueError:
            return _error(400, "start-index and max-results must be integers")
        if start < 0 or not 0 < size <= 1000:
            return _error(400, "start-index must be >= 0 and max-results within 1..1000")
        links = {"self": self.url()}
        if start + size < len(items):
            links["next"] = self.url({"start-index": start + size, "max-results": size})
        if start > 0:
            links["prev"] = self.url({"start-index": max(0, start - size), "max-results": size})
        page = self._with_links(items[start : start + size], kind)
        return 200, {"items": page, "startIndex": start, "maxResults": size, "links": links}, {}

    def _with_links(self, items: list[_Item], kind: str) -> list[_Item]:
        if kind == "message":
            return [{**_MESSAGE_DEFAULTS, **item} for item in items]
        prefix = f"{self.base}{self.request.path}" if kind == "webhook" else f"{self.base}/{kind}"
        defaults = _ROOM_DEFAULTS if kind == "room" else {}
        return [{**defaults, **i, "links": {"self": f"{prefix}/{i.get('id')}"}} for i in items]

    def _find(self, items: list[_Item], ref: str, kind: str) -> _Item:
        """A known room or user by id, name, email or @mention; else a made-up one."""
        for item in items:
            names = {str(item.get(k)) for k in ("id", "name", "email")}
            if ref in names or ref == f"@{item.get('mention_name')}":
                return self._with_links([item], kind)[0]
        made_up = {"id": int(ref) if ref.isdigit() else 0, "name": ref}
        return self._with_links([made_up], kind)[0]

    # -- operations with their own answer -----------------------------------------------------

    def capabilities(self) -> _Answer:
        oauth = {"tokenUrl": f"{self.base}/oauth/token", "authorizationUrl": f"{self.base}/auth"}
        capabilities = {"hipchatApiProvider": {"url": f"{self.base}/"}, "oauth2Provider": oauth}
        links = {"self": self.url(), "api": self.base}
        return 200, {"capabilities": capabilities, "key": "hipchat", "links": links}, {}

    def schema(self) -> _Answer:
        return 200, {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object"}, {}

    def token(self) -> _Answer:
        form = dict(parse_qsl(self.request.body.decode("utf-8", "replace")))
        if "grant_type" not in form:
            return _error(400, "Missing grant_type")
        body = {
            "access_token": secrets.token_urlsafe(30),
            "expires_in": 3600,
            "group_id": self.api.group_id,
            "group_name": "Example",
            "scope": form.get("scope", "send_notification"),
            "token_type": "bearer",
        }
        return 200, body, {}

    def session(self) -> _Answer:
        group = {"id": self.api.group_id, "name": "Example"}
        token = self.params["access_token"]
        return 200, {"access_token": token, "expires_in": 3600, "group": group, "scopes": []}, {}

    def get_room(self) -> _Answer:
        return 200, self._find(self.api.rooms, self.params["room_id_or_name"], "room"), {}

    def get_user(self) -> _Answer:
        return 200, self._find(self.api.users, self.params["id_or_email"], "user"), {}

    def get_message(self) -> _Answer:
        wanted = self.params["message_id"]
        found = next((m for m in self.api.history if str(m.get("id")) == wanted), None)
        message = found or {"id": wanted, "message": ""}
        return 200, {"message": {**_MESSAGE_DEFAULTS, **message}}, {}

    def notify(self) -> _Answer:
        self.api._notifications.setdefault(self.room(), []).append(self.body())
        return 204, None, {}

    def send_message(self) -> _Answer:
        return 201, {"id": str(uuid.uuid4()), "timestamp": f"{self.api.now():.6f}"}, {}

    def create_room(self) -> _Answer:
        answer = self._default()
        self.api.rooms.append({"id": self.api._next_id, "name": self.body()["name"]})
        return answer

    def create_webhook(self) -> _Answer:
        answer = self._default()
        hook = {**self.body(), "id": self.api._next_id}
        self.api.webhooks.setdefault(self.room(), []).append(hook)
        return answer

    def get_webhook(self) -> _Answer:
        hook = self._webhook()
        return (200, {**hook, "links": self._links()}, {}) if hook else self._no_webhook()

    def delete_webhook(self) -> _Answer:
        hook = self._webhook()
        if not hook:
            return self._no_webhook()
        self.api.webhooks[self.room()].remove(hook)
        return 204, None, {}

    def _webhook(self) -> _Item | None:
        wanted = self.params["webhook_id"]
        return next(
            (h for h in self.api.webhooks.get(self.room(), []) if str(h["id"]) == wanted), None
        )

    def _no_webhook(self) -> _Answer:
        return _error(404, f"Webhook {self.params['webhook_id']} not found")

    def _extension(self) -> _Answer:
        kind = self.op.path.split("/")[-2]
        key = (self.params.get("room_id_or_name", ""), kind, self.params["key"])
        if self.op.method == "PUT":
            self.api.extensions[key] = self.body()
            return 201, {"key": key[2], "links": {"self": self.url()}}, {}
        if key not in self.api.extensions:
            return _error(404, f"No {kind} with key {key[2]!r}")
        if self.op.method == "DELETE":
            del self.api.extensions[key]
            return 204, None, {}
        return 200, {**self.api.extensions[key], "links": self._links()}, {}

    # -- URLs --------------------------------------------------------------------------------

    def url(self, query: Mapping[str, object] | None = None) -> str:
        """The URL of the current request; with ``query`` merged into its own when given."""
        url = self.base + self.request.path
        return url if query is None else f"{url}?{urlencode({**self.request.query, **query})}"

    def _links(self) -> dict[str, str]:
        return {"self": self.url()}


_HANDLERS: dict[str, Callable[[_Responder], _Answer]] = {
    "get_capabilities": _Responder.capabilities,
    "get_addon_capabilities_schema": _Responder.schema,
    "generate_token": _Responder.token,
    "get_session": _Responder.session,
    "get_room": _Responder.get_room,
    "get_user": _Responder.get_user,
    "get_room_message": _Responder.get_message,
    "get_privatechat_message": _Responder.get_message,
    "send_room_notification": _Responder.notify,
    "send_message": _Responder.send_message,
    "create_room": _Responder.create_room,
    "create_room_webhook": _Responder.create_webhook,
    "get_room_webhook": _Responder.get_webhook,
    "delete_room_webhook": _Responder.delete_webhook,
}

"""``FakeRestAPI``: HipChat's REST API v2 as a real in-process HTTP peer, for tests.

It answers every operation of ``addon.hipchat.operations.OPERATIONS`` with the operation's success
status and a plausible body, records every request, and keeps what a test wants to look at: room
notifications, created rooms, users, webhooks and extensions. It behaves like HipChat where a test
can notice: bearer tokens only in the ``Authorization`` header (a token in ``?auth_token=`` gets a
401, so a client that leaks tokens into URLs fails its tests), HipChat's error bodies (§8.3),
``X-Ratelimit-*`` headers on every response and 429 past the limit (§8.2), paging with
``start-index``/``max-results`` and ``links.next``. Failures can be injected with ``fail_next``.

```python
api = FakeRestAPI(rooms=[{"id": 1, "name": "Ops"}])
app = Starlette(routes=[api.mount("/v2")])  # FakeHipChat mounts it so
transport = httpx.ASGITransport(app=app)
async with HipChatClient("http://hipchat.test/v2/", token="t", transport=transport) as hipchat:
    await hipchat.send_room_notification("Ops", "hi")
assert api.notifications(1) == ["hi"]
assert api.requests[-1].operation == "send_room_notification"
```
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

from addon.hipchat.operations import OPERATIONS, OPERATIONS_BY_NAME, Operation

__all__ = ["FakeRestAPI", "RecordedRequest"]

_Item = dict[str, Any]
_Answer = tuple[int, object, dict[str, str]]  # status, JSON body (None: empty), extra headers

_WINDOW = 300  # seconds: HipChat counts requests per token per 5 minutes (§8.2)
_NO_AUTH = frozenset({"get_capabilities", "get_addon_capabilities_schema"})
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


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received, whether or not it was answered with success."""

    method: str
    path: str
    """Relative to the mount point and still percent-encoded: ``/room/My%20Room/notification``."""
    query: dict[str, str]
    json: object | None
    """The parsed body when it was sent as JSON, else None."""
    body: bytes
    headers: dict[str, str]
    """Lower-case names."""
    operation: str
    """The name of the matched operation; empty when none matched (404/405)."""
    path_params: dict[str, str]
    """The decoded path parameters: ``{"room_id_or_name": "My Room"}``."""


@dataclasses.dataclass(frozen=True)
class _Failure:
    status: int
    retry_after: float | None
    ratelimit_reset: int | None


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> _Answer:
    """HipChat's error body (§8.3); ``type`` is the reason phrase."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body = {"error": {"code": status, "message": message, "type": phrase}}
    return status, body, headers or {}


class FakeRestAPI:
    """HipChat's REST API v2 as an ASGI app; mount it at ``/v2`` (see ``mount``).

    ``rooms``, ``users``, ``history`` and ``emoticons`` are the items list operations page over
    (minimal dicts such as ``{"id": 1, "name": "Ops"}``; links are added). ``is_valid_token``
    decides which bearer tokens are accepted (None: any). ``now`` is the clock of the rate limit.
    """

    def __init__(
        self,
        *,
        rooms: Sequence[Mapping[str, Any]] | None = None,
        users: Sequence[Mapping[str, Any]] | None = None,
        history: Sequence[Mapping[str, Any]] | None = None,
        emoticons: Sequence[Mapping[str, Any]] | None = None,
        is_valid_token: Callable[[str], bool] | None = None,
        group_id: int = 1,
        rate_limit: int = 500,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.rooms: list[_Item] = [dict(r) for r in rooms or _sample("room", 3)]
        self.users: list[_Item] = [dict(u) for u in users or _sample("user", 3)]
        self.history: list[_Item] = [dict(m) for m in history or _sample("message", 3)]
        self.emoticons: list[_Item] = [dict(e) for e in emoticons or _sample("emoticon", 2)]
        self.is_valid_token = is_valid_token
        self.group_id = group_id
        self.rate_limit = rate_limit
        self.now = now
        self.requests: list[RecordedRequest] = []
        self.webhooks: dict[str, list[_Item]] = {}
        self.extensions: dict[tuple[str, str, str], _Item] = {}
        self._notifications: dict[str, list[_Item]] = {}
        self._failures: deque[_Failure] = deque()
        self._window_reset = 0.0
        self._used = 0
        self._next_id = 1000

    def mount(self, path: str = "/v2") -> Mount:
        """A Starlette route serving this API under ``path``."""
        return Mount(path, app=self)

    def fail_next(
        self,
        status: int,
        *,
        retry_after: float | None = None,
        ratelimit_reset: int | None = None,
        count: int = 1,
    ) -> None:
        """Answer the next ``count`` requests with ``status`` (429: with the given headers)."""
        self._failures.extend([_Failure(status, retry_after, ratelimit_reset)] * count)

    def notifications(self, room: int | str) -> list[str]:
        """The message texts of the notifications sent to a room (by id or name), oldest first."""
        return [str(body.get("message")) for body in self.notification_bodies(room)]

    def notification_bodies(self, room: int | str) -> list[dict[str, Any]]:
        """The JSON bodies of the notifications sent to a room (by id or name), oldest first."""
        return list(self._notifications.get(self._room_key(str(room)), []))

    def add_notification(self, room: int | str, body: Mapping[str, Any]) -> None:
        """Record a notification that reached ``room`` another way (a webhook's reply)."""
        self._notifications.setdefault(self._room_key(str(room)), []).append(dict(body))

    def requests_for(self, operation: str) -> list[RecordedRequest]:
        """The recorded requests that matched ``operation``."""
        return [r for r in self.requests if r.operation == operation]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request (other ASGI scope types are ignored)."""
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        recorded = self._record(request, await request.body())
        base = f"{request.url.scheme}://{request.url.netloc}{scope.get('root_path', '')}"
        status, body, headers = self._answer(recorded, base)
        headers = {**self._rate_headers(), **headers}
        if body is None:
            response = Response(status_code=status, headers=headers)
        else:
            response = JSONResponse(body, status_code=status, headers=headers)
        await response(scope, receive, send)

    # -- receiving ---------------------------------------------------------------------------

    def _record(self, request: Request, body: bytes) -> RecordedRequest:
        raw = request.scope.get("raw_path") or request.scope["path"].encode()
        root = str(request.scope.get("root_path", "")).encode()
        path = (raw[len(root) :] if root and raw.startswith(root) else raw).decode("latin-1")
        op, params = self._match(request.method, path)
        recorded = RecordedRequest(
            method=request.method,
            path=path,
            query=dict(parse_qsl(request.url.query, keep_blank_values=True)),
            json=_json_or_none(request.headers.get("content-type", ""), body),
            body=body,
            headers={k.lower(): v for k, v in request.headers.items()},
            operation=op.name if op else "",
            path_params=params,
        )
        self.requests.append(recorded)
        return recorded

    def _match(self, method: str, path: str) -> tuple[Operation | None, dict[str, str]]:
        """The operation whose template fits best (most literal segments) and its parameters."""
        segments = tuple(path.split("/"))
        fits = [(op, p) for op in OPERATIONS if (p := _fit(op.path, segments)) is not None]
        fits = [(op, p) for op, p in fits if op.method == method]
        if not fits:
            return None, {}
        return max(fits, key=lambda fit: fit[0].path.count("/") - len(fit[1]))

    def _answer(self, request: RecordedRequest, base: str) -> _Answer:
        self._count()
        if self._failures:
            return self._injected(self._failures.popleft())
        if self._used > self.rate_limit:
            return _error(429, "You have exceeded the rate limit")
        if not request.operation:
            return _unmatched(request)
        refusal = self._refuse(request)
        if refusal is not None:
            return refusal
        return _Responder(self, request, base).answer()

    def _injected(self, failure: _Failure) -> _Answer:
        headers: dict[str, str] = {}
        if failure.retry_after is not None:
            headers["Retry-After"] = f"{failure.retry_after:g}"
        if failure.ratelimit_reset is not None:
            headers["X-Ratelimit-Reset"] = str(failure.ratelimit_reset)
            headers["X-Ratelimit-Remaining"] = "0"
        return _error(failure.status, f"Injected failure {failure.status}", headers)

    def _refuse(self, request: RecordedRequest) -> _Answer | None:
        """A 401 or 400 for ``request``, or None when it may be answered."""
        auth = request.headers.get("authorization", "")
        scheme, _, credential = auth.partition(" ")
        if request.operation == "generate_token":
            if scheme.lower() != "basic" or not credential:
                return _error(401, "Invalid client credentials")
        elif request.operation not in _NO_AUTH:
            valid = self.is_valid_token or (lambda token: True)
            if scheme.lower() != "bearer" or not credential or not valid(credential):
                return _error(401, "Invalid OAuth session")
        return _check_body(request)

    # -- bookkeeping -------------------------------------------------------------------------

    def _count(self) -> None:
        """Count a request in the current rate-limit window (§8.2)."""
        if self.now() >= self._window_reset:
            self._window_reset, self._used = self.now() + _WINDOW, 0
        self._used += 1

    def _rate_headers(self) -> dict[str, str]:
        return {
            "X-Ratelimit-Limit": str(self.rate_limit),
            "X-Ratelimit-Remaining": str(max(0, self.rate_limit - self._used)),
            "X-Ratelimit-Reset": str(int(self._window_reset)),
        }

    def _room_key(self, room: str) -> str:
        """A room's id as text when the room is known by id or name, else ``room`` itself."""
        for known in self.rooms:
            if room in (str(known.get("id")), str(known.get("name"))):
                return str(known.get("id"))
        return room

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id


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


def _sample(kind: str, count: int) -> list[_Item]:
    """Default items for the list operations."""
    if kind == "room":
        return [{"id": i, "name": f"Room {i}"} for i in range(1, count + 1)]
    if kind == "user":
        return [
            {"id": i, "name": f"User {i}", "mention_name": f"user{i}"} for i in range(1, count + 1)
        ]
    if kind == "emoticon":
        return [{"id": i, "shortcut": f"emo{i}"} for i in range(1, count + 1)]
    return [{"id": str(uuid.UUID(int=i)), "message": f"Message {i}"} for i in range(1, count + 1)]


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
_ROOM_DEFAULTS: dict[str, Any] = {"privacy": "public", "is_archived": False}
_MESSAGE_DEFAULTS: dict[str, Any] = {
    "date": "2015-01-20T22:45:06.662545+00:00",
    "type": "message",
    "mentions": [],
}

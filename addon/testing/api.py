"""``FakeRestAPI``: HipChat's REST API v2 as a real in-process HTTP peer, for tests.

It answers every operation of ``addon.hipchat.operations.OPERATIONS`` with the operation's success
status and a plausible body, records every request, and keeps what a test wants to look at: room
notifications, created rooms, users, webhooks and extensions. It behaves like HipChat where a test
can notice: bearer tokens only in the ``Authorization`` header (a token in ``?auth_token=`` gets a
401, so a client that leaks tokens into URLs fails its tests), HipChat's error bodies,
``X-Ratelimit-*`` headers on every response and 429 past the limit (docs/protocol.md), paging with
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
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

from addon.hipchat.operations import OPERATIONS, Operation
from addon.testing._api_answers import _Responder
from addon.testing._api_checks import _Answer, _check_body, _error, _fit, _json_or_none, _unmatched
from addon.testing._api_samples import _Item, _sample

__all__ = ["FakeRestAPI", "RecordedRequest"]

_WINDOW = 300  # seconds: HipChat counts requests per token per 5 minutes (docs/protocol.md)
_NO_AUTH = frozenset({"get_capabilities", "get_addon_capabilities_schema"})


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
        """Count a request in the current rate-limit window (docs/protocol.md, Rate limits)."""
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

"""The playground's state: installations, each room's timeline, glances and the event log.

It drives the add-on through ``FakeHipChat`` (the real install flows, signed webhooks, signed UI
requests) over HTTP, and keeps what a HipChat client would show. Everything here runs on the
fake's event loop, so it survives the add-on's reloads.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections import deque
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
import jwt

from addon.testing.fake import FakeHipChat, FakeHipChatError, Installed

__all__ = ["Entry", "LogEntry", "PlaygroundRoom", "RoomInstall"]

Flow = Literal["server", "client"]
_DESCRIPTOR_TTL = 1.0  # seconds: the page polls; the add-on may reload with new integrations


@dataclasses.dataclass(frozen=True)
class RoomInstall:
    """One installation the playground made, and the flow it used."""

    installed: Installed
    flow: Flow

    @property
    def scope(self) -> str:
        """``room N`` or ``global``."""
        room = self.installed.room_id
        return "global" if room is None else f"room {room}"

    def covers(self, room: int) -> bool:
        """True when messages typed in ``room`` reach this installation."""
        return self.installed.room_id in (None, room)


@dataclasses.dataclass
class Entry:
    """One line of a room: a user's message, or a notification (``via`` reply or REST)."""

    kind: Literal["user", "notification", "system"]
    body: dict[str, Any]
    via: str = ""
    at: float = dataclasses.field(default_factory=time.time)


@dataclasses.dataclass
class LogEntry:
    """One request between HipChat and the add-on, with the REST calls made while it ran."""

    id: int
    direction: Literal["to add-on", "to HipChat"]
    method: str
    path: str
    kind: str
    claims: dict[str, Any] | None = None
    status: int | None = None
    started: float = dataclasses.field(default_factory=time.monotonic)
    ms: float | None = None
    calls: list[LogEntry] = dataclasses.field(default_factory=list)
    at: float = dataclasses.field(default_factory=time.time)


class PlaygroundRoom:
    """A HipChat client in a browser, seen from the server: see the module docstring.

    ``transport`` reaches the add-on (default: HTTP to ``addon_url``).
    """

    def __init__(
        self,
        hipchat: FakeHipChat,
        addon_url: str,
        *,
        users: tuple[int, ...] = (1001, 1002, 1003),
        rooms: tuple[int, ...] = (1, 2),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.hipchat = hipchat
        self.addon_url = addon_url.rstrip("/")
        self.users, self.rooms = users, rooms
        self.user, self.room = users[0], rooms[0]
        self.installs: list[RoomInstall] = []
        self.timeline: dict[int, list[Entry]] = {room: [] for room in rooms}
        self.log: deque[LogEntry] = deque(maxlen=200)
        self.glances: dict[tuple[str, int, int, str], dict[str, Any]] = {}
        self._seen: dict[int, int] = {}
        self._replies: list[dict[str, Any]] = []
        self._pushes_seen = 0
        self._ids = itertools.count(1)
        self._open: list[LogEntry] = []
        self._descriptor: tuple[float, dict[str, Any] | None] = (0.0, None)
        self.addon = httpx.AsyncClient(
            base_url=self.addon_url,
            timeout=30,
            transport=transport,
            event_hooks={"request": [self._sent], "response": [self._answered]},
        )

    # -- the add-on's descriptor -------------------------------------------------------------

    async def descriptor(self) -> dict[str, Any] | None:
        """The add-on's descriptor (cached a second); None while the add-on is (re)starting."""
        fetched, document = self._descriptor
        if document is not None and time.monotonic() - fetched < _DESCRIPTOR_TTL:
            return document
        try:
            document = await self.hipchat.descriptor(self.addon)
        except (httpx.TransportError, FakeHipChatError):
            document = None
        self._descriptor = (time.monotonic(), document)
        return document

    def capabilities(self) -> dict[str, Any]:
        """The last descriptor's capabilities (empty when none was loaded)."""
        document = self._descriptor[1]
        return dict(document["capabilities"]) if document else {}

    # -- installing --------------------------------------------------------------------------

    async def install(self, scope: str, flow: Flow) -> RoomInstall:
        """Install in the current room (``scope="room"``) or group-wide, with ``flow``."""
        descriptor = await self.descriptor()
        if descriptor is None:
            raise FakeHipChatError("the add-on is not answering; is it still starting?")
        room_id = self.room if scope == "room" else None
        installed = await self.hipchat.install(
            self.addon, room_id=room_id, installable=_installable(descriptor, flow)
        )
        done = RoomInstall(installed, flow)
        self.installs.append(done)
        self.say(f"Installed ({done.scope}, {flow}-side flow)")
        return done

    async def uninstall(self, oauth_id: str) -> None:
        """Uninstall one installation with the flow it was installed with."""
        found = next(i for i in self.installs if i.installed.oauth_id == oauth_id)
        descriptor = await self.descriptor() or {}
        installable = _installable(descriptor, found.flow) if descriptor else None
        self.installs.remove(found)
        response = await self.hipchat.uninstall(self.addon, found.installed, installable)
        self.say(f"Uninstalled ({found.scope}): the add-on answered {response.status_code}")

    def here(self) -> list[RoomInstall]:
        """The installations that messages in the current room reach."""
        return [i for i in self.installs if i.covers(self.room)]

    # -- the room ----------------------------------------------------------------------------

    def say(self, text: str) -> None:
        """A grey line from the playground itself in the current room."""
        self.timeline[self.room].append(Entry("system", {"message": text}))

    async def send(self, text: str) -> None:
        """Type ``text`` as the current user: one signed webhook per installation it reaches."""
        room = self.room
        self.timeline[room].append(Entry("user", {"message": text, "user": self.user}))
        if not self.here():
            self.say("Nothing is installed in this room: install the add-on first")
        for install in self.here():
            response = await self.hipchat.send_message(
                install.installed, text, room_id=room, sender_id=self.user
            )
            if response is not None and response.status_code == 200 and response.content:
                self._replies.append(response.json())
        self.sync()

    def sync(self) -> None:
        """Move new notifications (replies and REST) and glance pushes into the timeline."""
        for room in self.rooms:
            bodies = self.hipchat.notification_bodies(room)
            for body in bodies[self._seen.get(room, 0) :]:
                via = "reply" if body in self._replies else "REST"
                if via == "reply":
                    self._replies.remove(body)
                self.timeline[room].append(Entry("notification", body, via))
            self._seen[room] = len(bodies)
        self._apply_pushes()

    # -- glances -----------------------------------------------------------------------------

    async def glance(self, install: RoomInstall, key: str) -> dict[str, Any]:
        """A glance's data for the current room and user: pushed, else loaded from queryUrl."""
        slot = (install.installed.oauth_id, self.room, self.user, key)
        if slot not in self.glances:
            try:
                self.glances[slot] = await self.hipchat.glance(
                    install.installed, key, room=self.room, user=self.user
                )
            except (FakeHipChatError, httpx.TransportError) as exc:
                return {"label": {"type": "html", "value": f"glance failed: {exc}"}}
        return self.glances[slot]

    def reload_glances(self) -> None:
        """Forget loaded glances: the sidebar loads them again, as on opening the room."""
        self.glances.clear()

    def _apply_pushes(self) -> None:
        pushes = self.hipchat.glance_pushes()
        for push in pushes[self._pushes_seen :]:
            for slot in list(self.glances):
                _, room, user, key = slot
                if push.room not in (None, str(room)) or push.user not in (None, str(user)):
                    continue
                for glance in push.glances:
                    if glance.get("key") == key and isinstance(glance.get("content"), dict):
                        self.glances[slot] = glance["content"]
        self._pushes_seen = len(pushes)

    def signed_url(self, install: RoomInstall, url: str) -> str:
        """``url`` with a fresh ``signed_request`` for the current room and user."""
        token = self.hipchat.signed_request(install.installed, room=self.room, user=self.user)
        return f"{url}{'&' if '?' in url else '?'}{urlencode({'signed_request': token})}"

    def find(self, oauth_id: str) -> RoomInstall | None:
        """The installation ``oauth_id`` the playground made, if any."""
        return next((i for i in self.installs if i.installed.oauth_id == oauth_id), None)

    # -- the event log -----------------------------------------------------------------------

    async def _sent(self, request: httpx.Request) -> None:
        if request.url.path.endswith("/atlassian-connect.json"):
            return
        entry = LogEntry(
            next(self._ids),
            "to add-on",
            request.method,
            request.url.path,
            "uninstall" if request.method == "DELETE" else _kind(request.url.path),
            _claims(request),
        )
        request.extensions["playground_log"] = entry
        self._open.append(entry)
        self.log.append(entry)

    async def _answered(self, response: httpx.Response) -> None:
        entry = response.request.extensions.get("playground_log")
        if isinstance(entry, LogEntry):
            entry.status = response.status_code
            entry.ms = (time.monotonic() - entry.started) * 1000
            if entry in self._open:
                self._open.remove(entry)

    def record_call(self, method: str, path: str, status: int, ms: float) -> None:
        """A request the add-on made to HipChat; nested under the webhook it made it during."""
        entry = LogEntry(next(self._ids), "to HipChat", method, path, "REST", status=status, ms=ms)
        webhooks = [e for e in self._open if e.kind in ("webhook", "install", "uninstall")]
        if webhooks:
            webhooks[-1].calls.append(entry)
        else:
            self.log.append(entry)


def _kind(path: str) -> str:
    for prefix, kind in (
        ("/webhook", "webhook"),
        ("/installable/uninstalled", "uninstall"),
        ("/installable", "install"),
        ("/ui", "ui"),
    ):
        if path.startswith(prefix):
            return kind
    return "request"


def _claims(request: httpx.Request) -> dict[str, Any] | None:
    """The JWT's claims (not verified: the add-on does that), from the header or the query."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token if scheme == "JWT" else request.url.params.get("signed_request", "")
    if not token:
        return None
    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    return claims


def _installable(descriptor: dict[str, Any], flow: Flow) -> dict[str, str]:
    """The installable URLs for ``flow``: the descriptor's, or this add-on's routes for the other.

    The add-on serves both flows' endpoints whichever its descriptor declares
    (``ADDON_INSTALL_FLOW``), so the playground can try either.
    """
    declared: dict[str, str] = descriptor["capabilities"]["installable"]
    if ("callbackUrl" in declared) == (flow == "server"):
        return declared
    base = descriptor["links"]["self"].rsplit("/", 1)[0]
    if flow == "server":
        return {"callbackUrl": f"{base}/installable"}
    return {
        "installedUrl": f"{base}/installable/installed",
        "uninstalledUrl": f"{base}/installable/uninstalled",
    }

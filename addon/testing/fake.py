"""``FakeHipChat``: a real HTTP peer that plays HipChat, for our tests and integration authors'.

It serves what an add-on calls (the capabilities document, the OAuth token endpoint, one-time
installable documents, the REST API, the user approval page) and drives the add-on as HipChat
would: install, update and uninstall in either flow. It records every call it receives. Wire it
in-process both ways:

```python
hipchat = FakeHipChat()
app = create_app(settings, transport=hipchat.transport())
async with hipchat.connect(app, settings.base_url) as addon:
    installed = await hipchat.install(addon, room_id=1)
```
or hand ``install`` the app itself (the fake then connects to it, and ``aclose`` closes that
connection), or serve ``hipchat.app`` with uvicorn on a real socket.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from addon.jwt_auth import sign_jwt
from addon.testing.api import FakeRestAPI
from addon.testing.transport import AppTransport
from addon.testing.ui import UIClientSide

__all__ = ["Call", "FakeHipChat", "FakeHipChatError", "Installed", "OAuthClient"]


class FakeHipChatError(Exception):
    """The add-on did not answer as HipChat expects (carries the response)."""

    def __init__(self, message: str, response: httpx.Response | None = None) -> None:
        super().__init__(message)
        self.response = response


@dataclasses.dataclass(frozen=True)
class Call:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    form: dict[str, str]


@dataclasses.dataclass
class OAuthClient:
    """The OAuth client HipChat creates for one installation."""

    oauth_id: str
    oauth_secret: str
    group_id: int
    room_id: int | None
    scopes: tuple[str, ...]
    revoked: bool = False
    redirection_urls: tuple[str, ...] = ()
    """The descriptor's ``oauth2Consumer.redirectionUrls`` (empty: any ``redirect_uri``)."""


@dataclasses.dataclass(frozen=True)
class Installed:
    """What ``FakeHipChat.install`` returns: the installation as HipChat sees it."""

    oauth_id: str
    oauth_secret: str
    group_id: int
    room_id: int | None
    response: httpx.Response = dataclasses.field(repr=False, compare=False)
    addon: httpx.AsyncClient = dataclasses.field(repr=False, compare=False)

    @property
    def room(self) -> int:
        """The room messages go to by default (room 1 for a global installation)."""
        return 1 if self.room_id is None else self.room_id


@dataclasses.dataclass(frozen=True)
class IssuedToken:
    """A token the fake handed out."""

    oauth_id: str
    scopes: tuple[str, ...]
    expires_at: float
    user_id: str | None = None
    refresh_token: str | None = None


@dataclasses.dataclass(frozen=True)
class _UserGrant:
    """What a one-time authorization code or a refresh token stands for."""

    oauth_id: str
    user_id: str
    scopes: tuple[str, ...]
    redirect_uri: str = ""


AddonPeer = httpx.AsyncClient | ASGIApp
"""The add-on as the fake reaches it: an HTTP client, or the ASGI app itself (in-process)."""

_DEFAULT_ADDON_URL = "http://addon.test"


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"code": status, "message": message, "type": kind}}, status)


class FakeHipChat(UIClientSide):
    """HipChat, as far as an add-on can tell. See the module docstring for an example.

    UI extensions (glances, pages, glance pushes): ``addon.testing.ui.UIClientSide``.
    """

    def __init__(
        self,
        *,
        base_url: str = "http://hipchat.test",
        token_lifetime: int = 3600,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.capabilities_url = f"{self.base_url}/v2/capabilities"
        self.token_url = f"{self.base_url}/v2/oauth/token"
        self.api_url = f"{self.base_url}/v2/"
        self.token_lifetime = token_lifetime
        self.now = now
        self.clients: dict[str, OAuthClient] = {}
        self.tokens: dict[str, IssuedToken] = {}
        self.calls: list[Call] = []
        self.capabilities_document: dict[str, Any] = self._capabilities_document()
        self.capabilities_raw: bytes | None = None
        self.capabilities_delay = 0.0
        self.token_failures: list[int] = []
        #: ``Retry-After`` (seconds) sent with injected token failures, when set.
        self.token_retry_after: int | None = None
        self.token_outage: int | None = None
        """While set, every token request answers this status (an outage window)."""
        self.token_delay = 0.0
        self._installables: dict[str, dict[str, Any]] = {}
        self.approving_user = "1"
        """The HipChat user who approves at ``/users/authorize`` (the one logged in)."""
        self.declines_approval = False
        self.sessions_without_owner = False
        """Answer session info (``GET /v2/oauth/token/{token}``) without an ``owner``."""
        self.revoked_tokens: list[str] = []
        """Tokens revoked with ``DELETE /v2/oauth/token/{token}``, oldest first."""
        self._codes: dict[str, _UserGrant] = {}
        self.refresh_tokens: dict[str, _UserGrant] = {}
        self.api = FakeRestAPI(is_valid_token=self.is_valid_token, now=now)
        self._connections: list[tuple[ASGIApp, httpx.AsyncClient]] = []
        self.app = Starlette(routes=[*self._routes(), self.api.mount("/v2")])

    # -- the HipChat side of the wire -------------------------------------------------------

    def transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport that delivers the add-on's requests to this fake, in-process."""
        return AppTransport(self.app)

    @property
    def host(self) -> str:
        """This fake's ``host[:port]``, as ``ADDON_HIPCHAT_HOSTS`` must list it."""
        return urlsplit(self.base_url).netloc

    @staticmethod
    def connect(app: Any, base_url: str | None = None) -> httpx.AsyncClient:
        """An HTTP client that reaches the add-on ``app`` in-process, as HipChat would.

        Each response returns as soon as its body is complete, as from a server, while the app
        may run on (``AppTransport``); closing the client waits for those calls.

        ``base_url`` defaults to the add-on's ``ADDON_BASE_URL`` when ``app`` is ours.
        """
        url = base_url or _base_url_of(app)
        return httpx.AsyncClient(transport=AppTransport(app), base_url=url)

    def peer(self, addon: AddonPeer) -> httpx.AsyncClient:
        """The HTTP client for ``addon``: itself, or a connection to the app (kept until
        ``aclose``)."""
        if isinstance(addon, httpx.AsyncClient):
            return addon
        for app, client in self._connections:
            if app is addon:
                return client
        client = self.connect(addon)
        self._connections.append((addon, client))
        return client

    async def aclose(self) -> None:
        """Close the connections ``peer`` opened to add-on apps.

        Each waits for the app calls still running on it (a handler past its reply window), as
        a server does when it stops: drain the add-on first (``app.state.addon.aclose()``).
        """
        connections, self._connections = self._connections, []
        for _app, client in connections:
            await client.aclose()

    def token_requests(self, grant_type: str | None = None) -> list[Call]:
        """The token endpoint calls received (optionally of one grant type)."""
        return [
            c
            for c in self.calls
            if c.path == "/v2/oauth/token"
            and (grant_type is None or c.form.get("grant_type") == grant_type)
        ]

    def fail_token_endpoint(self, status: int, *, count: int = 1) -> None:
        """Make the next ``count`` token requests answer ``status``."""
        self.token_failures.extend([status] * count)

    def is_valid_token(self, token: str) -> bool:
        """True when ``token`` was issued, is not expired, and its client is not revoked."""
        issued = self.tokens.get(token)
        if issued is None or issued.expires_at <= self.now():
            return False
        client = self.clients.get(issued.oauth_id)
        return client is not None and not client.revoked

    def expire_tokens(self) -> None:
        """Expire every token issued so far (HipChat-side), as if their lifetime ran out."""
        for token, issued in list(self.tokens.items()):
            self.tokens[token] = dataclasses.replace(issued, expires_at=0)

    def revoke(self, oauth_id: str) -> None:
        """Revoke an OAuth client: its tokens stop working and the token endpoint answers 401."""
        self.clients[oauth_id].revoked = True

    def revoke_user(self, user_id: str) -> None:
        """The user withdraws their approvals: their tokens stop working, refreshes are refused."""
        for token, grant in list(self.refresh_tokens.items()):
            if grant.user_id == user_id:
                del self.refresh_tokens[token]
        for token, issued in list(self.tokens.items()):
            if issued.user_id == user_id:
                self.tokens[token] = dataclasses.replace(issued, expires_at=0)

    def notifications(self, room: int | str | Installed) -> list[str]:
        """The texts the add-on posted to ``room``, through the REST API or as webhook replies."""
        return self.api.notifications(room.room if isinstance(room, Installed) else room)

    def notification_bodies(self, room: int | str | Installed) -> list[dict[str, Any]]:
        """The full notification bodies posted to ``room`` (color, format, card...)."""
        return self.api.notification_bodies(room.room if isinstance(room, Installed) else room)

    async def send_message(
        self,
        installed: Installed,
        text: str,
        *,
        room_id: int | None = None,
        sender_id: int = 1001,
        message_id: str | None = None,
        token: str | None = None,
    ) -> httpx.Response | None:
        """Type ``text`` in a room: deliver a signed ``room_message`` webhook, as HipChat does.

        Every descriptor webhook whose pattern matches gets it; a JSON reply is posted to the
        room, as HipChat posts it. Returns the first response, or None when nothing matched.
        ``token`` replaces the JWT (to test bad signatures).
        """
        room = installed.room if room_id is None else room_id
        item = {"message": self.message(text, sender_id, message_id), "room": self.room(room)}
        return await self.send_event(installed, "room_message", item, sender_id, token, text)

    async def send_event(
        self,
        installed: Installed,
        event: str,
        item: dict[str, Any],
        sender_id: int | None = None,
        token: str | None = None,
        text: str | None = None,
    ) -> httpx.Response | None:
        """Deliver a signed webhook of ``event`` with ``item`` to every webhook that wants it.

        Each delivery gets its own JWT (a fresh ``jti``), whose ``sub`` is ``sender_id``, else
        ``item.sender.id``, else user 1001: as HipChat, the fake always names a user.
        """
        if sender_id is None:
            named = (
                item.get("sender", {}).get("id") if isinstance(item.get("sender"), dict) else None
            )
            sender_id = named if isinstance(named, int) else 1001
        descriptor = await self.descriptor(installed.addon)
        room = item["room"]["id"]
        body = {"event": event, "item": item, "oauth_client_id": installed.oauth_id}
        first: httpx.Response | None = None
        for index, hook in enumerate(descriptor["capabilities"].get("webhook", [])):
            if hook["event"] != event or (
                text is not None and "pattern" in hook and not re.search(hook["pattern"], text)
            ):
                continue
            signed = token or sign_jwt(
                installed.oauth_id,
                installed.oauth_secret,
                now=self.now(),
                sub=sender_id,
                room_id=room,
            )
            response = await installed.addon.post(
                hook["url"],
                json={**body, "webhook_id": index},
                headers={"Authorization": f"JWT {signed}"},
            )
            if response.status_code == 200 and response.content:
                self.api.add_notification(room, response.json())
            first = first or response
        return first

    def message(
        self, text: str, sender_id: int = 1001, message_id: str | None = None
    ) -> dict[str, Any]:
        """A ``room_message`` item's message, as HipChat sends it."""
        return {
            "date": datetime.datetime.now(datetime.UTC).isoformat(),
            "from": {
                "id": sender_id,
                "links": {"self": f"{self.api_url}user/{sender_id}"},
                "mention_name": f"user{sender_id}",
                "name": f"User {sender_id}",
            },
            "id": message_id or str(uuid.uuid4()),
            "mentions": [],
            "message": text,
            "type": "message",
        }

    def room(self, room_id: int) -> dict[str, Any]:
        """A webhook item's room, as HipChat sends it."""
        links = f"{self.api_url}room/{room_id}"
        return {
            "id": room_id,
            "links": {"self": links, "webhooks": f"{links}/webhook"},
            "name": f"Room {room_id}",
        }

    def _routes(self) -> list[Route]:
        return [
            Route("/v2/capabilities", self._capabilities, methods=["GET"]),
            Route("/v2/oauth/token", self._token, methods=["POST"]),
            Route("/v2/addon/installable/{token}", self._installable, methods=["GET"]),
            Route("/users/authorize", self._authorize, methods=["GET"]),
            Route("/v2/oauth/token/{access_token}", self._session, methods=["GET", "DELETE"]),
        ]

    def _capabilities_document(self) -> dict[str, Any]:
        return {
            "key": "hipchat",
            "name": "HipChat",
            "links": {"self": self.capabilities_url, "api": f"{self.base_url}/v2"},
            "capabilities": {
                "hipchatApiProvider": {"url": self.api_url},
                "oauth2Provider": {
                    "authorizationUrl": f"{self.base_url}/users/authorize",
                    "tokenUrl": self.token_url,
                },
            },
        }

    async def _record(self, request: Request) -> Call:
        form: dict[str, str] = {}
        if request.method == "POST":
            form = {k: str(v) for k, v in (await request.form()).items()}
        call = Call(
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
            form=form,
        )
        self.calls.append(call)
        return call

    async def _capabilities(self, request: Request) -> Response:
        await self._record(request)
        if self.capabilities_delay:
            await asyncio.sleep(self.capabilities_delay)
        if self.capabilities_raw is not None:
            return Response(self.capabilities_raw, media_type="application/json")
        return JSONResponse(self.capabilities_document)

    async def _installable(self, request: Request) -> Response:
        await self._record(request)
        # HipChat's installable URL can be fetched only once.
        document = self._installables.pop(request.path_params["token"], None)
        if document is None:
            return _error(404, "Unknown or already used installable token", "Not Found")
        return JSONResponse(document)

    async def _token(self, request: Request) -> Response:
        call = await self._record(request)
        if self.token_delay:
            await asyncio.sleep(self.token_delay)
        if self.token_failures:
            status = self.token_failures.pop(0)
            failure = _error(status, "Injected failure", "Failure")
            if self.token_retry_after is not None:
                failure.headers["Retry-After"] = str(self.token_retry_after)
            return failure
        if self.token_outage is not None:
            return _error(self.token_outage, "Injected outage", "Failure")
        client = self._authenticate(call.headers.get("authorization", ""))
        if client is None:
            return _error(401, "Invalid OAuth client credentials", "Unauthorized")
        grant_type = call.form.get("grant_type")
        if grant_type == "authorization_code":
            return self._authorization_code(client, call.form)
        if grant_type == "refresh_token":
            return self._refresh_token(client, call.form)
        if grant_type != "client_credentials":
            return _error(400, "Unsupported grant_type", "Bad Request")
        scopes = tuple(call.form.get("scope", " ".join(client.scopes)).split())
        if not set(scopes) <= set(client.scopes):
            return _error(400, "Requested scopes were not granted", "Bad Request")
        return self._issue(client, scopes)

    def _authorization_code(self, client: OAuthClient, form: dict[str, str]) -> Response:
        # A code works once, for the client and redirect URI it was issued to (docs/protocol.md).
        grant = self._codes.pop(form.get("code", ""), None)
        redirect_uri = form.get("redirect_uri", form.get("redirect_url"))
        if grant is None or grant.oauth_id != client.oauth_id:
            return _error(400, "Invalid or already used authorization code", "Bad Request")
        if redirect_uri != grant.redirect_uri:
            return _error(400, "redirect_uri does not match the authorization", "Bad Request")
        return self._issue(client, grant.scopes, grant.user_id)

    def _refresh_token(self, client: OAuthClient, form: dict[str, str]) -> Response:
        # Rotation: each refresh token works once; the answer carries its successor.
        grant = self.refresh_tokens.pop(form.get("refresh_token", ""), None)
        if grant is None or grant.oauth_id != client.oauth_id:
            return _error(400, "Invalid or revoked refresh token", "Bad Request")
        scopes = tuple(form.get("scope", " ".join(grant.scopes)).split())
        if not set(scopes) <= set(grant.scopes):
            return _error(400, "Requested scopes exceed the user's approval", "Bad Request")
        return self._issue(client, scopes, grant.user_id)

    async def _authorize(self, request: Request) -> Response:
        """HipChat's approval page, on which ``approving_user`` approves at once."""
        call = await self._record(request)
        query = call.query
        client = self.clients.get(query.get("client_id", ""))
        redirect_uri = query.get("redirect_uri", "")
        scopes = tuple(query.get("scope", "").split()) or (client.scopes if client else ())
        if client is None or client.revoked:
            return _error(400, "Unknown client_id", "Bad Request")
        if query.get("response_type") != "code" or not redirect_uri:
            return _error(400, "response_type=code and redirect_uri are required", "Bad Request")
        if client.redirection_urls and redirect_uri not in client.redirection_urls:
            return _error(400, "redirect_uri is not one of redirectionUrls", "Bad Request")
        if not set(scopes) <= set(client.scopes):
            return _error(400, "Requested scopes were not granted", "Bad Request")
        answer = {"error": "access_denied"}
        if not self.declines_approval:
            code = secrets.token_urlsafe(16)
            self._codes[code] = _UserGrant(
                client.oauth_id, self.approving_user, scopes, redirect_uri
            )
            answer = {"code": code}
        if "state" in query:
            answer["state"] = query["state"]
        separator = "&" if urlsplit(redirect_uri).query else "?"
        return RedirectResponse(f"{redirect_uri}{separator}{urlencode(answer)}", 302)

    async def _session(self, request: Request) -> Response:
        """Session info (GET) or revocation (DELETE) of a token; the token is the credential."""
        await self._record(request)
        token = request.path_params["access_token"]
        issued = self.tokens.get(token)
        if issued is None or not self.is_valid_token(token):
            return _error(401, "Invalid OAuth session", "Unauthorized")
        if request.method == "DELETE":
            self.revoked_tokens.append(token)
            self.tokens[token] = dataclasses.replace(issued, expires_at=0)
            self.refresh_tokens.pop(issued.refresh_token or "", None)
            return Response(status_code=204)
        return JSONResponse(self._session_info(token, issued))

    def _session_info(self, token: str, issued: IssuedToken) -> dict[str, Any]:
        client = self.clients[issued.oauth_id]
        body: dict[str, Any] = {
            "access_token": token,
            "client": {"id": client.oauth_id, "room": client.room_id},
            "expires_in": max(0, int(issued.expires_at - self.now())),
            "group": {"id": client.group_id, "name": "Example Group"},
            "scopes": list(issued.scopes),
        }
        if issued.user_id is not None and not self.sessions_without_owner:
            user = issued.user_id
            body["owner"] = {
                "id": int(user) if user.isdigit() else user,
                "links": {"self": f"{self.api_url}user/{user}"},
                "mention_name": f"user{user}",
                "name": f"User {user}",
            }
        return body

    def _authenticate(self, header: str) -> OAuthClient | None:
        kind, _, encoded = header.partition(" ")
        if kind.lower() != "basic":
            return None
        try:
            oauth_id, _, secret = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return None
        client = self.clients.get(oauth_id)
        if (
            client is None
            or client.revoked
            or not secrets.compare_digest(client.oauth_secret, secret)
        ):
            return None
        return client

    def _issue(
        self, client: OAuthClient, scopes: tuple[str, ...], user_id: str | None = None
    ) -> JSONResponse:
        token = secrets.token_urlsafe(30)
        expires_at = self.now() + self.token_lifetime
        refresh_token = None if user_id is None else secrets.token_urlsafe(30)
        self.tokens[token] = IssuedToken(
            client.oauth_id, scopes, expires_at, user_id, refresh_token
        )
        body: dict[str, Any] = {
            "access_token": token,
            "expires_in": self.token_lifetime,
            "group_id": client.group_id,
            "group_name": "Example Group",
            "scope": " ".join(scopes),
            "token_type": "bearer",
        }
        if user_id is not None and refresh_token is not None:  # user tokens have one
            self.refresh_tokens[refresh_token] = _UserGrant(client.oauth_id, user_id, scopes)
            body["refresh_token"] = refresh_token
        return JSONResponse(body)

    # -- HipChat driving the add-on ---------------------------------------------------------

    async def descriptor(self, addon: AddonPeer, url: str | None = None) -> dict[str, Any]:
        """GET the add-on's descriptor, as HipChat does before it installs."""
        response = await self.peer(addon).get(url or "/atlassian-connect.json")
        if response.status_code != 200:
            raise FakeHipChatError(_refusal("descriptor", response), response)
        document: dict[str, Any] = response.json()
        return document

    async def install(
        self,
        addon: AddonPeer,
        *,
        room_id: int | None = None,
        group_id: int = 1,
        oauth_id: str | None = None,
        installable: Mapping[str, str] | None = None,
    ) -> Installed:
        """Install the add-on (room or global) with the flow its descriptor declares.

        ``addon`` is an HTTP client reaching the add-on, or the add-on's ASGI app; ``installable``
        replaces the descriptor's (to drive the other flow's URLs). Raises ``FakeHipChatError``
        with the add-on's error message when it refuses; HipChat then deletes the client.
        """
        addon = self.peer(addon)
        descriptor = await self.descriptor(addon)
        client = self.new_client(
            room_id=room_id,
            group_id=group_id,
            oauth_id=oauth_id,
            scopes=tuple(descriptor["capabilities"]["hipchatApiConsumer"]["scopes"]),
        )
        consumer = descriptor["capabilities"].get("oauth2Consumer", {})
        client.redirection_urls = tuple(consumer.get("redirectionUrls", ()))
        installable = installable or descriptor["capabilities"]["installable"]
        if "callbackUrl" in installable:
            response = await addon.post(installable["callbackUrl"], json=self.payload(client))
        else:
            response = await self._client_side(addon, installable["installedUrl"], client)
        if not (response.is_success or self._redirected_back(response)):
            del self.clients[client.oauth_id]
            raise FakeHipChatError(_refusal("install", response), response)
        return Installed(client.oauth_id, client.oauth_secret, group_id, room_id, response, addon)

    async def update(self, addon: AddonPeer, installed: Installed) -> httpx.Response:
        """Re-install (update) the add-on, keeping its oauth_id."""
        addon = self.peer(addon)
        installable = (await self.descriptor(addon))["capabilities"]["installable"]
        client = self.clients[installed.oauth_id]
        if "callbackUrl" in installable:
            url = installable.get("updateCallbackUrl", installable["callbackUrl"])
            return await addon.post(url, json=self.payload(client))
        url = installable.get("updatedUrl", installable["installedUrl"])
        return await self._client_side(addon, url, client)

    async def uninstall(
        self,
        addon: AddonPeer,
        installed: Installed,
        installable: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Uninstall as HipChat does: revoke the OAuth client, then tell the add-on."""
        addon = self.peer(addon)
        installable = installable or (await self.descriptor(addon))["capabilities"]["installable"]
        client = self.clients[installed.oauth_id]
        self.revoke(client.oauth_id)
        if "callbackUrl" in installable:
            return await addon.delete(f"{installable['callbackUrl']}/{client.oauth_id}")
        return await self._client_side(addon, installable["uninstalledUrl"], client)

    def new_client(
        self,
        *,
        room_id: int | None = None,
        group_id: int = 1,
        oauth_id: str | None = None,
        scopes: tuple[str, ...] = ("send_notification",),
    ) -> OAuthClient:
        """Create an OAuth client, as HipChat does when someone approves an install."""
        client = OAuthClient(
            oauth_id=oauth_id or str(uuid.uuid4()),
            oauth_secret=secrets.token_urlsafe(30),
            group_id=group_id,
            room_id=room_id,
            scopes=scopes,
        )
        self.clients[client.oauth_id] = client
        return client

    def payload(self, client: OAuthClient) -> dict[str, Any]:
        """The install callback body HipChat sends for ``client``."""
        body: dict[str, Any] = {
            "oauthId": client.oauth_id,
            "oauthSecret": client.oauth_secret,
            "capabilitiesUrl": self.capabilities_url,
            "groupId": client.group_id,
        }
        if client.room_id is not None:
            body["roomId"] = client.room_id
        return body

    def installable_url(self, client: OAuthClient) -> str:
        """A one-time URL serving ``client``'s installation data (client-side flow)."""
        token = secrets.token_urlsafe(16)
        self._installables[token] = self.payload(client)
        return f"{self.base_url}/v2/addon/installable/{token}"

    def _redirected_back(self, response: httpx.Response) -> bool:
        # A client-side flow succeeds when the add-on sends the browser on to redirect_url.
        location = response.headers.get("location", "")
        return response.status_code in (302, 303) and location == f"{self.base_url}/addons/done"

    async def _client_side(
        self, addon: httpx.AsyncClient, url: str, client: OAuthClient
    ) -> httpx.Response:
        query = urlencode(
            {
                "installable_url": self.installable_url(client),
                "redirect_url": f"{self.base_url}/addons/done",
            }
        )
        return await addon.get(f"{url}?{query}")


def _base_url_of(app: Any) -> str:
    """The add-on's ``ADDON_BASE_URL`` when ``app`` is one of ours, else a placeholder."""
    settings = getattr(getattr(getattr(app, "state", None), "addon", None), "settings", None)
    return str(getattr(settings, "base_url", _DEFAULT_ADDON_URL))


def _refusal(what: str, response: httpx.Response) -> str:
    """``"install answered 400: <the add-on's error message>"`` (or the start of its body)."""
    try:
        message = str(response.json()["error"]["message"])
    except (ValueError, LookupError, TypeError):
        message = response.text[:200].strip()
    return f"{what} answered {response.status_code}" + (f": {message}" if message else "")

"""``FakeHipChat``: a real HTTP peer that plays HipChat, for our tests and integration authors'.

It serves what an add-on calls (the capabilities document, the OAuth token endpoint, one-time
installable documents, the REST API) and drives the add-on as HipChat would: install, update and
uninstall in either flow. It records every call it receives. Wire it in-process both ways:

```python
hipchat = FakeHipChat()
app = create_app(settings, transport=hipchat.transport())
async with hipchat.connect(app, settings.base_url) as addon:
    installed = await hipchat.install(addon, room_id=1)
```
or serve ``hipchat.app`` with uvicorn on a real socket.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

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


@dataclasses.dataclass(frozen=True)
class Installed:
    """What ``FakeHipChat.install`` returns: the installation as HipChat sees it."""

    oauth_id: str
    oauth_secret: str
    group_id: int
    room_id: int | None
    response: httpx.Response


@dataclasses.dataclass(frozen=True)
class IssuedToken:
    """A token the fake handed out."""

    oauth_id: str
    scopes: tuple[str, ...]
    expires_at: float
    user_id: str | None = None


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"code": status, "message": message, "type": kind}}, status)


class FakeHipChat:
    """HipChat, as far as an add-on can tell. See the module docstring for an example."""

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
        self.token_delay = 0.0
        self._installables: dict[str, dict[str, Any]] = {}
        self.app = Starlette(routes=self._routes())

    # -- the HipChat side of the wire -------------------------------------------------------

    def transport(self) -> httpx.ASGITransport:
        """An httpx transport that delivers the add-on's requests to this fake, in-process."""
        return httpx.ASGITransport(app=self.app)

    @staticmethod
    def connect(app: Any, base_url: str) -> httpx.AsyncClient:
        """An HTTP client that reaches the add-on ``app`` in-process, as HipChat would."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)

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

    def _routes(self) -> list[Route]:
        return [
            Route("/v2/capabilities", self._capabilities, methods=["GET"]),
            Route("/v2/oauth/token", self._token, methods=["POST"]),
            Route("/v2/addon/installable/{token}", self._installable, methods=["GET"]),
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
            return _error(status, "Injected failure", "Failure")
        client = self._authenticate(call.headers.get("authorization", ""))
        if client is None:
            return _error(401, "Invalid OAuth client credentials", "Unauthorized")
        if call.form.get("grant_type") != "client_credentials":
            return _error(400, "Unsupported grant_type", "Bad Request")
        scopes = tuple(call.form.get("scope", " ".join(client.scopes)).split())
        if not set(scopes) <= set(client.scopes):
            return _error(400, "Requested scopes were not granted", "Bad Request")
        return self._issue(client, scopes)

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
        self.tokens[token] = IssuedToken(client.oauth_id, scopes, expires_at, user_id)
        body: dict[str, Any] = {
            "access_token": token,
            "expires_in": self.token_lifetime,
            "group_id": client.group_id,
            "group_name": "Example Group",
            "scope": " ".join(scopes),
            "token_type": "bearer",
        }
        return JSONResponse(body)

    # -- HipChat driving the add-on ---------------------------------------------------------

    async def descriptor(self, addon: httpx.AsyncClient, url: str | None = None) -> dict[str, Any]:
        """GET the add-on's descriptor, as HipChat does before it installs."""
        response = await addon.get(url or "/atlassian-connect.json")
        if response.status_code != 200:
            raise FakeHipChatError(f"descriptor answered {response.status_code}", response)
        document: dict[str, Any] = response.json()
        return document

    async def install(
        self,
        addon: httpx.AsyncClient,
        *,
        room_id: int | None = None,
        group_id: int = 1,
        oauth_id: str | None = None,
    ) -> Installed:
        """Install the add-on (room or global) with the flow its descriptor declares.

        Raises ``FakeHipChatError`` when the add-on refuses; HipChat then deletes the client.
        """
        descriptor = await self.descriptor(addon)
        client = self.new_client(
            room_id=room_id,
            group_id=group_id,
            oauth_id=oauth_id,
            scopes=tuple(descriptor["capabilities"]["hipchatApiConsumer"]["scopes"]),
        )
        installable = descriptor["capabilities"]["installable"]
        if "callbackUrl" in installable:
            response = await addon.post(installable["callbackUrl"], json=self.payload(client))
        else:
            response = await self._client_side(addon, installable["installedUrl"], client)
        if not (response.is_success or self._redirected_back(response)):
            del self.clients[client.oauth_id]
            raise FakeHipChatError(f"install answered {response.status_code}", response)
        return Installed(client.oauth_id, client.oauth_secret, group_id, room_id, response)

    async def update(self, addon: httpx.AsyncClient, installed: Installed) -> httpx.Response:
        """Re-install (update) the add-on, keeping its oauth_id."""
        installable = (await self.descriptor(addon))["capabilities"]["installable"]
        client = self.clients[installed.oauth_id]
        if "callbackUrl" in installable:
            url = installable.get("updateCallbackUrl", installable["callbackUrl"])
            return await addon.post(url, json=self.payload(client))
        url = installable.get("updatedUrl", installable["installedUrl"])
        return await self._client_side(addon, url, client)

    async def uninstall(self, addon: httpx.AsyncClient, installed: Installed) -> httpx.Response:
        """Uninstall as HipChat does: revoke the OAuth client, then tell the add-on."""
        installable = (await self.descriptor(addon))["capabilities"]["installable"]
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

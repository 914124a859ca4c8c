"""The playground's web side: the room page, its fragments and actions, and the consent page.

Served by the same server as the fake HipChat (``playground_app``): ``/playground`` is the room,
``/users/authorize`` shows a consent page before the fake's own approval, and everything else is
the fake's. The page is server-rendered (jinja2, autoescaped) and refreshed by a small script that
polls ``/playground/fragments``; no bundler, no framework.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from addon.testing.fake import FakeHipChatError
from addon.testing.playground.render import card_description, clean_html, text_html
from addon.testing.playground.room import PlaygroundRoom

__all__ = ["playground_app"]

_HERE = Path(__file__).parent
_PAGE_KINDS = {"webPanel": "panel", "dialog": "dialog"}


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(_HERE / "templates"), autoescape=select_autoescape(default=True)
    )
    env.filters.update(
        clean_html=clean_html,
        text_html=text_html,
        card_description=card_description,
        label=_label,
        pretty=lambda value: json.dumps(value, indent=2, sort_keys=True),
        clock=lambda at: time.strftime("%H:%M:%S", time.localtime(at)),
    )
    return env


def _label(value: object) -> str:
    """A descriptor name: ``{"value": "Notes"}`` or a plain string."""
    return str(value.get("value", "")) if isinstance(value, dict) else str(value or "")


def playground_app(room: PlaygroundRoom) -> Starlette:
    """The fake HipChat's app with the playground in front of it (see the module docstring)."""
    views = _Views(room, _environment())
    return Starlette(
        routes=[
            Route("/", lambda _: RedirectResponse("/playground", 302)),
            Route("/playground", views.page),
            Route("/playground/fragments", views.fragments),
            Route("/playground/install", views.install, methods=["POST"]),
            Route("/playground/uninstall", views.uninstall, methods=["POST"]),
            Route("/playground/send", views.send, methods=["POST"]),
            Route("/playground/select", views.select, methods=["POST"]),
            Route("/playground/glances", views.reload_glances, methods=["POST"]),
            Route("/playground/open/{oauth_id}/{key}", views.open_page),
            Route("/users/authorize", views.consent),
            Route("/atlassian-connect/{name:str}", _host_script),
            Mount("/playground/static", StaticFiles(directory=_HERE / "static")),
            Mount("/", app=_Recorder(room.hipchat.app, room)),
        ]
    )


class _Recorder:
    """Wraps the fake HipChat to log each request the add-on makes (method, path, status, time)."""

    def __init__(self, app: ASGIApp, room: PlaygroundRoom) -> None:
        self.app, self.room = app, room

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.monotonic(), 0
        path = str(scope["path"])  # before the fake's routing rewrites the scope

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            if path.startswith("/v2/"):  # the add-on's calls, not the browser's
                ms = (time.monotonic() - started) * 1000
                self.room.record_call(str(scope["method"]), _masked(path), status, ms)


def _masked(path: str) -> str:
    """``path`` without the token it may carry (session info and revocation URLs)."""
    prefix = "/v2/oauth/token/"
    return f"{prefix}…" if path.startswith(prefix) and len(path) > len(prefix) else path


async def _host_script(request: Request) -> Response:
    """Stand-ins for HipChat's ``all.js``/``all.css``, which pages load from their HipChat."""
    name = request.path_params["name"]
    if name not in ("all.js", "all.css", "all-debug.js", "all-debug.css"):
        return _answer(f"No {name} here", 404)
    media = "text/css" if name.endswith(".css") else "text/javascript"
    return Response("/* the playground offers no host API (AP) */\n", media_type=media)


class _Views:
    def __init__(self, room: PlaygroundRoom, env: Environment) -> None:
        self.room, self.env = room, env

    async def page(self, request: Request) -> Response:
        context = await self._context()
        return HTMLResponse(self.env.get_template("playground.html").render(context))

    async def fragments(self, request: Request) -> Response:
        context = await self._context()
        names = ("messages", "sidebar", "log", "installs")
        return JSONResponse(
            {name: self.env.get_template(f"_{name}.html").render(context) for name in names}
        )

    async def _context(self) -> dict[str, Any]:
        room = self.room
        descriptor = await room.descriptor()
        room.sync()
        here = room.here()
        glances = {
            (install.installed.oauth_id, entry["key"]): await room.glance(install, entry["key"])
            for install in here
            for entry in room.capabilities().get("glance", [])
        }
        return {
            "room": room,
            "descriptor": descriptor,
            "capabilities": room.capabilities(),
            "here": here,
            "glances": glances,
            "entries": room.timeline[room.room][-200:],
            "log": list(reversed(room.log)),
        }

    async def install(self, request: Request) -> Response:
        form = await request.form()
        scope = "global" if form.get("scope") == "global" else "room"
        if form.get("flow") == "client":
            return await self._act(self.room.install(scope, "client"))
        return await self._act(self.room.install(scope, "server"))

    async def uninstall(self, request: Request) -> Response:
        oauth_id = str((await request.form()).get("oauth_id", ""))
        if self.room.find(oauth_id) is None:
            return _answer(f"No installation {oauth_id!r} in the playground", 404)
        return await self._act(self.room.uninstall(oauth_id))

    async def send(self, request: Request) -> Response:
        text = str((await request.form()).get("text", "")).strip()
        if not text:
            return _answer("Type a message first", 400)
        return await self._act(self.room.send(text))

    async def _act(self, action: Any) -> Response:
        try:
            await action
        except FakeHipChatError as exc:
            detail = exc.response.text[:300] if exc.response is not None else ""
            self.room.say(f"Failed: {exc} {detail}".strip())
            return _answer(str(exc), 502)
        except httpx.TransportError as exc:
            self.room.say(f"The add-on could not be reached ({type(exc).__name__}); is it up?")
            return _answer("The add-on could not be reached", 502)
        return _answer("")

    async def select(self, request: Request) -> Response:
        form = await request.form()
        user, room_id = str(form.get("user", "")), str(form.get("room", ""))
        if user.isdigit() and int(user) in self.room.users:
            self.room.user = int(user)
        if room_id.isdigit() and int(room_id) in self.room.rooms:
            self.room.room = int(room_id)
        return _answer("")

    async def reload_glances(self, request: Request) -> Response:
        self.room.reload_glances()
        return _answer("")

    async def open_page(self, request: Request) -> Response:
        """Redirect an iframe to an extension's page with a fresh ``signed_request``."""
        install = self.room.find(request.path_params["oauth_id"])
        url = _page_url(self.room.capabilities(), request.path_params["key"])
        if install is None or url is None:
            return _answer("No such installation or page; reload the playground", 404)
        return RedirectResponse(self.room.signed_url(install, url), 302)

    async def consent(self, request: Request) -> Response:
        """HipChat's consent page: the current user approves or declines, then the fake's flow."""
        query = dict(request.query_params)
        decision = query.pop("decision", "")
        if decision == "approve":
            self.room.hipchat.approving_user = str(self.room.user)
            response: Response = await _forward(self.room, query)
            return response
        if decision == "decline":
            answer = {"error": "access_denied"}
            if "state" in query:
                answer["state"] = query["state"]
            redirect = query.get("redirect_uri", "")
            separator = "&" if "?" in redirect else "?"
            return RedirectResponse(f"{redirect}{separator}{urlencode(answer)}", 302)
        client = self.room.hipchat.clients.get(query.get("client_id", ""))
        context = {
            "room": self.room,
            "addon": _label((await self.room.descriptor() or {}).get("name", "The add-on")),
            "scopes": query.get("scope", "").split() or list(client.scopes if client else ()),
            "approve": f"/users/authorize?{urlencode({**query, 'decision': 'approve'})}",
            "decline": f"/users/authorize?{urlencode({**query, 'decision': 'decline'})}",
        }
        return HTMLResponse(self.env.get_template("consent.html").render(context))


async def _forward(room: PlaygroundRoom, query: dict[str, str]) -> Response:
    """Hand the approved request to the fake's own ``/users/authorize``, in-process."""
    async with httpx.AsyncClient(
        transport=room.hipchat.transport(), base_url=room.hipchat.base_url
    ) as client:
        answer = await client.get("/users/authorize", params=query)
    if answer.status_code in (302, 303):
        return RedirectResponse(answer.headers["location"], 302)
    return Response(answer.content, answer.status_code, media_type="application/json")


def _page_url(capabilities: dict[str, Any], key: str) -> str | None:
    if key == "configurable":
        url = capabilities.get("configurable", {}).get("url")
        return str(url) if url else None
    for kind in _PAGE_KINDS:
        for entry in capabilities.get(kind, []):
            if entry.get("key") == key:
                return str(entry["url"])
    return None


def _answer(error: str, status: int = 200) -> JSONResponse:
    return JSONResponse({"ok": not error, "error": error}, status)

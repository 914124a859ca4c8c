"""HTTP endpoints. The only module (with ``app.py``) that knows Starlette.

Errors raised by the core are ``AddonError`` subclasses; ``exception_handlers`` turns each group
into one status with a JSON body ``{"error": {"status", "type", "message"}}`` in a single table.
"""

from __future__ import annotations

import html
import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import BaseRoute, Route

from addon.descriptor import DESCRIPTOR_PATH
from addon.errors import (
    AddonError,
    AuthError,
    Forbidden,
    NotFound,
    RequestError,
    StoreUnavailable,
    UpstreamError,
)
from addon.installations import InstallPayload, oauth_id_from

if TYPE_CHECKING:
    from addon.app import Addon

__all__ = ["exception_handlers", "routes"]

log = logging.getLogger("addon.routes")

MAX_BODY_BYTES = 1 << 20
_STATUS: tuple[tuple[type[AddonError], int], ...] = (
    (RequestError, 400),
    (AuthError, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (UpstreamError, 502),
    (StoreUnavailable, 503),
)


def error_response(status: int, kind: str, message: str) -> JSONResponse:
    """The JSON error body every refusal uses."""
    headers = {"Retry-After": "5"} if status == 503 else None
    body = {"error": {"status": status, "type": kind, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


async def _addon_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AddonError)
    status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
    if status >= 500:
        log.error("%s: %s", type(exc).__name__, exc, extra={"path": request.url.path})
    return error_response(status, type(exc).__name__, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, "HTTPException", str(exc.detail))


def exception_handlers() -> dict[Any, Any]:
    """Starlette's ``exception_handlers`` for the add-on."""
    return {AddonError: _addon_error, HTTPException: _http_error}


def _addon(request: Request) -> Addon:
    addon: Addon = request.app.state.addon
    return addon


async def read_json(request: Request) -> Any:
    """The request's JSON body; ``RequestError`` when it is too large or not JSON."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise RequestError(f"The request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(body)
    except ValueError:
        raise RequestError("The request body is not valid JSON") from None


async def descriptor(request: Request) -> Response:
    """``GET /atlassian-connect.json``: the capability descriptor."""
    return JSONResponse(_addon(request).descriptor, headers={"Access-Control-Allow-Origin": "*"})


async def install(request: Request) -> Response:
    """``POST /installable``: the server-side install callback."""
    payload = InstallPayload.from_json(await read_json(request))
    installation = await _addon(request).lifecycle.install(payload)
    return JSONResponse({"oauthId": installation.oauth_id, "installed": True})


async def update(request: Request) -> Response:
    """``POST /installable/update``: the update callback; the oauth_id is kept."""
    payload = InstallPayload.from_json(await read_json(request))
    installation = await _addon(request).lifecycle.install(payload, update=True)
    return JSONResponse({"oauthId": installation.oauth_id, "updated": True})


async def uninstall(request: Request) -> Response:
    """``DELETE /installable/{oauth_id}``: uninstall once HipChat revoked the client."""
    oauth_id = oauth_id_from(request.path_params["oauth_id"])
    await _addon(request).lifecycle.uninstall(oauth_id)
    return Response(status_code=204)


async def installed(request: Request) -> Response:
    """``GET /installable/installed`` (client-side): fetch the installation, then redirect."""
    target = await _addon(request).lifecycle.install_from(request.query_params)
    return RedirectResponse(target, status_code=302)


async def updated(request: Request) -> Response:
    """``GET /installable/updated`` (client-side re-install)."""
    target = await _addon(request).lifecycle.install_from(request.query_params, update=True)
    return RedirectResponse(target, status_code=302)


async def uninstalled(request: Request) -> Response:
    """``GET /installable/uninstalled`` (client-side uninstall)."""
    target = await _addon(request).lifecycle.uninstall_from(request.query_params)
    return RedirectResponse(target, status_code=302)


async def install_trigger(request: Request) -> Response:
    """``GET /install?hipchat=<server>[&room=<name>]``: redirect to HipChat's install page."""
    addon = _addon(request)
    server = request.query_params.get("hipchat", "").strip()
    if server and "://" not in server:
        server = f"https://{server}"
    addon.hosts.check(server, what="hipchat")
    parts = urlsplit(server)
    query = {"url": addon.settings.url_for(DESCRIPTOR_PATH)}
    room = request.query_params.get("room", "").strip()
    if room:
        query["room"] = room
    target = f"{parts.scheme}://{parts.netloc}/addons/install?{urlencode(query)}"
    return RedirectResponse(target, status_code=302)


async def landing(request: Request) -> Response:
    """``GET /``: what the add-on is, and a form to install it."""
    addon = _addon(request)
    caps = addon.capabilities
    descriptor_url = addon.settings.url_for(DESCRIPTOR_PATH)
    default_host = next((h for h in addon.settings.hipchat_hosts if h.startswith("www.")), "")
    page = _LANDING.format(
        name=html.escape(caps.name),
        description=html.escape(caps.description),
        descriptor=html.escape(descriptor_url),
        host=html.escape(default_host),
    )
    return HTMLResponse(page)


async def healthz(request: Request) -> Response:
    """``GET /healthz``: the process is up."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """``GET /readyz``: the store answers."""
    await _addon(request).store.ping()
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    """``GET /metrics``: counters in the Prometheus text format."""
    addon = _addon(request)
    gauges = {"addon_installations": float(len(await addon.installations.oauth_ids()))}
    return PlainTextResponse(addon.metrics.render(gauges), media_type="text/plain; version=0.0.4")


def routes() -> list[BaseRoute]:
    """Every endpoint of the add-on."""
    return [
        Route("/", landing, methods=["GET"]),
        Route(DESCRIPTOR_PATH, descriptor, methods=["GET"]),
        Route("/install", install_trigger, methods=["GET"]),
        Route("/installable", install, methods=["POST"]),
        Route("/installable/update", update, methods=["POST"]),
        Route("/installable/installed", installed, methods=["GET"]),
        Route("/installable/updated", updated, methods=["GET"]),
        Route("/installable/uninstalled", uninstalled, methods=["GET"]),
        Route("/installable/{oauth_id}", uninstall, methods=["DELETE"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


_LANDING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{name}</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:3em auto;line-height:1.5}}
code{{background:#eee;padding:.1em .3em}}</style></head>
<body><h1>{name}</h1><p>{description}</p>
<h2>Install it</h2>
<p>Paste the descriptor URL into HipChat (<em>Integrations &rarr; Install an integration from a
descriptor URL</em>): <code>{descriptor}</code></p>
<form action="/install" method="get">
<label>HipChat server <input name="hipchat" value="{host}" required></label>
<label>Room (optional) <input name="room"></label>
<button type="submit">Install</button></form></body></html>
"""

"""HTTP endpoints. The only module (with ``app.py``) that knows Starlette.

Errors raised by the core are ``AddonError`` subclasses; ``exception_handlers`` answers each with
the status its class carries (``http_status``) and a JSON body ``{"error": {"status", "type",
"message"}}``.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from addon.admin import erase_storage, export_storage, import_storage
from addon.approval import APPROVE_PATH, CALLBACK_PATH
from addon.descriptor import DESCRIPTOR_PATH
from addon.dispatch import Dispatcher, Signed
from addon.errors import (
    AddonError,
    AuthError,
    BodyTimeout,
    BodyTooLarge,
    NotFound,
    RequestError,
)
from addon.installations import Installation, InstallPayload, oauth_id_from
from addon.jsonvalue import loads as load_json
from addon.jwt_auth import check_webhook_claims, extract_jwt
from addon.verification import Verifier
from addon.wire import load_body, parse_webhook

if TYPE_CHECKING:
    from addon.app import Addon

__all__ = ["WebhookEndpoint", "error_response", "exception_handlers", "read_json", "routes"]

log = logging.getLogger("addon.routes")

MAX_BODY_BYTES = 1 << 20
# HipChat's message text is at most 10,000 characters: 64 KiB holds any webhook it sends.
WEBHOOK_MAX_BYTES = 64 << 10


def error_response(status: int, kind: str, message: str) -> JSONResponse:
    """The JSON error body every refusal uses."""
    headers = {"Retry-After": "5"} if status == 503 else None
    body = {"error": {"status": status, "type": kind, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


async def _addon_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AddonError)
    status = exc.http_status
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


async def read_json(request: Request, *, limit: int = MAX_BODY_BYTES) -> Any:
    """The request's JSON body, read within the settings' ``read_timeout`` seconds.

    ``BodyTooLarge`` when ``Content-Length`` or the bytes streamed so far pass ``limit`` (nothing
    more is read), ``BodyTimeout`` when the body is too slow, ``RequestError`` when it is not JSON
    or nested deeper than ``jsonvalue.MAX_DEPTH`` (64).
    """
    body = await _read_body(request, limit, _addon(request).settings.read_timeout)
    return load_json(body)


async def _read_body(request: Request, limit: int, seconds: float) -> bytes:
    return await _receive_body(
        request.headers.get("content-length", ""), request.receive, limit, seconds
    )


async def _receive_body(declared: str, receive: Receive, limit: int, seconds: float) -> bytes:
    """The body from ASGI ``receive``: ``BodyTooLarge`` past ``limit`` (declared or streamed,
    nothing more is read), ``BodyTimeout`` when it does not arrive within ``seconds``."""
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            return await _receive_chunks(receive, limit)
    except TimeoutError:
        if not deadline.expired():
            raise
        raise BodyTimeout(
            f"The request body did not arrive within {seconds:g} s; send it without pausing"
        ) from None


async def _receive_chunks(receive: Receive, limit: int) -> bytes:
    body = b""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            raise _too_large(limit)
        if not message.get("more_body", False):
            break
        chunks.append(body)
    return b"".join([*chunks, body]) if chunks else body


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"The request body is larger than {limit} bytes; send a smaller one")


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


async def oauth_approve(request: Request) -> Response:
    """``GET /oauth/approve``: send the browser to HipChat, where the user approves the add-on."""
    try:
        target = await _addon(request).approvals.authorize_url(request.query_params)
    except AddonError as exc:
        return _approval_failed(request, exc)
    return RedirectResponse(target, status_code=302)


async def oauth_callback(request: Request) -> Response:
    """``GET /oauth/callback``: HipChat sends the user back with a code (docs/protocol.md)."""
    addon = _addon(request)
    try:
        await addon.approvals.complete(request.query_params)
    except AddonError as exc:
        return _approval_failed(request, exc)
    name = addon.capabilities.name
    return _approval_page(200, "Approved", f"{name} may now act for you in HipChat.")


def _approval_failed(request: Request, exc: AddonError) -> Response:
    status = exc.http_status
    if status >= 500:
        log.error("%s: %s", type(exc).__name__, exc, extra={"path": request.url.path})
    return _approval_page(status, "Approval failed", str(exc))


def _approval_page(status: int, title: str, message: str) -> HTMLResponse:
    page = _APPROVAL.format(title=html.escape(title), message=html.escape(message))
    # The URL holds a code and a state: keep it out of caches and Referer headers.
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    return HTMLResponse(page, status_code=status, headers=headers)


class WebhookEndpoint:
    """``POST /webhook/{event}``: a JWT-signed webhook from HipChat, dispatched to integrations.

    A plain ASGI endpoint (no ``Request`` object on the hot path), handed the three collaborators
    it uses. In order, each step only going down: the JWT's claims (no store, no body) → the
    body, capped while it streams, parsed once into a ``wire.Webhook`` → the handlers it selects
    → one store round trip (installation read, ``jti`` and message-id claims) and the signature
    → the body's cross-checks → dispatch. A refusal raises an ``AddonError``, which
    ``exception_handlers`` answers like any other route's.
    """

    def __init__(
        self,
        verifier: Verifier,
        dispatcher: Dispatcher,
        *,
        now: Callable[[], float],
        read_timeout: float,
    ) -> None:
        self._verifier = verifier
        self._dispatcher = dispatcher
        self._now = now
        self._read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id, reply = await self.handle(scope, receive)
        headers = [(b"x-request-id", request_id.encode())]
        if reply is None:
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        body = orjson.dumps(reply)
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def handle(self, scope: Scope, receive: Receive) -> tuple[str, dict[str, object] | None]:
        """Verify, parse and dispatch one webhook: its request id and reply (None: 204)."""
        now = self._now()
        headers = _headers(scope)
        token = self._verifier.read(extract_jwt(headers, _query(scope)), now=now)
        declared = headers.get("content-length", "")
        raw = await _receive_body(declared, receive, WEBHOOK_MAX_BYTES, self._read_timeout)
        hook = parse_webhook(load_body(raw))
        if hook.event != scope["path_params"]["event"]:
            raise RequestError("The body's event does not match the webhook URL it was sent to")
        dispatcher = self._dispatcher
        plan = dispatcher.plan(hook)
        request_id = dispatcher.request_id()
        message_id = hook.message_id if plan.has_work else None
        accepted = await self._verifier.accept(
            token, now=now, message_id=message_id, stamp=request_id
        )
        claims, installation = accepted.claims, accepted.installation
        signed = Signed(claims.sub, claims.room_id)
        try:
            check_webhook_claims(claims, hook.body, installation)
            room = dispatcher.room_of(hook, installation, signed)
        except AddonError:
            await self._verifier.release(accepted)  # refused: it did not run
            raise
        if not accepted.is_first_delivery:
            log.info("Message delivered again; it already ran", extra={"oauth_id": claims.iss})
            return request_id, None
        reply = await dispatcher.run(
            plan, installation, request_id=request_id, signed=signed, room=room
        )
        return request_id, reply


def _headers(scope: Scope) -> dict[str, str]:
    # The two headers the webhook reads, lower-cased by the server (ASGI); latin-1 per ASGI.
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in (b"authorization", b"content-length")
    }


def _query(scope: Scope) -> dict[str, str]:
    raw: bytes = scope.get("query_string", b"")
    return dict(parse_qsl(raw.decode("latin-1"))) if raw else {}


def _reply(reply: dict[str, object] | None, headers: dict[str, str]) -> Response:
    if reply is None:
        return Response(status_code=204, headers=headers)
    return Response(orjson.dumps(reply), headers=headers, media_type="application/json")


async def unsigned_command(request: Request) -> Response:
    """``POST /commands`` with ``Authorization: Bearer <ADDON_COMMANDS_SECRET>``: opt-in, for
    deployments that posted unsigned commands."""
    addon = _addon(request)
    expected = addon.settings.commands_secret
    if expected is None:
        raise NotFound("Unsigned commands are off; set ADDON_COMMANDS_SECRET to turn them on")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not _same_secret(given.strip(), expected.value):
        raise AuthError("POST /commands needs 'Authorization: Bearer <ADDON_COMMANDS_SECRET>'")
    return await _unsigned_dispatch(addon, request)


async def unsigned_command_in_path(request: Request) -> Response:
    """``POST /commands/{secret}``: the deprecated form, with the secret in the path."""
    addon = _addon(request)
    expected = addon.settings.commands_secret
    given = request.path_params["secret"]
    if expected is None or not _same_secret(given, expected.value):
        raise NotFound("Not Found")
    if not getattr(request.app.state, "warned_commands_path", False):
        request.app.state.warned_commands_path = True
        log.warning(
            "POST /commands/<secret> is deprecated and will be removed in the next release; "
            "POST /commands with 'Authorization: Bearer <ADDON_COMMANDS_SECRET>' instead"
        )
    return await _unsigned_dispatch(addon, request)


def _same_secret(given: str, expected: str) -> bool:
    # Constant-time comparison: the secret must not leak through timing.
    return hmac.compare_digest(given.encode(), expected.encode())


async def _unsigned_dispatch(addon: Addon, request: Request) -> Response:
    body = await read_json(request, limit=WEBHOOK_MAX_BYTES)
    oauth_id = body.get("oauth_client_id") if isinstance(body, dict) else None
    installation = await addon.installations.require(oauth_id_from(oauth_id))
    return await _dispatch(addon, body, installation)


async def _dispatch(addon: Addon, body: Any, installation: Installation) -> Response:
    request_id = addon.dispatcher.request_id()
    reply = await addon.dispatcher.handle(body, installation, request_id=request_id)
    return _reply(reply, {"X-Request-Id": request_id})


def _require_admin(request: Request) -> Addon:
    addon = _addon(request)
    expected = addon.settings.admin_token
    if expected is None:
        raise NotFound("The admin API is off; set ADDON_ADMIN_TOKEN to turn it on")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # Constant-time comparison: the token must not leak through timing.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), expected.value.encode()
    ):
        raise AuthError("The admin API needs 'Authorization: Bearer <ADDON_ADMIN_TOKEN>'")
    return addon


async def storage_export(request: Request) -> Response:
    """``GET /admin/storage``: every integration's storage as JSON."""
    addon = _require_admin(request)
    text = await export_storage(addon.store, addon.keys)
    return Response(text, media_type="application/json")


async def storage_import(request: Request) -> Response:
    """``PUT /admin/storage``: write an exported document back."""
    addon = _require_admin(request)
    count = await import_storage(addon.store, addon.keys, await read_json(request))
    return JSONResponse({"imported": count})


async def storage_erase(request: Request) -> Response:
    """``DELETE /admin/storage``: erase every integration's storage."""
    addon = _require_admin(request)
    return JSONResponse({"erased": await erase_storage(addon.store, addon.keys)})


def routes(webhook: WebhookEndpoint) -> list[BaseRoute]:
    """Every endpoint of the add-on (``create_app`` builds ``webhook`` with its collaborators)."""
    return [
        Route("/webhook/{event}", webhook, methods=["POST"]),
        Route("/", landing, methods=["GET"]),
        Route(DESCRIPTOR_PATH, descriptor, methods=["GET"]),
        Route("/install", install_trigger, methods=["GET"]),
        Route("/installable", install, methods=["POST"]),
        Route("/installable/update", update, methods=["POST"]),
        Route("/installable/installed", installed, methods=["GET"]),
        Route("/installable/updated", updated, methods=["GET"]),
        Route("/installable/uninstalled", uninstalled, methods=["GET"]),
        Route("/installable/{oauth_id}", uninstall, methods=["DELETE"]),
        Route(APPROVE_PATH, oauth_approve, methods=["GET"]),
        Route(CALLBACK_PATH, oauth_callback, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/commands", unsigned_command, methods=["POST"]),
        Route("/commands/{secret}", unsigned_command_in_path, methods=["POST"]),
        Route("/admin/storage", storage_export, methods=["GET"]),
        Route("/admin/storage", storage_import, methods=["PUT"]),
        Route("/admin/storage", storage_erase, methods=["DELETE"]),
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

_APPROVAL = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:3em auto;line-height:1.5}}</style></head>
<body><h1>{title}</h1><p>{message}</p><p>You can close this tab.</p></body></html>
"""

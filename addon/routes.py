"""HTTP endpoints. The only module (with ``app.py``) that knows Starlette.

Errors raised by the core are ``AddonError`` subclasses; ``exception_handlers`` answers each with
the status its class carries (``http_status``) and a JSON body ``{"error": {"status", "type",
"message"}}``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import html
import logging
import types
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import BaseRoute, Route
from starlette.types import Message, Receive, Scope, Send

from addon.admin import erase_storage, export_storage, import_storage, load_storage, save_storage
from addon.approval import APPROVE_PATH, CALLBACK_PATH, ApprovalService
from addon.descriptor import DESCRIPTOR_PATH, Capabilities
from addon.dispatch import Dispatcher, Signed
from addon.errors import (
    AddonError,
    AuthError,
    BodyTimeout,
    BodyTooLarge,
    ClientDisconnected,
    NotFound,
    RequestError,
    ShuttingDown,
)
from addon.hosts import HostPolicy
from addon.installations import InstallationRepository, InstallPayload, oauth_id_from
from addon.integrations import Integration
from addon.jsonvalue import loads as load_json
from addon.jwt_auth import check_webhook_claims, extract_jwt
from addon.landing import LANDING_HEADERS, LandingPage, render_landing
from addon.lifecycle import Lifecycle
from addon.metrics import CONTENT_TYPE, Metrics
from addon.settings import Settings
from addon.store import Keys, Store
from addon.verification import Verifier
from addon.wire import load_body, parse_webhook

__all__ = [
    "WEBHOOK_ROUTE",
    "Admin",
    "Approvals",
    "Endpoints",
    "Installs",
    "Operations",
    "Pages",
    "UnsignedCommands",
    "WebhookEndpoint",
    "error_response",
    "exception_handlers",
    "read_json",
    "routes",
]

log = logging.getLogger("addon.routes")

#: The webhook route's path template (``AddonApp`` takes it without the router).
WEBHOOK_ROUTE = "/webhook/{event}"
MAX_BODY_BYTES = 1 << 20
MAX_COMMAND_BYTES = 1024  # the older server's POST / bodies: "save FILE", "load FILE", "erase"
_LEGACY_USAGE = "The body is not 'save FILE', 'load FILE' or 'erase'; send one of those"
# HipChat's message text is at most 10,000 characters: 64 KiB holds any webhook it sends.
WEBHOOK_MAX_BYTES = 64 << 10


def error_response(status: int, kind: str, message: str) -> JSONResponse:
    """The JSON error body every refusal uses."""
    headers = {"Retry-After": "5"} if status == 503 else None
    body = {"error": {"status": status, "type": kind, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


async def _addon_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AddonError)
    return _refusal(exc, request.url.path)


def _refusal(exc: AddonError, path: str) -> Response:
    status = exc.http_status
    if status >= 500:
        log.error("%s: %s", type(exc).__name__, exc, extra={"path": path})
    return error_response(status, type(exc).__name__, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    response = error_response(exc.status_code, "HTTPException", str(exc.detail))
    if exc.headers:  # a 405's Allow
        response.headers.update(exc.headers)
    return response


def exception_handlers() -> dict[Any, Any]:
    """Starlette's ``exception_handlers`` for the add-on."""
    return {AddonError: _addon_error, HTTPException: _http_error}


async def read_json(request: Request, *, seconds: float, limit: int = MAX_BODY_BYTES) -> Any:
    """The request's JSON body, read within ``seconds`` (the settings' ``read_timeout``).

    ``BodyTooLarge`` when ``Content-Length`` or the bytes streamed so far pass ``limit`` (nothing
    more is read), ``BodyTimeout`` when the body is too slow, ``RequestError`` when it is not JSON
    or nested deeper than ``jsonvalue.MAX_DEPTH`` (64).
    """
    return load_json(await _read_body(request, limit, seconds))


async def _read_body(request: Request, limit: int, seconds: float) -> bytes:
    return await _receive_body(
        request.headers.get("content-length", ""), request.receive, limit, seconds
    )


async def _receive_body(declared: str, receive: Receive, limit: int, seconds: float) -> bytes:
    """The body from ASGI ``receive``: ``BodyTooLarge`` past ``limit`` (declared or streamed,
    nothing more is read), ``BodyTimeout`` when it does not arrive within ``seconds``.

    A small body has usually arrived with the headers; then ``receive()`` answers without
    waiting, and no timer is armed for it (``_first_message``).
    """
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    first, waiting = _first_message(receive)
    if first is not None and first["type"] == "http.request" and not first.get("more_body"):
        body: bytes = first.get("body", b"")
        if len(body) > limit:
            raise _too_large(limit)
        return body
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            if waiting is not None:
                first = await waiting
            assert first is not None
            return await _receive_chunks(first, receive, limit)
    except TimeoutError:
        if not deadline.expired():
            raise
        raise BodyTimeout(
            f"The request body did not arrive within {seconds:g} s; send it without pausing"
        ) from None


def _first_message(receive: Receive) -> tuple[Message | None, Awaitable[Message] | None]:
    """``receive()`` run up to its first wait: its message, or what to await for the rest."""
    steps = receive().__await__()
    try:
        awaited = steps.send(None)
    except StopIteration as done:
        return done.value, None
    return None, _resumed(steps, awaited)


@types.coroutine
def _resumed(steps: Generator[Any, None, Message], awaited: Any) -> Generator[Any, Any, Message]:
    """Go on with ``steps`` (a started ``receive()``) in the current task, as the task would:
    hand it each future it waits on, then resume it, or throw in what the task throws
    (the read timeout's cancellation)."""
    while True:
        try:
            try:
                yield awaited
            except BaseException as exc:
                awaited = steps.throw(exc)
            else:
                awaited = steps.send(None)
        except StopIteration as done:
            message: Message = done.value
            return message


async def _receive_chunks(first: Message, receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    message = first
    while True:
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("The client went away before its request body was read")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"The request body is larger than {limit} bytes; send a smaller one")


class Pages:
    """``/``, the descriptor and the install trigger: what the add-on shows of itself."""

    def __init__(
        self,
        settings: Settings,
        capabilities: Capabilities,
        descriptor: dict[str, Any],
        hosts: HostPolicy,
        integrations: Sequence[Integration],
    ) -> None:
        self._settings, self._capabilities = settings, capabilities
        self._descriptor, self._hosts = descriptor, hosts
        self._integrations = list(integrations)

    async def descriptor(self, request: Request) -> Response:
        """``GET /atlassian-connect.json``: the capability descriptor."""
        return JSONResponse(self._descriptor, headers={"Access-Control-Allow-Origin": "*"})

    async def install_trigger(self, request: Request) -> Response:
        """``GET /install?hipchat=<server>[&room=<name>]``: redirect to HipChat's install page."""
        server = request.query_params.get("hipchat", "").strip()
        if server and "://" not in server:
            server = f"https://{server}"
        self._hosts.check(server, what="hipchat")
        parts = urlsplit(server)
        query = {"url": self._settings.url_for(DESCRIPTOR_PATH)}
        room = request.query_params.get("room", "").strip()
        if room:
            query["room"] = room
        target = f"{parts.scheme}://{parts.netloc}/addons/install?{urlencode(query)}"
        return RedirectResponse(target, status_code=302)

    async def landing(self, request: Request) -> Response:
        """``GET /``: what the add-on does (commands, UI extensions), and how to install it."""
        settings = self._settings
        page = LandingPage(
            capabilities=self._capabilities,
            descriptor=self._descriptor,
            descriptor_url=settings.url_for(DESCRIPTOR_PATH),
            integrations=self._integrations,
            hipchat_server=next((h for h in settings.hipchat_hosts if h.startswith("www.")), ""),
        )
        return HTMLResponse(render_landing(page), headers=LANDING_HEADERS)


class Installs:
    """The install, update and uninstall callbacks, server- and client-side."""

    def __init__(self, lifecycle: Lifecycle, *, read_timeout: float) -> None:
        self._lifecycle = lifecycle
        self._read_timeout = read_timeout

    async def install(self, request: Request) -> Response:
        """``POST /installable``: the server-side install callback."""
        payload = InstallPayload.from_json(await read_json(request, seconds=self._read_timeout))
        installation = await self._lifecycle.install(payload)
        return JSONResponse({"oauthId": installation.oauth_id, "installed": True})

    async def update(self, request: Request) -> Response:
        """``POST /installable/update``: the update callback; the oauth_id is kept."""
        payload = InstallPayload.from_json(await read_json(request, seconds=self._read_timeout))
        installation = await self._lifecycle.install(payload, update=True)
        return JSONResponse({"oauthId": installation.oauth_id, "updated": True})

    async def uninstall(self, request: Request) -> Response:
        """``DELETE /installable/{oauth_id}``: uninstall once HipChat revoked the client."""
        oauth_id = oauth_id_from(request.path_params["oauth_id"])
        await self._lifecycle.uninstall(oauth_id)
        return Response(status_code=204)

    async def installed(self, request: Request) -> Response:
        """``GET /installable/installed`` (client-side): fetch the installation, then redirect."""
        target = await self._lifecycle.install_from(request.query_params)
        return RedirectResponse(target, status_code=302)

    async def updated(self, request: Request) -> Response:
        """``GET /installable/updated`` (client-side re-install)."""
        target = await self._lifecycle.install_from(request.query_params, update=True)
        return RedirectResponse(target, status_code=302)

    async def uninstalled(self, request: Request) -> Response:
        """``GET /installable/uninstalled`` (client-side uninstall)."""
        target = await self._lifecycle.uninstall_from(request.query_params)
        return RedirectResponse(target, status_code=302)


class Operations:
    """``/healthz``, ``/readyz`` and ``/metrics``."""

    def __init__(
        self, store: Store, installations: InstallationRepository, metrics: Metrics
    ) -> None:
        self._store, self._installations, self._metrics = store, installations, metrics

    async def healthz(self, request: Request) -> Response:
        """``GET /healthz``: the process is up."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """``GET /readyz``: the store answers."""
        await self._store.ping()
        return JSONResponse({"status": "ready"})

    async def metrics(self, request: Request) -> Response:
        """``GET /metrics``: counters and histograms in the Prometheus text format."""
        text = self._metrics.render(await self._installations.count())
        return Response(text, media_type=CONTENT_TYPE)


class Approvals:
    """The user-token approval redirect and its callback."""

    def __init__(self, approvals: ApprovalService, *, name: str) -> None:
        self._approvals = approvals
        self._name = name

    async def approve(self, request: Request) -> Response:
        """``GET /oauth/approve``: send the browser to HipChat, where the user approves."""
        try:
            target = await self._approvals.authorize_url(request.query_params)
        except AddonError as exc:
            return _approval_failed(request, exc)
        return RedirectResponse(target, status_code=302)

    async def callback(self, request: Request) -> Response:
        """``GET /oauth/callback``: HipChat sends the user back with a code (docs/protocol.md)."""
        try:
            await self._approvals.complete(request.query_params)
        except AddonError as exc:
            return _approval_failed(request, exc)
        return _approval_page(200, "Approved", f"{self._name} may now act for you in HipChat.")


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
    → the body's cross-checks → dispatch. A refusal raises an ``AddonError``, answered as
    ``exception_handlers`` answer any other route's.
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
        """Verify, parse and dispatch one webhook; the dispatcher sends the response.

        A refusal (an ``AddonError``, always raised before any response) is answered here as
        ``exception_handlers`` answer other routes', so the app can call this endpoint without
        Starlette's middleware stack (``addon.app.AddonApp``).
        """
        respond = _Response(send)
        try:
            await self._handle(scope, receive, respond)
        except Exception as exc:
            if respond.sent:
                # The handler ran on past its response (in this task) and something failed
                # after: the sender has its answer, and this connection serves the next request.
                log.exception("Webhook work failed after its response was sent")
            elif isinstance(exc, AddonError):
                await _refusal(exc, scope["path"])(scope, receive, send)
            else:
                raise

    async def _handle(self, scope: Scope, receive: Receive, respond: _Response) -> None:
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
        request_id = respond.request_id = dispatcher.request_id()
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
            await respond(None)
            return
        try:
            await dispatcher.deliver(
                plan, installation, request_id=request_id, respond=respond, signed=signed, room=room
            )
        except ShuttingDown:
            await self._verifier.release(accepted)  # not run: HipChat's next delivery runs it
            raise


class _Response:
    """Sends a webhook's response once: 200 with the reply's JSON, or 204 when there is none."""

    __slots__ = ("_send", "request_id", "sent")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.request_id = ""
        self.sent = False

    async def __call__(self, reply: dict[str, object] | None) -> None:
        self.sent = True
        send = self._send
        headers = [(b"x-request-id", self.request_id.encode())]
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


class UnsignedCommands:
    """``POST /commands``: opt-in unsigned commands, for deployments that posted them."""

    def __init__(
        self,
        settings: Settings,
        installations: InstallationRepository,
        dispatcher: Dispatcher,
    ) -> None:
        self._secret = settings.commands_secret
        self._read_timeout = settings.read_timeout
        self._installations = installations
        self._dispatcher = dispatcher
        self._warned_path = False

    async def bearer(self, request: Request) -> Response:
        """``POST /commands`` with ``Authorization: Bearer <ADDON_COMMANDS_SECRET>``."""
        expected = self._secret
        if expected is None:
            raise NotFound("Unsigned commands are off; set ADDON_COMMANDS_SECRET to turn them on")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not _same_secret(given.strip(), expected.value):
            raise AuthError("POST /commands needs 'Authorization: Bearer <ADDON_COMMANDS_SECRET>'")
        return await self._dispatch(request)

    async def in_path(self, request: Request) -> Response:
        """``POST /commands/{secret}``: the deprecated form, with the secret in the path."""
        expected = self._secret
        given = request.path_params["secret"]
        if expected is None or not _same_secret(given, expected.value):
            raise NotFound("Not Found")
        if not self._warned_path:
            self._warned_path = True
            log.warning(
                "POST /commands/<secret> is deprecated and will be removed in the next release; "
                "POST /commands with 'Authorization: Bearer <ADDON_COMMANDS_SECRET>' instead"
            )
        return await self._dispatch(request)

    async def _dispatch(self, request: Request) -> Response:
        body = await read_json(request, seconds=self._read_timeout, limit=WEBHOOK_MAX_BYTES)
        oauth_id = body.get("oauth_client_id") if isinstance(body, dict) else None
        installation = await self._installations.require(oauth_id_from(oauth_id))
        request_id = self._dispatcher.request_id()
        reply = await self._dispatcher.handle(body, installation, request_id=request_id)
        return _reply(reply, {"X-Request-Id": request_id})


def _same_secret(given: str, expected: str) -> bool:
    # Constant-time comparison: the secret must not leak through timing.
    return hmac.compare_digest(given.encode(), expected.encode())


class Admin:
    """``/admin/storage``: export, import and erase every integration's storage."""

    def __init__(self, settings: Settings, store: Store, keys: Keys) -> None:
        self._token = settings.admin_token
        self._read_timeout = settings.read_timeout
        self._files = settings.storage_files_path
        self._store, self._keys = store, keys

    async def export(self, request: Request) -> Response:
        """``GET /admin/storage``: every integration's storage as JSON."""
        self._require_admin(request)
        text = await export_storage(self._store, self._keys)
        return Response(text, media_type="application/json")

    async def import_(self, request: Request) -> Response:
        """``PUT /admin/storage``: write an exported document back."""
        self._require_admin(request)
        document = await read_json(request, seconds=self._read_timeout)
        return JSONResponse({"imported": await import_storage(self._store, self._keys, document)})

    async def erase(self, request: Request) -> Response:
        """``DELETE /admin/storage``: erase every integration's storage."""
        self._require_admin(request)
        return JSONResponse({"erased": await erase_storage(self._store, self._keys)})

    async def legacy(self, request: Request) -> Response:
        """``POST /``: the older server's ``save FILE``, ``load FILE``, ``erase`` (admin only)."""
        self._require_admin(request)
        body = await _read_body(request, MAX_COMMAND_BYTES, self._read_timeout)
        store, keys, folder = self._store, self._keys, self._files
        match body.decode("utf-8", errors="replace").split():
            case ["save", name]:
                count = await save_storage(store, keys, folder, name)
                return JSONResponse({"saved": name, "entries": count})
            case ["load", name]:
                count = await load_storage(store, keys, folder, name)
                return JSONResponse({"loaded": name, "imported": count})
            case ["erase"]:
                return JSONResponse({"erased": await erase_storage(store, keys)})
        raise RequestError(_LEGACY_USAGE)

    def _require_admin(self, request: Request) -> None:
        expected = self._token
        if expected is None:
            raise NotFound("The admin API is off; set ADDON_ADMIN_TOKEN to turn it on")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # Constant-time comparison: the token must not leak through timing.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), expected.value.encode()
        ):
            raise AuthError("The admin API needs 'Authorization: Bearer <ADDON_ADMIN_TOKEN>'")


@dataclasses.dataclass(frozen=True)
class Endpoints:
    """Every endpoint group, each built by ``create_app`` with the services it uses."""

    webhook: WebhookEndpoint
    pages: Pages
    installs: Installs
    operations: Operations
    approvals: Approvals
    commands: UnsignedCommands
    admin: Admin


def routes(endpoints: Endpoints) -> list[BaseRoute]:
    """Every endpoint of the add-on."""
    e = endpoints
    return [
        Route(WEBHOOK_ROUTE, e.webhook, methods=["POST"]),
        Route("/", e.pages.landing, methods=["GET"]),
        Route(DESCRIPTOR_PATH, e.pages.descriptor, methods=["GET"]),
        Route("/install", e.pages.install_trigger, methods=["GET"]),
        Route("/installable", e.installs.install, methods=["POST"]),
        Route("/installable/update", e.installs.update, methods=["POST"]),
        Route("/installable/installed", e.installs.installed, methods=["GET"]),
        Route("/installable/updated", e.installs.updated, methods=["GET"]),
        Route("/installable/uninstalled", e.installs.uninstalled, methods=["GET"]),
        Route("/installable/{oauth_id}", e.installs.uninstall, methods=["DELETE"]),
        Route(APPROVE_PATH, e.approvals.approve, methods=["GET"]),
        Route(CALLBACK_PATH, e.approvals.callback, methods=["GET"]),
        Route("/healthz", e.operations.healthz, methods=["GET"]),
        Route("/readyz", e.operations.readyz, methods=["GET"]),
        Route("/metrics", e.operations.metrics, methods=["GET"]),
        Route("/commands", e.commands.bearer, methods=["POST"]),
        Route("/commands/{secret}", e.commands.in_path, methods=["POST"]),
        Route("/admin/storage", e.admin.export, methods=["GET"]),
        Route("/admin/storage", e.admin.import_, methods=["PUT"]),
        Route("/admin/storage", e.admin.erase, methods=["DELETE"]),
        Route("/", e.admin.legacy, methods=["POST"]),
    ]


_APPROVAL = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:3em auto;line-height:1.5}}</style></head>
<body><h1>{title}</h1><p>{message}</p><p>You can close this tab.</p></body></html>
"""

"""The UI endpoints: glance data, pages, page APIs, settings and static files (Starlette edge).

Every ``/ui/...`` request is verified like a webhook (``verification.Verifier.accept``: one store
round trip reads the installation and claims the ``jti``, accepted once; then the signature).
Pages may call back with the JWT the add-on minted for them (``aud`` names the integration;
reusable until it expires, 15 minutes at most).
A refused token gets 401: a small HTML page for pages, JSON for glances and APIs.
"""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from addon.errors import AddonError, AuthError, Forbidden, NotFound
from addon.hosts import HostPolicy
from addon.installations import Installation
from addon.routes import error_response, read_json
from addon.ui.auth import UIAuth, Verified
from addon.ui.config import ConfigStore
from addon.ui.extensions import Extension
from addon.ui.origins import frame_ancestors, hipchat_js_base, is_hipchat_origin, origin_of
from addon.ui.request import UIRequest, mint_page_token
from addon.ui.static import read_static
from addon.ui.values import Glance, Page
from addon.verification import Verifier

if TYPE_CHECKING:
    from starlette.templating import Jinja2Templates

    from addon.context import Runtime
    from addon.integrations import Integration

__all__ = ["UIService", "ui_routes"]

log = logging.getLogger("addon.ui")
_BUILTIN_TEMPLATES = Path(__file__).parent / "templates"
_PAGE_KINDS = {"panel": "webPanel", "dialog": "dialog", "page": "externalPage"}


class UIService:
    """What the UI endpoints share: the integrations by key, their templates, the settings store."""

    def __init__(
        self,
        integrations: Sequence[Integration],
        *,
        runtime: Runtime,
        hosts: HostPolicy,
        verifier: Verifier,
        now: Callable[[], float],
    ) -> None:
        self.integrations = {i.key: i for i in integrations}
        self.runtime, self.settings, self.hosts, self.now = runtime, runtime.settings, hosts, now
        self.configs = ConfigStore(runtime.store, runtime.keys)
        self.auth = UIAuth(verifier, now=now)
        self._templates: dict[str, Jinja2Templates] = {}

    def integration(self, key: str) -> Integration:
        """The loaded integration ``key``; ``NotFound`` when there is none."""
        found = self.integrations.get(key)
        if found is None:
            raise NotFound(f"No integration {key!r}")
        return found

    def templates(self, integration: Integration) -> Jinja2Templates:
        """The integration's templates, with the built-in ``_addon/`` ones (autoescaped)."""
        if integration.key not in self._templates:
            # Loaded on the first page, not at start-up: jinja2 is most of addon.ui's import time.
            import jinja2
            from starlette.templating import Jinja2Templates

            loader = jinja2.ChoiceLoader(
                [
                    jinja2.FileSystemLoader(integration.templates_dir),
                    jinja2.FileSystemLoader(_BUILTIN_TEMPLATES),
                ]
            )
            env = jinja2.Environment(loader=loader, autoescape=True)
            self._templates[integration.key] = Jinja2Templates(env=env)
        return self._templates[integration.key]

    async def verify(self, request: Request, integration: str, *, page_token_ok: bool) -> Verified:
        """Verify the request's JWT (``addon.ui.auth``); ``AuthError`` when it does not."""
        query = request.query_params
        return await self.auth.verify(
            request.headers, query, integration, page_token_ok=page_token_ok
        )

    def ui_request(
        self, integration: Integration, verified: Verified, request: Request, body: Any = None
    ) -> UIRequest:
        """The ``UIRequest`` a handler gets."""
        claims = verified.claims
        flags = verified.flags
        extra = {"oauth_id": claims.iss, "room_id": claims.room_id, "integration": integration.key}
        logger = logging.getLogger(f"addon.integrations.{integration.key}")
        return UIRequest(
            integration=integration,
            installation=verified.installation,
            room_id=claims.room_id,
            user_id=claims.sub,
            user_tz=claims.user_tz,
            is_admin=any(flags.values()) if flags else None,
            query={k: v for k, v in request.query_params.items() if k != "signed_request"},
            body=body,
            runtime=self.runtime,
            configs=self.configs,
            static_url=self.settings.url_for(f"/static/{integration.key}"),
            log=logging.LoggerAdapter(logger, extra),
        )


def _extension(integration: Integration, kind: str, key: str) -> Extension:
    extension = integration.extension(kind, key)
    if extension is None or extension.handler is None:
        raise NotFound(f"Integration {integration.key!r} has no {kind} {key!r}")
    return extension


# -- glances -------------------------------------------------------------------------------


def _cors(
    request: Request, installation: Installation | None, service: UIService
) -> dict[str, str]:
    origin = request.headers.get("origin")
    headers = {"Vary": "Origin"}
    if not origin:
        return headers
    addon_origin = origin_of(service.settings.base_url) or ""
    if installation is not None:
        allowed = is_hipchat_origin(origin, installation, addon_origin)
    else:  # a preflight carries no JWT: any HipChat host of the allow-list, or the add-on
        allowed = _listed_origin(origin, service) or origin.lower() == addon_origin
    if allowed:
        headers["Access-Control-Allow-Origin"] = origin
    return headers


def _listed_origin(origin: str, service: UIService) -> bool:
    try:
        parts = urlsplit(origin)
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme, 0)
        return bool(parts.hostname) and service.hosts.is_allowed(
            parts.hostname or "", port, parts.scheme
        )
    except ValueError:
        return False


async def glance(service: UIService, request: Request) -> Response:
    """``GET /ui/{integration}/glance/{key}``: glance data JSON, with CORS.

    The JSON is in docs/protocol.md, Glance data.
    """
    integration = service.integration(request.path_params["integration"])
    extension = _extension(integration, "glance", request.path_params["key"])
    if request.method == "OPTIONS":
        headers = _cors(request, None, service) | {
            "Access-Control-Allow-Methods": "GET, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Max-Age": "600",
        }
        return Response(status_code=204, headers=headers)
    try:
        verified = await service.verify(request, integration.key, page_token_ok=False)
    except AuthError as exc:
        response = error_response(401, type(exc).__name__, str(exc))
        response.headers.update(_cors(request, None, service))
        return response
    assert extension.handler is not None
    result = await extension.handler(service.ui_request(integration, verified, request))
    if not isinstance(result, Glance):
        raise TypeError(f"Glance {extension.key!r} of {integration.key!r} must return a Glance")
    static_url = service.settings.url_for(f"/static/{integration.key}")
    body = result.to_json(lambda p: p if "://" in p else f"{static_url}/{p.lstrip('/')}")
    headers = _cors(request, verified.installation, service) | {"Cache-Control": "no-store"}
    return JSONResponse(body, headers=headers)


# -- pages ----------------------------------------------------------------------------------


def _page_headers(installation: Installation | None) -> dict[str, str]:
    ancestors = frame_ancestors(installation) if installation else "'none'"
    return {
        "Content-Security-Policy": f"frame-ancestors {ancestors}",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",  # the URL carries signed_request
        "Cache-Control": "no-store",
    }


def _error_page(status: int, title: str, message: str) -> HTMLResponse:
    body = _ERROR.format(title=html.escape(title), message=html.escape(message))
    return HTMLResponse(body, status_code=status, headers=_page_headers(None))


async def page(service: UIService, request: Request) -> Response:
    """``GET /ui/{integration}/{panel|dialog|page}/{key}`` and ``.../configure``: a page."""
    try:
        integration = service.integration(request.path_params["integration"])
        kind = _PAGE_KINDS.get(request.path_params.get("kind", "configure"), "")
        kind = "configurable" if "kind" not in request.path_params else kind
        key = request.path_params.get("key", "configure")
        extension = _extension(integration, kind, key)
        verified = await service.verify(request, integration.key, page_token_ok=False)
        ui_request = service.ui_request(integration, verified, request)
        assert extension.handler is not None
        result = await extension.handler(ui_request)
    except AuthError as exc:
        return _error_page(401, "Not signed in", str(exc))
    except NotFound as exc:
        return _error_page(404, "Not found", str(exc))
    except Forbidden as exc:
        return _error_page(403, "Forbidden", str(exc))
    if not isinstance(result, Page):
        raise TypeError(f"{extension.kind} {key!r} of {integration.key!r} must return a Page")
    return await _render(request, service, ui_request, result, verified)


async def _render(
    request: Request, service: UIService, ui_request: UIRequest, result: Page, verified: Verified
) -> Response:
    integration, installation = ui_request.integration, verified.installation
    token = mint_page_token(
        installation,
        verified.claims,
        integration.key,
        flags=verified.flags,
        now=service.now(),
    )
    context: dict[str, Any] = {
        "ui": ui_request,
        "title": result.title or integration.name,
        "addon_token": token,
        "api_base": service.settings.url_for(f"/ui/{integration.key}"),
        "static_url": ui_request.static_url,
        "hipchat_js": hipchat_js_base(installation),
        "settings_fields": integration.settings_fields,
        "config": await ui_request.config() if integration.settings_fields else {},
        **result.context,
    }
    templates = service.templates(integration)  # jinja2 is loaded from here on
    import jinja2

    try:
        return templates.TemplateResponse(
            request, result.template, context, headers=_page_headers(installation)
        )
    except jinja2.TemplateNotFound as exc:
        raise TypeError(f"Integration {integration.key!r}: no template {exc.name!r}") from exc


# -- page APIs and settings ------------------------------------------------------------------


async def api(service: UIService, request: Request) -> Response:
    """``/ui/{integration}/api/{path}``: a page calling its integration with its JWT."""
    try:
        integration = service.integration(request.path_params["integration"])
        path = "/" + request.path_params["path"]
        route = integration.apis.get((request.method, path))
        if route is None:
            raise NotFound(f"Integration {integration.key!r} has no API {request.method} {path}")
        verified = await service.verify(request, integration.key, page_token_ok=True)
        body = await _body(request, service.settings.read_timeout)
        result = await route.handler(service.ui_request(integration, verified, request, body))
    except AddonError as exc:
        return _json_error(exc)
    if result is None:
        return Response(status_code=204, headers={"Cache-Control": "no-store"})
    return JSONResponse(result, headers={"Cache-Control": "no-store"})


async def settings(service: UIService, request: Request) -> Response:
    """``GET``/``POST /ui/{integration}/config``: read or save the installation's settings."""
    try:
        integration = service.integration(request.path_params["integration"])
        if not integration.settings_fields:
            raise NotFound(f"Integration {integration.key!r} declares no settings")
        verified = await service.verify(request, integration.key, page_token_ok=True)
        fields, oauth_id = integration.settings_fields, verified.installation.oauth_id
        if request.method == "GET":
            values = await service.configs.load(oauth_id, integration.key, fields)
        else:
            _require_admin(verified)
            submitted = await read_json(request, seconds=service.settings.read_timeout)
            values = await service.configs.save(oauth_id, integration.key, fields, submitted)
            log.info("settings saved", extra={"oauth_id": oauth_id, "integration": integration.key})
    except AddonError as exc:
        return _json_error(exc)
    return JSONResponse(values, headers={"Cache-Control": "no-store"})


def _require_admin(verified: Verified) -> None:
    # HipChat may say whether the user administers the group or owns the room ([inferred]);
    # when it says nothing, anyone who can open the configuration page may save.
    flags = verified.flags
    if not flags:
        return
    room_installation = verified.installation.room_id is not None
    if flags.get("user_is_admin") or (room_installation and flags.get("user_is_room_owner")):
        return
    raise Forbidden("Only an administrator (or the room's owner) can change these settings")


async def _body(request: Request, read_timeout: float) -> Any:
    if request.method in ("GET", "DELETE"):
        return None
    if not request.headers.get("content-length") and "transfer-encoding" not in request.headers:
        return None
    return await read_json(request, seconds=read_timeout)


def _json_error(exc: AddonError) -> Response:
    if isinstance(exc, AuthError | Forbidden | NotFound):
        return error_response(exc.http_status, type(exc).__name__, str(exc))
    raise exc


# -- static files ---------------------------------------------------------------------------


async def static(service: UIService, request: Request) -> Response:
    """``GET /static/{integration}/{path}``: a file of the integration's ``static/`` folder."""
    integration = service.integration(request.path_params["integration"])
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    prefix = f"/static/{integration.key}/".encode()
    if not raw.startswith(prefix):
        raise NotFound("No such static file")
    found = read_static(integration.static_dir, raw[len(prefix) :].decode("latin-1"))
    headers = {
        "ETag": found.etag,
        "Cache-Control": "public, max-age=3600",
        "X-Content-Type-Options": "nosniff",
    }
    if found.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)


def ui_routes(service: UIService) -> list[BaseRoute]:
    """The UI endpoints, each handed ``service`` (``create_app`` adds them after the core ones)."""
    any_method = ["GET", "POST", "PUT", "PATCH", "DELETE"]

    def bound(endpoint: Callable[[UIService, Request], Awaitable[Response]]) -> Any:
        return functools.partial(endpoint, service)

    return [
        Route("/ui/{integration}/glance/{key}", bound(glance), methods=["GET", "OPTIONS"]),
        Route("/ui/{integration}/api/{path:path}", bound(api), methods=any_method),
        Route("/ui/{integration}/config", bound(settings), methods=["GET", "POST"]),
        Route("/ui/{integration}/configure", bound(page), methods=["GET"]),
        Route("/ui/{integration}/{kind}/{key}", bound(page), methods=["GET"]),
        Route("/static/{integration}/{path:path}", bound(static), methods=["GET", "HEAD"]),
    ]


_ERROR = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font:14px/1.5 -apple-system,'Segoe UI',sans-serif;margin:2em;color:#333}}</style>
</head><body><h1>{title}</h1><p>{message}</p>
<p>Open this page from HipChat again to get a fresh link.</p></body></html>
"""

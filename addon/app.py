"""``create_app``: the Starlette application and the resources it owns.

Resources (store, HTTP client, services) are built eagerly and cheaply (nothing connects until
first use), so tests can drive the app over ``httpx.ASGITransport``, which runs no lifespan. The
lifespan only closes them again when the server stops.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from addon.approval import ApprovalService
from addon.descriptor import (
    Capabilities,
    build_descriptor,
    load_capabilities,
    validate_descriptor,
)
from addon.dispatch import Dispatcher
from addon.hosts import HostPolicy, PinnedTransport
from addon.installations import InstallationRepository
from addon.integrations import Integration, help_integration, load_integrations
from addon.lifecycle import Lifecycle
from addon.metrics import Metrics, TimedStore
from addon.routes import (
    WEBHOOK_ROUTE,
    Admin,
    Approvals,
    Endpoints,
    Installs,
    Operations,
    Pages,
    UnsignedCommands,
    WebhookEndpoint,
    exception_handlers,
    routes,
)
from addon.runtime import AddonRuntime
from addon.seal import Sealer
from addon.seed import parse_static_tokens
from addon.settings import Settings, settings_from_process
from addon.store import Keys, Store, open_store
from addon.tokens import TokenService
from addon.ui.descriptor import descriptor_entries
from addon.ui.routes import UIService, ui_routes
from addon.verification import Verifier

__all__ = ["Addon", "AddonApp", "create_app", "create_app_from_environ"]

log = logging.getLogger("addon")

#: Allocations between collections of the youngest generation in a serving process.
GC_THRESHOLD = 50_000
_WEBHOOK_PREFIX = WEBHOOK_ROUTE.removesuffix("{event}")
_WEBHOOK_PREFIX_LENGTH = len(_WEBHOOK_PREFIX)


@dataclasses.dataclass
class Addon:
    """Everything a running add-on holds; ``create_app`` hands each route the parts it uses."""

    settings: Settings
    capabilities: Capabilities
    descriptor: dict[str, Any]
    store: Store
    keys: Keys
    sealer: Sealer
    http: httpx.AsyncClient
    hosts: HostPolicy
    installations: InstallationRepository
    tokens: TokenService
    lifecycle: Lifecycle
    approvals: ApprovalService
    integrations: list[Integration]
    runtime: AddonRuntime
    dispatcher: Dispatcher
    verifier: Verifier
    now: Callable[[], float]
    metrics: Metrics = dataclasses.field(default_factory=Metrics)

    async def aclose(self, grace: float | None = None) -> None:
        """Let in-flight commands finish (``grace`` s at most), then close HTTP client and store."""
        try:
            await self.dispatcher.drain(grace)
        finally:
            await self.http.aclose()
            await self.store.close()


def load_all_integrations(settings: Settings) -> list[Integration]:
    """The integrations in ``ADDON_INTEGRATIONS_PATH``, plus the built-in ``/help``."""
    loaded = load_integrations(settings.integrations_path)
    return [*loaded, help_integration(loaded)]


def build_addon_descriptor(
    settings: Settings,
    capabilities: Capabilities | None = None,
    integrations: Sequence[Integration] | None = None,
) -> dict[str, Any]:
    """The validated descriptor for ``settings`` (raises ``ConfigError`` when it is broken)."""
    capabilities = capabilities or load_capabilities(settings.capabilities_path)
    if integrations is None:
        integrations = load_all_integrations(settings)
    webhooks = [spec for integration in integrations for spec in integration.webhooks()]
    scopes = {scope for integration in integrations for scope in integration.scopes}
    ui = descriptor_entries(integrations, settings.url_for, capabilities.extensions)
    descriptor = build_descriptor(settings, capabilities, webhooks, scopes, ui)
    validate_descriptor(descriptor)
    return descriptor


def build_addon(
    settings: Settings,
    *,
    store: Store | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    capabilities: Capabilities | None = None,
    integrations: Sequence[Integration] | None = None,
    now: Callable[[], float] = time.time,
    raise_errors: bool = False,
) -> Addon:
    """Build the add-on's resources from ``settings``; ``store``/``transport``/``now`` are seams.

    ``raise_errors`` (tests) lets a handler's exception out of the webhook request, and a late
    one out of ``Addon.aclose``, instead of a red notice in the room.
    """
    capabilities = capabilities or load_capabilities(settings.capabilities_path)
    parse_static_tokens(settings.static_tokens)  # ConfigError at start-up, not on a command
    if integrations is None:
        integrations = load_all_integrations(settings)
    integrations = list(integrations)
    descriptor = build_addon_descriptor(settings, capabilities, integrations)
    scopes = tuple(descriptor["capabilities"]["hipchatApiConsumer"]["scopes"])
    metrics = Metrics(settings.metrics_dir)
    store = TimedStore(
        store or open_store(settings.store_url, password=settings.store_password), metrics
    )
    keys = Keys(capabilities.key)
    sealer = Sealer(settings.secret_key)
    hosts = HostPolicy(settings.hipchat_hosts)
    http = httpx.AsyncClient(
        # Production connects only to addresses the allow-list checked; tests pass their own.
        transport=transport or PinnedTransport(hosts),
        timeout=httpx.Timeout(settings.http_timeout),
        follow_redirects=False,
        headers={"User-Agent": "hipchat-addon"},
    )
    installations = InstallationRepository(store, keys, sealer)
    tokens = TokenService(store, keys, sealer, http, now=now, metrics=metrics)
    lifecycle = Lifecycle(
        repository=installations,
        tokens=tokens,
        http=http,
        hosts=hosts,
        capabilities=capabilities,
        scopes=scopes,
        max_document_bytes=settings.max_document_bytes,
        timeout=settings.http_timeout,
        now=now,
    )
    approvals = ApprovalService(tokens, installations, base_url=settings.base_url, now=now)
    runtime = AddonRuntime(
        settings=settings, store=store, keys=keys, tokens=tokens, http=http, user_tokens=approvals
    )
    return Addon(
        settings=settings,
        capabilities=capabilities,
        descriptor=descriptor,
        store=store,
        keys=keys,
        sealer=sealer,
        http=http,
        hosts=hosts,
        installations=installations,
        tokens=tokens,
        lifecycle=lifecycle,
        approvals=approvals,
        integrations=integrations,
        runtime=runtime,
        dispatcher=Dispatcher(integrations, runtime, raise_errors=raise_errors, metrics=metrics),
        verifier=Verifier(store, keys, sealer, leeway=settings.jwt_leeway),
        now=now,
        metrics=metrics,
    )


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    capabilities: Capabilities | None = None,
    integrations: Sequence[Integration] | None = None,
    now: Callable[[], float] = time.time,
    raise_errors: bool = False,
) -> Starlette:
    """The add-on as an ASGI app (``raise_errors``: see ``build_addon``).

    ```python
    app = create_app(Settings.from_environ(os.environ))
    ```
    """
    addon = build_addon(
        settings,
        store=store,
        transport=transport,
        capabilities=capabilities,
        integrations=integrations,
        now=now,
        raise_errors=raise_errors,
    )
    if settings.any_host_allowed:
        log.warning("ADDON_HIPCHAT_HOSTS is '*': any public host is accepted (development only)")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await addon.aclose()

    ui = UIService(
        addon.integrations,
        runtime=addon.runtime,
        hosts=addon.hosts,
        verifier=addon.verifier,
        now=addon.now,
    )
    endpoints = endpoints_of(addon)
    app = AddonApp(
        routes=[*routes(endpoints), *ui_routes(ui)],
        exception_handlers=exception_handlers(),
        middleware=[Middleware(MetricsMiddleware, metrics=addon.metrics)],
        lifespan=lifespan,
    )
    app.webhook = MetricsMiddleware(endpoints.webhook, addon.metrics, route=WEBHOOK_ROUTE)
    app.state.addon = addon  # for tools and tests; no route reads it
    return app


class AddonApp(Starlette):
    """The add-on's Starlette app, which takes ``POST /webhook/{event}`` straight to its endpoint.

    Webhooks are the hot path: Starlette's middleware layers and its router cost about a fifth
    of a webhook's CPU. The endpoint answers its own refusals as ``exception_handlers`` would
    (``WebhookEndpoint``), and ``webhook`` times it for ``/metrics`` as every route is timed;
    an unexpected error goes up to the server, which answers 500 as Starlette would. Any
    other request (or a webhook under a ``root_path``) takes the usual way.
    """

    webhook: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.webhook is not None and scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            event = path[_WEBHOOK_PREFIX_LENGTH:]
            if path.startswith(_WEBHOOK_PREFIX) and event and "/" not in event:
                if not scope.get("root_path"):
                    scope["app"] = self
                    scope["path_params"] = {"event": event}
                    await self.webhook(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


def endpoints_of(addon: Addon) -> Endpoints:
    """Each endpoint group, handed only the services it uses."""
    settings = addon.settings
    return Endpoints(
        webhook=WebhookEndpoint(
            addon.verifier, addon.dispatcher, now=addon.now, read_timeout=settings.read_timeout
        ),
        pages=Pages(
            settings, addon.capabilities, addon.descriptor, addon.hosts, addon.integrations
        ),
        installs=Installs(addon.lifecycle, read_timeout=settings.read_timeout),
        operations=Operations(addon.store, addon.installations, addon.metrics),
        approvals=Approvals(addon.approvals, name=addon.capabilities.name),
        commands=UnsignedCommands(settings, addon.installations, addon.dispatcher),
        admin=Admin(settings, addon.store, addon.keys),
    )


class MetricsMiddleware:
    """Times every HTTP response by route template (never the raw path) and status.

    Pure ASGI (no ``BaseHTTPMiddleware`` task and body streaming): per request, one closure to
    see the status, two clock reads and the observation. The time is taken when the response's
    last body message is sent: a webhook whose handler outlives the reply window answers at the
    window, and its handler's run is the handler histogram's, not the request's.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, *, route: str | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.route = route  # the one route template ``app`` serves, when the router is not used

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status, observed = 500, False
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status, observed
            await send(message)
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                observed = True
                self._observe(scope, status, started)

        try:
            await self.app(scope, receive, sending)
        finally:
            if not observed:  # no complete response (an error escaped, or the client left)
                self._observe(scope, status, started)

    def _observe(self, scope: Scope, status: int, started: float) -> None:
        path = self.route
        if path is None:
            path = getattr(scope.get("route"), "path", "unmatched")
        self.metrics.observe_http(path, status, time.perf_counter() - started)


def create_app_from_environ() -> Starlette:
    """The app configured from this process's environment (uvicorn's ``--factory`` entry point).

    This is the serving process, so its garbage collector is tuned for a server: what start-up
    built (modules, integrations, the app) is frozen out of every later collection, and the
    youngest generation is collected every ``GC_THRESHOLD`` allocations rather than 700, so a
    request's short-lived objects rarely trigger a collection at all.
    """
    app = create_app(settings_from_process())
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 50, 100)
    return app

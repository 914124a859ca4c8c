"""Prometheus metrics (prometheus-client), for ``GET /metrics``.

What is measured, and where:
- ``addon_http_requests_total`` / ``addon_http_request_duration_seconds``: every HTTP response
  by route template (never the raw path) and status, from ``MetricsMiddleware`` (pure ASGI);
- ``addon_handler_duration_seconds``: each integration handler, by integration and outcome;
- ``addon_token_request_duration_seconds``: HipChat's token endpoint, by grant type and outcome;
- ``addon_store_operation_duration_seconds``: each store call, by operation (``TimedStore``);
- ``addon_installations``: a gauge counted by the store at scrape time (one SCARD, no SMEMBERS).

Labels are route templates, statuses, integration keys, grant types, operations and outcomes:
never an oauth_id, a token or request text, so the series stay few and hold no secret.

Under ``hipchat-addon serve --workers N`` every worker writes its values to files in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multi-process mode, which the CLI sets up), and
``render`` sums them with ``MultiProcessCollector``: any worker's ``/metrics`` shows the total.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from addon.errors import ApprovalRequired, ClientGone
from addon.store import MapUpdate, Store

__all__ = ["CONTENT_TYPE", "Metrics", "TimedStore"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Webhooks answer within the reply window (2 s by default); handlers may run for 30 s.
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_HANDLER_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)
_GRANTS = frozenset({"client_credentials", "authorization_code", "refresh_token", "password"})


class Metrics:
    """The add-on's metrics, in a registry of its own (one per app; tests build many apps)."""

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=False)
        registry = self.registry
        self.http_requests = Counter(
            "addon_http_requests",
            "HTTP responses, by route template and status.",
            ["route", "status"],
            registry=registry,
        )
        self.http_latency = Histogram(
            "addon_http_request_duration_seconds",
            "Time to the end of each HTTP response, by route template.",
            ["route"],
            buckets=_HTTP_BUCKETS,
            registry=registry,
        )
        self.handler_latency = Histogram(
            "addon_handler_duration_seconds",
            "Integration handler run time, by integration and outcome.",
            ["integration", "outcome"],
            buckets=_HANDLER_BUCKETS,
            registry=registry,
        )
        self.token_latency = Histogram(
            "addon_token_request_duration_seconds",
            "Requests to HipChat's token endpoint, by grant type and outcome.",
            ["grant", "outcome"],
            buckets=_HTTP_BUCKETS,
            registry=registry,
        )
        self.store_latency = Histogram(
            "addon_store_operation_duration_seconds",
            "Store calls, by operation.",
            ["operation"],
            buckets=_STORE_BUCKETS,
            registry=registry,
        )
        # Children by label values, so the hot path skips prometheus-client's label checks.
        self._http: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._handlers: dict[tuple[str, str], Any] = {}

    def observe_http(self, route: str, status: int, seconds: float) -> None:
        """One HTTP response on ``route`` (a template) with ``status``, ``seconds`` long."""
        children = self._http.get((route, status))
        if children is None:
            children = self._http[(route, status)] = (
                self.http_requests.labels(route, str(status)),
                self.http_latency.labels(route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def observe_handler(self, integration: str, outcome: str, seconds: float) -> None:
        """One handler of ``integration`` finished with ``outcome`` after ``seconds``."""
        child = self._handlers.get((integration, outcome))
        if child is None:
            child = self._handlers[(integration, outcome)] = self.handler_latency.labels(
                integration, outcome
            )
        child.observe(seconds)

    @contextmanager
    def token_request(self, grant: str) -> Iterator[None]:
        """Time one token-endpoint request of ``grant`` (outcome from what it raises)."""
        outcome = "error"
        started = time.perf_counter()
        try:
            yield
            outcome = "ok"
        except (ClientGone, ApprovalRequired):
            outcome = "refused"
            raise
        finally:
            label = grant if grant in _GRANTS else "other"
            self.token_latency.labels(label, outcome).observe(time.perf_counter() - started)

    def render(self, installations: int) -> bytes:
        """Every metric in the Prometheus text format, summed over workers in multi-process mode."""
        if self.multiprocess_dir is None:
            text = generate_latest(self.registry)
        else:
            merged = CollectorRegistry(auto_describe=False)
            MultiProcessCollector(merged, path=str(self.multiprocess_dir))  # type: ignore[no-untyped-call]
            text = generate_latest(merged)
        return text + _installations(installations)


class _Installations(Collector):
    """The installations gauge, counted at scrape time from the shared store.

    Every worker and replica reports the same value, so it needs no multi-process files (a
    ``Gauge`` would write some, and then appear twice).
    """

    def __init__(self, count: int) -> None:
        self.count = count

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "addon_installations", "Installations in the store.", value=self.count
        )


def _installations(count: int) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Installations(count))
    return generate_latest(registry)


class TimedStore:
    """A ``Store`` that times every call into ``addon_store_operation_duration_seconds``.

    Each operation's histogram child is looked up once, here, so a call costs two
    ``perf_counter`` reads and one observation. Attributes it does not define (``url``, a
    backend's own extras) are the wrapped store's.
    """

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.store = store
        self.url = store.url
        self._timers = {
            name: metrics.store_latency.labels(name)
            for name in (
                "get get_many put put_if_absent put_many_if_absent read_and_claim take delete "
                "delete_if_equal ttl add_member remove_member members count_members put_guarded "
                "map_get map_all map_update move scan ping"
            ).split()
        }

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    @contextmanager
    def _timed(self, operation: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self._timers[operation].observe(time.perf_counter() - started)

    async def get(self, key: str) -> str | None:
        with self._timed("get"):
            return await self.store.get(key)

    async def get_many(self, keys: list[str]) -> list[str | None]:
        with self._timed("get_many"):
            return await self.store.get_many(keys)

    async def put(self, key: str, value: str, *, ttl: float | None = None) -> None:
        with self._timed("put"):
            await self.store.put(key, value, ttl=ttl)

    async def put_if_absent(self, key: str, value: str, *, ttl: float | None = None) -> bool:
        with self._timed("put_if_absent"):
            return await self.store.put_if_absent(key, value, ttl=ttl)

    async def put_many_if_absent(
        self, entries: Sequence[tuple[str, str, float | None]]
    ) -> list[bool]:
        with self._timed("put_many_if_absent"):
            return await self.store.put_many_if_absent(entries)

    async def read_and_claim(
        self, key: str, claims: Sequence[tuple[str, str, float | None]]
    ) -> tuple[str | None, list[bool]]:
        with self._timed("read_and_claim"):
            return await self.store.read_and_claim(key, claims)

    async def take(self, key: str) -> str | None:
        with self._timed("take"):
            return await self.store.take(key)

    async def delete(self, *keys: str) -> int:
        with self._timed("delete"):
            return await self.store.delete(*keys)

    async def delete_if_equal(self, key: str, value: str) -> bool:
        with self._timed("delete_if_equal"):
            return await self.store.delete_if_equal(key, value)

    async def ttl(self, key: str) -> float | None:
        with self._timed("ttl"):
            return await self.store.ttl(key)

    async def add_member(self, key: str, member: str) -> None:
        with self._timed("add_member"):
            await self.store.add_member(key, member)

    async def remove_member(self, key: str, member: str) -> None:
        with self._timed("remove_member"):
            await self.store.remove_member(key, member)

    async def members(self, key: str) -> set[str]:
        with self._timed("members"):
            return await self.store.members(key)

    async def count_members(self, key: str) -> int:
        with self._timed("count_members"):
            return await self.store.count_members(key)

    async def put_guarded(
        self, key: str, value: str, *, guard: str, ttl: float | None = None
    ) -> bool:
        with self._timed("put_guarded"):
            return await self.store.put_guarded(key, value, guard=guard, ttl=ttl)

    async def map_get(self, key: str, field: str) -> str | None:
        with self._timed("map_get"):
            return await self.store.map_get(key, field)

    async def map_all(self, key: str) -> dict[str, str]:
        with self._timed("map_all"):
            return await self.store.map_all(key)

    async def map_update(
        self,
        key: str,
        changes: Mapping[str, str | None],
        *,
        guard: str | None = None,
        quota: int | None = None,
        replace: bool = False,
    ) -> MapUpdate:
        with self._timed("map_update"):
            return await self.store.map_update(
                key, changes, guard=guard, quota=quota, replace=replace
            )

    async def move(self, old: str, new: str) -> bool:
        with self._timed("move"):
            return await self.store.move(old, new)

    async def scan(self, prefix: str) -> list[str]:
        with self._timed("scan"):
            return await self.store.scan(prefix)

    async def ping(self) -> None:
        with self._timed("ping"):
            await self.store.ping()

    async def close(self) -> None:
        await self.store.close()

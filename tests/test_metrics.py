"""``GET /metrics``: prometheus-client output with the latency histograms, no secrets in labels,
and one total across ``hipchat-addon serve --workers 2``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from starlette.applications import Starlette

from addon import Integration, RoomMessage
from addon.app import Addon, create_app
from addon.errors import ClientGone, TokenError
from addon.metrics import Metrics
from addon.settings import Settings
from addon.store import Store
from addon.testing import FakeHipChat
from tests.helpers import REPO

pytestmark = pytest.mark.anyio

HISTOGRAMS = (
    "addon_http_request_duration_seconds",
    "addon_handler_duration_seconds",
    "addon_token_request_duration_seconds",
    "addon_store_operation_duration_seconds",
)


def families(text: str) -> dict[str, tuple[str, list[Sample]]]:
    """Each metric family of ``text`` by name: (type, samples)."""
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    return sum(found)


def _probe() -> Integration:
    probe = Integration(key="probe", scopes=["send_notification"])

    @probe.command("fine")
    async def fine(message: RoomMessage) -> None:
        await message.reply(f"fine {message.args}")

    @probe.command("broken")
    async def broken(message: RoomMessage) -> None:
        raise RuntimeError("the handler is broken")

    return probe


@pytest.fixture
async def probed(
    settings: Settings, store: Store, hipchat: FakeHipChat
) -> AsyncIterator[httpx.AsyncClient]:
    app: Starlette = create_app(
        settings, store=store, transport=hipchat.transport(), integrations=[_probe()]
    )
    async with hipchat.connect(app, settings.base_url) as client:
        yield client
    addon: Addon = app.state.addon
    await addon.aclose(grace=5)


async def test_metrics_parse_and_hold_the_histograms(
    probed: httpx.AsyncClient, hipchat: FakeHipChat
) -> None:
    room = await hipchat.install(probed, room_id=1)
    await hipchat.send_message(room, "/fine secret-looking-text")
    await hipchat.send_message(room, "/broken")
    await probed.get(f"/no/such/{room.oauth_id}")
    response = await probed.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = families(response.text)
    for name in HISTOGRAMS:
        assert found[name][0] == "histogram", name
    _, http = found["addon_http_request_duration_seconds"]
    assert value(http, "addon_http_request_duration_seconds_count", route="/installable") == 1
    _, requests = found["addon_http_requests"]
    assert value(requests, "addon_http_requests_total", route="unmatched", status="404") == 1
    _, handlers = found["addon_handler_duration_seconds"]
    count = "addon_handler_duration_seconds_count"
    assert value(handlers, count, integration="probe", outcome="ok") == 1
    assert value(handlers, count, integration="probe", outcome="error") == 1
    _, tokens = found["addon_token_request_duration_seconds"]
    count = "addon_token_request_duration_seconds_count"
    assert value(tokens, count, grant="client_credentials", outcome="ok") >= 1
    _, store = found["addon_store_operation_duration_seconds"]
    assert value(store, "addon_store_operation_duration_seconds_count", operation="get") >= 1
    # The webhooks' one store round trip each, the hot path's only store operation.
    claims = value(
        store, "addon_store_operation_duration_seconds_count", operation="read_and_claim"
    )
    assert claims == 2
    assert found["addon_installations"] == ("gauge", found["addon_installations"][1])
    assert value(found["addon_installations"][1], "addon_installations") == 1
    labels = {v for f in found.values() for s in f[1] for v in s.labels.values()}
    secrets = (room.oauth_id, room.oauth_secret, "secret-looking-text", "/no/such")
    assert not [v for v in labels for secret in secrets if secret in v], labels


def test_token_requests_are_timed_by_grant_and_outcome() -> None:
    metrics = Metrics()
    with metrics.token_request("client_credentials"):
        pass
    with pytest.raises(ClientGone), metrics.token_request("client_credentials"):
        raise ClientGone("the token endpoint refused the client credentials")
    with pytest.raises(TokenError), metrics.token_request("made-up grant"):
        raise TokenError("the token endpoint answered 500")
    _, samples = families(metrics.render(0).decode())["addon_token_request_duration_seconds"]
    count = "addon_token_request_duration_seconds_count"
    assert value(samples, count, grant="client_credentials", outcome="ok") == 1
    assert value(samples, count, grant="client_credentials", outcome="refused") == 1
    assert value(samples, count, grant="other", outcome="error") == 1


# -- several worker processes --------------------------------------------------------------------


@pytest.fixture
def two_workers(tmp_path: Path, unused_port: int, redis_url: str) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "TMPDIR")}
    env |= {
        "TMPDIR": str(tmp_path),  # where the CLI makes (and removes) the multi-process dir
        "ADDON_BASE_URL": f"http://127.0.0.1:{unused_port}",
        "ADDON_STORE_URL": redis_url,  # several workers need a shared store
        "ADDON_CAPABILITIES_PATH": str(REPO / "capabilities"),
        "ADDON_INTEGRATIONS_PATH": str(REPO / "integrations"),
        "ADDON_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "addon", "serve", "--workers", "2"]
    server = subprocess.Popen([*command, "--port", str(unused_port)], cwd=tmp_path, env=env)
    try:
        yield f"http://127.0.0.1:{unused_port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith("hipchat-addon-metrics-")]
    assert not leftovers, "serve leaves no multi-process directory behind"


async def _get(url: str) -> httpx.Response:
    # A new connection each time, so that the kernel hands it to either worker.
    async with httpx.AsyncClient(headers={"Connection": "close"}) as client:
        return await client.get(url)


async def _wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if (await _get(f"{url}/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the add-on did not start"
            await asyncio.sleep(0.1)


@pytest.mark.e2e
async def test_workers_report_one_total(two_workers: str, tmp_path: Path) -> None:
    await _wait_until_up(two_workers)
    sent = 40
    for _ in range(sent):
        assert (await _get(f"{two_workers}/readyz")).status_code == 200
    # A response is observed just after it is sent: wait for the last one, once.
    deadline = time.monotonic() + 10
    while await _scrape_readyz(two_workers) != sent:
        assert time.monotonic() < deadline, "the requests never added up"
        await asyncio.sleep(0.05)
    totals = [await _scrape_readyz(two_workers) for _ in range(10)]
    assert totals == [sent] * len(totals), f"scrapes disagree: {totals}"
    assert len(counter_files(tmp_path)) == 2, "both workers counted requests"


def counter_files(tmp_path: Path) -> list[Path]:
    """The per-process counter files in the multi-process directory the CLI made."""
    [directory] = tmp_path.glob("hipchat-addon-metrics-*")
    return list(directory.glob("counter_*.db"))


async def _scrape_readyz(url: str) -> float:
    text = (await _get(f"{url}/metrics")).text
    _, samples = families(text)["addon_http_requests"]
    return value(samples, "addon_http_requests_total", route="/readyz", status="200")

"""Operational endpoints, the landing page, and JSON errors for everything else."""

from __future__ import annotations

import httpx
import pytest

from addon.app import create_app
from addon.settings import Settings
from addon.store import Store
from addon.store.redis import RedisStore
from addon.testing import FakeHipChat
from tests.helpers import make_app

pytestmark = pytest.mark.anyio


async def test_healthz_and_readyz(addon: httpx.AsyncClient) -> None:
    assert (await addon.get("/healthz")).json() == {"status": "ok"}
    assert (await addon.get("/readyz")).json() == {"status": "ready"}


async def test_readyz_is_503_with_retry_after_when_the_store_is_down(
    settings: Settings, hipchat: FakeHipChat, unused_port: int
) -> None:
    store = RedisStore(f"redis://127.0.0.1:{unused_port}/0")
    app = make_app(settings, store, hipchat)
    async with hipchat.connect(app, settings.base_url) as addon:
        ready = await addon.get("/readyz")
        install = await addon.post("/installable", json=hipchat.payload(hipchat.new_client()))
    await app.state.addon.aclose()
    assert ready.status_code == 503
    assert ready.headers["retry-after"] == "5"
    assert ready.json()["error"]["type"] == "StoreUnavailable"
    assert install.status_code == 503


async def test_the_landing_page_offers_the_descriptor_and_the_install_form(
    addon: httpx.AsyncClient, settings: Settings
) -> None:
    page = await addon.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "HipChat Add-on" in page.text
    assert f"{settings.base_url}/atlassian-connect.json" in page.text
    assert '<form action="/install"' in page.text


async def test_the_descriptor_is_served_with_its_own_url(
    addon: httpx.AsyncClient, settings: Settings
) -> None:
    descriptor = (await addon.get("/atlassian-connect.json")).json()
    assert descriptor["links"]["self"] == f"{settings.base_url}/atlassian-connect.json"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nowhere", 404), ("PUT", "/installable", 405), ("GET", "/installable", 405)],
)
async def test_unknown_routes_get_json_errors(
    addon: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    response = await addon.request(method, path)
    assert response.status_code == status
    assert response.json()["error"]["status"] == status


@pytest.mark.parametrize("path", ["/installable", "/webhook/room_message"])
async def test_a_wrong_method_is_told_the_allowed_ones(addon: httpx.AsyncClient, path: str) -> None:
    response = await addon.get(path)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"  # RFC 9110: a 405 names the methods allowed
    assert response.json()["error"]["status"] == 405


async def test_metrics_count_requests_by_route_template(
    addon: httpx.AsyncClient, hipchat: FakeHipChat
) -> None:
    installed = await hipchat.install(addon, room_id=1)
    await addon.delete(f"/installable/{installed.oauth_id}")  # refused: still live
    text = (await addon.get("/metrics")).text
    assert 'addon_http_requests_total{route="/installable",status="200"} 1' in text
    assert 'addon_http_requests_total{route="/installable/{oauth_id}",status="403"} 1' in text
    assert "addon_installations 1" in text
    assert installed.oauth_id not in text


async def test_an_app_with_no_integrations_declares_no_webhooks(
    settings: Settings, hipchat: FakeHipChat, sqlite_store: Store
) -> None:
    app = create_app(settings, store=sqlite_store, transport=hipchat.transport(), integrations=[])
    async with hipchat.connect(app, settings.base_url) as addon:
        descriptor = await hipchat.descriptor(addon)
    await app.state.addon.aclose()
    assert "webhook" not in descriptor["capabilities"]

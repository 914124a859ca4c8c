"""The installation lifecycle against the fake HipChat, on Redis and on SQLite."""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.applications import Starlette

from addon.app import Addon
from addon.descriptor import load_capabilities
from addon.settings import Settings
from addon.store import Store
from addon.testing import FakeHipChat, FakeHipChatError
from tests.helpers import REPO, make_app, store_snapshot

pytestmark = pytest.mark.anyio


def addon_of(app: Starlette) -> Addon:
    addon: Addon = app.state.addon
    return addon


async def test_install_stores_the_urls_of_the_capabilities_document(
    app: Starlette, addon: httpx.AsyncClient, hipchat: FakeHipChat
) -> None:
    installed = await hipchat.install(addon, room_id=42, group_id=7)

    assert installed.response.status_code == 200
    stored = await addon_of(app).installations.require(installed.oauth_id)
    assert stored.token_url == hipchat.token_url
    assert stored.api_url == hipchat.api_url
    assert stored.authorization_url == f"{hipchat.base_url}/users/authorize"
    assert stored.capabilities_url == hipchat.capabilities_url
    assert (stored.room_id, stored.group_id) == (42, 7)
    assert stored.oauth_secret.value == installed.oauth_secret
    assert stored.scopes == ("send_notification",)
    assert await addon_of(app).installations.oauth_ids() == {installed.oauth_id}
    # The credentials were checked with one client_credentials grant, whose token is kept.
    assert len(hipchat.token_requests("client_credentials")) == 1


async def test_a_repeated_install_is_idempotent(
    app: Starlette, addon: httpx.AsyncClient, hipchat: FakeHipChat, store: Store
) -> None:
    installed = await hipchat.install(addon, room_id=1)
    before = await store_snapshot(store)

    again = await addon.post(
        "/installable", json=hipchat.payload(hipchat.clients[installed.oauth_id])
    )

    assert again.status_code == 200
    after = await store_snapshot(store)
    assert after.keys() == before.keys()
    stored = await addon_of(app).installations.require(installed.oauth_id)
    assert (
        stored.installed_at
        == (await addon_of(app).installations.require(installed.oauth_id)).installed_at
    )


async def test_update_keeps_the_oauth_id_and_refreshes_the_data(
    app: Starlette, addon: httpx.AsyncClient, hipchat: FakeHipChat
) -> None:
    installed = await hipchat.install(addon, room_id=1)
    first = await addon_of(app).installations.require(installed.oauth_id)
    hipchat.capabilities_document["capabilities"]["hipchatApiProvider"]["url"] = (
        f"{hipchat.base_url}/v2/moved/"
    )

    response = await hipchat.update(addon, installed)

    assert response.status_code == 200
    assert response.json()["oauthId"] == installed.oauth_id
    updated = await addon_of(app).installations.require(installed.oauth_id)
    assert updated.api_url == f"{hipchat.base_url}/v2/moved/"
    assert updated.installed_at == first.installed_at
    assert await addon_of(app).installations.oauth_ids() == {installed.oauth_id}


async def test_a_delete_for_a_live_client_changes_nothing(
    addon: httpx.AsyncClient, hipchat: FakeHipChat, store: Store
) -> None:
    installed = await hipchat.install(addon, room_id=1)
    before = await store_snapshot(store)

    response = await addon.delete(f"/installable/{installed.oauth_id}")

    assert response.status_code == 403
    assert "still holds valid credentials" in response.json()["error"]["message"]
    assert await store_snapshot(store) == before


async def test_uninstall_leaves_no_key_of_the_installation(
    app: Starlette, addon: httpx.AsyncClient, hipchat: FakeHipChat, store: Store
) -> None:
    keep = await hipchat.install(addon, room_id=2)
    gone = await hipchat.install(addon, room_id=1)
    keys = addon_of(app).keys
    await store.put(keys.storage(gone.oauth_id, "remember"), "{}")
    await store.put(keys.user_token(gone.oauth_id, "5"), "{}")
    await store.put(keys.oauth_state(f"{gone.oauth_id}~abc"), "{}", ttl=60)
    await store.put(keys.storage(keep.oauth_id, "remember"), "{}")

    response = await hipchat.uninstall(addon, gone)

    assert response.status_code == 204
    remaining = await store.scan(keys.prefix + ":")
    assert remaining, "the other installation must still be there"
    assert not [key for key in remaining if gone.oauth_id in key]
    assert gone.oauth_id not in await store.members(keys.installations())
    assert await addon_of(app).installations.get(keep.oauth_id) is not None
    assert keys.storage(keep.oauth_id, "remember") in remaining


async def test_uninstall_of_an_unknown_oauth_id_is_204(addon: httpx.AsyncClient) -> None:
    response = await addon.delete("/installable/never-installed")
    assert response.status_code == 204


@pytest.mark.parametrize("flow", ["client"])
async def test_client_side_install_and_uninstall(
    store: Store, hipchat: FakeHipChat, settings: Settings, flow: str
) -> None:
    client_settings = dataclasses.replace(settings, install_flow=flow)
    app = make_app(client_settings, store, hipchat)
    async with hipchat.connect(app, settings.base_url) as addon:
        descriptor = await hipchat.descriptor(addon)
        assert "installedUrl" in descriptor["capabilities"]["installable"]
        installed = await hipchat.install(addon, room_id=3)
        assert installed.response.status_code == 302
        assert installed.response.headers["location"] == f"{hipchat.base_url}/addons/done"
        assert await addon_of(app).installations.get(installed.oauth_id) is not None

        assert (await hipchat.update(addon, installed)).status_code == 302
        response = await hipchat.uninstall(addon, installed)

        assert response.status_code == 302
        assert await addon_of(app).installations.get(installed.oauth_id) is None
        assert not [k for k in await store.scan("") if installed.oauth_id in k]
    await addon_of(app).http.aclose()


async def test_installable_url_is_fetched_exactly_once(
    store: Store, hipchat: FakeHipChat, settings: Settings
) -> None:
    app = make_app(dataclasses.replace(settings, install_flow="client"), store, hipchat)
    async with hipchat.connect(app, settings.base_url) as addon:
        await hipchat.install(addon, room_id=3)
    await addon_of(app).http.aclose()
    fetched = [c for c in hipchat.calls if c.path.startswith("/v2/addon/installable/")]
    assert len(fetched) == 1


async def test_install_trigger_redirects_to_the_hipchat_server(
    addon: httpx.AsyncClient, settings: Settings
) -> None:
    response = await addon.get("/install", params={"hipchat": "hipchat.test", "room": "Dev Room"})

    assert response.status_code == 302
    target = urlsplit(response.headers["location"])
    assert (target.scheme, target.netloc, target.path) == (
        "https",
        "hipchat.test",
        "/addons/install",
    )
    assert parse_qs(target.query) == {
        "url": [f"{settings.base_url}/atlassian-connect.json"],
        "room": ["Dev Room"],
    }


@pytest.mark.parametrize(
    "server", ["evil.example", "https://169.254.169.254", "javascript:alert(1)", ""]
)
async def test_install_trigger_refuses_servers_off_the_allow_list(
    addon: httpx.AsyncClient, server: str
) -> None:
    response = await addon.get("/install", params={"hipchat": server})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "HostNotAllowed"


async def test_a_room_install_is_refused_when_allow_room_is_false(
    store: Store, hipchat: FakeHipChat, settings: Settings
) -> None:
    capabilities = dataclasses.replace(load_capabilities(REPO / "capabilities"), allow_room=False)
    app = make_app(settings, store, hipchat, capabilities=capabilities)
    async with hipchat.connect(app, settings.base_url) as addon:
        with pytest.raises(FakeHipChatError) as refused:
            await hipchat.install(addon, room_id=3)
        assert refused.value.response is not None
        assert refused.value.response.status_code == 400
        assert "allowRoom" in refused.value.response.json()["error"]["message"]
        assert await store.scan("") == []
        assert (await hipchat.install(addon)).response.status_code == 200
    await addon_of(app).http.aclose()


async def test_uninstall_does_not_touch_an_installation_whose_id_extends_it(
    app: Starlette, addon: httpx.AsyncClient, hipchat: FakeHipChat, store: Store
) -> None:
    short = await hipchat.install(addon, room_id=1, oauth_id="abc")
    longer = await hipchat.install(addon, room_id=2, oauth_id="abc-x")
    keys = addon_of(app).keys
    for installed in (short, longer):
        await store.put(keys.oauth_state(f"{installed.oauth_id}~state"), "{}", ttl=60)
        await store.put(keys.storage(installed.oauth_id, "remember"), "{}")

    assert (await hipchat.uninstall(addon, short)).status_code == 204

    left = set(await store.scan(keys.prefix + ":"))
    assert keys.oauth_state("abc-x~state") in left
    assert keys.storage("abc-x", "remember") in left
    assert keys.installation("abc-x") in left
    assert not {k for k in left if ":abc:" in k or k.endswith(":abc") or ":abc~" in k}


async def test_a_reinstall_clears_the_client_gone_marker(
    app: Starlette, addon: httpx.AsyncClient, hipchat: FakeHipChat, store: Store
) -> None:
    installed = await hipchat.install(addon, room_id=1)
    keys = addon_of(app).keys
    await store.put(keys.client_gone(installed.oauth_id), "1")
    assert (await hipchat.update(addon, installed)).status_code == 200
    assert await store.get(keys.client_gone(installed.oauth_id)) is None

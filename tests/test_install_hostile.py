"""Hostile and broken installs: each gets a 4xx with a JSON error body, and nothing is stored."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pytest

from addon.app import create_app
from addon.hosts import HostPolicy, PinnedTransport, Resolver
from addon.settings import Settings
from addon.store import Store
from addon.testing import FakeHipChat
from tests.helpers import free_port, make_app, served, store_snapshot

pytestmark = pytest.mark.anyio

Payload = Callable[[FakeHipChat], Any]


def good(hipchat: FakeHipChat, **changes: Any) -> dict[str, Any]:
    body = hipchat.payload(hipchat.new_client(room_id=1))
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


def at(url: str) -> Payload:
    return lambda h: good(h, capabilitiesUrl=url)


def wrong_secret(hipchat: FakeHipChat) -> dict[str, Any]:
    return good(hipchat, oauthSecret="not-the-secret-hipchat-issued")


BAD_PAYLOADS: list[tuple[str, Payload]] = [
    ("array", lambda h: [good(h)]),
    ("string", lambda h: "install me"),
    ("missing-oauthId", lambda h: good(h, oauthId=...)),
    ("missing-oauthSecret", lambda h: good(h, oauthSecret=...)),
    ("missing-capabilitiesUrl", lambda h: good(h, capabilitiesUrl=...)),
    ("oauthId-number", lambda h: good(h, oauthId=123)),
    ("oauthId-glob", lambda h: good(h, oauthId="abc*")),
    ("oauthId-path", lambda h: good(h, oauthId="../../etc")),
    ("secret-list", lambda h: good(h, oauthSecret=["x"])),
    ("roomId-text", lambda h: good(h, roomId="lobby")),
    ("roomId-bool", lambda h: good(h, roomId=True)),
    ("roomId-negative", lambda h: good(h, roomId=-1)),
    ("groupId-float", lambda h: good(h, groupId=1.5)),
    ("host-off-list", at("https://evil.example/v2/capabilities")),
    ("metadata-ip", at("http://169.254.169.254/latest/meta-data/")),
    ("loopback", at("http://127.0.0.1:6379/")),
    ("private", at("http://10.0.0.1/v2/capabilities")),
    ("userinfo", at("http://user:pw@hipchat.test/v2/capabilities")),
    ("scheme-file", at("file:///etc/passwd")),
    ("scheme-gopher", at("gopher://hipchat.test/")),
    ("not-a-url", at("::::")),
    ("self-mismatch", at("http://hipchat.test/v2/capabilities?x=1")),
    ("token-401", wrong_secret),
]


@pytest.mark.parametrize(
    "make_body", [b for _, b in BAD_PAYLOADS], ids=[i for i, _ in BAD_PAYLOADS]
)
async def test_bad_install_payloads_are_refused_and_store_nothing(
    addon: httpx.AsyncClient, hipchat: FakeHipChat, store: Store, make_body: Payload
) -> None:
    response = await addon.post("/installable", json=make_body(hipchat))

    assert 400 <= response.status_code < 500
    error = response.json()["error"]
    assert error["status"] == response.status_code and error["message"]
    assert await store_snapshot(store) == {}


async def test_malformed_json_is_refused(addon: httpx.AsyncClient, store: Store) -> None:
    response = await addon.post(
        "/installable", content=b'{"oauthId": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "The request body is not valid JSON"
    assert await store_snapshot(store) == {}


async def test_an_oversized_body_is_refused(addon: httpx.AsyncClient, store: Store) -> None:
    response = await addon.post("/installable", content=b"[" + b"1," * 600_000 + b"1]")
    assert response.status_code == 400
    assert await store_snapshot(store) == {}


def broken_document(kind: str, hipchat: FakeHipChat) -> None:
    if kind == "not-json":
        hipchat.capabilities_raw = b"<html>Welcome to HipChat</html>"
    elif kind == "too-large":
        hipchat.capabilities_raw = b'{"pad": "' + b"x" * 300_000 + b'"}'
    elif kind == "slow":
        hipchat.capabilities_delay = 5.0
    elif kind == "token-url-off-list":
        provider = hipchat.capabilities_document["capabilities"]["oauth2Provider"]
        provider["tokenUrl"] = "http://10.0.0.1/v2/oauth/token"
    elif kind == "api-url-missing":
        del hipchat.capabilities_document["capabilities"]["hipchatApiProvider"]
    elif kind == "self-missing":
        del hipchat.capabilities_document["links"]


@pytest.mark.parametrize(
    "kind",
    ["not-json", "too-large", "slow", "token-url-off-list", "api-url-missing", "self-missing"],
)
async def test_broken_capabilities_documents_are_refused(
    store: Store, hipchat: FakeHipChat, settings: Settings, kind: str
) -> None:
    app = make_app(dataclasses.replace(settings, http_timeout=0.3), store, hipchat)
    broken_document(kind, hipchat)
    async with hipchat.connect(app, settings.base_url) as addon:
        response = await addon.post("/installable", json=good(hipchat))
    await app.state.addon.http.aclose()

    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] in ("InstallRefused", "HostNotAllowed")
    assert await store_snapshot(store) == {}
    assert hipchat.token_requests() == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/caps",
        "http://[::1]/caps",
        "http://2130706433/",
        "http://localhost/x",
        "http://169.254.169.254/",
    ],
)
async def test_star_allow_list_still_refuses_internal_addresses(
    store: Store, hipchat: FakeHipChat, settings: Settings, url: str
) -> None:
    app = make_app(dataclasses.replace(settings, hipchat_hosts=("*",)), store, hipchat)
    async with hipchat.connect(app, settings.base_url) as addon:
        response = await addon.post("/installable", json=good(hipchat, capabilitiesUrl=url))
    await app.state.addon.http.aclose()
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "HostNotAllowed"


CLIENT_SIDE_QUERIES: dict[str, dict[str, str | None]] = {
    "redirect-off-list": {"redirect_url": "https://evil.example/phish"},
    "redirect-missing": {"redirect_url": None},
    "redirect-javascript": {"redirect_url": "javascript:alert(1)"},
    "installable-off-list": {"installable_url": "https://evil.example/data"},
    "installable-internal": {"installable_url": "http://169.254.169.254/latest"},
    "installable-missing": {"installable_url": None},
}


@pytest.mark.parametrize("path", ["/installable/installed", "/installable/uninstalled"])
@pytest.mark.parametrize("case", list(CLIENT_SIDE_QUERIES))
async def test_client_side_urls_off_the_allow_list_are_refused_before_any_fetch(
    addon: httpx.AsyncClient, hipchat: FakeHipChat, store: Store, path: str, case: str
) -> None:
    client = hipchat.new_client(room_id=1)
    query: dict[str, str | None] = {
        "installable_url": hipchat.installable_url(client),
        "redirect_url": f"{hipchat.base_url}/addons/done",
    }
    query.update(CLIENT_SIDE_QUERIES[case])
    response = await addon.get(path, params={k: v for k, v in query.items() if v is not None})

    assert response.status_code == 400
    assert "location" not in response.headers
    assert response.json()["error"]["type"] == "HostNotAllowed"
    assert hipchat.calls == []
    assert await store_snapshot(store) == {}


async def test_a_used_installable_url_cannot_install_again(
    addon: httpx.AsyncClient, hipchat: FakeHipChat, store: Store
) -> None:
    client = hipchat.new_client(room_id=1)
    query = {
        "installable_url": hipchat.installable_url(client),
        "redirect_url": f"{hipchat.base_url}/addons/done",
    }
    assert (await addon.get("/installable/installed", params=query)).status_code == 302
    hipchat.revoke(client.oauth_id)
    await addon.delete(f"/installable/{client.oauth_id}")

    replay = await addon.get("/installable/installed", params=query)

    assert replay.status_code == 400
    assert await store_snapshot(store) == {}


@pytest.mark.parametrize(
    "url",
    [
        "http://hipchat.test/v2/capabilities\x00",
        "http://hipchat.test/v2/capa bilities",
        "http://hipchat.test/v2/capabilities\n",
        "http://hipchat.test/\x7f",
        "http://hipchat.test/v2/\tcapabilities",
    ],
    ids=["nul", "space", "newline", "del", "tab"],
)
async def test_urls_with_control_characters_are_refused(
    addon: httpx.AsyncClient, hipchat: FakeHipChat, store: Store, url: str
) -> None:
    response = await addon.post("/installable", json=good(hipchat, capabilitiesUrl=url))
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "HostNotAllowed"
    query = {"installable_url": url, "redirect_url": f"{hipchat.base_url}/addons/done"}
    assert (await addon.get("/installable/installed", params=query)).status_code == 400
    assert await store_snapshot(store) == {}


@pytest.mark.parametrize(
    "value", ["\u00b2", "\u0663", "1\u00b2"], ids=["superscript", "arabic", "mixed"]
)
async def test_unicode_digits_are_not_numbers(
    addon: httpx.AsyncClient, hipchat: FakeHipChat, store: Store, value: str
) -> None:
    response = await addon.post("/installable", json=good(hipchat, groupId=value))
    assert response.status_code == 400
    assert await store_snapshot(store) == {}


async def test_deeply_nested_json_is_refused(addon: httpx.AsyncClient, store: Store) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    response = await addon.post("/installable", content=body)
    assert response.status_code == 400
    assert await store_snapshot(store) == {}


async def test_a_listed_host_on_another_port_is_refused_before_any_fetch(
    addon: httpx.AsyncClient, hipchat: FakeHipChat, store: Store
) -> None:
    # ADDON_HIPCHAT_HOSTS lists "hipchat.test": port 80 only, as the URL's scheme is http.
    url = "http://hipchat.test:6379/v2/capabilities"
    response = await addon.post("/installable", json=good(hipchat, capabilitiesUrl=url))
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "HostNotAllowed"
    assert hipchat.calls == []
    assert await store_snapshot(store) == {}


def table_resolver(table: dict[str, list[str]]) -> Resolver:
    async def resolve(host: str) -> Sequence[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return resolve


async def test_an_install_from_a_listed_name_connects_to_the_address_it_resolved(
    settings: Settings, sqlite_store: Store
) -> None:
    """hipchat.test resolves in no DNS: the install works only through the pinned address."""
    port = free_port()
    hipchat = FakeHipChat(base_url=f"http://hipchat.test:{port}")
    hosts = (f"hipchat.test:{port}",)
    policy = HostPolicy(hosts, resolve=table_resolver({"hipchat.test": ["127.0.0.1"]}))
    configured = dataclasses.replace(settings, hipchat_hosts=hosts)
    app = create_app(configured, store=sqlite_store, transport=PinnedTransport(policy))
    with served(hipchat.app, port):
        async with hipchat.connect(app, settings.base_url) as addon:
            room = await hipchat.install(addon, room_id=1)
        await app.state.addon.http.aclose()
    assert await app.state.addon.installations.get(room.oauth_id) is not None
    assert [c.path for c in hipchat.calls][:2] == ["/v2/capabilities", "/v2/oauth/token"]


async def test_install_errors_do_not_tell_what_answered(
    settings: Settings, sqlite_store: Store, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An open port, a closed port, a Redis port and internal or unknown names look alike."""
    port, closed = free_port(), free_port()
    redis = httpx.URL(redis_url)
    hosts = ("*", f"127.0.0.1:{port}", f"127.0.0.1:{closed}", f"{redis.host}:{redis.port}")
    resolve = table_resolver({"evil.test": ["127.0.0.1"], "rebind.test": ["8.8.8.8", "10.0.0.1"]})
    transport = PinnedTransport(HostPolicy(hosts, resolve=resolve))
    app = create_app(
        dataclasses.replace(settings, hipchat_hosts=hosts), store=sqlite_store, transport=transport
    )
    hipchat = FakeHipChat(base_url=f"http://127.0.0.1:{port}")
    targets = [
        f"http://127.0.0.1:{port}/no/such/document",  # an HTTP server: 404
        f"http://127.0.0.1:{port}/v2/oauth/token",  # an HTTP server: 405
        f"http://127.0.0.1:{closed}/v2/capabilities",  # nothing listens
        f"http://{redis.host}:{redis.port}/v2/capabilities",  # Redis
        "http://evil.test/v2/capabilities",  # a name for loopback
        "http://rebind.test/v2/capabilities",  # one public, one private address
        "http://unknown.test/v2/capabilities",  # no address at all
    ]
    messages = []
    with served(hipchat.app, port):
        async with hipchat.connect(app, settings.base_url) as addon:
            for url in targets:
                response = await addon.post("/installable", json=good(hipchat, capabilitiesUrl=url))
                assert response.status_code == 400, (url, response.text)
                messages.append(response.json()["error"])
    await app.state.addon.http.aclose()

    assert all(message == messages[0] for message in messages), messages
    assert "Could not fetch the capabilities document" in messages[0]["message"]
    assert await store_snapshot(sqlite_store) == {}
    # The operator still learns why, from the log.
    reasons = {r.getMessage() for r in caplog.records if r.name == "addon.lifecycle"}
    assert len(reasons) == len(targets)

"""Hostile and broken installs: each gets a 4xx with a JSON error body, and nothing is stored."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest

from addon.app import create_app
from addon.hosts import HostPolicy, PinnedTransport, Resolver
from addon.settings import Settings
from addon.store import Store
from addon.testing import FakeHipChat, Installed, OAuthClient
from tests.helpers import free_port, make_app, served, settings_for, store_snapshot

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
    assert response.status_code == 413
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


# -- Takeover from a second allowed HipChat server ------------------------------------------------

OTHER = "http://other.test"


class _HipChats(httpx.AsyncBaseTransport):
    """Delivers each request of the add-on to the fake HipChat its host names.

    ``token_barrier`` holds token requests until as many have arrived as it counts (a race).
    """

    def __init__(self, *fakes: FakeHipChat, token_barrier: asyncio.Barrier | None = None) -> None:
        self._by_host = {urlsplit(fake.base_url).hostname: fake.transport() for fake in fakes}
        self._token_barrier = token_barrier

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._token_barrier is not None and request.url.path == "/v2/oauth/token":
            async with asyncio.timeout(10):
                await self._token_barrier.wait()
        return await self._by_host[request.url.host].handle_async_request(request)


@dataclasses.dataclass
class TwoHosts:
    """The add-on trusting two HipChat servers; ``victim`` was installed from ``hipchat``."""

    addon: httpx.AsyncClient
    hipchat: FakeHipChat
    other: FakeHipChat
    victim: Installed

    def attacker(self) -> OAuthClient:
        """An OAuth client on the other server that carries the victim's oauth_id."""
        return self.other.new_client(room_id=1, oauth_id=self.victim.oauth_id)

    def query(self, client: OAuthClient) -> dict[str, str]:
        """The client-side flow's query, as the other server sends it for ``client``."""
        return {
            "installable_url": self.other.installable_url(client),
            "redirect_url": f"{OTHER}/addons/done",
        }

    async def assert_victim_still_works(self) -> None:
        """The victim's webhooks verify with its own secret, and its own update goes through."""
        reply = await self.hipchat.send_message(self.victim, "/echo still mine")
        assert reply is not None and reply.status_code == 200
        assert self.hipchat.notifications(self.victim) == ["still mine"]
        update = await self.hipchat.update(self.addon, self.victim)
        done = f"{self.hipchat.base_url}/addons/done"
        assert update.status_code == 200 or update.headers.get("location") == done


@pytest.fixture
def flow() -> str:
    return "server"


@pytest.fixture(params=["hipchat.test,other.test", "*"], ids=["two-hosts", "star"])
async def world(
    request: pytest.FixtureRequest, store: Store, hipchat: FakeHipChat, flow: str
) -> AsyncIterator[TwoHosts]:
    """``ADDON_HIPCHAT_HOSTS`` lists two servers (or is ``*``); the victim has storage."""
    settings = settings_for(ADDON_HIPCHAT_HOSTS=request.param, ADDON_INSTALL_FLOW=flow)
    other = FakeHipChat(base_url=OTHER)
    app = create_app(settings, store=store, transport=_HipChats(hipchat, other))
    async with hipchat.connect(app, settings.base_url) as addon:
        victim = await hipchat.install(addon, room_id=1)
        await store.put(app.state.addon.keys.storage(victim.oauth_id, "remember"), '{"a": 1}')
        yield TwoHosts(addon, hipchat, other, victim)
    await app.state.addon.aclose(grace=5)


@pytest.mark.parametrize("path", ["/installable", "/installable/update"])
async def test_another_server_cannot_take_over_an_installation(
    world: TwoHosts, store: Store, path: str
) -> None:
    before = await store_snapshot(store)

    response = await world.addon.post(path, json=world.other.payload(world.attacker()))

    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["type"] == "Conflict" and "capabilitiesUrl" in error["message"]
    assert await store_snapshot(store) == before
    assert world.other.calls == []  # refused before anything was fetched from there
    await world.assert_victim_still_works()


@pytest.mark.parametrize("flow", ["client"])
@pytest.mark.parametrize("path", ["/installable/installed", "/installable/updated"])
async def test_another_server_cannot_take_over_through_the_client_side_flow(
    world: TwoHosts, store: Store, path: str
) -> None:
    before = await store_snapshot(store)

    response = await world.addon.get(path, params=world.query(world.attacker()))

    assert response.status_code == 409, response.text
    assert "location" not in response.headers
    assert response.json()["error"]["type"] == "Conflict"
    assert await store_snapshot(store) == before
    assert [c.path.rsplit("/", 1)[0] for c in world.other.calls] == ["/v2/addon/installable"]
    await world.assert_victim_still_works()


async def test_another_server_cannot_uninstall_a_live_installation(
    world: TwoHosts, store: Store
) -> None:
    attacker = world.attacker()
    world.other.revoke(
        attacker.oauth_id
    )  # its own client with that id is gone; the victim's is not
    before = await store_snapshot(store)

    response = await world.addon.delete(f"/installable/{world.victim.oauth_id}")

    assert response.status_code == 403
    assert await store_snapshot(store) == before
    assert world.other.calls == []  # the victim's own token endpoint decided
    await world.assert_victim_still_works()


@pytest.mark.parametrize("flow", ["client"])
async def test_another_server_cannot_uninstall_through_the_client_side_flow(
    world: TwoHosts, store: Store
) -> None:
    attacker = world.attacker()
    query = world.query(attacker)
    world.other.revoke(attacker.oauth_id)
    before = await store_snapshot(store)

    response = await world.addon.get("/installable/uninstalled", params=query)

    assert response.status_code == 403
    assert "location" not in response.headers
    assert await store_snapshot(store) == before
    assert world.other.token_requests() == []
    await world.assert_victim_still_works()


@pytest.mark.parametrize("hosts", ["hipchat.test,other.test", "*"], ids=["two-hosts", "star"])
async def test_concurrent_installs_from_two_servers_do_not_both_win(
    store: Store, hipchat: FakeHipChat, hosts: str
) -> None:
    # Both installs read "not installed yet", then meet at the token endpoints before either
    # writes: only the store write can tell them apart.
    settings = settings_for(ADDON_HIPCHAT_HOSTS=hosts)
    other = FakeHipChat(base_url=OTHER)
    transport = _HipChats(hipchat, other, token_barrier=asyncio.Barrier(2))
    app = create_app(settings, store=store, transport=transport)
    oauth_id = str(uuid.uuid4())
    servers = (hipchat, other)
    clients = [server.new_client(room_id=1, oauth_id=oauth_id) for server in servers]
    async with hipchat.connect(app, settings.base_url) as addon:
        responses = await asyncio.gather(
            *(
                addon.post("/installable", json=s.payload(c))
                for s, c in zip(servers, clients, strict=True)
            )
        )
    statuses = [r.status_code for r in responses]
    stored = await app.state.addon.installations.require(oauth_id)
    await app.state.addon.aclose(grace=5)

    assert sorted(statuses) == [200, 409], [r.text for r in responses]
    winner = statuses.index(200)
    assert stored.capabilities_url == servers[winner].capabilities_url
    assert stored.oauth_secret.value == clients[winner].oauth_secret


# -- oauthIds: HipChat's shape only, and never a name the store uses for itself --------------------

BAD_OAUTH_IDS = {
    "reserved": "global",
    "reserved-upper": "GLOBAL",
    "reserved-mixed": "Global",
    "too-long": "a" * 65,
    "dots": "..",
    "dot": "abc.x",
    "underscore": "abc_x",
    "tilde": "abc~x",
    "colon": "abc:x",
    "star": "abc*",
    "space": "abc x",
    "unicode-letter": "abc\u00e9",
    "unicode-digit": "\u0663",
    "fullwidth": "\uff41bc",
}


def refused_oauth_id(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "RequestError" and error["message"].startswith("oauthId ")


@pytest.mark.parametrize("oauth_id", list(BAD_OAUTH_IDS.values()), ids=list(BAD_OAUTH_IDS))
async def test_bad_oauth_ids_are_refused_by_every_server_side_entry(
    addon: httpx.AsyncClient, hipchat: FakeHipChat, store: Store, oauth_id: str
) -> None:
    body = hipchat.payload(hipchat.new_client(room_id=1, oauth_id=oauth_id))
    for path in ("/installable", "/installable/update"):
        refused_oauth_id(await addon.post(path, json=body))
    if oauth_id != "..":  # a path segment ".." is resolved away before it is a path
        refused_oauth_id(await addon.delete(f"/installable/{quote(oauth_id, safe='')}"))


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


@pytest.mark.parametrize("path", ["installed", "updated", "uninstalled"])
@pytest.mark.parametrize("oauth_id", list(BAD_OAUTH_IDS.values()), ids=list(BAD_OAUTH_IDS))
async def test_bad_oauth_ids_are_refused_by_the_client_side_flow(
    addon: httpx.AsyncClient, hipchat: FakeHipChat, store: Store, oauth_id: str, path: str
) -> None:
    client = hipchat.new_client(room_id=1, oauth_id=oauth_id)
    query = {
        "installable_url": hipchat.installable_url(client),
        "redirect_url": f"{hipchat.base_url}/addons/done",
    }
    refused_oauth_id(await addon.get(f"/installable/{path}", params=query))
    assert hipchat.token_requests() == []
    assert await store_snapshot(store) == {}


async def test_the_longest_oauth_id_and_an_upper_case_uuid_install(
    addon: httpx.AsyncClient, hipchat: FakeHipChat
) -> None:
    for oauth_id in ("a" * 64, str(uuid.uuid4()).upper(), "global-1"):
        installed = await hipchat.install(addon, room_id=1, oauth_id=oauth_id)
        assert installed.response.status_code == 200


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

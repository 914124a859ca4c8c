"""Add-on tokens: cache, scopes, single-flight refresh across replicas, and every failure."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.applications import Starlette

from addon.app import Addon, create_app
from addon.errors import ClientGone, RequestError, TokenError
from addon.hipchat import HipChatClient
from addon.installations import Installation
from addon.seal import Sealer
from addon.settings import Secret, Settings
from addon.store import Keys, Store
from addon.store.redis import RedisStore
from addon.testing import FakeHipChat
from addon.tokens import AccessToken, TokenService, fetch_token
from tests.conftest import FakeClock
from tests.helpers import store_snapshot

pytestmark = pytest.mark.anyio

SCOPES = ("view_room", "send_notification", "admin_room")
KEYS = Keys("test")


def installation_at(hipchat: FakeHipChat, scopes: tuple[str, ...] = SCOPES) -> Installation:
    """A new OAuth client at ``hipchat``, as the add-on stores it after the install."""
    client = hipchat.new_client(room_id=1, scopes=scopes)
    return Installation(
        oauth_id=client.oauth_id,
        oauth_secret=Secret(client.oauth_secret),
        group_id=client.group_id,
        room_id=client.room_id,
        capabilities_url=hipchat.capabilities_url,
        token_url=hipchat.token_url,
        authorization_url=f"{hipchat.base_url}/users/authorize",
        api_url=hipchat.api_url,
        scopes=tuple(sorted(scopes)),
        installed_at=0.0,
    )


@asynccontextmanager
async def token_service(
    store: Store,
    transport: httpx.AsyncBaseTransport,
    clock: FakeClock,
    *,
    sealer: Sealer | None = None,
    http_timeout: float = 2.0,
) -> AsyncIterator[TokenService]:
    """A TokenService on ``store`` reaching HipChat through ``transport``."""
    async with httpx.AsyncClient(transport=transport, timeout=http_timeout) as http:
        yield TokenService(store, KEYS, sealer or Sealer(None), http, now=clock)


@pytest.fixture
def fake(clock: FakeClock) -> FakeHipChat:
    """A fake HipChat on the test's clock."""
    return FakeHipChat(now=clock)


async def test_a_token_is_cached_until_expires_in_less_the_margin(
    store: Store, fake: FakeHipChat, clock: FakeClock
) -> None:
    installation = installation_at(fake)
    async with token_service(store, fake.transport(), clock) as tokens:
        first = await tokens.addon_token(installation)
        assert await tokens.addon_token(installation) == first
        clock.advance(fake.token_lifetime - tokens.margin - 1)
        assert await tokens.addon_token(installation) == first
        clock.advance(2)
        second = await tokens.addon_token(installation)

    assert second.access_token != first.access_token
    assert len(fake.token_requests("client_credentials")) == 2
    assert fake.is_valid_token(second.access_token)
    assert second.group_id == installation.group_id
    assert await store.ttl(KEYS.token(installation.oauth_id, installation.scopes)) is not None


async def test_scopes_are_sorted_in_the_key_and_asked_for_as_a_subset(
    store: Store, fake: FakeHipChat, clock: FakeClock
) -> None:
    installation = installation_at(fake)
    async with token_service(store, fake.transport(), clock) as tokens:
        one = await tokens.addon_token(installation, ["view_room", "admin_room"])
        other = await tokens.addon_token(installation, ["admin_room", "view_room", "admin_room"])

    assert one == other
    assert one.scopes == ("admin_room", "view_room")
    [request] = fake.token_requests("client_credentials")
    assert request.form["scope"] == "admin_room view_room"
    cached = await store.scan(f"{KEYS.prefix}:token:")
    assert cached == [KEYS.token(installation.oauth_id, ("admin_room", "view_room"))]


async def test_scopes_not_granted_are_refused_before_any_request(
    store: Store, fake: FakeHipChat, clock: FakeClock
) -> None:
    installation = installation_at(fake, ("send_notification",))
    async with token_service(store, fake.transport(), clock) as tokens:
        with pytest.raises(RequestError, match=r"\['admin_room'\] were not granted"):
            await tokens.addon_token(installation, ["send_notification", "admin_room"])
        with pytest.raises(TypeError):
            await tokens.addon_token(installation, "send_notification")
    assert fake.token_requests() == []


async def test_a_401_from_the_api_refreshes_the_token_once_and_retries(
    store: Store, fake: FakeHipChat, clock: FakeClock
) -> None:
    installation = installation_at(fake)
    api, rest = fake.api, fake.transport()
    async with token_service(store, fake.transport(), clock) as tokens:
        stale = await tokens.addon_token(installation)
        fake.expire_tokens()  # HipChat forgot it; our cache still holds it
        source = tokens.source(installation)
        async with HipChatClient(fake.api_url, token=source, transport=rest) as client:
            await client.send_room_notification(1, "hello")
        fresh = await tokens.addon_token(installation)

    assert api.notifications(1) == ["hello"]
    sent = api.requests_for("send_room_notification")
    assert [r.headers["authorization"] for r in sent] == [
        f"Bearer {stale.access_token}",
        f"Bearer {fresh.access_token}",
    ]
    assert len(fake.token_requests("client_credentials")) == 2


async def test_invalidate_drops_only_the_token_that_was_refused(
    store: Store, fake: FakeHipChat, clock: FakeClock
) -> None:
    installation = installation_at(fake)
    async with token_service(store, fake.transport(), clock) as tokens:
        source = tokens.source(installation)
        current = await source.token()
        await source.invalidate("an-older-token-another-replica-replaced-already")
        assert await source.token() == current
        await source.invalidate(current)
        assert await source.token() != current
    assert len(fake.token_requests("client_credentials")) == 2


@pytest.mark.parametrize("failure", ["500", "timeout"])
async def test_a_failing_token_endpoint_raises_token_error_and_stores_nothing(
    store: Store, fake: FakeHipChat, clock: FakeClock, failure: str
) -> None:
    installation = installation_at(fake)
    if failure == "500":
        fake.fail_token_endpoint(500)
    else:
        fake.token_delay = 0.3
    async with token_service(store, fake.transport(), clock, http_timeout=0.1) as tokens:
        started = time.monotonic()
        with pytest.raises(TokenError) as raised:
            await tokens.addon_token(installation)
    assert time.monotonic() - started < 0.3
    assert type(raised.value) is TokenError
    assert installation.oauth_id in str(raised.value)
    assert await store_snapshot(store) == {}


async def test_a_401_from_the_token_endpoint_marks_the_client_gone(
    store: Store, fake: FakeHipChat, clock: FakeClock
) -> None:
    installation = installation_at(fake)
    await store.put(KEYS.installation(installation.oauth_id), "{}")
    fake.revoke(installation.oauth_id)
    async with token_service(store, fake.transport(), clock) as tokens:
        with pytest.raises(ClientGone, match="uninstalled"):
            await tokens.addon_token(installation)
    assert await store_snapshot(store) == {
        KEYS.installation(installation.oauth_id): "{}",
        KEYS.client_gone(installation.oauth_id): "1",
    }


async def test_no_client_gone_marker_is_left_for_an_installation_already_removed(
    store: Store, fake: FakeHipChat, clock: FakeClock
) -> None:
    # A command still running when the uninstall removed everything must not leave a marker.
    installation = installation_at(fake)
    fake.revoke(installation.oauth_id)
    async with token_service(store, fake.transport(), clock) as tokens:
        with pytest.raises(ClientGone):
            await tokens.addon_token(installation)
    assert await store_snapshot(store) == {}


async def test_sealed_tokens_never_reach_the_store_in_clear(
    store: Store, fake: FakeHipChat, clock: FakeClock
) -> None:
    installation = installation_at(fake)
    sealer = Sealer(Secret("a-long-enough-secret-key-for-tests"))
    async with token_service(store, fake.transport(), clock, sealer=sealer) as tokens:
        token = await tokens.addon_token(installation, ["admin_room"])
        await tokens.addon_token(installation)
        assert await tokens.addon_token(installation, ["admin_room"]) == token

    stored = " ".join(v or "" for v in (await store_snapshot(store)).values())
    assert len(fake.tokens) == 2
    assert not [raw for raw in fake.tokens if raw in stored]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"expires_in": 3600}',
        b'{"access_token": "", "expires_in": 3600}',
        b'{"access_token": "t", "expires_in": 0}',
        b'{"access_token": "t", "expires_in": "NaN"}',
        b'{"access_token": 7, "expires_in": 3600}',
    ],
    ids=["not-json", "not-an-object", "no-token", "empty-token", "no-lifetime", "nan", "int"],
)
async def test_an_unreadable_token_response_is_a_token_error(body: bytes) -> None:
    installation = installation_at(FakeHipChat())
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(TokenError, match="cannot read"):
            await fetch_token(http, installation, {"grant_type": "client_credentials"}, now=0)


async def test_a_record_reads_back_as_written() -> None:
    sealer = Sealer(Secret("a-long-enough-secret-key-for-tests"))
    token = AccessToken("access", 12.5, ("a", "b"), "refresh", 3, "Group")
    raw = token.to_record(sealer)
    assert "access" not in json.loads(raw)["access_token"]
    assert AccessToken.from_record(raw, sealer) == token
    assert "access" not in repr(token)
    assert "refresh" not in repr(token)


# -- several replicas sharing one Redis -------------------------------------------------------


@pytest.fixture
async def replicas(
    redis_url: str, settings: Settings, fake: FakeHipChat, clock: FakeClock
) -> AsyncIterator[list[Starlette]]:
    """Four add-on apps, each with its own RedisStore on one namespace of the test Redis."""
    namespace = f"test-{uuid.uuid4().hex}:"
    apps = [
        create_app(
            settings,
            store=RedisStore(redis_url, namespace=namespace),
            transport=fake.transport(),
            now=clock,
        )
        for _ in range(4)
    ]
    yield apps
    for app in apps:
        await addon_of(app).aclose()
    cleaner = RedisStore(redis_url, namespace=namespace)
    await cleaner.delete(*await cleaner.scan(""))
    await cleaner.close()


def addon_of(app: Starlette) -> Addon:
    addon: Addon = app.state.addon
    return addon


async def installed_on(
    replicas: list[Starlette], fake: FakeHipChat, settings: Settings
) -> Installation:
    """Install through the first replica; return the installation with no token cached."""
    async with fake.connect(replicas[0], settings.base_url) as client:
        installed = await fake.install(client, room_id=1)
    first = addon_of(replicas[0])
    installation = await first.installations.require(installed.oauth_id)
    await first.store.delete(*await first.store.scan(f"{first.keys.prefix}:token:"))
    return installation


async def test_200_concurrent_requests_on_4_replicas_fetch_one_token(
    replicas: list[Starlette], fake: FakeHipChat, settings: Settings
) -> None:
    installation = await installed_on(replicas, fake, settings)
    before = len(fake.token_requests())
    fake.token_delay = 0.2  # every replica is waiting for the lock while the first one fetches

    tokens = await asyncio.gather(
        *(addon_of(replicas[i % 4]).tokens.addon_token(installation) for i in range(200))
    )

    assert len(fake.token_requests()) - before == 1
    assert len({t.access_token for t in tokens}) == 1


async def test_an_expired_token_is_refreshed_once_by_4_busy_replicas(
    replicas: list[Starlette], fake: FakeHipChat, settings: Settings, clock: FakeClock
) -> None:
    installation = await installed_on(replicas, fake, settings)
    old = await addon_of(replicas[0]).tokens.addon_token(installation)
    clock.advance(fake.token_lifetime)
    before = len(fake.token_requests())
    fake.token_delay = 0.2

    tokens = await asyncio.gather(
        *(addon_of(replicas[i % 4]).tokens.addon_token(installation) for i in range(200))
    )

    assert len(fake.token_requests()) - before == 1
    assert {t.access_token for t in tokens} == {tokens[0].access_token}
    assert tokens[0].access_token != old.access_token
    assert fake.is_valid_token(tokens[0].access_token)


async def test_install_caches_its_token_for_every_replica(
    replicas: list[Starlette], fake: FakeHipChat, settings: Settings
) -> None:
    async with fake.connect(replicas[0], settings.base_url) as client:
        installed = await fake.install(client, room_id=1)
    installation = await addon_of(replicas[3]).installations.require(installed.oauth_id)

    token = await addon_of(replicas[3]).tokens.addon_token(installation)

    assert len(fake.token_requests()) == 1  # the install's own credentials check
    assert fake.is_valid_token(token.access_token)


# -- back-off after a failed token request -------------------------------------------------------


@pytest.mark.parametrize("status", [500, 429])
async def test_a_failed_token_request_backs_off_on_every_replica(
    store: Store, fake: FakeHipChat, clock: FakeClock, status: int
) -> None:
    installation = installation_at(fake)
    await store.put(KEYS.installation(installation.oauth_id), "{}")  # installed
    fake.fail_token_endpoint(status, count=10)
    async with (
        token_service(store, fake.transport(), clock) as one,
        token_service(store, fake.transport(), clock) as two,  # another replica
    ):
        with pytest.raises(TokenError, match=f"answered {status}"):
            await one.addon_token(installation)
        asked = len(fake.token_requests())
        for tokens in (one, two, one):
            with pytest.raises(TokenError, match="failed moments ago"):
                await tokens.addon_token(installation)
        assert len(fake.token_requests()) == asked  # nobody asked the sick endpoint again

        backoff = KEYS.token_backoff(installation.oauth_id, installation.scopes)
        ttl = await store.ttl(backoff)
        assert ttl is not None and 0 < ttl <= 5.0
        fake.token_failures.clear()
        await store.delete(backoff)  # the back-off is over
        assert (await two.addon_token(installation)).access_token
        assert len(fake.token_requests()) == asked + 1


async def test_the_back_off_follows_retry_after_within_a_minute(
    store: Store, fake: FakeHipChat, clock: FakeClock
) -> None:
    installation = installation_at(fake)
    await store.put(KEYS.installation(installation.oauth_id), "{}")
    backoff = KEYS.token_backoff(installation.oauth_id, installation.scopes)
    async with token_service(store, fake.transport(), clock) as tokens:
        for retry_after, most in ((30, 30.0), (3600, 60.0)):
            await store.delete(backoff)
            fake.token_retry_after = retry_after
            fake.fail_token_endpoint(429)
            with pytest.raises(TokenError) as raised:
                await tokens.addon_token(installation)
            assert raised.value.retry_after == retry_after
            ttl = await store.ttl(backoff)
            assert ttl is not None and most - 5 < ttl <= most


async def test_no_back_off_is_left_for_an_installation_already_removed(
    store: Store, fake: FakeHipChat, clock: FakeClock
) -> None:
    installation = installation_at(fake)  # never stored: as if uninstalled meanwhile
    fake.fail_token_endpoint(500)
    async with token_service(store, fake.transport(), clock) as tokens:
        with pytest.raises(TokenError):
            await tokens.addon_token(installation)
    assert await store_snapshot(store) == {}

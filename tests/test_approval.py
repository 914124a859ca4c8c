"""User tokens through the approval redirect, end to end against the fake HipChat."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from starlette.applications import Starlette

from addon.app import Addon, create_app
from addon.approval import STATE_TTL
from addon.errors import ApprovalRequired, TokenError
from addon.hipchat import HipChatClient
from addon.installations import Installation
from addon.settings import Settings
from addon.store import Store
from addon.testing import FakeHipChat, Installed
from tests.conftest import FakeClock
from tests.helpers import settings_for, store_snapshot

pytestmark = pytest.mark.anyio

USER = "42"


@dataclasses.dataclass
class World:
    """The add-on, the fake HipChat, and a browser that reaches both."""

    app: Starlette
    fake: FakeHipChat
    browser: httpx.AsyncClient
    store: Store
    clock: FakeClock
    installed: dict[str, Installed] = dataclasses.field(default_factory=dict)

    @property
    def addon(self) -> Addon:
        addon: Addon = self.app.state.addon
        return addon

    async def install(self, room_id: int = 1) -> Installation:
        """Install the add-on and return the stored installation."""
        installed = await self.fake.install(self.browser, room_id=room_id)
        self.installed[installed.oauth_id] = installed
        return await self.addon.installations.require(installed.oauth_id)

    async def callback_url(self, installation: Installation, user_id: str = USER) -> str:
        """Follow a new approval link to HipChat; return where HipChat sends the browser back."""
        return await self.to_callback(
            await self.addon.approvals.approval_url(installation, user_id)
        )

    async def to_callback(self, approval_url: str) -> str:
        """Follow ``approval_url`` to HipChat; return where HipChat sends the browser back."""
        to_hipchat = await self.browser.get(approval_url)
        assert to_hipchat.status_code == 302, to_hipchat.text
        back = await self.browser.get(to_hipchat.headers["location"])
        assert back.status_code == 302, back.text
        return back.headers["location"]

    async def approve(self, installation: Installation, user_id: str = USER) -> httpx.Response:
        """The whole approval, as the user's browser goes through it."""
        self.fake.approving_user = user_id
        return await self.browser.get(await self.callback_url(installation, user_id))

    async def user_tokens(self) -> dict[str, str | None]:
        """Every stored user token record, by key."""
        snapshot = await store_snapshot(self.store)
        return {k: v for k, v in snapshot.items() if ":user-token:" in k}


@pytest.fixture
def fake(clock: FakeClock) -> FakeHipChat:
    fake = FakeHipChat(now=clock)
    fake.approving_user = USER  # the user most links are made for is the one logged in
    return fake


async def world_for(
    settings: Settings, store: Store, fake: FakeHipChat, clock: FakeClock
) -> AsyncIterator[World]:
    app = create_app(settings, store=store, transport=fake.transport(), now=clock)
    mounts = {
        settings.base_url: httpx.ASGITransport(app=app),
        fake.base_url: fake.transport(),
    }
    async with httpx.AsyncClient(mounts=mounts, base_url=settings.base_url) as browser:
        yield World(app, fake, browser, store, clock)
    await app.state.addon.http.aclose()


@pytest.fixture
async def world(
    settings: Settings, store: Store, fake: FakeHipChat, clock: FakeClock
) -> AsyncIterator[World]:
    async for made in world_for(settings, store, fake, clock):
        yield made


async def test_a_user_approves_and_their_token_is_stored(world: World, settings: Settings) -> None:
    installation = await world.install()
    world.fake.approving_user = USER
    link = await world.addon.approvals.approval_url(installation, USER)
    assert link.startswith(f"{settings.base_url}/oauth/approve?")

    to_hipchat = await world.browser.get(link)

    assert to_hipchat.status_code == 302
    target = urlsplit(to_hipchat.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == installation.authorization_url
    query = {k: v for k, [v] in parse_qs(target.query).items()}
    state = query.pop("state")
    assert state.startswith(f"{installation.oauth_id}~")
    assert query == {
        "response_type": "code",
        "client_id": installation.oauth_id,
        "scope": " ".join(installation.scopes),
        "redirect_uri": f"{settings.base_url}/oauth/callback",
    }
    back = await world.browser.get(to_hipchat.headers["location"])
    assert back.status_code == 302
    assert back.headers["location"].startswith(f"{settings.base_url}/oauth/callback?code=")
    page = await world.browser.get(back.headers["location"])

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Approved" in page.text
    token = await world.addon.approvals.user_token(installation, USER)
    assert world.fake.is_valid_token(token.access_token)
    assert world.fake.tokens[token.access_token].user_id == USER
    assert token.refresh_token in world.fake.refresh_tokens
    assert list(await world.user_tokens()) == [
        world.addon.keys.user_token(installation.oauth_id, USER)
    ]
    assert await world.store.scan(f"{world.addon.keys.prefix}:oauth-state:") == []
    [exchange] = world.fake.token_requests("authorization_code")
    assert exchange.form["redirect_uri"] == f"{settings.base_url}/oauth/callback"
    assert exchange.headers["authorization"] == basic(installation)


def basic(installation: Installation) -> str:
    pair = f"{installation.oauth_id}:{installation.oauth_secret.value}".encode()
    return f"Basic {base64.b64encode(pair).decode()}"


async def test_a_token_is_refreshed_before_it_expires_and_the_refresh_token_rotates(
    world: World,
) -> None:
    installation = await world.install()
    await world.approve(installation)
    first = await world.addon.approvals.user_token(installation, USER)
    world.clock.advance(world.fake.token_lifetime - world.addon.tokens.margin - 1)
    assert await world.addon.approvals.user_token(installation, USER) == first

    world.clock.advance(2)
    second = await world.addon.approvals.user_token(installation, USER)

    assert second.access_token != first.access_token
    assert second.refresh_token != first.refresh_token
    assert len(world.fake.token_requests("refresh_token")) == 1
    assert await world.addon.approvals.user_token(installation, USER) == second
    assert first.refresh_token is not None
    replay = await world.browser.post(
        world.fake.token_url,
        data={"grant_type": "refresh_token", "refresh_token": first.refresh_token},
        headers={"Authorization": basic(installation)},
    )
    assert replay.status_code == 400


async def test_concurrent_callers_at_expiry_refresh_once(world: World, settings: Settings) -> None:
    installation = await world.install()
    await world.approve(installation)
    other = create_app(
        settings, store=world.store, transport=world.fake.transport(), now=world.clock
    )
    replicas: list[Addon] = [world.addon, other.state.addon]
    world.clock.advance(world.fake.token_lifetime)
    world.fake.token_delay = 0.1

    tokens = await asyncio.gather(
        *(replicas[i % 2].approvals.user_token(installation, USER) for i in range(50))
    )

    await other.state.addon.http.aclose()
    assert len(world.fake.token_requests("refresh_token")) == 1
    assert len({t.access_token for t in tokens}) == 1
    assert world.fake.is_valid_token(tokens[0].access_token)


async def test_a_refused_refresh_forgets_the_token_and_asks_for_approval(
    world: World, settings: Settings
) -> None:
    installation = await world.install()
    await world.approve(installation)
    world.fake.revoke_user(USER)
    world.clock.advance(world.fake.token_lifetime)

    with pytest.raises(ApprovalRequired) as raised:
        await world.addon.approvals.user_token(installation, USER)

    assert raised.value.approval_url is not None
    assert raised.value.approval_url.startswith(f"{settings.base_url}/oauth/approve?user={USER}&")
    assert await world.user_tokens() == {}
    assert (await world.approve(installation)).status_code == 200
    assert await world.addon.approvals.user_token(installation, USER)


async def test_a_user_without_a_token_gets_an_approval_link_that_works(world: World) -> None:
    installation = await world.install()

    with pytest.raises(ApprovalRequired) as raised:
        await world.addon.approvals.user_token(installation, "7")

    assert raised.value.approval_url is not None
    assert "'7'" in str(raised.value)
    world.fake.approving_user = "7"
    page = await world.browser.get(await world.to_callback(raised.value.approval_url))
    assert page.status_code == 200
    token = await world.addon.approvals.user_token(installation, "7")
    assert world.fake.tokens[token.access_token].user_id == "7"


async def test_a_401_from_the_api_refreshes_the_user_token_and_retries(world: World) -> None:
    installation = await world.install()
    await world.approve(installation)
    stale = await world.addon.approvals.user_token(installation, USER)
    world.fake.revoke_user("nobody")  # unrelated users change nothing
    world.fake.expire_tokens()  # HipChat dropped the access token; the refresh token still works
    api, rest = world.fake.api, world.fake.transport()
    source = world.addon.approvals.source(installation, USER)

    async with HipChatClient(world.fake.api_url, token=source, transport=rest) as client:
        await client.send_room_notification(1, "as the user")

    fresh = await world.addon.approvals.user_token(installation, USER)
    sent = api.requests_for("send_room_notification")
    assert [r.headers["authorization"] for r in sent] == [
        f"Bearer {stale.access_token}",
        f"Bearer {fresh.access_token}",
    ]
    assert len(world.fake.token_requests("refresh_token")) == 1
    await source.invalidate("a-token-that-is-not-stored-any-more")
    assert await world.addon.approvals.user_token(installation, USER) == fresh


async def test_a_failing_refresh_keeps_the_token_for_the_next_try(world: World) -> None:
    installation = await world.install()
    await world.approve(installation)
    before = await world.user_tokens()
    world.clock.advance(world.fake.token_lifetime)
    world.fake.fail_token_endpoint(500)

    with pytest.raises(TokenError) as raised:
        await world.addon.approvals.user_token(installation, USER)

    assert type(raised.value) is TokenError
    assert await world.user_tokens() == before
    assert world.fake.is_valid_token(
        (await world.addon.approvals.user_token(installation, USER)).access_token
    )


async def test_user_tokens_need_an_authorization_url(world: World) -> None:
    installation = dataclasses.replace(await world.install(), authorization_url=None)

    with pytest.raises(TokenError, match="no authorizationUrl"):
        await world.addon.approvals.approval_url(installation, USER)
    with pytest.raises(ApprovalRequired) as raised:
        await world.addon.approvals.user_token(installation, USER)
    assert raised.value.approval_url is None


async def test_a_token_without_a_refresh_token_needs_a_new_approval(world: World) -> None:
    installation = await world.install()
    await world.approve(installation)
    key = world.addon.keys.user_token(installation.oauth_id, USER)
    token = await world.addon.approvals.user_token(installation, USER)
    bare = dataclasses.replace(token, refresh_token=None)
    await world.store.put(key, bare.to_record(world.addon.sealer))
    world.clock.advance(world.fake.token_lifetime)

    with pytest.raises(ApprovalRequired, match="no refresh token"):
        await world.addon.approvals.user_token(installation, USER)
    assert await world.user_tokens() == {}


@pytest.mark.parametrize("user_id", ["", "../../etc", "a:b", "x" * 129])
async def test_a_malformed_user_id_is_refused(world: World, user_id: str) -> None:
    installation = await world.install()
    with pytest.raises(ValueError, match="not a HipChat user id"):
        await world.addon.approvals.approval_url(installation, user_id)
    with pytest.raises(ValueError, match="not a HipChat user id"):
        await world.addon.approvals.user_token(installation, user_id)


# -- every way the approval can go wrong leaves nothing behind -------------------------------

Breaker = Callable[[World, Installation, str], Awaitable[str]]


async def reused(world: World, installation: Installation, callback: str) -> str:
    assert (await world.browser.get(callback)).status_code == 200
    await world.addon.approvals.forget(installation, USER)
    return callback


async def other_installation(world: World, installation: Installation, callback: str) -> str:
    other = await world.install(room_id=2)
    code = query_of(await world.callback_url(other))["code"]
    return with_query(callback, code=code)


async def no_state(world: World, installation: Installation, callback: str) -> str:
    return with_query(callback, state=None)


async def forged_state(world: World, installation: Installation, callback: str) -> str:
    return with_query(callback, state=f"{installation.oauth_id}~forged-by-someone")


async def hostile_state(world: World, installation: Installation, callback: str) -> str:
    return with_query(callback, state="<script>alert(1)</script>")


async def expired_state(world: World, installation: Installation, callback: str) -> str:
    world.clock.advance(STATE_TTL + 1)
    return callback


async def no_code(world: World, installation: Installation, callback: str) -> str:
    return with_query(callback, code=None)


async def replayed_code(world: World, installation: Installation, callback: str) -> str:
    # The code of a completed approval, with a fresh state: HipChat refuses the code.
    code = query_of(callback)["code"]
    assert (await world.browser.get(callback)).status_code == 200
    await world.addon.approvals.forget(installation, USER)
    return with_query(await world.callback_url(installation), code=code)


async def declined(world: World, installation: Installation, callback: str) -> str:
    world.fake.declines_approval = True
    return await world.callback_url(installation)


async def token_endpoint_down(world: World, installation: Installation, callback: str) -> str:
    world.fake.fail_token_endpoint(500)
    return callback


async def uninstalled(world: World, installation: Installation, callback: str) -> str:
    await world.store.delete(world.addon.keys.installation(installation.oauth_id))
    return callback


@pytest.mark.parametrize(
    ("breaker", "status", "says"),
    [
        (reused, 400, "already used"),
        (other_installation, 400, "refused the authorization code"),
        (no_state, 400, "no valid state"),
        (forged_state, 400, "unknown"),
        (hostile_state, 400, "no valid state"),
        (expired_state, 400, "expired"),
        (no_code, 400, "no authorization code"),
        (replayed_code, 400, "refused the authorization code"),
        (declined, 403, "declined"),
        (token_endpoint_down, 502, "answered 500"),
        (uninstalled, 404, "uninstalled"),
    ],
    ids=lambda value: getattr(value, "__name__", str(value)),
)
async def test_a_broken_callback_shows_what_went_wrong_and_stores_nothing(
    world: World, breaker: Breaker, status: int, says: str
) -> None:
    installation = await world.install()
    callback = await world.callback_url(installation)
    url = await breaker(world, installation, callback)

    page = await world.browser.get(url)

    assert page.status_code == status
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert "Approval failed" in page.text
    assert says in page.text
    assert "<script>" not in page.text
    assert await world.user_tokens() == {}


async def test_an_altered_link_for_another_user_is_refused_but_not_burnt(world: World) -> None:
    installation = await world.install()
    link = await world.addon.approvals.approval_url(installation, "7")

    page = await world.browser.get(with_query(link, user=USER))

    assert page.status_code == 400
    assert "altered" in page.text
    assert world.fake.token_requests("authorization_code") == []
    world.fake.approving_user = "7"
    assert (await world.browser.get(await world.to_callback(link))).status_code == 200
    assert list(await world.user_tokens()) == [
        world.addon.keys.user_token(installation.oauth_id, "7")
    ]


# -- only the user a link was made for can complete it ------------------------------------


def issued_to(fake: FakeHipChat, user_id: str) -> list[str]:
    """The access tokens the fake issued to ``user_id``, oldest first."""
    return [token for token, issued in fake.tokens.items() if issued.user_id == user_id]


@pytest.mark.parametrize(
    ("link_for", "approver"),
    [(USER, "7"), ("7", USER)],
    ids=["someone-else-opens-my-link", "i-open-someone-elses-link"],
)
async def test_a_link_approved_by_another_user_stores_nothing_and_revokes_the_token(
    world: World, link_for: str, approver: str
) -> None:
    installation = await world.install()
    link = await world.addon.approvals.approval_url(installation, link_for)
    world.fake.approving_user = approver

    page = await world.browser.get(await world.to_callback(link))

    assert page.status_code == 403
    assert page.headers["content-type"].startswith("text/html")
    assert "made for another HipChat user" in page.text
    assert await world.user_tokens() == {}
    [hijacked] = issued_to(world.fake, approver)
    assert world.fake.revoked_tokens == [hijacked]
    assert not world.fake.is_valid_token(hijacked)
    assert world.fake.refresh_tokens == {}
    # The link still works for the user it was made for.
    world.fake.approving_user = link_for
    assert (await world.browser.get(await world.to_callback(link))).status_code == 200
    token = await world.addon.approvals.user_token(installation, link_for)
    assert world.fake.tokens[token.access_token].user_id == link_for
    assert list(await world.user_tokens()) == [
        world.addon.keys.user_token(installation.oauth_id, link_for)
    ]


async def hijacked(world: World, link: str, callback: str) -> int:
    world.fake.approving_user = "7"
    page = await world.browser.get(await world.to_callback(link))
    world.fake.approving_user = USER
    return page.status_code


async def error_added(world: World, link: str, callback: str) -> int:
    return (await world.browser.get(with_query(callback, error="access_denied"))).status_code


async def code_changed(world: World, link: str, callback: str) -> int:
    return (await world.browser.get(with_query(callback, code="made-up"))).status_code


async def user_changed(world: World, link: str, callback: str) -> int:
    return (await world.browser.get(with_query(link, user="7"))).status_code


async def no_owner(world: World, link: str, callback: str) -> int:
    world.fake.sessions_without_owner = True
    page = await world.browser.get(await world.to_callback(link))
    world.fake.sessions_without_owner = False
    return page.status_code


BurnAttempt = Callable[[World, str, str], Awaitable[int]]


@pytest.mark.parametrize(
    ("attempt", "status"),
    [
        (hijacked, 403),
        (error_added, 403),
        (code_changed, 400),
        (user_changed, 400),
        (no_owner, 403),
    ],
    ids=lambda value: getattr(value, "__name__", str(value)),
)
async def test_a_failed_callback_leaves_the_pending_approval_usable(
    world: World, attempt: BurnAttempt, status: int
) -> None:
    installation = await world.install()
    link = await world.addon.approvals.approval_url(installation, USER)
    callback = await world.to_callback(link)  # the right user's, not followed yet

    assert await attempt(world, link, callback) == status

    assert await world.user_tokens() == {}
    assert (await world.browser.get(callback)).status_code == 200
    assert await world.addon.approvals.user_token(installation, USER)
    assert await world.store.scan(f"{world.addon.keys.prefix}:oauth-state:") == []


async def test_a_session_without_an_owner_is_refused_and_revoked(world: World) -> None:
    installation = await world.install()
    world.fake.sessions_without_owner = True

    page = await world.approve(installation)

    assert page.status_code == 403
    assert "did not say which user approved" in page.text
    assert await world.user_tokens() == {}
    assert world.fake.revoked_tokens == issued_to(world.fake, USER) != []


async def test_an_owner_id_that_is_a_string_is_matched(world: World) -> None:
    installation = await world.install()

    page = await world.approve(installation, "alice")

    assert page.status_code == 200
    [session] = [c for c in world.fake.calls if c.path.startswith("/v2/oauth/token/")]
    assert session.method == "GET"
    assert world.fake.revoked_tokens == []
    assert list(await world.user_tokens()) == [
        world.addon.keys.user_token(installation.oauth_id, "alice")
    ]


async def test_two_callbacks_for_one_link_store_one_token(world: World) -> None:
    installation = await world.install()
    link = await world.addon.approvals.approval_url(installation, USER)
    first, second = [await world.to_callback(link) for _ in range(2)]
    # Both read the pending state before either exchanges its code (the delay only makes them
    # overlap; the assertion on the two exchanges below checks that they did).
    world.fake.token_delay = 0.5

    pages = await asyncio.gather(world.browser.get(first), world.browser.get(second))

    assert len(world.fake.token_requests("authorization_code")) == 2
    assert sorted(page.status_code for page in pages) == [200, 400]
    assert "already used" in max(pages, key=lambda page: page.status_code).text
    token = await world.addon.approvals.user_token(installation, USER)
    live = [t for t in issued_to(world.fake, USER) if world.fake.is_valid_token(t)]
    assert live == [token.access_token]
    assert len(world.fake.revoked_tokens) == 1


async def test_an_expired_link_does_not_reach_hipchat(world: World) -> None:
    installation = await world.install()
    link = await world.addon.approvals.approval_url(installation, USER)
    world.clock.advance(STATE_TTL + 1)

    page = await world.browser.get(link)

    assert page.status_code == 400
    assert "expired" in page.text


async def test_uninstall_removes_user_tokens_and_pending_approvals(world: World) -> None:
    installation = await world.install()
    keep = await world.install(room_id=2)
    await world.approve(installation)
    await world.approve(keep)
    await world.addon.approvals.approval_url(installation, "7")
    assert [k for k in await world.store.scan("") if ":oauth-state:" in k]

    response = await world.fake.uninstall(world.browser, world.installed[installation.oauth_id])

    assert response.status_code == 204
    assert not [k for k in await world.store.scan("") if installation.oauth_id in k]
    assert list(await world.user_tokens()) == [world.addon.keys.user_token(keep.oauth_id, USER)]


async def test_sealed_user_tokens_never_reach_the_store_in_clear(
    store: Store, fake: FakeHipChat, clock: FakeClock
) -> None:
    settings = settings_for(ADDON_SECRET_KEY="a-long-enough-secret-key-for-tests")
    async for world in world_for(settings, store, fake, clock):
        installation = await world.install()
        await world.approve(installation)
        world.clock.advance(fake.token_lifetime)
        await world.addon.approvals.user_token(installation, USER)

    stored = " ".join(v or "" for v in (await store_snapshot(store)).values())
    secrets = [*fake.tokens, *fake.refresh_tokens, installation.oauth_secret.value]
    assert len(secrets) == 5  # install token, two user tokens, one live refresh token, secret
    assert not [secret for secret in secrets if secret in stored]


# -- the fake's approval page is as strict as HipChat --------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"client_id": "unknown"},
        {"response_type": "token"},
        {"redirect_uri": None},
        {"redirect_uri": "http://evil.test/oauth/callback"},
        {"scope": "admin_group"},
    ],
    ids=["unknown-client", "not-code", "no-redirect", "foreign-redirect", "more-scopes"],
)
async def test_the_fake_refuses_a_bad_authorization_request(
    world: World, change: dict[str, str | None]
) -> None:
    installation = await world.install()
    to_hipchat = await world.browser.get(
        await world.addon.approvals.approval_url(installation, USER)
    )

    response = await world.browser.get(with_query(to_hipchat.headers["location"], **change))

    assert response.status_code == 400
    assert world.fake.token_requests("authorization_code") == []


async def test_the_fake_accepts_redirect_url_and_binds_codes_to_it(
    world: World, settings: Settings
) -> None:
    installation = await world.install()
    redirect = f"{settings.base_url}/oauth/callback"

    async def exchange(field: str, value: str) -> int:
        code = query_of(await world.callback_url(installation))["code"]
        form = {"grant_type": "authorization_code", "code": code, field: value}
        headers = {"Authorization": basic(installation)}
        response = await world.browser.post(world.fake.token_url, data=form, headers=headers)
        return response.status_code

    assert await exchange("redirect_url", redirect) == 200
    assert await exchange("redirect_uri", redirect + "/elsewhere") == 400


def query_of(url: str) -> dict[str, str]:
    return {k: v for k, [v] in parse_qs(urlsplit(url).query).items()}


def with_query(url: str, **changes: str | None) -> str:
    """``url`` with query parameters replaced (None: removed)."""
    parts = urlsplit(url)
    query = {**query_of(url), **changes}
    kept = {k: v for k, v in query.items() if v is not None}
    return parts._replace(query=urlencode(kept)).geturl()

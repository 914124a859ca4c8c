"""Installations: where a re-install may come from, and claiming an oauth_id in the store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from addon.errors import Conflict, RequestError
from addon.installations import (
    Installation,
    InstallationRepository,
    RecordReader,
    oauth_id_from,
)
from addon.seal import Sealer
from addon.settings import Secret
from addon.store import Keys, Store
from tests.helpers import store_snapshot

pytestmark = pytest.mark.anyio

KEYS = Keys("test-addon")
CAPABILITIES = "https://hipchat.example/v2/capabilities"


def installation(capabilities_url: str = CAPABILITIES, secret: str = "s1") -> Installation:
    return Installation(
        oauth_id="0b4c2d6e-aaaa-4bbb-8ccc-0123456789ab",
        oauth_secret=Secret(secret),
        group_id=1,
        room_id=None,
        capabilities_url=capabilities_url,
        token_url="https://hipchat.example/v2/oauth/token",
        authorization_url=None,
        api_url="https://hipchat.example/v2/",
        scopes=("send_notification",),
        installed_at=1.0,
    )


@pytest.mark.parametrize(
    "url",
    [
        CAPABILITIES,
        "https://hipchat.example:443/v2/capabilities",
        "HTTPS://HipChat.Example/v2/capabilities",
        "https://hipchat.example/v2/capabilities?x=1",
    ],
    ids=["same", "default-port", "letter-case", "query"],
)
def test_a_reinstall_from_the_same_capabilities_url_is_allowed(url: str) -> None:
    installation().check_reinstall_from(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://other.example/v2/capabilities",
        "http://hipchat.example/v2/capabilities",
        "https://hipchat.example:8443/v2/capabilities",
        "https://hipchat.example/v2/capabilities/",
        "https://hipchat.example/other/v2/capabilities",
        "https://hipchat.example:99999/v2/capabilities",
        "https://hipchat.example.evil.example/v2/capabilities",
    ],
    ids=["host", "scheme", "port", "path-slash", "path", "bad-port", "suffix-host"],
)
def test_a_reinstall_from_anywhere_else_is_a_conflict(url: str) -> None:
    with pytest.raises(Conflict, match="another capabilitiesUrl"):
        installation().check_reinstall_from(url)


@pytest.mark.parametrize("value", ["global", "GLOBAL", "gLoBaL"])
def test_reserved_names_are_refused_in_any_letter_case(value: str) -> None:
    with pytest.raises(RequestError, match="reserves"):
        oauth_id_from(value)


class _Meanwhile:
    """A store on which ``action`` runs just before the first ``put_if_absent`` of an
    installation record, and that call then reports "already there" (another replica won)."""

    def __init__(self, store: Store, action: Callable[[], Awaitable[object]]) -> None:
        self.store, self.action, self.fired = store, action, False
        self.url = store.url

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    async def put_if_absent(self, key: str, value: str, *, ttl: float | None = None) -> bool:
        if not self.fired and key == KEYS.installation(installation().oauth_id):
            self.fired = True
            await self.action()
            return False
        return await self.store.put_if_absent(key, value, ttl=ttl)


def repository(store: Store | _Meanwhile) -> InstallationRepository:
    return InstallationRepository(store, KEYS, Sealer(None))  # type: ignore[arg-type]


async def test_claim_stores_a_first_install_and_a_same_source_reinstall(store: Store) -> None:
    await repository(store).claim(installation(secret="s1"))
    await repository(store).claim(installation(secret="s2"))

    stored = await repository(store).require(installation().oauth_id)
    assert stored.oauth_secret.value == "s2"
    assert await repository(store).oauth_ids() == {installation().oauth_id}
    assert await repository(store).count() == 1
    await repository(store).delete(installation().oauth_id)
    assert await repository(store).count() == 0
    assert await store.scan(KEYS.installation_lock(installation().oauth_id)) == []


async def test_claim_from_another_source_changes_nothing(store: Store) -> None:
    await repository(store).claim(installation())
    before = await store_snapshot(store)

    with pytest.raises(Conflict):
        await repository(store).claim(installation("https://other.example/v2/capabilities"))

    assert await store_snapshot(store) == before


async def test_claim_loses_to_another_source_that_won_meanwhile(store: Store) -> None:
    winner = installation("https://other.example/v2/capabilities", secret="theirs")
    racing = _Meanwhile(store, lambda: repository(store).save(winner))

    with pytest.raises(Conflict):
        await repository(racing).claim(installation(secret="mine"))

    stored = await repository(store).require(installation().oauth_id)
    assert stored.oauth_secret.value == "theirs"


async def test_claim_after_an_uninstall_meanwhile_is_a_first_install(store: Store) -> None:
    # put_if_absent lost, but the record was gone again when the lock was held.
    racing = _Meanwhile(store, lambda: store.delete(KEYS.installation(installation().oauth_id)))
    moved = installation("https://other.example/v2/capabilities")

    await repository(racing).claim(moved)

    stored = await repository(store).require(moved.oauth_id)
    assert stored == moved


def test_the_record_reader_parses_each_record_text_once_and_keeps_a_bounded_number() -> None:
    sealer = Sealer(Secret("a-secret-key-for-the-record-reader-test"))  # Fernet per parse
    reader = RecordReader(sealer, size=2)
    first = installation(secret="s1").to_record(sealer)
    again = installation(secret="s2").to_record(sealer)  # installed again: a new secret
    assert reader.read(first) is reader.read(first)
    assert reader.read(first).oauth_secret.value == "s1"
    assert reader.read(again).oauth_secret.value == "s2"  # never the remembered one
    third = installation(capabilities_url=CAPABILITIES + "?x").to_record(sealer)
    kept = reader.read(first)
    reader.read(third)  # a third record: the oldest goes
    assert reader.read(first) is not kept and reader.read(first) == kept

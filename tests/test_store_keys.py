"""The key layout (one hash tag per installation) and the move of keys written before it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from addon.cli import main
from addon.descriptor import load_capabilities
from addon.installations import Installation, InstallationRepository
from addon.seal import Sealer
from addon.settings import Secret
from addon.store import Keys, Store
from addon.store.keys import KINDS, hash_tag
from addon.store.migration import migrate_keys
from addon.store.sqlite import SQLiteStore
from tests.helpers import REPO

KEYS = Keys("addon")
OAUTH_ID = "3a1b-c2"


def every_key_of(oauth_id: str) -> list[str]:
    """One key of each kind that belongs to ``oauth_id``."""
    return [
        KEYS.installation(oauth_id),
        KEYS.installation_lock(oauth_id),
        KEYS.token(oauth_id, ("view_room", "admin_room")),
        KEYS.token_lock(oauth_id, ("admin_room",)),
        KEYS.token_backoff(oauth_id, ("admin_room",)),
        KEYS.user_token(oauth_id, "42"),
        KEYS.user_token_lock(oauth_id, "42"),
        KEYS.oauth_state(f"{oauth_id}~Zm9vYmFyYmF6cXV1eA"),
        KEYS.client_gone(oauth_id),
        KEYS.seen_message(oauth_id, "msg-1"),
        KEYS.jwt_id(oauth_id, "a jti with spaces"),
        KEYS.storage(oauth_id, "remember"),
        KEYS.legacy_storage(oauth_id, "remember"),
        KEYS.storage_lock(oauth_id, "remember"),
        KEYS.config(oauth_id, "echo"),
    ]


def test_every_key_of_an_installation_carries_its_oauth_id_once_as_the_hash_tag() -> None:
    for key in every_key_of(OAUTH_ID):
        assert hash_tag(key) == OAUTH_ID, key
        assert key.count(OAUTH_ID) == 1 and key.count("{") == 1, key
    assert hash_tag(KEYS.installations()) == KEYS.installations()  # the index: its own slot


def test_the_installation_prefixes_find_its_keys_and_no_others() -> None:
    exact, prefixes = KEYS.of_installation(OAUTH_ID)
    found = [k for k in every_key_of(OAUTH_ID) if k in exact or k.startswith(tuple(prefixes))]
    assert found == every_key_of(OAUTH_ID)
    others = every_key_of(OAUTH_ID + "d") + every_key_of("x" + OAUTH_ID)
    assert not [k for k in others if k in exact or k.startswith(tuple(prefixes))]


def test_hash_tags_follow_redis_cluster_rules() -> None:
    assert hash_tag("a:{b}:{c}") == "b"  # the first {...} only
    assert hash_tag("a:{}:{c}") == "a:{}:{c}"  # an empty tag hashes the whole key
    assert hash_tag("a:{b") == "a:{b"


def test_a_prefix_with_a_brace_is_refused() -> None:
    with pytest.raises(ValueError, match="must not contain"):
        Keys("my{addon}")


def test_storage_keys_name_their_owner_and_integration() -> None:
    for key in (KEYS.storage("global", "ping"), KEYS.legacy_storage(OAUTH_ID, "ping")):
        assert KEYS.storage_owner_and_integration(key)[1] == "ping"
    assert KEYS.storage_owner_and_integration(KEYS.storage("global", "ping"))[0] == "global"


def untagged(key: str) -> str:
    """``key`` as the add-on wrote it before hash tags."""
    return key.replace("{", "").replace("}", "")


def test_tagged_name_undoes_the_old_layout() -> None:
    for key in [*every_key_of(OAUTH_ID), KEYS.storage("global", "ping")]:
        assert KEYS.tagged_name(untagged(key)) == key
        assert KEYS.tagged_name(key) is None  # already tagged
    assert KEYS.tagged_name(KEYS.installations()) is None
    assert KEYS.tagged_name("other:installation:abc") is None
    assert KEYS.tagged_name("addon:unknown-kind:abc") is None


@pytest.mark.anyio
async def test_migrate_keys_moves_an_old_deployment_to_the_tagged_names(store: Store) -> None:
    sealer = Sealer(None)
    installation = Installation(
        oauth_id=OAUTH_ID,
        oauth_secret=Secret("s" * 40),
        group_id=1,
        room_id=None,
        capabilities_url="https://hipchat.test/v2/capabilities",
        token_url="https://hipchat.test/v2/oauth/token",
        authorization_url=None,
        api_url="https://hipchat.test/v2/",
        scopes=("send_notification",),
        installed_at=1.0,
    )
    # What the previous version wrote: no braces.
    await store.put(untagged(KEYS.installation(OAUTH_ID)), installation.to_record(sealer))
    await store.add_member(KEYS.installations(), OAUTH_ID)
    await store.put(untagged(KEYS.token(OAUTH_ID, ("admin_room",))), "tok", ttl=300)
    await store.map_update(untagged(KEYS.storage(OAUTH_ID, "remember")), {"k": '"v"'})
    await store.put(untagged(KEYS.legacy_storage("global", "ping")), '{"count": 3}')
    # A key the new version wrote already wins over its old name.
    await store.put(KEYS.config(OAUTH_ID, "echo"), "new")
    await store.put(untagged(KEYS.config(OAUTH_ID, "echo")), "old")
    repository = InstallationRepository(store, KEYS, sealer)
    assert await repository.get(OAUTH_ID) is None  # what an upgrade without migration shows

    assert await migrate_keys(store, KEYS) == 4
    assert await repository.get(OAUTH_ID) == installation
    assert await store.map_all(KEYS.storage(OAUTH_ID, "remember")) == {"k": '"v"'}
    assert await store.get(KEYS.legacy_storage("global", "ping")) == '{"count": 3}'
    assert await store.get(KEYS.config(OAUTH_ID, "echo")) == "new"
    ttl = await store.ttl(KEYS.token(OAUTH_ID, ("admin_room",)))
    assert ttl is not None and 200 < ttl <= 300
    assert [key for key in await store.scan("") if KEYS.tagged_name(key)] == []
    assert await store.members(KEYS.installations()) == {OAUTH_ID}
    assert await migrate_keys(store, KEYS) == 0  # a second run finds nothing to do


def test_cli_storage_migrate_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'addon.db'}"
    monkeypatch.setenv("ADDON_STORE_URL", url)
    monkeypatch.setenv("ADDON_CAPABILITIES_PATH", str(REPO / "capabilities"))
    keys = Keys(load_capabilities(REPO / "capabilities").key)

    async def put_old() -> None:
        store = SQLiteStore(url)
        await store.put(untagged(keys.installation(OAUTH_ID)), "{}")
        await store.close()

    async def get_new() -> str | None:
        store = SQLiteStore(url)
        try:
            return await store.get(keys.installation(OAUTH_ID))
        finally:
            await store.close()

    asyncio.run(put_old())
    assert main(["storage", "migrate-keys"]) == 0
    assert asyncio.run(get_new()) == "{}"
    assert "moved 1 keys to their hash-tagged names" in capsys.readouterr().out


def test_kinds_cover_every_per_installation_key() -> None:
    kinds = {key.split(":")[1] for key in every_key_of(OAUTH_ID)}
    assert kinds == set(KINDS)

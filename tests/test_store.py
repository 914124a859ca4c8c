"""The store contract, run against Redis and SQLite alike, then what is particular to each."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from pathlib import Path

import pytest
import redis.exceptions
from redis.asyncio.sentinel import MasterNotFoundError

from addon.errors import ConfigError, StoreUnavailable
from addon.settings import Settings
from addon.store import MapUpdate, Outcome, Store, lock, open_store
from addon.store.redis import RedisStore
from addon.store.sqlite import SQLiteStore
from addon.store.urls import RedisURL, parse_redis_url
from tests.conftest import FakeClock
from tests.engines import RedisProcesses

pytestmark = pytest.mark.anyio

AdvanceTime = Callable[[float], Awaitable[None]]
Reopen = Callable[[], Store]

SHORT_TTL = 0.3  # a real TTL for Redis: long enough to read the key back, short to wait out


@pytest.fixture(
    params=[
        "redis",
        "sqlite",
        pytest.param("sentinel", marks=pytest.mark.system),
        pytest.param("cluster", marks=pytest.mark.system),
    ]
)
def store(request: pytest.FixtureRequest) -> Store:
    """Each backend in turn, and Redis also through Sentinel and as a Cluster."""
    backend: Store = request.getfixturevalue(f"{request.param}_store")
    return backend


@pytest.fixture
def advance_time(store: Store, clock: FakeClock) -> AdvanceTime:
    """Let ``seconds`` pass for ``store``: move SQLite's fake clock, or really wait for Redis."""

    async def advance(seconds: float) -> None:
        if isinstance(store, SQLiteStore):
            clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)

    return advance


# -- the contract -------------------------------------------------------------------------------


async def test_get_returns_what_put_stored(store: Store) -> None:
    assert await store.get("greeting") is None
    await store.put("greeting", "hello")
    assert await store.get("greeting") == "hello"
    await store.put("greeting", "bonjour")
    assert await store.get("greeting") == "bonjour"


async def test_put_rejects_a_ttl_that_is_not_positive(store: Store) -> None:
    for ttl in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="ttl must be a positive number"):
            await store.put("key", "value", ttl=ttl)
    assert await store.get("key") is None


async def test_a_key_expires_after_its_ttl(store: Store, advance_time: AdvanceTime) -> None:
    await store.put("code", "1234", ttl=SHORT_TTL)
    await store.put("kept", "yes")
    assert await store.get("code") == "1234"
    await advance_time(SHORT_TTL + 0.05)
    assert await store.get("code") is None
    assert await store.get_many(["code", "kept"]) == [None, "yes"]
    assert await store.ttl("code") is None
    assert await store.take("code") is None
    assert await store.delete_if_equal("code", "1234") is False
    assert await store.scan("") == ["kept"]
    assert await store.delete("code") == 0
    assert await store.put_if_absent("code", "5678") is True


async def test_put_if_absent_stores_only_once(store: Store) -> None:
    assert await store.put_if_absent("state", "first", ttl=60) is True
    assert await store.put_if_absent("state", "second", ttl=60) is False
    assert await store.get("state") == "first"


async def test_put_many_if_absent_claims_each_key_once_in_one_step(
    store: Store, advance_time: AdvanceTime
) -> None:
    # The keys of one atomic operation share a hash tag (one slot on a Redis Cluster).
    await store.put("{i}:seen", "before")
    claimed = await store.put_many_if_absent(
        [("{i}:jti", "a", SHORT_TTL), ("{i}:seen", "a", 60), ("{i}:other", "a", None)]
    )
    assert claimed == [True, False, True]
    assert await store.get_many(["{i}:jti", "{i}:seen", "{i}:other"]) == ["a", "before", "a"]
    fresh = [("{i}:jti", "b", 60.0), ("{i}:fresh", "b", 60.0)]
    assert await store.put_many_if_absent(fresh) == [False, True]
    assert await store.put_many_if_absent([]) == []
    await advance_time(SHORT_TTL + 0.05)
    assert await store.put_many_if_absent([("{i}:jti", "c", 60)]) == [True]
    assert await store.get("{i}:jti") == "c"


async def test_put_many_if_absent_under_concurrency_gives_each_key_to_one(store: Store) -> None:
    entries = [(f"{{i}}:claim-{i}", "x", 60.0) for i in range(5)]
    results = await asyncio.gather(*(store.put_many_if_absent(entries) for _ in range(20)))
    for index in range(5):
        assert sum(result[index] for result in results) == 1


async def test_take_is_single_use_under_concurrency(store: Store) -> None:
    await store.put("oauth-state", "pending")
    taken = await asyncio.gather(*(store.take("oauth-state") for _ in range(50)))
    assert taken.count("pending") == 1
    assert taken.count(None) == 49
    assert await store.get("oauth-state") is None
    assert await store.take("missing") is None


async def test_delete_counts_the_keys_that_existed(store: Store) -> None:
    await store.put("a", "1")
    await store.put("b", "2")
    await store.add_member("s", "x")
    assert await store.delete() == 0
    assert await store.delete("a", "a", "b", "s", "missing") == 3
    assert await store.get_many(["a", "b"]) == [None, None]
    assert await store.members("s") == set()


async def test_delete_if_equal_deletes_only_the_expected_value(store: Store) -> None:
    await store.put("lock", "mine")
    assert await store.delete_if_equal("lock", "theirs") is False
    assert await store.get("lock") == "mine"
    assert await store.delete_if_equal("lock", "mine") is True
    assert await store.get("lock") is None
    assert await store.delete_if_equal("lock", "mine") is False


async def test_sets_add_and_remove_members(store: Store) -> None:
    assert await store.members("installations") == set()
    await store.add_member("installations", "a")
    await store.add_member("installations", "b")
    await store.add_member("installations", "a")
    assert await store.members("installations") == {"a", "b"}
    assert await store.count_members("installations") == 2
    await store.remove_member("installations", "a")
    await store.remove_member("installations", "missing")
    assert await store.members("installations") == {"b"}
    await store.remove_member("installations", "b")
    assert await store.members("installations") == set()
    assert await store.count_members("installations") == 0
    assert await store.scan("installations") == []


async def test_scan_treats_the_prefix_literally(store: Store) -> None:
    keys = ["abc:1", "abc:2", "abcd", "ab", "a*c:1", "a?c:1", "a[b]c:1", "a\\c:1", "é:1"]
    for key in keys:
        await store.put(key, "v")
    await store.add_member("abc:set", "m")
    assert await store.scan("abc:") == ["abc:1", "abc:2", "abc:set"]
    assert await store.scan("a*c:") == ["a*c:1"]
    assert await store.scan("a?c:") == ["a?c:1"]
    assert await store.scan("a[b]c:") == ["a[b]c:1"]
    assert await store.scan("a\\c:") == ["a\\c:1"]
    assert await store.scan("é") == ["é:1"]
    assert await store.scan("%") == []
    assert await store.scan("") == sorted([*keys, "abc:set"])


async def test_scan_prefix_ending_in_a_code_point_without_a_plain_successor(store: Store) -> None:
    # SQLite bounds the prefix by bumping its last code point; these two cannot simply be bumped.
    for key in ["x\U0010ffff:1", "x\ud7ff:1", "x\ue000", "y"]:
        await store.put(key, "v")
    assert await store.scan("x\U0010ffff") == ["x\U0010ffff:1"]
    assert await store.scan("x\ud7ff") == ["x\ud7ff:1"]


async def test_ttl_reports_the_seconds_left(store: Store) -> None:
    assert await store.ttl("missing") is None
    await store.put("forever", "v")
    assert await store.ttl("forever") is None
    await store.put("token", "v", ttl=10)
    left = await store.ttl("token")
    assert left is not None
    assert 9 < left <= 10
    await store.put("token", "v")
    assert await store.ttl("token") is None


async def test_get_many_keeps_the_order(store: Store) -> None:
    await store.put("one", "1")
    await store.put("three", "3")
    assert await store.get_many([]) == []
    assert await store.get_many(["three", "two", "one"]) == ["3", None, "1"]
    keys = [f"k{i}" for i in range(1200)]  # more than one SQL batch
    assert await store.get_many(keys) == [None] * 1200


async def test_lock_gives_mutual_exclusion(store: Store) -> None:
    async def increment() -> None:
        async with lock(store, "counter-lock", wait=5, poll=0.001) as acquired:
            assert acquired
            value = int(await store.get("counter") or "0")
            await asyncio.sleep(0)  # let the others run: without the lock, updates get lost
            await store.put("counter", str(value + 1))

    await asyncio.gather(*(increment() for _ in range(20)))
    assert await store.get("counter") == "20"
    assert await store.get("counter-lock") is None


async def test_lock_expires_when_its_holder_never_releases(
    store: Store, advance_time: AdvanceTime
) -> None:
    crashed = lock(store, "lock", ttl=SHORT_TTL)
    assert await crashed.__aenter__() is True
    await advance_time(SHORT_TTL + 0.05)
    async with lock(store, "lock", ttl=10, wait=1) as acquired:
        assert acquired
        # The first holder wakes up late and releases: the lock it lost must stay held.
        await crashed.__aexit__(None, None, None)
        assert await store.get("lock") is not None


async def test_a_lock_released_while_redis_is_down_keeps_what_ran_under_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    processes = RedisProcesses(tmp_path)
    try:
        port = processes.start()
        store = RedisStore(f"redis://127.0.0.1:{port}/0")
        ran = []
        async with lock(store, "lock", ttl=10) as acquired:
            ran.append(acquired)
            processes.stop(port)  # the store goes away while the lock is held
        # No StoreUnavailable from the release: the work under the lock stands.
        assert ran == [True]
        assert "Could not release the lock lock" in caplog.text and "expires in 10 s" in caplog.text
        await store.close()
    finally:
        processes.close()


async def test_lock_yields_false_when_the_wait_runs_out(store: Store) -> None:
    async with lock(store, "lock", ttl=10) as first:
        async with lock(store, "lock", ttl=10, wait=0.05, poll=0.01) as second:
            assert (first, second) == (True, False)
        assert await store.get("lock") is not None


async def test_values_survive_closing_and_reopening(store: Store, reopen_store: Reopen) -> None:
    await store.put("installation", "{}")
    await store.put("token", "t", ttl=60)
    await store.add_member("installations", "abc")
    await store.close()
    await store.close()  # closing twice is harmless
    again = reopen_store()
    assert await again.get("installation") == "{}"
    assert await again.ttl("token") is not None
    assert await again.members("installations") == {"abc"}


async def test_put_guarded_writes_only_while_the_guard_exists(store: Store) -> None:
    assert await store.put_guarded("{i}:marker", "1", guard="{i}:installation", ttl=60) is False
    assert await store.get("{i}:marker") is None
    await store.put("{i}:installation", "{}")
    assert await store.put_guarded("{i}:marker", "1", guard="{i}:installation", ttl=60) is True
    assert await store.get("{i}:marker") == "1"
    ttl = await store.ttl("{i}:marker")
    assert ttl is not None and 0 < ttl <= 60


async def test_a_map_keeps_one_field_per_name(store: Store) -> None:
    assert await store.map_all("m") == {}
    assert await store.map_get("m", "a") is None
    written = await store.map_update("m", {"a": "1", "bé": '"x"'})
    assert written == MapUpdate(Outcome.WRITTEN, size=len("a1") + len('bé"x"'.encode()))
    assert await store.map_get("m", "a") == "1"
    assert await store.map_all("m") == {"a": "1", "bé": '"x"'}
    assert await store.scan("m") == ["m"]
    # Overwriting counts the new value only; deleting says how many names existed.
    assert (await store.map_update("m", {"a": "22"})).size == len("a22") + len('bé"x"'.encode())
    removed = await store.map_update("m", {"a": None, "missing": None})
    assert (removed.removed, removed.size) == (1, len('bé"x"'.encode()))
    # An emptied map is gone, like an empty Redis hash.
    assert (await store.map_update("m", {"bé": None})).size == 0
    assert await store.scan("") == []


async def test_map_names_are_any_string(store: Store) -> None:
    names = {"": "0", "#size": "1", "=x": "2", "a:b": "3", "*": "4"}
    await store.map_update("m", names)
    assert await store.map_all("m") == names
    assert await store.map_get("m", "#size") == "1"


async def test_map_update_refuses_growth_past_the_quota(store: Store) -> None:
    assert (await store.map_update("m", {"a": "x" * 9}, quota=10)).size == 10
    refused = await store.map_update("m", {"b": "y"}, quota=10)
    assert refused == MapUpdate(Outcome.OVER_QUOTA, size=10)
    assert await store.map_all("m") == {"a": "x" * 9}
    # Shrinking (or a same-size write) is allowed even when over the quota already.
    assert (await store.map_update("m", {"a": "x" * 5}, quota=4)).outcome is Outcome.WRITTEN
    # Another map has its own count.
    assert (await store.map_update("other", {"b": "y" * 9}, quota=10)).outcome is Outcome.WRITTEN


async def test_map_update_writes_nothing_without_its_guard(store: Store) -> None:
    refused = await store.map_update("{i}:m", {"a": "1"}, guard="{i}:installation")
    assert refused.outcome is Outcome.NO_GUARD
    assert await store.scan("") == []
    await store.put("{i}:installation", "{}")
    assert (await store.map_update("{i}:m", {"a": "1"}, guard="{i}:installation")).outcome is (
        Outcome.WRITTEN
    )


async def test_an_atomic_operation_across_hash_tags_is_refused(store: Store) -> None:
    # What a Redis Cluster cannot run atomically, no backend accepts, so tests on SQLite catch it.
    with pytest.raises(ValueError, match="different hash tags"):
        await store.put_many_if_absent([("{a}:jti", "x", 60), ("{b}:seen", "x", 60)])
    with pytest.raises(ValueError, match="different hash tags"):
        await store.put_guarded("{a}:marker", "1", guard="{b}:installation")
    with pytest.raises(ValueError, match="different hash tags"):
        await store.map_update("{a}:m", {"x": "1"}, guard="b:installation")
    with pytest.raises(ValueError, match="different hash tags"):
        await store.read_and_claim("{a}:installation", [("{b}:jti", "x", 60)])
    assert await store.scan("") == []


async def test_map_update_can_replace_the_whole_map(store: Store) -> None:
    await store.map_update("m", {"a": "1", "b": "2"})
    replaced = await store.map_update("m", {"c": "3"}, replace=True)
    assert (replaced.outcome, replaced.size) == (Outcome.WRITTEN, 2)
    assert await store.map_all("m") == {"c": "3"}


async def test_maps_are_deleted_and_scanned_like_keys(store: Store) -> None:
    await store.map_update("app:m", {"a": "1"})
    await store.put("app:k", "v")
    assert await store.scan("app:") == ["app:k", "app:m"]
    assert await store.delete("app:m", "app:k") == 2
    assert await store.map_all("app:m") == {}
    assert (await store.map_update("app:m", {"a": "1"}, quota=2)).size == 2  # size restarted


async def test_concurrent_map_updates_keep_the_size_exact(store: Store) -> None:
    await asyncio.gather(*(store.map_update("m", {f"n{i}": "v" * i}) for i in range(40)))
    expected = sum(len(f"n{i}") + i for i in range(40))
    assert (await store.map_update("m", {}, quota=expected)).size == expected


async def test_move_renames_any_kind_of_key_and_keeps_its_ttl(store: Store) -> None:
    await store.put("old:plain", "v", ttl=60)
    await store.map_update("old:map", {"a": "1"})
    await store.add_member("old:set", "m")
    # Across hash tags too (two slots on a cluster), as the key migration needs.
    assert await store.move("old:plain", "{new}:plain") is True
    assert await store.move("old:map", "new:map") is True
    assert await store.move("old:set", "new:set") is True
    assert await store.get("{new}:plain") == "v"
    ttl = await store.ttl("{new}:plain")
    assert ttl is not None and 50 < ttl <= 60
    assert await store.map_all("new:map") == {"a": "1"}
    assert (await store.map_update("new:map", {}, quota=2)).size == 2  # its size moved along
    assert await store.members("new:set") == {"m"}
    assert await store.scan("old:") == []
    assert await store.move("old:plain", "{new}:plain") is False  # nothing left to move


async def test_move_onto_an_existing_key_keeps_the_newer_one(store: Store) -> None:
    await store.put("{n}:old", "old")
    await store.put("new", "new")
    assert await store.move("{n}:old", "new") is False
    assert await store.get("new") == "new"
    assert await store.get("{n}:old") is None


async def test_ping_answers(store: Store) -> None:
    await store.ping()


# -- an unreachable store -----------------------------------------------------------------------

CALLS: list[tuple[str, Callable[[Store], Awaitable[object]]]] = [
    ("get", lambda s: s.get("k")),
    ("get_many", lambda s: s.get_many(["k"])),
    ("put", lambda s: s.put("k", "v", ttl=1)),
    ("put_if_absent", lambda s: s.put_if_absent("k", "v")),
    ("put_many_if_absent", lambda s: s.put_many_if_absent([("k", "v", 1.0)])),
    ("take", lambda s: s.take("k")),
    ("delete", lambda s: s.delete("k")),
    ("delete_if_equal", lambda s: s.delete_if_equal("k", "v")),
    ("ttl", lambda s: s.ttl("k")),
    ("add_member", lambda s: s.add_member("k", "m")),
    ("remove_member", lambda s: s.remove_member("k", "m")),
    ("members", lambda s: s.members("k")),
    ("count_members", lambda s: s.count_members("k")),
    ("scan", lambda s: s.scan("k")),
    ("put_guarded", lambda s: s.put_guarded("{k}", "v", guard="{k}:g")),
    ("map_get", lambda s: s.map_get("k", "f")),
    ("map_all", lambda s: s.map_all("k")),
    ("map_update", lambda s: s.map_update("{k}", {"f": "v"}, guard="{k}:g", quota=10)),
    ("move", lambda s: s.move("k", "{k}:new")),
    ("ping", lambda s: s.ping()),
]


@pytest.fixture(params=["redis", "sqlite-under-a-file", "sqlite-not-a-database"])
async def unreachable(
    request: pytest.FixtureRequest, unused_port: int, tmp_path: Path
) -> AsyncIterator[tuple[Store, str]]:
    """A store that cannot work, and what its error message must name."""
    broken: Store
    if request.param == "redis":
        broken = RedisStore(f"redis://:hunter2@127.0.0.1:{unused_port}/0")
        where = f"127.0.0.1:{unused_port}"
    elif request.param == "sqlite-under-a-file":
        (tmp_path / "file").write_text("not a directory")
        where = str(tmp_path / "file" / "sub" / "addon.db")
        broken = SQLiteStore(f"sqlite:///{where}")
    else:
        (tmp_path / "addon.db").write_bytes(b"not a database, " * 100)
        where = str(tmp_path / "addon.db")
        broken = SQLiteStore(f"sqlite:///{where}")
    yield broken, where
    await broken.close()


@pytest.mark.parametrize("call", [pytest.param(call, id=name) for name, call in CALLS])
async def test_every_method_raises_store_unavailable(
    unreachable: tuple[Store, str], call: Callable[[Store], Awaitable[object]]
) -> None:
    broken, where = unreachable
    with pytest.raises(StoreUnavailable) as caught:
        await call(broken)
    assert where in str(caught.value)
    assert "hunter2" not in str(caught.value)


# -- Redis in particular ------------------------------------------------------------------------


async def test_redis_url_never_shows_the_password() -> None:
    store = RedisStore("redis://user:hunter2@localhost:6379/0?password=hunter2&db=1")
    try:
        assert store.url == "redis://user:***@localhost:6379/0?password=***&db=1"
        assert "hunter2" not in repr(store)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://:hunter2@localhost/0", "has no Redis scheme"),
        ("redis://:hunter2@localhost:notaport/0", "malformed"),
        ("redis+sentinel://:hunter2@h1:26379,h2:26379", "names no service"),
        ("redis+sentinel://:hunter2@h1:26379/my master", "names no service"),
        ("redis+sentinel://:hunter2@h1:26379/mymaster/x", "database 'x' that is not a number"),
        ("redis+sentinel://:hunter2@h1:26379/a/1/b", "names no service"),
        ("redis+sentinel://:hunter2@h1:26379,/mymaster", "bad host:port ''"),
        ("redis+cluster://:hunter2@h1:6379,h2:port", "bad host:port 'h2:port'"),
        ("redis+cluster://:hunter2@h1:6379/1", "a Redis Cluster has database 0 only"),
        ("rediss+cluster://:hunter2@h1:6379?ssl_cert_reqs=none", "takes no ?query"),
    ],
)
async def test_redis_malformed_url_is_a_config_error(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(problem)) as caught:
        RedisStore(url)
    assert "hunter2" not in str(caught.value)
    assert "***" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis+sentinel://h1,h2:26380/mymaster",
            RedisURL("sentinel", "", (("h1", 26379), ("h2", 26380)), "mymaster"),
        ),
        (
            "rediss+sentinel://u:p%40ss@[::1]:26379/mymaster/2",
            RedisURL("sentinel", "", (("::1", 26379),), "mymaster", 2, True, "u", "p@ss"),
        ),
        (
            "redis+cluster://:pw@h1:7000,h2:7001,h3",
            RedisURL("cluster", "", (("h1", 7000), ("h2", 7001), ("h3", 6379)), password="pw"),
        ),
        ("rediss+cluster://h1:7000/", RedisURL("cluster", "", (("h1", 7000),), is_tls=True)),
        ("rediss://h:6380/1", RedisURL("single", "", is_tls=True)),
    ],
)
def test_redis_urls_name_the_engine_its_nodes_and_credentials(url: str, expected: RedisURL) -> None:
    parsed = parse_redis_url(url)
    assert dataclasses.replace(parsed, url="") == expected
    assert "p@ss" not in repr(parsed)


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("redis+sentinel://127.0.0.1:{port}/mymaster", "Sentinel service 'mymaster' via"),
        ("redis+cluster://127.0.0.1:{port}", "Redis Cluster at"),
    ],
)
async def test_an_unreachable_sentinel_or_cluster_is_store_unavailable(
    url: str, where: str, unused_port: int
) -> None:
    store = RedisStore(url.format(port=unused_port), password="hunter2")
    try:
        with pytest.raises(StoreUnavailable, match=f"{where} 127.0.0.1:{unused_port}"):
            await store.get("{i}:key")
        with pytest.raises(StoreUnavailable):
            await store.put_many_if_absent([("{i}:a", "v", None)])
    finally:
        await store.close()


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ConnectionError("refused"),
        MasterNotFoundError("No master found for 'mymaster'"),
        redis.exceptions.TimeoutError("timed out"),
        redis.exceptions.ReadOnlyError("READONLY You can't write against a read only replica."),
        redis.exceptions.TryAgainError("TRYAGAIN"),
        redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"),
        redis.exceptions.MasterDownError("MASTERDOWN Link with MASTER is down"),
        redis.exceptions.RedisClusterException("Redis Cluster cannot be connected."),
        redis.exceptions.SlotNotCoveredError("slot 42 is not covered"),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_failover_errors_are_store_unavailable(error: Exception) -> None:
    # What redis-py raises while Sentinel or a cluster fails over, each as the store sees it.
    store = RedisStore("redis+sentinel://127.0.0.1:1/mymaster")
    with pytest.raises(StoreUnavailable, match=type(error).__name__):
        with store._unavailable():
            raise error
    with pytest.raises(redis.exceptions.CrossSlotTransactionError):  # a bug stays a bug (500)
        with store._unavailable():
            raise redis.exceptions.CrossSlotTransactionError("cross slot")
    await store.close()


async def test_the_store_password_is_used_when_the_url_has_none(tmp_path: Path) -> None:
    processes = RedisProcesses(tmp_path)
    try:
        port = processes.start(config="requirepass hunter2-secret\n")
        env = {"ADDON_STORE_URL": f"redis://127.0.0.1:{port}/0"}
        settings = Settings.from_environ({**env, "ADDON_STORE_PASSWORD": "hunter2-secret"})
        assert "hunter2" not in repr(settings)
        store = open_store(settings.store_url, password=settings.store_password)
        await store.put("key", "v")
        assert await store.get("key") == "v"
        await store.close()
        # The URL's own password wins over ADDON_STORE_PASSWORD.
        wrong = open_store(f"redis://:wrong@127.0.0.1:{port}/0", password=settings.store_password)
        with pytest.raises(StoreUnavailable, match="AuthenticationError"):
            await wrong.get("key")
        await wrong.close()
        without = open_store(settings.store_url)
        with pytest.raises(StoreUnavailable, match="AuthenticationError"):
            await without.get("key")
        await without.close()
    finally:
        processes.close()


async def test_redis_namespaces_do_not_see_each_other(redis_url: str) -> None:
    first, second = (
        RedisStore(redis_url, namespace="ns-a:"),
        RedisStore(redis_url, namespace="ns-b:"),
    )
    try:
        await first.put("key", "a")
        assert await second.get("key") is None
        assert await second.scan("") == []
        assert await first.scan("") == ["key"]
    finally:
        await first.delete("key")
        await first.close()
        await second.close()


# -- SQLite in particular -----------------------------------------------------------------------


async def test_sqlite_purges_expired_rows_on_put(
    sqlite_store: SQLiteStore, clock: FakeClock
) -> None:
    await sqlite_store.put("old", "v", ttl=1)
    clock.advance(61)  # past the expiry and the purge interval
    await sqlite_store.put("new", "v")
    with closing(sqlite3.connect(sqlite_store.path)) as db:
        assert db.execute("SELECT key FROM kv").fetchall() == [("new",)]


async def test_sqlite_two_stores_on_one_file_see_each_other(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = SQLiteStore(url), SQLiteStore(url)
    try:
        await first.put("key", "v")
        assert await second.take("key") == "v"
        assert await first.get("key") is None
    finally:
        await first.close()
        await second.close()


async def test_sqlite_namespaces_share_a_file_apart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'addon.db'}"
    first, second = SQLiteStore(url, namespace="a:"), SQLiteStore(url, namespace="b:")
    try:
        await first.put("key", "a")
        await first.add_member("set", "m")
        assert await second.get("key") is None
        assert await second.scan("") == []
        assert await first.scan("") == ["key", "set"]
    finally:
        await first.close()
        await second.close()


async def test_sqlite_relative_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = SQLiteStore("sqlite:///data/addon.db")
    try:
        await store.put("key", "v")
    finally:
        await store.close()
    assert (tmp_path / "data" / "addon.db").is_file()


async def test_sqlite_failed_transaction_releases_the_write_lock(
    sqlite_store: SQLiteStore,
) -> None:
    await sqlite_store.ping()
    with closing(sqlite3.connect(sqlite_store.path, isolation_level=None)) as other:
        other.execute("DROP TABLE kv")
        with pytest.raises(StoreUnavailable, match="no such table"):
            await sqlite_store.take("key")
        other.execute("BEGIN IMMEDIATE")  # would fail as "database is locked" after a leak
        other.execute("ROLLBACK")
    assert repr(sqlite_store).startswith("SQLiteStore('sqlite:///")


async def test_sqlite_closed_store_is_unavailable(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.close()
    with pytest.raises(StoreUnavailable, match="is closed"):
        await sqlite_store.get("key")


@pytest.mark.parametrize("url", ["sqlite:///", "sqlite://relative.db", "postgres:///x"])
def test_sqlite_malformed_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="malformed"):
        SQLiteStore(url)


# -- open_store ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///addon.db", SQLiteStore),
        ("sqlite:////var/lib/addon.db", SQLiteStore),
        ("redis://localhost:6379/0", RedisStore),
        ("rediss://:secret@redis.example.com:6380/1", RedisStore),
        ("unix:///run/redis.sock", RedisStore),
    ],
)
async def test_open_store_picks_the_backend_from_the_url(url: str, expected: type) -> None:
    store = open_store(url)
    try:
        assert isinstance(store, expected)
    finally:
        await store.close()


@pytest.mark.anyio
async def test_an_error_reply_from_redis_is_store_unavailable(redis_store: RedisStore) -> None:
    await redis_store.add_member("a-set", "x")
    with pytest.raises(StoreUnavailable, match="ResponseError"):
        await redis_store.take("a-set")  # GETDEL on a set: WRONGTYPE

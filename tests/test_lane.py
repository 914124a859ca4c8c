"""The webhook path's pipelined Redis connection (``addon.store.lane``), on real redis-servers."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
import redis.exceptions

from addon.errors import StoreUnavailable
from addon.store.lane import Lane, lane_target, pack
from addon.store.redis import _READ_AND_CLAIM, RedisStore
from tests.engines import RedisProcesses

pytestmark = pytest.mark.anyio

TAG = "{lane}"


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[RedisProcesses]:
    started = RedisProcesses(tmp_path)
    try:
        yield started
    finally:
        started.close()


def _target(url: str, timeout: float = 5.0) -> dict[str, object]:
    client = redis.asyncio.Redis.from_url(url, socket_timeout=timeout)
    pool = client.connection_pool
    return lane_target(pool.connection_kwargs, pool.connection_class)


async def _reads(port: int) -> int:
    async with redis.asyncio.Redis(port=port) as client:
        return int((await client.info("stats"))["total_reads_processed"])


async def test_concurrent_commands_share_reads_and_each_gets_its_own_reply(
    processes: RedisProcesses,
) -> None:
    port = processes.start()
    lane = await Lane.open(_target(f"redis://127.0.0.1:{port}/0"))
    before = await _reads(port)
    replies = await asyncio.gather(*(lane.call(pack(("ECHO", f"r{i}"))) for i in range(200)))
    after = await _reads(port)
    lane.close()
    assert replies == [f"r{i}" for i in range(200)]
    # Made in one turn of the loop, they went out in one write; Redis read them in a few reads
    # (one INFO's read is in the count too), not in 200.
    assert after - before < 20


async def test_a_caller_that_stops_waiting_leaves_the_others_their_replies(
    processes: RedisProcesses,
) -> None:
    port = processes.start()
    lane = await Lane.open(_target(f"redis://127.0.0.1:{port}/0"))
    processes.cli(port, "CLIENT", "PAUSE", "300", "ALL")  # replies come only after 0.3 s
    first = asyncio.ensure_future(lane.call(pack(("ECHO", "first"))))
    await asyncio.sleep(0.05)
    first.cancel()
    second = await lane.call(pack(("ECHO", "second")))
    third = await lane.call(pack(("ECHO", "third")))
    lane.close()
    assert first.cancelled()
    assert (second, third) == ("second", "third")  # not "first": the queue kept in step


async def test_a_reply_later_than_the_timeout_fails_every_waiter_and_closes_the_lane(
    processes: RedisProcesses,
) -> None:
    port = processes.start()
    lane = await Lane.open(_target(f"redis://127.0.0.1:{port}/0", timeout=0.2))
    processes.cli(port, "CLIENT", "PAUSE", "1000", "ALL")
    calls = [lane.call(pack(("ECHO", str(i)))) for i in range(3)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, redis.exceptions.TimeoutError) for r in results), results
    assert lane.closed
    with pytest.raises(redis.exceptions.ConnectionError):
        await lane.call(pack(("PING",)))


async def test_a_store_goes_on_after_redis_restarts_and_after_a_timeout(
    processes: RedisProcesses,
) -> None:
    port = processes.start()
    store = RedisStore(f"redis://127.0.0.1:{port}/0?socket_timeout=0.3")
    await store.put(f"{TAG}installation", "record")
    assert await store.read_and_claim(f"{TAG}installation", []) == ("record", [])
    processes.stop(port)
    processes.start(port=port)  # empty: nothing was saved
    await store.put(f"{TAG}installation", "again")
    # The lane's connection died with the old server: a new lane, and no error.
    assert await store.read_and_claim(f"{TAG}installation", [(f"{TAG}c", "1", 5.0)]) == (
        "again",
        [True],
    )
    processes.cli(port, "CLIENT", "PAUSE", "1500", "ALL")
    with pytest.raises(StoreUnavailable, match="TimeoutError"):  # twice 0.3 s, then a 503
        await store.read_and_claim(f"{TAG}installation", [])
    await asyncio.sleep(1.3)
    assert await store.read_and_claim(f"{TAG}installation", []) == ("again", [])
    await store.close()


async def test_a_down_redis_is_store_unavailable(processes: RedisProcesses) -> None:
    port = processes.start()
    processes.stop(port, signal.SIGKILL)
    store = RedisStore(f"redis://127.0.0.1:{port}/0")
    with pytest.raises(StoreUnavailable, match="ConnectionError"):
        await store.read_and_claim(f"{TAG}installation", [])
    await store.close()


@pytest.mark.parametrize(
    ("config", "url"),
    [
        ("requirepass hunter2-secret\n", "redis://:hunter2-secret@127.0.0.1:{port}/3"),
        (
            "user lane on >lane-password ~* &* +@all\nuser default off\n",
            "redis://lane:lane-password@127.0.0.1:{port}/3",
        ),
    ],
    ids=["password", "acl-user"],
)
async def test_the_lane_authenticates_and_selects_the_urls_db(
    processes: RedisProcesses, config: str, url: str
) -> None:
    port = processes.start(config=config)
    store = RedisStore(url.format(port=port))
    await store.put(f"{TAG}installation", "in db 3")
    assert await store.read_and_claim(f"{TAG}installation", [(f"{TAG}c", "1", 5.0)]) == (
        "in db 3",
        [True],
    )
    await store.close()
    acl = "user lane" in config
    username, password = ("lane", "lane-password") if acl else (None, "hunter2-secret")
    async with redis.asyncio.Redis(port=port, db=3, username=username, password=password) as db3:
        assert await db3.get(f"{TAG}c") == b"1"  # the claim went to db 3, beside its record


async def test_a_wrong_password_is_store_unavailable(processes: RedisProcesses) -> None:
    port = processes.start(config="requirepass hunter2-secret\n")
    store = RedisStore(f"redis://:wrong@127.0.0.1:{port}/0")
    with pytest.raises(StoreUnavailable, match="AuthenticationError"):
        await store.read_and_claim(f"{TAG}installation", [])
    await store.close()


async def test_a_unix_socket_takes_a_lane(processes: RedisProcesses, tmp_path: Path) -> None:
    path = tmp_path / "redis.sock"
    processes.start(config=f"unixsocket {path}\nunixsocketperm 700\n")
    assert _target(f"unix://{path}")["path"] == str(path)
    store = RedisStore(f"unix://{path}")
    await store.put(f"{TAG}installation", "over a socket")
    assert await store.read_and_claim(f"{TAG}installation", []) == ("over a socket", [])
    await store.close()


def test_tls_takes_no_lane() -> None:
    assert _target("rediss://127.0.0.1:6380/0") == {}  # the pooled connections serve it


async def test_a_claim_whose_reply_was_lost_is_found_made_by_its_retry(
    processes: RedisProcesses,
) -> None:
    # The script ran, but its reply never came (a proxy swallows what Redis sends on the first
    # connection): after the socket timeout the retry, on a new lane, finds the claims holding
    # its own stamp. Were they "taken", the webhook would be refused 401 and its message id
    # stay claimed, so HipChat's next delivery would be dropped as already run.
    port = processes.start()
    connections = 0
    writers: list[asyncio.StreamWriter] = []
    handlers: list[asyncio.Future[Any]] = []

    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, drop: bool) -> None:
        while data := await source.read(65536):
            if not drop:
                sink.write(data)
        sink.close()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        swallow = connections == 1
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        writers.extend([writer, upstream_writer])
        both = asyncio.gather(
            pipe(reader, upstream_writer, False),
            pipe(upstream_reader, writer, swallow),
            return_exceptions=True,
        )
        handlers.append(both)
        await both

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    proxied = server.sockets[0].getsockname()[1]
    async with redis.asyncio.Redis(port=port) as direct:
        await direct.set(f"{TAG}installation", "record")
        await direct.script_load(_READ_AND_CLAIM)  # so the first try runs it, not NOSCRIPT
    store = RedisStore(f"redis://127.0.0.1:{proxied}/0?socket_timeout=0.3")
    try:
        found = await store.read_and_claim(f"{TAG}installation", [(f"{TAG}jti", "req-1", 60.0)])
    finally:
        await store.close()
        server.close()
        for writer in writers:
            writer.close()
        await asyncio.gather(*handlers)
        await server.wait_closed()
    assert connections == 2
    assert found == ("record", [True])


async def test_a_reply_that_is_not_utf8_fails_its_own_caller_only(
    processes: RedisProcesses,
) -> None:
    port = processes.start()
    async with redis.asyncio.Redis(port=port) as client:
        await client.set(f"{TAG}bad", b"\xff\xfe")
        await client.set(f"{TAG}good", "fine")
    lane = await Lane.open(_target(f"redis://127.0.0.1:{port}/0"))
    keys = [f"{TAG}good", f"{TAG}bad", f"{TAG}good"]
    replies = await asyncio.gather(
        *(lane.call(pack(("GET", key))) for key in keys), return_exceptions=True
    )
    assert replies[0] == replies[2] == "fine"  # the others' replies, on a lane still open
    assert isinstance(replies[1], UnicodeDecodeError)  # its own, as redis-py raises it
    assert not lane.closed
    lane.close()
    store = RedisStore(f"redis://127.0.0.1:{port}/0")
    for _ in range(2):  # through redis-py (NOSCRIPT: the script is loaded), then on the lane
        with pytest.raises(StoreUnavailable, match="UnicodeDecodeError"):  # a 503, not a 500
            await store.read_and_claim(f"{TAG}bad", [])
    await store.close()


async def test_requests_waiting_for_a_new_lane_share_its_failure(
    processes: RedisProcesses,
) -> None:
    port = processes.start(config="requirepass hunter2-secret\n")
    store = RedisStore(f"redis://:hunter2-secret@127.0.0.1:{port}/0?socket_timeout=0.3")
    server = processes.processes[port]
    server.send_signal(signal.SIGSTOP)  # connects (the kernel's backlog), answers nothing
    try:
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(
            *(store.read_and_claim(f"{TAG}installation", []) for _ in range(8)),
            return_exceptions=True,
        )
        elapsed = asyncio.get_running_loop().time() - started
    finally:
        server.send_signal(signal.SIGCONT)
    await store.close()
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    # Each waited for two AUTHs at most (0.3 s each), not for every other request's in turn.
    assert elapsed < 1.5, elapsed


async def test_a_failed_lane_sends_nothing_more(processes: RedisProcesses) -> None:
    port = processes.start()
    lane = await Lane.open(_target(f"redis://127.0.0.1:{port}/0", timeout=0.3))
    server = processes.processes[port]
    server.send_signal(signal.SIGSTOP)  # reads nothing: the writes pile up past the kernel's
    try:
        value = "x" * 65536
        calls = [lane.call(pack(("SET", f"{TAG}k{i}", value))) for i in range(300)]
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        server.send_signal(signal.SIGCONT)
    assert all(isinstance(r, redis.exceptions.TimeoutError) for r in results)
    await asyncio.sleep(0.5)
    async with redis.asyncio.Redis(port=port) as client:
        # Their callers were told they failed (and retry them): the 19 MB still queued was
        # dropped with the connection, not written to Redis once it woke up.
        assert await client.dbsize() < 150

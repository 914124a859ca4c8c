"""Shared fixtures: a private Redis server, the two stores, and a clock tests move by hand.

(Being extended: app and fake HipChat.)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from addon.settings import Settings
from addon.store import Store
from addon.store.redis import RedisStore
from addon.store.sqlite import SQLiteStore
from addon.testing import FakeHipChat
from tests.engines import RedisProcesses, start_cluster, start_sentinel
from tests.helpers import make_app, redis_answers_ping, settings_for

_REDIS_START_TIMEOUT = 10.0


class FakeClock:
    """A clock that moves only when told to (pass it as ``now=``)."""

    def __init__(self, start: float | None = None) -> None:
        self.time = time.time() if start is None else start

    def __call__(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        self.time += seconds


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting at the current time."""
    return FakeClock()


@pytest.fixture
def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (nothing, at least, when it was picked)."""
    return _free_port()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a Redis for this run: ``ADDON_TEST_REDIS_URL``, or a private redis-server."""
    url = os.environ.get("ADDON_TEST_REDIS_URL")
    if url:
        yield url
        return
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail(
            "redis-server is not on PATH; install it (apt-get install redis-server, "
            "brew install redis) or set ADDON_TEST_REDIS_URL=redis://host:port/db",
            pytrace=False,
        )
    workdir = tmp_path_factory.mktemp("redis")
    port = _free_port()
    command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(workdir)]
    log = workdir / "redis.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        _wait_for_redis(port, process, log)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(process)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The URL of the test Redis; give each user its own key namespace."""
    return redis_server


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 3-master Redis Cluster on loopback for this run: its ``redis+cluster://`` URL."""
    processes = RedisProcesses(tmp_path_factory.mktemp("cluster"))
    try:
        yield start_cluster(processes)
    finally:
        processes.close()


@pytest.fixture(scope="session")
def redis_sentinel_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A master, a replica and three sentinels on loopback: the ``redis+sentinel://`` URL."""
    processes = RedisProcesses(tmp_path_factory.mktemp("sentinel"))
    try:
        yield start_sentinel(processes)[0]
    finally:
        processes.close()


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisStore]:
    """A RedisStore in a namespace of its own, emptied and closed after the test."""
    async for store in _namespaced(redis_url):
        yield store


@pytest.fixture
async def cluster_store(redis_cluster_url: str) -> AsyncIterator[RedisStore]:
    """A RedisStore on the test Redis Cluster, in a namespace of its own."""
    async for store in _namespaced(redis_cluster_url):
        yield store


@pytest.fixture
async def sentinel_store(redis_sentinel_url: str) -> AsyncIterator[RedisStore]:
    """A RedisStore on the test Sentinel set-up, in a namespace of its own."""
    async for store in _namespaced(redis_sentinel_url):
        yield store


async def _namespaced(redis_url: str) -> AsyncIterator[RedisStore]:
    namespace = f"test-{uuid.uuid4().hex}:"
    store = RedisStore(redis_url, namespace=namespace)
    try:
        await store.ping()  # an unreachable ADDON_TEST_REDIS_URL fails here, once, by name
    except BaseException:
        await store.close()
        raise
    yield store
    await store.close()
    # A second client cleans up, because the test may have closed the first one.
    cleaner = RedisStore(redis_url, namespace=namespace)
    try:
        await cleaner.delete(*await cleaner.scan(""))
    finally:
        await cleaner.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SQLiteStore]:
    """An SQLiteStore on ``tmp_path / "addon.db"``, on the ``clock`` fixture's time."""
    store = SQLiteStore(f"sqlite:///{tmp_path / 'addon.db'}", now=clock)
    yield store
    await store.close()


@pytest.fixture(params=["redis", "sqlite"])
def store(request: pytest.FixtureRequest) -> Store:
    """Each backend in turn: a test that takes ``store`` is a contract both must keep."""
    backend: Store = request.getfixturevalue(f"{request.param}_store")
    return backend


def _free_port() -> int:
    # Redis cannot listen on port 0 and report the port, so ask the OS for one and release it.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_redis(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _REDIS_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"redis-server exited with status {process.returncode}:\n{log.read_text()}")
        if redis_answers_ping(port):
            return
        time.sleep(0.02)
    pytest.fail(
        f"redis-server did not answer PING within {_REDIS_START_TIMEOUT} s:\n{log.read_text()}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def hipchat() -> FakeHipChat:
    """A fresh fake HipChat at http://hipchat.test."""
    return FakeHipChat()


@pytest.fixture
def settings() -> Settings:
    """Settings for an add-on at http://addon.test that trusts hipchat.test."""
    return settings_for()


@pytest.fixture
async def app(settings: Settings, store: Store, hipchat: FakeHipChat) -> AsyncIterator[Starlette]:
    """The add-on on ``store`` (Redis and SQLite), talking to ``hipchat`` in-process."""
    app = make_app(settings, store, hipchat)
    yield app
    await app.state.addon.aclose(grace=5)


@pytest.fixture
async def addon(
    app: Starlette, hipchat: FakeHipChat, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client reaching ``app`` in-process, as HipChat does."""
    async with hipchat.connect(app, settings.base_url) as client:
        yield client


@pytest.fixture
async def reopen_store(
    store: Store, clock: FakeClock, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[[], Store]]:
    """Opens another store on the same data as ``store`` (same namespace or file, same clock)."""
    opened: list[Store] = []

    def reopen() -> Store:
        again: Store
        if isinstance(store, RedisStore):
            fixture = {"single": "redis_url", "cluster": "redis_cluster_url"}.get(
                store.mode, "redis_sentinel_url"
            )
            again = RedisStore(request.getfixturevalue(fixture), namespace=store.namespace)
        else:
            assert isinstance(store, SQLiteStore)
            again = SQLiteStore(store.url, namespace=store.namespace, now=clock)
        opened.append(again)
        return again

    yield reopen
    for again in opened:
        await again.close()


@pytest.fixture
def live_hipchat() -> Iterator[FakeHipChat]:
    """A FakeHipChat served by uvicorn on a real loopback socket, in a thread."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    hipchat = FakeHipChat(base_url=f"http://127.0.0.1:{port}")
    server = uvicorn.Server(
        uvicorn.Config(
            hipchat.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the fake HipChat did not start"
        time.sleep(0.02)
    yield hipchat
    server.should_exit = True
    thread.join(timeout=10)

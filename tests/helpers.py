"""Plain helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from addon.app import create_app
from addon.descriptor import Capabilities
from addon.settings import Settings
from addon.store import Store
from addon.testing import FakeHipChat

REPO = Path(__file__).resolve().parents[1]


def settings_for(store_url: str = "sqlite:///unused.db", **env: str) -> Settings:
    """Settings for an add-on at http://addon.test that trusts the fake at hipchat.test."""
    base = {
        "ADDON_BASE_URL": "http://addon.test",
        "ADDON_STORE_URL": store_url,
        "ADDON_HIPCHAT_HOSTS": "hipchat.test",
        "ADDON_CAPABILITIES_PATH": str(REPO / "capabilities"),
        "ADDON_INTEGRATIONS_PATH": str(REPO / "integrations"),
        "ADDON_HTTP_TIMEOUT": "2",
    }
    return Settings.from_environ({**base, **env})


def make_app(
    settings: Settings,
    store: Store,
    hipchat: FakeHipChat,
    *,
    capabilities: Capabilities | None = None,
) -> Starlette:
    """The add-on wired to ``store`` and to ``hipchat`` (the caller closes ``addon.http``)."""
    return create_app(
        settings, store=store, transport=hipchat.transport(), capabilities=capabilities
    )


async def store_snapshot(store: Store) -> dict[str, str | None]:
    """Every key in ``store`` with its value (sets show as None)."""
    keys = sorted(await store.scan(""))
    values = await store.get_many(keys) if keys else []
    return dict(zip(keys, values, strict=True))


def redis_answers_ping(port: int) -> bool:
    """True when a Redis server on 127.0.0.1:``port`` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on when it was picked."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def served(app: ASGIApp, port: int, **options: Any) -> Iterator[None]:
    """Serve ``app`` with uvicorn on 127.0.0.1:``port`` in a thread while the block runs.

    ``options`` go to ``uvicorn.Config`` (``ssl_certfile=``, ``ssl_keyfile=``...).
    """
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", **options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


POLL_INTERVAL = 0.01  # how often ``eventually`` looks again; not a wait for anything in particular


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]], seconds: float = 5.0, *, what: str = ""
) -> None:
    """Return once ``predicate()`` is true (it may be a coroutine function); fail after ``seconds``.

    For effects that land in the background (a late reply, a notice, a key written). The timeout
    is generous on purpose: it is reached only when the test fails, so it costs nothing when the
    machine is slow and the test passes.
    """
    deadline = time.monotonic() + seconds
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"not true within {seconds} s: {what or predicate}"
        await asyncio.sleep(POLL_INTERVAL)

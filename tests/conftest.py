"""Shared fixtures. (Being extended: Redis server, stores, app and fake HipChat.)"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"

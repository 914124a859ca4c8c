"""``anyio_backend`` for the test kit's plugin, in a module of its own.

``addon.testing.plugin`` registers this module while pytest configures, after every plugin of an
entry point (anyio's among them) has loaded, so that this fixture wins over anyio's (which runs
each test on asyncio and on trio) whatever order the entry points load in. A ``conftest.py`` that
defines ``anyio_backend`` still wins over both.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """The add-on runs on asyncio."""
    return "asyncio"

"""Storage: one interface (``Store``), two backends (Redis for production, SQLite embedded)."""

from __future__ import annotations

from addon.settings import Secret
from addon.store.base import MapUpdate, Outcome, Store, lock
from addon.store.keys import Keys

__all__ = ["Keys", "MapUpdate", "Outcome", "Store", "lock", "open_store"]


def open_store(url: str, *, password: Secret | None = None) -> Store:
    """Open the store at ``url`` (``sqlite:///path`` or a Redis URL, see ``addon.store.urls``).

    ``password`` authenticates to Redis when the URL carries none (``ADDON_STORE_PASSWORD``).
    """
    if url.startswith("sqlite:"):
        from addon.store.sqlite import SQLiteStore

        return SQLiteStore(url)
    from addon.store.redis import RedisStore

    return RedisStore(url, password=None if password is None else password.value)

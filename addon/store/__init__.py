"""Storage: one interface (``Store``), two backends (Redis for production, SQLite embedded)."""

from __future__ import annotations

from addon.store.base import MapUpdate, Outcome, Store, lock
from addon.store.keys import Keys

__all__ = ["Keys", "MapUpdate", "Outcome", "Store", "lock", "open_store"]


def open_store(url: str) -> Store:
    """Open the store at ``url``: ``redis://``, ``rediss://``, ``unix://`` or ``sqlite:///path``."""
    if url.startswith("sqlite:///"):
        from addon.store.sqlite import SQLiteStore

        return SQLiteStore(url)
    from addon.store.redis import RedisStore

    return RedisStore(url)

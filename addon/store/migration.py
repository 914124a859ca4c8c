"""Moves keys written before hash tags (``{prefix}:<kind>:<oauth_id>…``) to their tagged names.

Run once when upgrading, with ``hipchat-addon storage migrate-keys``: the add-on reads only the
tagged names (docs/store.md). Running it again, or on several hosts at once, is harmless.
"""

from __future__ import annotations

from addon.store.base import Store
from addon.store.keys import Keys

__all__ = ["migrate_keys"]


async def migrate_keys(store: Store, keys: Keys) -> int:
    """Give every untagged key of ``keys``'s add-on its tagged name; return how many moved."""
    moved = 0
    for prefix in keys.legacy_prefixes():
        for key in await store.scan(prefix):
            tagged = keys.tagged_name(key)
            if tagged is not None and await store.move(key, tagged):
                moved += 1
    return moved

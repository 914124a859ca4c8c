"""Integration storage as a whole: export, import, erase (the admin API and the CLI).

These replace the older server's unauthenticated ``save FILE`` / ``load FILE`` / ``erase`` POSTs.
The document is JSON, ``{"storage": {"<owner>/<integration>": {...}}}`` where ``owner`` is an
oauth_id or ``global``; no file path ever comes from a request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from addon.errors import RequestError
from addon.store import Keys, Store

__all__ = ["erase_storage", "export_storage", "import_storage"]

_OWNER = re.compile(r"global|[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_INTEGRATION = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,99}")
MAX_ENTRIES = 10_000


async def export_storage(store: Store, keys: Keys) -> dict[str, Any]:
    """Every integration's storage, keyed ``owner/integration``."""
    prefix = keys.storage_prefix()
    names = sorted(await store.scan(prefix))
    values = await store.get_many(names) if names else []
    storage: dict[str, Any] = {}
    for name, raw in zip(names, values, strict=True):
        if raw is not None:
            owner, _, integration = name[len(prefix) :].partition(":")
            storage[f"{owner}/{integration}"] = json.loads(raw)
    return {"storage": storage}


async def import_storage(store: Store, keys: Keys, document: object) -> int:
    """Write every entry of an exported ``document`` (replacing those keys); return the count.

    The whole document is validated before anything is written, so a bad one changes nothing.
    """
    entries = _entries(document)
    for (owner, integration), value in entries.items():
        await store.put(keys.storage(owner, integration), json.dumps(value))
    return len(entries)


async def erase_storage(store: Store, keys: Keys) -> int:
    """Delete every integration's storage; return how many entries there were."""
    names = await store.scan(keys.storage_prefix())
    return await store.delete(*names) if names else 0


def _entries(document: object) -> dict[tuple[str, str], dict[str, Any]]:
    storage = document.get("storage") if isinstance(document, Mapping) else None
    if not isinstance(storage, Mapping):
        raise RequestError('The import is not {"storage": {...}}; send what the export produced')
    if len(storage) > MAX_ENTRIES:
        raise RequestError(f"The import has more than {MAX_ENTRIES} entries; split it")
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    for name, value in storage.items():
        owner, _, integration = str(name).partition("/")
        if not _OWNER.fullmatch(owner) or not _INTEGRATION.fullmatch(integration):
            raise RequestError(
                f"Storage entry {str(name)[:80]!r} is not 'owner/integration'; fix its name"
            )
        if not isinstance(value, dict):
            raise RequestError(f"Storage entry {name!r} is not a JSON object")
        entries[(owner, integration)] = value
    return entries

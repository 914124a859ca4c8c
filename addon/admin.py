"""Integration storage as a whole: export, import, erase (the admin API and the CLI).

The document is JSON, ``{"storage": {"<owner>/<integration>": {...}}}`` where ``owner`` is an
oauth_id or ``global``. The older server's ``save FILE`` / ``load FILE`` / ``erase`` POSTs map to
``save_storage``/``load_storage``/``erase_storage``: a request names a file only by a bare name
inside ``ADDON_STORAGE_FILES_PATH``, and no name leaves that folder.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from addon.errors import ConfigError, NotFound, RequestError
from addon.store import Keys, Store

__all__ = [
    "erase_storage",
    "export_storage",
    "import_storage",
    "load_storage",
    "save_storage",
    "storage_file",
]

_OWNER = re.compile(r"global|[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_INTEGRATION = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,99}")
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
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


def storage_file(folder: Path, name: str) -> Path:
    """The file ``name`` inside ``folder``; ``RequestError`` for any name that could leave it."""
    if not _FILE.fullmatch(name) or ".." in name:
        raise RequestError(
            f"The file name {name[:80]!r} is not a bare name; use letters, digits, '.', '_' or "
            "'-' (no folders), e.g. backup.json"
        )
    return folder / name


async def save_storage(store: Store, keys: Keys, folder: Path, name: str) -> int:
    """Export every integration's storage into ``folder/name``; return the entry count."""
    path = storage_file(folder, name)
    document = await export_storage(store, keys)
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    try:
        await asyncio.to_thread(_write, path, text)
    except OSError as exc:
        raise _unusable(folder, exc) from None
    return len(document["storage"])


async def load_storage(store: Store, keys: Keys, folder: Path, name: str) -> int:
    """Import ``folder/name`` (an export); return the entry count."""
    path = storage_file(folder, name)
    try:
        text = await asyncio.to_thread(path.read_text, encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"No storage file {name!r}; save one first with 'save {name}'") from None
    except OSError as exc:
        raise _unusable(folder, exc) from None
    try:
        document = json.loads(text)
    except ValueError:
        raise RequestError(
            f"The storage file {name!r} is not JSON; load an exported file"
        ) from None
    return await import_storage(store, keys, document)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _unusable(folder: Path, exc: OSError) -> ConfigError:
    return ConfigError(
        f"The storage files folder cannot be used ({exc.strerror}); set "
        "ADDON_STORAGE_FILES_PATH to a folder the add-on may write"
    )

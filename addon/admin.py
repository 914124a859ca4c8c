"""Integration storage as a whole: export, import, erase (the admin API and the CLI).

The document is JSON, ``{"storage": {"<owner>/<integration>": {...}}}`` where ``owner`` is an
oauth_id, or ``global`` for what seed scripts stored before their storage was per installation
(``migrate_global`` moves it to one installation). The older server's ``save FILE`` / ``load FILE``
/ ``erase`` POSTs map to ``save_storage``/``load_storage``/``erase_storage``: a request names a
file only by a bare name inside ``ADDON_STORAGE_FILES_PATH``, and no name leaves that folder.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from addon.errors import ConfigError, NotFound, RequestError
from addon.jsonvalue import check_depth, is_json
from addon.jsonvalue import loads as load_json
from addon.store import Keys, Store
from addon.store.keys import STORAGE_MAP_SUFFIX

__all__ = [
    "erase_storage",
    "export_storage",
    "import_storage",
    "load_storage",
    "migrate_global",
    "save_storage",
    "storage_file",
]

_OWNER = re.compile(r"global|[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_INTEGRATION = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,99}")
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MAX_ENTRIES = 10_000
GLOBAL = "global"  # seed scripts' storage owner before storage was per installation
log = logging.getLogger("addon.admin")


async def export_storage(store: Store, keys: Keys) -> str:
    """Every integration's storage as JSON text, ``{"storage": {"owner/integration": {...}}}``.

    Total: the stored JSON texts are spliced in as they are, never re-encoded, so whatever is
    stored (however deep) is exported; a value that is not JSON at all is left out and listed
    under ``"unreadable"``.
    """
    text, _count = await _export(store, keys)
    return text


async def _export(store: Store, keys: Keys) -> tuple[str, int]:
    entries, unreadable = await _read_entries(store, keys)
    body = ", ".join(f"{json.dumps(f'{o}/{i}')}: {raw}" for (o, i), raw in sorted(entries.items()))
    extra = f', "unreadable": {json.dumps(sorted(unreadable))}' if unreadable else ""
    return f'{{"storage": {{{body}}}{extra}}}', len(entries)


async def import_storage(store: Store, keys: Keys, document: object) -> int:
    """Write every entry of an exported ``document`` (replacing those entries); return the count.

    The whole document is validated before anything is written, so a bad one changes nothing.
    Imports are not held to ``ADDON_STORAGE_QUOTA``: they restore what was there.
    """
    check_depth(document, what="The import")
    entries = _entries(document)
    for (owner, integration), value in entries.items():
        await _write_entry(store, keys, owner, integration, value)
    return len(entries)


async def erase_storage(store: Store, keys: Keys) -> int:
    """Delete every integration's storage; return how many entries there were."""
    names = await store.scan(keys.storage_prefix())
    if names:
        await store.delete(*names)
    return len({_owner_and_integration(keys, name) for name in names})


async def migrate_global(store: Store, keys: Keys, oauth_id: str) -> int:
    """Move every ``global`` entry (seed storage before it was per installation) to ``oauth_id``.

    Entries ``oauth_id`` already has are replaced. Returns how many entries moved.
    """
    if await store.get(keys.installation(oauth_id)) is None:
        raise RequestError(f"No installation {oauth_id!r}; pick one from the export's owners")
    entries, unreadable = await _read_entries(store, keys)
    moved = 0
    for (owner, integration), raw in sorted(entries.items()):
        if owner != GLOBAL:
            continue
        value = load_json(raw, what=f"Storage entry 'global/{integration}'")
        if not isinstance(value, dict):
            raise RequestError(f"Storage entry 'global/{integration}' is not a JSON object")
        await _write_entry(store, keys, oauth_id, integration, value)
        await store.delete(
            keys.storage(GLOBAL, integration), keys.legacy_storage(GLOBAL, integration)
        )
        moved += 1
    if any(name.startswith(f"{GLOBAL}/") for name in unreadable):
        log.warning("some global storage entries are not JSON and were left where they are")
    return moved


async def _write_entry(
    store: Store, keys: Keys, owner: str, integration: str, value: Mapping[str, Any]
) -> None:
    fields = {name: json.dumps(item, sort_keys=True) for name, item in value.items()}
    await store.map_update(keys.storage(owner, integration), fields, replace=True)
    # The older one-document format of the same entry would otherwise still be read.
    await store.delete(keys.legacy_storage(owner, integration))


async def _read_entries(store: Store, keys: Keys) -> tuple[dict[tuple[str, str], str], list[str]]:
    """Each entry's JSON object text, and the ``owner/integration[/name]`` that are not JSON."""
    entries: dict[tuple[str, str], str] = {}
    unreadable: list[str] = []
    names = await store.scan(keys.storage_prefix())
    for name in [name for name in names if name.endswith(STORAGE_MAP_SUFFIX)]:
        owner, integration = _owner_and_integration(keys, name)
        fields = await store.map_all(name)
        bad = [field for field, raw in fields.items() if not is_json(raw)]
        unreadable += [f"{owner}/{integration}/{field}" for field in bad]
        good = ((f, raw) for f, raw in sorted(fields.items()) if f not in bad)
        entries[(owner, integration)] = (
            "{" + ", ".join(f"{json.dumps(f)}: {r}" for f, r in good) + "}"
        )
    legacy_names = [name for name in names if not name.endswith(STORAGE_MAP_SUFFIX)]
    for name, raw in zip(legacy_names, await store.get_many(legacy_names), strict=True):
        # A legacy document that is still there holds everything (it is deleted once moved).
        owner, integration = _owner_and_integration(keys, name)
        if raw is not None and is_json(raw):
            entries[(owner, integration)] = raw
        elif raw is not None:
            unreadable.append(f"{owner}/{integration}")
    return entries, unreadable


def _owner_and_integration(keys: Keys, name: str) -> tuple[str, str]:
    return keys.storage_owner_and_integration(name)


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
    text, count = await _export(store, keys)
    try:
        await asyncio.to_thread(_write, path, text + "\n")
    except OSError as exc:
        raise _unusable(folder, exc) from None
    return count


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
    except (ValueError, RecursionError):
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

"""Per-installation settings of an integration: declared as a frozen dataclass, kept in the store.

```python
@dataclasses.dataclass(frozen=True)
class NoteSettings:
    greeting: str = "Noted"
    limit: int = 10

integration = Integration("notes", settings=NoteSettings)
...
settings = await message.config(NoteSettings)   # typed; defaults until someone saves
```
Fields are ``str``, ``int``, ``float`` or ``bool``, each with a default. What a page submits is
validated here (``coerce``) before it is stored as JSON under ``Keys.config``.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from addon.errors import RequestError, StoreUnavailable, UnknownInstallation
from addon.store import Keys, Store, lock

__all__ = ["MAX_TEXT", "ConfigStore", "Field", "fields_of", "values_of"]

MAX_TEXT = 1000
_LOCK_TTL = 10.0  # a save is two store round trips; a holder that died frees the lock after this
_LOCK_WAIT = 15.0
_TYPES: dict[type, str] = {str: "text", int: "number", float: "number", bool: "checkbox"}
_S = TypeVar("_S")


@dataclasses.dataclass(frozen=True)
class Field:
    """One setting: its name, type, default and the label the settings form shows."""

    name: str
    type: type
    default: str | int | float | bool
    label: str

    @property
    def input_type(self) -> str:
        """The HTML ``<input type>`` that edits it."""
        return _TYPES[self.type]


def fields_of(schema: type, where: str) -> tuple[Field, ...]:
    """The fields of a settings dataclass; ``TypeError`` naming ``where`` when it is unusable."""
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        raise TypeError(f"{where}: settings must be a dataclass, not {schema!r}")
    hints = typing.get_type_hints(schema)
    found = []
    for field in dataclasses.fields(schema):
        kind = hints.get(field.name)
        if kind not in _TYPES or field.default is dataclasses.MISSING:
            raise TypeError(
                f"{where}: setting {field.name!r} must be str, int, float or bool with a default"
            )
        label = str(field.metadata.get("label", field.name.replace("_", " ").capitalize()))
        found.append(Field(field.name, kind, field.default, label))
    return tuple(found)


def coerce(fields: tuple[Field, ...], submitted: object) -> dict[str, Any]:
    """Validate what a page submitted; ``RequestError`` naming the first bad setting."""
    if not isinstance(submitted, Mapping):
        raise RequestError("The settings must be a JSON object of setting names and values")
    known = {field.name: field for field in fields}
    unknown = sorted(set(submitted) - set(known))
    if unknown:
        raise RequestError(f"Unknown setting {unknown[0]!r}; use some of {sorted(known)}")
    return {name: _value(known[name], value) for name, value in submitted.items()}


def _value(field: Field, value: object) -> Any:
    if field.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) != (field.type is bool) or not isinstance(value, field.type):
        raise RequestError(f"Setting {field.name!r} must be a {field.type.__name__}")
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise RequestError(f"Setting {field.name!r} is longer than {MAX_TEXT} characters")
    return value


def values_of(fields: tuple[Field, ...], stored: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting: the stored value where it is still valid, else the default."""
    values: dict[str, Any] = {}
    for field in fields:
        try:
            values[field.name] = _value(field, stored.get(field.name, field.default))
        except RequestError:  # a setting whose type changed since it was saved
            values[field.name] = field.default
    return values


class ConfigStore:
    """Reads and writes an integration's settings for one installation."""

    def __init__(self, store: Store, keys: Keys) -> None:
        self._store = store
        self._keys = keys

    async def load(
        self, oauth_id: str, integration: str, fields: tuple[Field, ...]
    ) -> dict[str, Any]:
        """The current values (defaults for what was never saved)."""
        raw = await self._store.get(self._keys.config(oauth_id, integration))
        stored = json.loads(raw) if raw else {}
        return values_of(fields, stored if isinstance(stored, dict) else {})

    async def save(
        self, oauth_id: str, integration: str, fields: tuple[Field, ...], submitted: object
    ) -> dict[str, Any]:
        """Validate ``submitted``, merge it over the current values, store and return them."""
        changes = coerce(fields, submitted)
        lock_key = self._keys.config_lock(oauth_id, integration)
        async with lock(self._store, lock_key, ttl=_LOCK_TTL, wait=_LOCK_WAIT) as acquired:
            if not acquired:  # saving beside the holder could undo its save
                raise StoreUnavailable(f"The settings of {integration!r} stayed locked; try again")
            values = {**await self.load(oauth_id, integration, fields), **changes}
            key, guard = self._keys.config(oauth_id, integration), self._keys.installation(oauth_id)
            if not await self._store.put_guarded(key, json.dumps(values), guard=guard):
                raise UnknownInstallation(
                    f"Installation {oauth_id!r} was uninstalled; its settings are gone"
                )
        return values


def build(schema: type[_S], values: Mapping[str, Any]) -> _S:
    """An instance of the settings dataclass ``schema`` holding ``values``."""
    return schema(**values)

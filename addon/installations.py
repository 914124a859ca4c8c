"""Installations: what HipChat hands us when the add-on is installed, and where it is kept.

One installation is one OAuth client (``oauth_id`` / ``oauth_secret``), installed either
group-wide (``room_id`` is None) or into one room. ``InstallationRepository`` reads and writes
them in the store; ``oauth_secret`` is sealed at rest when ``ADDON_SECRET_KEY`` is set.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

from addon.errors import RequestError, UnknownInstallation
from addon.seal import Sealer
from addon.settings import Secret
from addon.store import Keys, Store

__all__ = ["InstallPayload", "Installation", "InstallationRepository"]

_OAUTH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclasses.dataclass(frozen=True)
class InstallPayload:
    """The validated body of an install callback (or of a client-side ``installable_url``)."""

    oauth_id: str
    oauth_secret: Secret
    capabilities_url: str
    group_id: int
    room_id: int | None

    @classmethod
    def from_json(cls, data: object) -> InstallPayload:
        """Validate HipChat's install JSON; raise ``RequestError`` naming the first bad field."""
        if not isinstance(data, Mapping):
            raise RequestError(
                "The install payload is not a JSON object; send the installation data"
            )
        return cls(
            oauth_id=oauth_id_from(data.get("oauthId")),
            oauth_secret=Secret(_string(data, "oauthSecret", max_length=1024)),
            capabilities_url=_string(data, "capabilitiesUrl", max_length=2048),
            group_id=_integer(data, "groupId", required=False) or 0,
            room_id=_integer(data, "roomId", required=False),
        )


@dataclasses.dataclass(frozen=True)
class Installation:
    """One installation of the add-on, as stored."""

    oauth_id: str
    oauth_secret: Secret
    group_id: int
    room_id: int | None
    capabilities_url: str
    token_url: str
    authorization_url: str | None
    api_url: str
    scopes: tuple[str, ...]
    installed_at: float
    group_name: str | None = None

    @property
    def is_room_installation(self) -> bool:
        """True when installed into one room rather than group-wide."""
        return self.room_id is not None

    def to_record(self, sealer: Sealer) -> str:
        """Serialise for the store (JSON, the secret sealed)."""
        record: dict[str, Any] = dataclasses.asdict(self)
        record["oauth_secret"] = sealer.seal(self.oauth_secret.value)
        record["scopes"] = list(self.scopes)
        return json.dumps(record, sort_keys=True)

    @classmethod
    def from_record(cls, raw: str, sealer: Sealer) -> Installation:
        """Read what ``to_record`` wrote."""
        record = json.loads(raw)
        record["oauth_secret"] = Secret(sealer.open(record["oauth_secret"]))
        record["scopes"] = tuple(record["scopes"])
        return cls(**record)


class InstallationRepository:
    """Reads and writes installations in the store."""

    def __init__(self, store: Store, keys: Keys, sealer: Sealer) -> None:
        self.store = store
        self.keys = keys
        self.sealer = sealer

    async def get(self, oauth_id: str) -> Installation | None:
        """The installation with ``oauth_id``, or None."""
        raw = await self.store.get(self.keys.installation(oauth_id))
        return None if raw is None else Installation.from_record(raw, self.sealer)

    async def require(self, oauth_id: str) -> Installation:
        """The installation with ``oauth_id``; raise ``UnknownInstallation`` when there is none."""
        installation = await self.get(oauth_id)
        if installation is None:
            raise UnknownInstallation(
                f"No installation for oauth_id {oauth_id!r}; was the add-on uninstalled?"
            )
        return installation

    async def save(self, installation: Installation) -> None:
        """Store (or replace) ``installation`` and index it."""
        await self.store.put(
            self.keys.installation(installation.oauth_id), installation.to_record(self.sealer)
        )
        await self.store.add_member(self.keys.installations(), installation.oauth_id)
        # A (re-)install proves the client is alive again.
        await self.store.delete(self.keys.client_gone(installation.oauth_id))

    async def oauth_ids(self) -> set[str]:
        """The oauth_id of every stored installation."""
        return await self.store.members(self.keys.installations())

    async def count(self) -> int:
        """How many installations are stored (without reading their ids)."""
        return await self.store.count_members(self.keys.installations())

    async def delete(self, oauth_id: str) -> None:
        """Remove every key that belongs to the installation ``oauth_id``."""
        exact, prefixes = self.keys.of_installation(oauth_id)
        found: list[str] = list(exact)
        for prefix in prefixes:
            found.extend(await self.store.scan(prefix))
        # The record goes last, so a crash half-way leaves an installation uninstall can find again.
        record = self.keys.installation(oauth_id)
        await self.store.delete(*[k for k in found if k != record])
        await self.store.remove_member(self.keys.installations(), oauth_id)
        await self.store.delete(record)


def oauth_id_from(value: object) -> str:
    """Validate an oauth_id (it ends up in store keys and URLs, so its alphabet is narrow)."""
    if not isinstance(value, str) or not _OAUTH_ID.fullmatch(value):
        raise RequestError(
            "oauthId is missing or malformed; expected up to 128 letters, digits, '.', '_' or '-'"
        )
    return value


def _string(data: Mapping[str, object], name: str, *, max_length: int) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise RequestError(
            f"{name} is missing or not a string of 1 to {max_length} characters; send it as one"
        )
    return value


def _integer(data: Mapping[str, object], name: str, *, required: bool) -> int | None:
    value = data.get(name)
    if value is None and not required:
        return None
    # HipChat sends integers; some clients sent numeric strings (be lenient, but no bools/floats).
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise RequestError(f"{name} must be a non-negative integer; got {type(value).__name__}")
    return value

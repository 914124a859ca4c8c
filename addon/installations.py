"""Installations: what HipChat hands us when the add-on is installed, and where it is kept.

One installation is one OAuth client (``oauth_id`` / ``oauth_secret``), installed either
group-wide (``room_id`` is None) or into one room. ``InstallationRepository`` reads and writes
them in the store; ``oauth_secret`` is sealed at rest when ``ADDON_SECRET_KEY`` is set.

An oauth_id is no secret (it is the JWT ``iss``), so a stored installation can be replaced only
from the ``capabilitiesUrl`` it was installed from: ``InstallationRepository.claim``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

from addon.errors import Conflict, RequestError, StoreUnavailable, UnknownInstallation
from addon.seal import Sealer
from addon.settings import Secret
from addon.store import Keys, Store, lock
from addon.wire import OAUTH_ID

__all__ = [
    "RESERVED_OAUTH_IDS",
    "InstallPayload",
    "Installation",
    "InstallationRepository",
    "RecordReader",
]


#: Names the store uses for itself (``global`` owned the seed scripts' storage); refused as
#: oauth_ids in any letter case.
RESERVED_OAUTH_IDS = frozenset({"global"})

_DEFAULT_PORTS = {"http": 80, "https": 443}


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

    def check_reinstall_from(self, capabilities_url: str) -> None:
        """Raise ``Conflict`` unless ``capabilities_url`` is where this installation came from.

        Scheme, host, port (the default one filled in) and path must match: another HipChat
        server on the allow-list must not replace this installation's secret.
        """
        if _location(capabilities_url) != _location(self.capabilities_url):
            raise Conflict(
                f"Installation {self.oauth_id!r} was installed from another capabilitiesUrl; "
                "update or re-install it from the HipChat server that installed it"
            )

    def to_record(self, sealer: Sealer) -> str:
        """Serialise for the store (JSON, the secret sealed)."""
        record: dict[str, Any] = dataclasses.asdict(self)
        record["oauth_secret"] = sealer.seal(self.oauth_secret.value)
        record["scopes"] = list(self.scopes)
        return json.dumps(record, sort_keys=True)

    @classmethod
    def from_record(cls, raw: str, sealer: Sealer) -> Installation:
        """Read what ``to_record`` wrote (on every signed request: orjson)."""
        record = orjson.loads(raw)
        record["oauth_secret"] = Secret(sealer.open(record["oauth_secret"]))
        record["scopes"] = tuple(record["scopes"])
        return cls(**record)


class RecordReader:
    """``Installation.from_record`` for the signed-request path, remembering recent records.

    Every signed request reads its installation's record from the store, and parsing it (JSON,
    and with ``ADDON_SECRET_KEY`` a Fernet decryption of the secret) costs more than the rest of
    the JWT check. The record text read in this request is the key, so this holds no state of
    its own: an installation that is gone, updated or installed again is read as the store has
    it now (no record, or another text), never from here. At most ``size`` records are kept;
    the oldest goes first.
    """

    def __init__(self, sealer: Sealer, *, size: int = 1024) -> None:
        self._sealer = sealer
        self._size = size
        self._parsed: dict[str, Installation] = {}

    def read(self, raw: str) -> Installation:
        """The installation ``raw`` (a record as the store holds it) describes."""
        installation = self._parsed.get(raw)
        if installation is None:
            installation = Installation.from_record(raw, self._sealer)
            if len(self._parsed) >= self._size:
                del self._parsed[next(iter(self._parsed))]
            self._parsed[raw] = installation
        return installation


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
        """Store (or replace) ``installation`` unchecked, and index it."""
        await self.store.put(
            self.keys.installation(installation.oauth_id), installation.to_record(self.sealer)
        )
        await self._index(installation.oauth_id)

    async def claim(self, installation: Installation) -> None:
        """Store ``installation`` unless another capabilitiesUrl holds its oauth_id (``Conflict``).

        A first install wins with ``put_if_absent``; a re-install compares and writes under the
        installation's store lock, so two replicas installing one oauth_id from two servers
        cannot both win.
        """
        key = self.keys.installation(installation.oauth_id)
        record = installation.to_record(self.sealer)
        if not await self.store.put_if_absent(key, record):
            lock_key = self.keys.installation_lock(installation.oauth_id)
            async with lock(self.store, lock_key) as acquired:
                if not acquired:
                    raise StoreUnavailable(
                        f"Installation {installation.oauth_id!r} stayed locked; try again"
                    )
                await self._replace(key, record, installation.capabilities_url)
        await self._index(installation.oauth_id)

    async def _replace(self, key: str, record: str, capabilities_url: str) -> None:
        """Under the installation lock: compare with what is stored, then write."""
        current = await self.store.get(key)
        if current is None and await self.store.put_if_absent(key, record):
            return  # uninstalled meanwhile: this is a first install again
        current = current or await self.store.get(key)
        if current is not None:
            Installation.from_record(current, self.sealer).check_reinstall_from(capabilities_url)
        await self.store.put(key, record)

    async def _index(self, oauth_id: str) -> None:
        await self.store.add_member(self.keys.installations(), oauth_id)
        # A (re-)install proves the client is alive again.
        await self.store.delete(self.keys.client_gone(oauth_id))

    async def oauth_ids(self) -> set[str]:
        """The oauth_id of every stored installation."""
        return await self.store.members(self.keys.installations())

    async def count(self) -> int:
        """How many installations there are (cheap: the index's size, for metrics)."""
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
    if not isinstance(value, str) or not OAUTH_ID.fullmatch(value):
        raise RequestError(
            "oauthId is missing or malformed; expected 1 to 64 ASCII letters, digits or '-' "
            "(HipChat sends a UUID)"
        )
    if value.lower() in RESERVED_OAUTH_IDS:
        raise RequestError(
            f"oauthId {value!r} is a name the add-on reserves for itself; HipChat sends a UUID"
        )
    return value


def _location(url: str) -> tuple[str, str, int | None, str] | str:
    """Scheme, host, port and path of ``url``: what must match for a re-install."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return url  # an unparsable port only ever matches itself verbatim
    return scheme, parts.hostname or "", port, parts.path or "/"


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

"""The context a handler gets: the room, the sender, storage and ways to answer.

A ``RoomMessage`` for commands and message patterns, a ``RoomEvent`` for other room events
(docs/protocol.md, Webhook events); both are a ``Context``. A context shows authors what they
use (``room``, ``sender``, ``installation``, ``reply``, ``client``, ``storage``, ``config``,
``log``...); the plumbing the dispatcher fills in (``_runtime``, ``_outbox``, ``_integration``,
``_webhook``) is private. ``addon.runtime.AddonRuntime`` is the production ``Runtime``.

Log fields (``oauth_id``, ``room_id``, ``request_id``, ``event``) travel in a context variable that
the dispatcher sets once per webhook; ``context_log`` builds each integration's logger once.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar, overload

from addon.errors import QuotaExceeded, StoreUnavailable, UnknownInstallation
from addon.installations import Installation
from addon.jsonvalue import MAX_VALUE_DEPTH, check_depth
from addon.settings import Settings
from addon.store import Keys, MapUpdate, Outcome, Store, lock
from addon.wire import Room, Sender

if TYPE_CHECKING:
    from addon.dispatch import Outbox
    from addon.hipchat import HipChatClient
    from addon.integrations import Integration  # the integration a context belongs to
    from addon.ui.request import GlancePusher

__all__ = [
    "COLORS",
    "JSON",
    "LOG_FIELDS",
    "MAX_MESSAGE",
    "Context",
    "RoomEvent",
    "RoomMessage",
    "Runtime",
    "Storage",
    "build_notification",
    "context_log",
]

JSON: TypeAlias = bool | int | float | str | list["JSON"] | dict[str, "JSON"] | None
COLORS = frozenset({"yellow", "green", "red", "purple", "gray", "random"})
MAX_MESSAGE = 10_000  # characters in a notification message (docs/protocol.md, Room notifications)
_T = TypeVar("_T")


#: The log fields of the webhook being handled; the dispatcher sets them once per webhook.
LOG_FIELDS: contextvars.ContextVar[Mapping[str, object] | None] = contextvars.ContextVar(
    "addon_log_fields", default=None
)


class _ContextLog(logging.LoggerAdapter[logging.Logger]):
    """An integration's logger: adds its key and the current webhook's ``LOG_FIELDS``."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        fields = LOG_FIELDS.get() or {}
        kwargs["extra"] = {**fields, **(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def context_log(integration: str) -> logging.LoggerAdapter[logging.Logger]:
    """The logger handlers of ``integration`` get as ``message.log`` (built once, at start-up)."""
    return _ContextLog(
        logging.getLogger(f"addon.integrations.{integration}"), {"integration": integration}
    )


class Runtime(Protocol):
    """What handlers and the dispatcher need from the running add-on (``addon.app`` provides it)."""

    @property
    def store(self) -> Store:
        """The store every replica shares."""
        ...

    @property
    def keys(self) -> Keys:
        """The add-on's key builder."""
        ...

    @property
    def settings(self) -> Settings:
        """The add-on's settings (``reply_window``, ``command_timeout``, ``static_tokens``...)."""
        ...

    def client_for(self, installation: Installation) -> HipChatClient:
        """A REST client acting with the installation's add-on token."""
        ...

    async def post_notification(
        self, installation: Installation, room_id: int, notification: dict[str, object]
    ) -> None:
        """Send ``notification`` to ``room_id`` via REST (docs/protocol.md, Room notifications)."""
        ...

    async def addon_token(self, installation: Installation) -> str:
        """A valid add-on access token for ``installation``."""
        ...

    async def user_client(self, installation: Installation, user_id: str) -> HipChatClient:
        """A REST client acting as ``user_id``; raises ``ApprovalRequired`` without a token."""
        ...


class Storage:
    """An integration's JSON key/value storage in one installation, one stored field per name.

    Reading a name reads only its value. Writes are atomic per call, fail once the installation
    is uninstalled (``UnknownInstallation``), and raise ``QuotaExceeded`` when they would take the
    integration past ``ADDON_STORAGE_QUOTA`` bytes in this installation.
    """

    def __init__(
        self, store: Store, keys: Keys, owner: str, integration: str, *, quota: int | None = None
    ) -> None:
        self._store = store
        self._owner, self._integration, self._quota = owner, integration, quota
        self._key = keys.storage(owner, integration)
        self._legacy = keys.legacy_storage(owner, integration)
        self._guard = keys.installation(owner)
        self._lock_key = keys.storage_lock(owner, integration)
        self._is_locked = False

    @classmethod
    def of(cls, runtime: Runtime, installation: Installation, integration: str) -> Storage:
        """``integration``'s storage in ``installation``, with the add-on's quota."""
        quota = runtime.settings.storage_quota
        return cls(runtime.store, runtime.keys, installation.oauth_id, integration, quota=quota)

    async def all(self) -> dict[str, JSON]:
        """Every stored name and value."""
        fields = await self._store.map_all(self._key)
        if not fields:
            legacy = await self._legacy_document()
            if legacy is not None:
                return legacy
        return {name: json.loads(raw) for name, raw in fields.items()}

    async def get(self, name: str, default: JSON = None) -> JSON:
        """The value stored under ``name``, or ``default``."""
        raw = await self._store.map_get(self._key, name)
        if raw is not None:
            return json.loads(raw)  # type: ignore[no-any-return]
        legacy = await self._legacy_document()
        return default if legacy is None else legacy.get(name, default)

    async def set(self, name: str, value: JSON) -> None:
        """Store ``value`` (anything JSON can hold, nested at most 61 deep) under ``name``."""
        await self.update({name: value})

    async def delete(self, name: str) -> bool:
        """Forget ``name``; True when it was stored."""
        return (await self._write({name: None})).removed > 0

    async def update(self, values: Mapping[str, JSON], *, removed: Iterable[str] = ()) -> None:
        """Store every name of ``values`` and forget every name in ``removed``, atomically."""
        changes: dict[str, str | None] = dict.fromkeys(removed)
        for name, value in values.items():
            what = f"The value stored under {name[:80]!r}"
            check_depth(value, what=what, max_depth=MAX_VALUE_DEPTH)
            changes[name] = json.dumps(value, sort_keys=True)
        await self._write(changes)

    @contextlib.asynccontextmanager
    async def locked(self, *, ttl: float, wait: float) -> AsyncIterator[None]:
        """Hold this storage's lock across replicas for a read-modify-write of several names.

        ``ttl`` bounds how long a holder that died keeps the others out; it must outlast the
        work done under the lock, or a second writer could get in before the first is done.
        """
        async with lock(self._store, self._lock_key, ttl=ttl, wait=wait) as acquired:
            _require(acquired, self._key)
            self._is_locked = True
            try:
                yield
            finally:
                self._is_locked = False

    async def _write(self, changes: Mapping[str, str | None]) -> MapUpdate:
        if await self._store.get(self._legacy) is not None:
            await self._migrate()
        result = await self._store.map_update(
            self._key, changes, guard=self._guard, quota=self._quota
        )
        self._check(result)
        return result

    async def _migrate(self) -> None:
        """Move the older one-document format into one field per name (under the lock)."""
        if not self._is_locked:
            async with self.locked(ttl=10.0, wait=15.0):
                return await self._migrate()
        legacy = await self._legacy_document()
        if legacy is None:
            return  # another writer moved it meanwhile
        fields = {name: json.dumps(value, sort_keys=True) for name, value in legacy.items()}
        # No quota: what was stored before quotas existed is kept; only growing it is refused.
        self._check(await self._store.map_update(self._key, fields, guard=self._guard))
        await self._store.delete(self._legacy)

    async def _legacy_document(self) -> dict[str, JSON] | None:
        raw = await self._store.get(self._legacy)
        if raw is None:
            return None
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError(f"Storage at {self._legacy!r} is not a JSON object; delete the key")
        return data

    def _check(self, result: MapUpdate) -> None:
        if result.outcome is Outcome.NO_GUARD:
            raise UnknownInstallation(
                f"Installation {self._owner!r} was uninstalled; its storage is gone"
            )
        if result.outcome is Outcome.OVER_QUOTA:
            raise QuotaExceeded(
                f"The storage of {self._integration} in this installation would exceed "
                f"{self._quota} bytes; delete some of its values first"
            )


def build_notification(
    text: str,
    *,
    html: bool = False,
    color: str | None = None,
    notify: bool = False,
    card: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """A notification body (docs/protocol.md, Room notifications), text cut at 10,000 characters."""
    if not isinstance(text, str) or not text:
        raise ValueError(
            "A reply needs a non-empty text (HipChat requires 'message', even with a card)"
        )
    if color is not None and color not in COLORS:
        raise ValueError(f"Reply color {color!r} is not one of {', '.join(sorted(COLORS))}")
    body: dict[str, object] = {
        "message": text[:MAX_MESSAGE],
        "message_format": "html" if html else "text",
        "notify": notify,
    }
    if color is not None:
        body["color"] = color
    if card is not None:
        body["card"] = dict(card)
    return body


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Context:
    """What every handler gets: the room, the installation, and ways to answer."""

    installation: Installation = dataclasses.field(repr=False)
    room: Room
    log: logging.LoggerAdapter[logging.Logger] = dataclasses.field(repr=False)
    _integration: Integration = dataclasses.field(repr=False)
    _webhook: Mapping[str, object] = dataclasses.field(repr=False)
    _runtime: Runtime = dataclasses.field(repr=False)
    _outbox: Outbox = dataclasses.field(repr=False)

    @property
    def client(self) -> HipChatClient:
        """The HipChat REST client, acting with the installation's add-on token."""
        return self._runtime.client_for(self.installation)

    @property
    def storage(self) -> Storage:
        """This integration's persistent storage in this installation."""
        return Storage.of(self._runtime, self.installation, self._integration.key)

    @overload
    async def config(self) -> dict[str, Any]: ...
    @overload
    async def config(self, schema: type[_T]) -> _T: ...
    async def config(self, schema: type[Any] | None = None) -> Any:
        """The integration's settings in this installation (``addon.ui.config``)."""
        from addon.ui.config import ConfigStore, build  # addon.ui builds on this module

        configs = ConfigStore(self._runtime.store, self._runtime.keys)
        integration = self._integration
        oauth_id, fields = self.installation.oauth_id, integration.settings_fields
        values = await configs.load(oauth_id, integration.key, fields)
        return values if schema is None else build(integration.settings_type(schema), values)

    @property
    def glances(self) -> GlancePusher:
        """Push glance updates: ``await message.glances.update(key, Glance(...), room=...)``."""
        from addon.ui.request import GlancePusher

        static_url = self._runtime.settings.url_for(f"/static/{self._integration.key}")
        return GlancePusher(self.client, self._integration, static_url)

    async def reply(
        self,
        text: str,
        *,
        html: bool = False,
        color: str | None = None,
        notify: bool = False,
        card: Mapping[str, object] | None = None,
    ) -> None:
        """Post ``text`` to the room.

        ``html=True`` sends HipChat's HTML subset (docs/protocol.md, Room notifications).
        """
        await self._outbox.send(
            build_notification(text, html=html, color=color, notify=notify, card=card)
        )

    async def run_sync(self, func: Callable[..., _T], /, *args: object) -> _T:
        """Run blocking ``func(*args)`` in the integration worker threads."""
        return await self._outbox.run_sync(
            functools.partial(func, *args), owner=self._integration.key
        )


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class RoomMessage(Context):
    """A message in a room: a command (``args`` follow it) or a match of a message pattern."""

    text: str
    args: str
    """The text after the command; the whole text for pattern handlers."""
    match: re.Match[str] | None
    """The pattern's match for ``on_message`` handlers; None for commands."""
    sender: Sender
    message_id: str | None = None

    async def user_client(self) -> HipChatClient:
        """A REST client acting as the sender; raises ``ApprovalRequired`` until they approve."""
        return await self._runtime.user_client(self.installation, self.sender.id)


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class RoomEvent(Context):
    """Any other room event: ``room_enter``, ``room_topic_change``, ``room_file_upload``..."""

    event: str
    sender: Sender | None
    item: Mapping[str, object] = dataclasses.field(repr=False)
    """The event's ``item`` (``topic``, ``file``... per docs/protocol.md, Webhook payloads)."""


def _require(acquired: bool, key: str) -> None:
    # Writing without the lock could lose another replica's update: refuse instead.
    if not acquired:
        raise StoreUnavailable(f"Storage at {key!r} stayed locked; try again")

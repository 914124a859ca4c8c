"""Seed compatibility: scripts written for the older ``hipchat-integration`` server run unchanged.

A seed script is a module ``integrations/<stem>.py`` defining

    run_integration(notification, query, all_tokens, token, storage, log)

or only its first two or three parameters. It owns ``/<stem>`` and runs in a worker thread under
the same timeout and isolation as any handler. The arguments, passed positionally:

- ``notification``: the webhook in the old server's attribute shape (``SeedNotification``);
- ``query``: the text after ``/<stem>``;
- ``all_tokens``: the static tokens of ``ADDON_TOKENS`` as a dict (``StaticTokens.as_dict``);
- ``token``: the static token for (room, ``<stem>``), else the one named ``<stem>``, else the
  installation's add-on token;
- ``storage``: a plain dict, this installation's storage of the script, loaded before and saved
  after each successful call (JSON values only); calls of one script in one installation run one
  at a time, so concurrent calls never lose an update;
- ``log``: a logger.

If the script returns a string, it is the reply (plain text); any other return value is ignored.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar, cast

from addon.context import JSON, RoomMessage
from addon.errors import ConfigError, IntegrationError
from addon.integrations import Integration
from addon.wire import id_of, mapping, sender_of

__all__ = [
    "SeedItem",
    "SeedMessage",
    "SeedNotification",
    "SeedRoom",
    "SeedSender",
    "StaticTokens",
    "parse_static_tokens",
    "seed_integration",
    "seed_notification",
]

SEED_ARITY = 6
# The storage owner of seed scripts before storage was per installation. Only ``storage export``
# and ``storage migrate-global`` read it now.
GLOBAL = "global"
LOCK_MARGIN = 10.0  # seconds the storage lock outlives the command timeout
_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class SeedSender:
    """``notification.item.message.sender``: who sent the message."""

    id: int | str | None
    links: Mapping[str, object] | None
    mention_name: str | None
    name: str | None
    version: str | None


@dataclasses.dataclass(frozen=True)
class SeedMessage:
    """``notification.item.message``: ``content`` is the message text."""

    date: str | None
    id: str | None
    content: str | None
    type: str | None
    sender: SeedSender


@dataclasses.dataclass(frozen=True)
class SeedRoom:
    """``notification.item.room``."""

    id: int | str | None
    is_archived: bool | None
    links: Mapping[str, object] | None
    name: str | None
    privacy: str | None
    version: str | None


@dataclasses.dataclass(frozen=True)
class SeedItem:
    """``notification.item``."""

    message: SeedMessage
    room: SeedRoom


@dataclasses.dataclass(frozen=True)
class SeedNotification:
    """The webhook as the older server handed it to scripts; absent fields are None."""

    event: str | None
    item: SeedItem
    oauth_client_id: str | None
    web_hook: int | str | None


@dataclasses.dataclass(frozen=True)
class StaticTokens:
    """``ADDON_TOKENS``: ``NAME:TOKEN`` entries and ``ROOM_ID:INTEGRATION:TOKEN`` entries."""

    named: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    rooms: Mapping[tuple[int, str], str] = dataclasses.field(default_factory=dict, repr=False)

    def token_for(self, room_id: int, integration: str) -> str | None:
        """The token for ``integration`` in ``room_id``, else the one named ``integration``."""
        return self.rooms.get((room_id, integration)) or self.named.get(integration)

    def as_dict(self) -> dict[str, str]:
        """``{NAME: TOKEN, "ROOM_ID:INTEGRATION": TOKEN}``, the seed's ``all_tokens``."""
        rooms = {f"{room}:{name}": token for (room, name), token in self.rooms.items()}
        return {**self.named, **rooms}


def parse_static_tokens(entries: Iterable[str]) -> StaticTokens:
    """Read ``Settings.static_tokens``; raise ``ConfigError`` (never showing a token)."""
    named: dict[str, str] = {}
    rooms: dict[tuple[int, str], str] = {}
    for entry in entries:
        parts = entry.strip().split(":")
        if len(parts) == 2 and all(parts):
            named[parts[0]] = parts[1]
        elif len(parts) == 3 and all(parts) and parts[0].isdigit():
            rooms[(int(parts[0]), parts[1])] = parts[2]
        else:
            raise ConfigError(
                "ADDON_TOKENS has an entry that is neither NAME:TOKEN nor "
                "ROOM_ID:INTEGRATION:TOKEN with a numeric room id; fix it "
                "(the value is not shown because it holds a token)"
            )
    return StaticTokens(named, rooms)


@functools.lru_cache(maxsize=8)
def _static_tokens(entries: tuple[str, ...]) -> StaticTokens:
    """``parse_static_tokens``, once per ``Settings.static_tokens`` value (``create_app`` checks it
    at start-up; every command after that reuses the parsed tokens)."""
    return parse_static_tokens(entries)


def seed_notification(body: Mapping[str, object]) -> SeedNotification:
    """The old server's notification object, from a HipChat webhook body (docs/protocol.md)."""
    item = mapping(body.get("item"))
    message = mapping(item.get("message"))
    sender = sender_of(item)
    room = mapping(item.get("room"))
    return SeedNotification(
        event=_get(body, "event", str),
        item=SeedItem(
            message=SeedMessage(
                date=_get(message, "date", str),
                id=_get(message, "id", str),
                content=_get(message, "message", str),
                type=_get(message, "type", str),
                sender=SeedSender(
                    id=_id(sender.get("id")),
                    links=_get(sender, "links", dict),
                    mention_name=_get(sender, "mention_name", str),
                    name=_get(sender, "name", str),
                    version=_get(sender, "version", str),
                ),
            ),
            room=_seed_room(room),
        ),
        oauth_client_id=_get(body, "oauth_client_id", str),
        web_hook=_id(body.get("webhook_id")),
    )


def seed_integration(
    stem: str, run_integration: Callable[..., object], *, source: str | None = None
) -> Integration:
    """Wrap a seed script's ``run_integration`` into an ``Integration`` owning ``/<stem>``."""
    arity = _arity(run_integration, source or stem)
    doc = inspect.getdoc(run_integration) or inspect.getdoc(inspect.getmodule(run_integration))
    integration = Integration(stem, name=stem, description=f"Seed script {source or stem}")

    @integration.command(
        stem.lower(),
        help=(doc or f"Runs the {stem} script").splitlines()[0],
        usage=f"/{stem.lower()} <query>",
    )
    async def run(message: RoomMessage) -> str | None:
        return await _run_seed(message, stem, run_integration, arity)

    return integration


async def _run_seed(
    message: RoomMessage, stem: str, script: Callable[..., object], arity: int
) -> str | None:
    # The seed adapter is plumbing, not an author: it reads the context's private parts.
    runtime = message._runtime
    tokens = _static_tokens(runtime.settings.static_tokens)
    token = ""
    if arity >= 4:
        token = tokens.token_for(message.room.id, stem) or await runtime.addon_token(
            message.installation
        )
    notification = seed_notification(message._webhook)
    arguments: tuple[object, ...] = (
        notification,
        message.args,
        tokens.as_dict(),
        token,
        {},
        message.log,
    )
    if arity < 5:
        result = await message.run_sync(script, *arguments[:arity])
    else:
        result = await _run_with_storage(message, script, arguments[:arity])
    return result if isinstance(result, str) and result else None


async def _run_with_storage(
    message: RoomMessage, script: Callable[..., object], arguments: tuple[object, ...]
) -> object:
    """Load, call, save, all under the storage lock, so concurrent calls never lose an update.

    The lock outlives the command timeout: a call that times out is cancelled, which releases
    the lock (its thread may run on, but its dict is never saved), and a replica that dies
    holding it keeps the others out for at most ``command_timeout + LOCK_MARGIN`` seconds.
    """
    storage = message.storage
    timeout = message._runtime.settings.command_timeout
    async with storage.locked(ttl=timeout + LOCK_MARGIN, wait=timeout):
        data: dict[str, object] = dict(await storage.all())
        before = {name: _encoded(value) for name, value in data.items()}
        arguments = (*arguments[:4], data, *arguments[5:])
        result = await message.run_sync(script, *arguments)
        changed = {
            str(name): cast("JSON", value)
            for name, value in data.items()
            if before.get(str(name)) != _encoded(value)
        }
        removed = [name for name in before if name not in data]
        if changed or removed:
            await storage.update(changed, removed=removed)
    return result


def _encoded(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def _arity(func: Callable[..., object], source: str) -> int:
    """How many of the six seed arguments ``func`` takes (2 to 6, positionally)."""
    try:
        parameters = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError) as exc:
        raise IntegrationError(f"{source}: run_integration has no readable signature") from exc
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return SEED_ARITY
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    keyword_only = [p for p in parameters if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if len(positional) < 2 or len(required) > SEED_ARITY or keyword_only:
        raise IntegrationError(
            f"{source}: run_integration must take (notification, query"
            "[, all_tokens[, token, storage, log]]) positionally"
        )
    return min(len(positional), SEED_ARITY)


def _seed_room(room: Mapping[str, object]) -> SeedRoom:
    return SeedRoom(
        id=_id(room.get("id")),
        is_archived=_get(room, "is_archived", bool),
        links=_get(room, "links", dict),
        name=_get(room, "name", str),
        privacy=_get(room, "privacy", str),
        version=_get(room, "version", str),
    )


def _get(data: Mapping[str, object], name: str, kind: type[_T]) -> _T | None:
    value = data.get(name)
    return value if isinstance(value, kind) else None


def _id(value: object) -> int | str | None:
    # Unlike wire.id_of, the seed scripts get an id as HipChat sent it: an int stays an int.
    return value if isinstance(value, int | str) and id_of(value) is not None else None

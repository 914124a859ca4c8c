"""Integrations: what authors write and how they are loaded.

An integration module exports one ``Integration`` named ``integration`` and registers handlers on
it with decorators. Each handler gets one typed context: a ``RoomMessage`` for commands and
message patterns, a ``RoomEvent`` for other room events (docs/protocol.md, Webhook events); both
live in ``addon.context``.

```python
# integrations/echo.py
from addon import Integration, RoomMessage

integration = Integration(key="echo", name="Echo", scopes=["send_notification"])

@integration.command("echo", help="Repeat the text", usage="/echo <text>")
async def echo(message: RoomMessage) -> None:
    await message.reply(message.args)
```

Handlers may be ``async def`` (preferred) or plain ``def``. A plain ``def`` runs in a worker
thread, so it must not call the context's async methods (``reply``, ``storage``, ``client``); it
answers by *returning* a string, which is sent as a plain-text reply. ``async def`` handlers may do
the same. ``load_integrations`` imports every module of a directory once, at start-up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Generic, TypeAlias, TypeVar

from addon.context import RoomEvent, RoomMessage
from addon.descriptor import EVENTS, SCOPES, WebhookSpec
from addon.errors import IntegrationError
from addon.ui.extensions import UIDeclarations

__all__ = [
    "Command",
    "EventHandler",
    "Handler",
    "Integration",
    "MessageHandler",
    "check_unique",
    "help_integration",
    "load_integrations",
]

_COMMAND = re.compile(r"[a-z0-9_-]{1,40}")
_KEY = re.compile(r"[A-Za-z0-9_-]{1,40}")
_C = TypeVar("_C", "RoomMessage", "RoomEvent")


MessageHandler: TypeAlias = (
    Callable[[RoomMessage], Awaitable[str | None]] | Callable[[RoomMessage], str | None]
)
EventHandler: TypeAlias = (
    Callable[[RoomEvent], Awaitable[str | None]] | Callable[[RoomEvent], str | None]
)
_MH = TypeVar("_MH", bound=MessageHandler)
_EH = TypeVar("_EH", bound=EventHandler)


@dataclasses.dataclass(frozen=True)
class Handler(Generic[_C]):
    """A registered handler and what it is called in messages and logs (``label``)."""

    integration: str
    label: str
    func: Callable[[_C], object]
    is_async: bool


@dataclasses.dataclass(frozen=True)
class Command:
    """A slash command: ``/name``, its usage line and help text."""

    name: str
    usage: str
    help: str
    handler: Handler[RoomMessage]


class Integration(UIDeclarations):
    """A named set of handlers: slash commands, message patterns, room events and UI extensions.

    ```python
    from addon import Integration, RoomMessage

    integration = Integration(key="echo", name="Echo", scopes=["send_notification"])

    @integration.command("echo", help="Repeat the text", usage="/echo <text>")
    async def echo(message: RoomMessage) -> None:
        await message.reply(message.args)

    @integration.on_message(r"(?i)\\bhello\\b")
    async def wave(message: RoomMessage) -> None:
        await message.reply(f"Hello, @{message.sender.mention_name}")
    ```
    UI extensions (glances, panels, dialogs, actions, pages, ``settings=``): ``addon.ui``.
    """

    def __init__(
        self,
        key: str,
        *,
        name: str | None = None,
        scopes: Iterable[str] = ("send_notification",),
        description: str = "",
        settings: type | None = None,
        assets: Path | None = None,
    ) -> None:
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise IntegrationError(
                f"Integration key {key!r} is invalid; use 1-40 letters, digits, '_' or '-'"
            )
        self.key = key
        self.name = name or key
        self.description = description
        self.scopes = _scopes(key, scopes)
        self.commands: dict[str, Command] = {}
        self.patterns: list[tuple[re.Pattern[str], Handler[RoomMessage]]] = []
        self.events: list[tuple[str, Handler[RoomEvent]]] = []
        self._init_ui(settings, assets)

    def __repr__(self) -> str:
        return f"Integration(key={self.key!r}, commands={sorted(self.commands)!r})"

    def command(
        self, name: str, *, help: str = "", usage: str | None = None
    ) -> Callable[[_MH], _MH]:
        """Register the handler of ``/name``; the integration then owns that command."""

        def register(func: _MH) -> _MH:
            handler = self._handler(func, f"/{name}")
            _require_str(name, "command name", self.key, handler.label)
            if not _COMMAND.fullmatch(name):
                raise IntegrationError(
                    f"Integration {self.key!r}, handler {handler.label!r}: command name {name!r} "
                    "is invalid; use 1-40 of a-z, 0-9, '_' or '-' (without the slash)"
                )
            if name in self.commands:
                raise IntegrationError(
                    f"Integration {self.key!r}: /{name} is registered twice; keep one handler"
                )
            self.commands[name] = Command(name, usage or f"/{name}", help, handler)
            return func

        return register

    def on_message(self, pattern: str) -> Callable[[_MH], _MH]:
        """Register a handler for room messages matching ``pattern`` (``re.search``)."""

        def register(func: _MH) -> _MH:
            handler = self._handler(func, _name(func))
            _require_str(pattern, "pattern", self.key, handler.label)
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise IntegrationError(
                    f"Integration {self.key!r}, handler {handler.label!r}: pattern {pattern!r} "
                    f"does not compile ({exc})"
                ) from exc
            self.patterns.append((compiled, handler))
            return func

        return register

    def on_event(self, event: str) -> Callable[[_EH], _EH]:
        """Register a handler for a room event other than ``room_message``.

        See docs/protocol.md, Webhook events.
        """

        def register(func: _EH) -> _EH:
            handler = self._handler(func, _name(func))
            _require_str(event, "event", self.key, handler.label)
            if event not in EVENTS or event == "room_message":
                raise IntegrationError(
                    f"Integration {self.key!r}, handler {handler.label!r}: event {event!r} is not "
                    f"one of {', '.join(sorted(EVENTS - {'room_message'}))} "
                    "(use command() or on_message() for room_message)"
                )
            self.events.append((event, handler))
            return func

        return register

    def webhooks(self) -> list[WebhookSpec]:
        """The webhooks the descriptor must declare for this integration.

        See docs/protocol.md, Descriptor capabilities and Slash commands.
        """
        specs: list[WebhookSpec] = []
        if self.commands:
            names = "|".join(re.escape(n) for n in sorted(self.commands))
            specs.append(WebhookSpec("room_message", f"(?i)^/(?:{names})(?:\\s|$)", self.name))
        for pattern, _handler in self.patterns:
            specs.append(WebhookSpec("room_message", pattern.pattern, self.name))
        for event in dict.fromkeys(event for event, _handler in self.events):
            specs.append(WebhookSpec(event, None, self.name))
        return specs

    def _handler(self, func: Callable[[_C], object], label: str) -> Handler[_C]:
        if not callable(func):
            raise TypeError(
                f"Integration {self.key!r}: {label!r} must decorate a function, "
                f"not {type(func).__name__}"
            )
        try:
            inspect.signature(func).bind(None)
        except TypeError:
            raise TypeError(
                f"Integration {self.key!r}, handler {_name(func)!r}: a handler takes exactly one "
                "argument, the context (RoomMessage or RoomEvent)"
            ) from None
        return Handler(self.key, label, func, inspect.iscoroutinefunction(func))


def help_integration(integrations: Sequence[Integration]) -> Integration:
    """The built-in ``/help``: lists every command of ``integrations`` (and itself)."""
    integration = Integration("help", name="Help", scopes=())

    @integration.command("help", help="List the commands", usage="/help")
    async def show_help(message: RoomMessage) -> None:
        commands = [c for i in (*integrations, integration) for c in i.commands.values()]
        lines = [f"{c.usage} - {c.help}" if c.help else c.usage for c in commands]
        await message.reply("\n".join(sorted(lines)))

    return integration


def load_integrations(path: Path) -> list[Integration]:
    """Import every integration module in ``path`` once; raise ``IntegrationError`` on a bad one."""
    if not path.is_dir():
        raise IntegrationError(
            f"{path} is not a directory; set ADDON_INTEGRATIONS_PATH to the integrations folder"
        )
    files = [f for f in sorted(path.glob("*.py")) if f.stem.isidentifier() and f.stem[0] != "_"]
    integrations = [_integration_of(_import(file), file) for file in files]
    check_unique(integrations)
    return integrations


def check_unique(integrations: Sequence[Integration]) -> None:
    """Raise ``IntegrationError`` when two integrations share a key or a command."""
    keys: set[str] = set()
    owners: dict[str, str] = {}
    for integration in integrations:
        if integration.key in keys:
            raise IntegrationError(f"Two integrations have the key {integration.key!r}; rename one")
        keys.add(integration.key)
        for name in integration.commands:
            if name in owners:
                raise IntegrationError(
                    f"/{name} is owned by both {owners[name]!r} and {integration.key!r}; "
                    "rename one of the commands"
                )
            owners[name] = integration.key


def _import(file: Path) -> ModuleType:
    digest = hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:12]
    module_name = f"_addon_integration_{file.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise IntegrationError(f"{_display(file)} cannot be imported; is it a Python file?")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and typing look modules up there
    try:
        spec.loader.exec_module(module)
    # An author's module can raise anything on import; say which file, then stop start-up.
    except Exception as exc:
        del sys.modules[module_name]
        raise IntegrationError(
            f"{_display(file)} failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    return module


def _integration_of(module: ModuleType, file: Path) -> Integration:
    found = getattr(module, "integration", None)
    if isinstance(found, Integration):
        return found
    if found is None and callable(getattr(module, "run_integration", None)):
        # Imported here: the seed adapter builds on this module.
        from addon.seed import seed_integration

        return seed_integration(file.stem, module.run_integration, source=_display(file))
    what = "no 'integration' attribute" if found is None else f"a {type(found).__name__} named"
    suffix = "" if found is None else " 'integration'"
    raise IntegrationError(f"{_display(file)} has {what}{suffix} (expected addon.Integration)")


def _scopes(key: str, scopes: Iterable[str]) -> tuple[str, ...]:
    if isinstance(scopes, str):
        raise TypeError(f"Integration {key!r}: scopes must be a list of strings, not one string")
    unknown = sorted(set(scopes) - SCOPES)
    if unknown:
        raise IntegrationError(
            f"Integration {key!r}: unknown scope {unknown[0]!r}; "
            f"use some of {', '.join(sorted(SCOPES))}"
        )
    return tuple(dict.fromkeys(scopes))


def _require_str(value: object, what: str, key: str, label: str) -> None:
    if not isinstance(value, str):
        raise TypeError(
            f"Integration {key!r}, handler {label!r}: the {what} must be a str, "
            f"not {type(value).__name__}"
        )


def _name(func: object) -> str:
    return str(getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func)))


def _display(file: Path) -> str:
    return f"{file.parent.name}/{file.name}"

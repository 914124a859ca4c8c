"""UI extensions declared in Python, beside commands (docs/protocol.md, Descriptor capabilities).

``UIDeclarations`` is the part of ``Integration`` that declares glances, web panels, dialogs,
actions, external pages, the configuration page, settings and page APIs. Each decorator validates
at import time and returns the function unchanged; ``addon.ui.descriptor`` turns what every
loaded integration declared into the descriptor's capability entries.

```python
@integration.glance("notes", name="Notes", icon="icons/note.png", target="notes-panel")
async def notes(request: UIRequest) -> Glance:
    return Glance(f"{len(await request.storage.all())} notes")
```
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from addon.errors import IntegrationError
from addon.ui.config import Field, fields_of
from addon.ui.values import Icon, icon_of

if TYPE_CHECKING:
    from addon.ui.request import UIRequest

__all__ = [
    "ACTION_LOCATIONS",
    "ApiRoute",
    "Extension",
    "UIDeclarations",
    "route_of",
]

UI_KEY = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}")
ACTION_LOCATIONS = frozenset({"hipchat.message.action", "hipchat.input.action"})
API_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_API_PATH = re.compile(r"(/[a-z0-9_.-]{1,40}){1,4}")
_ROUTES = {
    "glance": "glance",
    "webPanel": "panel",
    "dialog": "dialog",
    "externalPage": "page",
    "configurable": "configure",
}
_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])
_S = TypeVar("_S")


def route_of(kind: str) -> str:
    """The URL segment of an extension kind: ``webPanel`` is served at ``/ui/{i}/panel/{key}``."""
    return _ROUTES[kind]


@dataclasses.dataclass(frozen=True)
class Extension:
    """One declared extension; ``handler`` is None for actions (they open their ``target``)."""

    integration: str
    kind: str
    key: str
    name: str
    handler: Callable[[UIRequest], Awaitable[Any]] | None
    icon: Icon | None = None
    target: str | None = None
    location: str | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    conditions: tuple[Mapping[str, Any], ...] = ()
    weight: int = 100

    @property
    def path(self) -> str:
        """Where the add-on serves it (configuration page: ``/ui/{integration}/configure``)."""
        if self.kind == "configurable":
            return f"/ui/{self.integration}/configure"
        return f"/ui/{self.integration}/{route_of(self.kind)}/{self.key}"


@dataclasses.dataclass(frozen=True)
class ApiRoute:
    """A page-to-add-on endpoint: ``method`` ``/ui/{integration}/api{path}``, JWT-authenticated."""

    method: str
    path: str
    handler: Callable[[UIRequest], Awaitable[Any]]


class UIDeclarations:
    """The UI half of ``Integration``: decorators that declare extensions (see module doc)."""

    key: str

    def _init_ui(self, settings: type | None, assets: Path | None) -> None:
        self.extensions: dict[tuple[str, str], Extension] = {}
        self.apis: dict[tuple[str, str], ApiRoute] = {}
        self.assets = assets if assets is not None else _caller_assets()
        self.settings_schema = settings
        where = f"Integration {self.key!r}"
        self.settings_fields: tuple[Field, ...] = fields_of(settings, where) if settings else ()

    def settings_type(self, schema: type[_S]) -> type[_S]:
        """``schema`` when it is the settings dataclass declared here; ``TypeError`` else."""
        if self.settings_schema is not schema:
            declared = getattr(self.settings_schema, "__name__", None)
            raise TypeError(
                f"Integration {self.key!r} declares settings {declared!r}, not {schema.__name__!r}"
            )
        return schema

    @property
    def static_dir(self) -> Path:
        """The folder ``/static/{integration}/`` serves: ``<assets>/static``."""
        return self.assets / "static"

    @property
    def templates_dir(self) -> Path:
        """The folder page templates come from: ``<assets>/templates``."""
        return self.assets / "templates"

    def glance(
        self,
        key: str,
        *,
        name: str,
        icon: Icon | str | Mapping[str, str],
        target: str | None = None,
        conditions: Sequence[Mapping[str, Any]] = (),
        weight: int = 100,
    ) -> Callable[[_F], _F]:
        """Declare a sidebar glance; the handler returns a ``Glance``.

        See docs/protocol.md, Glance data.
        """
        where = f"Integration {self.key!r}, glance {key!r}"
        found = icon_of(icon, where) if _typed(icon, where) else None
        extra = {"icon": found, "target": target, "conditions": tuple(conditions)}
        return self._declare("glance", key, name, weight=weight, **extra)

    def web_panel(
        self,
        key: str,
        *,
        name: str,
        location: str = "hipchat.sidebar.right",
        icon: Icon | str | Mapping[str, str] | None = None,
        weight: int = 100,
    ) -> Callable[[_F], _F]:
        """Declare a sidebar web panel; the handler returns a ``Page``."""
        where = f"Integration {self.key!r}, web panel {key!r}"
        found = None if icon is None else icon_of(icon, where)
        return self._declare("webPanel", key, name, weight=weight, icon=found, location=location)

    def dialog(
        self,
        key: str,
        *,
        title: str,
        primary: tuple[str, str] | None = None,
        secondary: Sequence[tuple[str, str]] = (),
        size: tuple[str, str] | None = None,
        style: str = "normal",
        hint: str | None = None,
    ) -> Callable[[_F], _F]:
        """Declare a dialog; ``primary``/``secondary`` are ``(key, name)`` of its buttons."""
        options: dict[str, Any] = {"style": style}
        if primary is not None:
            options["primaryAction"] = _action(*primary)
        if secondary:
            options["secondaryActions"] = [_action(*pair) for pair in secondary]
        if size is not None:
            options["size"] = {"width": size[0], "height": size[1]}
        if hint:
            options["hint"] = {"value": hint}
        return self._declare("dialog", key, title, options=options)

    def external_page(self, key: str, *, name: str) -> Callable[[_F], _F]:
        """Declare a page that an action or glance opens in a new browser tab."""
        return self._declare("externalPage", key, name)

    def configure(self, func: _F) -> _F:
        """Declare the add-on's configuration page (``configurable``; one per add-on)."""
        return self._declare("configurable", "configure", "Configure")(func)

    def action(
        self,
        key: str,
        *,
        name: str,
        target: str,
        location: str = "hipchat.message.action",
        conditions: Sequence[Mapping[str, Any]] = (),
        weight: int = 100,
    ) -> None:
        """Declare a message or input action that opens ``target`` (a panel, dialog or page)."""
        if location not in ACTION_LOCATIONS:
            raise IntegrationError(
                f"Integration {self.key!r}, action {key!r}: location {location!r} is not one of "
                f"{', '.join(sorted(ACTION_LOCATIONS))}"
            )
        self._add(
            Extension(
                self.key,
                "action",
                key,
                name,
                None,
                None,
                target,
                location,
                {},
                tuple(conditions),
                weight,
            )
        )

    def api(self, method: str, path: str) -> Callable[[_F], _F]:
        """Declare ``method /ui/{integration}/api{path}`` for the integration's pages to call."""
        where = f"Integration {self.key!r}, api {method} {path}"
        if method.upper() not in API_METHODS or not _API_PATH.fullmatch(path):
            raise IntegrationError(
                f"{where}: use one of {sorted(API_METHODS)} and a path like '/settings' "
                "(1-4 segments of a-z, 0-9, '_', '.', '-')"
            )

        def register(func: _F) -> _F:
            _check_handler(func, where)
            if (method.upper(), path) in self.apis:
                raise IntegrationError(f"{where} is declared twice; keep one handler")
            self.apis[(method.upper(), path)] = ApiRoute(method.upper(), path, func)
            return func

        return register

    def _declare(self, kind: str, key: str, name: str, **extra: Any) -> Callable[[_F], _F]:
        def register(func: _F) -> _F:
            _check_handler(func, f"Integration {self.key!r}, {kind} {key!r}")
            self._add(Extension(self.key, kind, key, name, func, **extra))
            return func

        return register

    def _add(self, extension: Extension) -> None:
        where = f"Integration {self.key!r}, {extension.kind} {extension.key!r}"
        if not isinstance(extension.key, str) or not UI_KEY.fullmatch(extension.key):
            raise IntegrationError(
                f"{where}: the key must be 1-40 of a-z, 0-9, '_', '.', '-' (starting with a-z, 0-9)"
            )
        if not isinstance(extension.name, str) or not 1 <= len(extension.name) <= 100:
            raise IntegrationError(f"{where}: the name must be 1-100 characters")
        if (extension.kind, extension.key) in self.extensions:
            raise IntegrationError(f"{where} is declared twice; keep one")
        self.extensions[(extension.kind, extension.key)] = extension

    def extension(self, kind: str, key: str) -> Extension | None:
        """The declared extension of ``kind`` (``glance``, ``webPanel``...) named ``key``."""
        return self.extensions.get((kind, key))


def _typed(icon: object, where: str) -> bool:
    if icon is None:
        raise IntegrationError(f"{where}: a glance needs an icon with 'url' and 'url@2x'")
    return True


def _action(key: str, name: str) -> dict[str, Any]:
    return {"key": key, "name": {"value": name}, "enabled": True}


def _check_handler(func: object, where: str) -> None:
    if not inspect.iscoroutinefunction(func):
        raise TypeError(f"{where}: the handler must be an 'async def' taking one UIRequest")
    try:
        inspect.signature(func).bind(None)
    except TypeError:
        raise TypeError(f"{where}: the handler takes exactly one argument, the UIRequest") from None


def _caller_assets() -> Path:
    # The integration's own folder sits beside its module: integrations/notes.py ->
    # integrations/notes/ (static/ and templates/ inside). Frame 3: the module creating it.
    frame = sys._getframe(3)
    module_file = frame.f_globals.get("__file__") or "."
    return Path(module_file).resolve().with_suffix("")

"""UI extensions declared in Python, beside commands (protocol reference §1.2).

``UIDeclarations`` is the part of ``Integration`` that declares glances, web panels, dialogs,
actions, external pages, the configuration page, settings and page APIs. Each decorator validates
at import time and returns the function unchanged. ``descriptor_entries`` turns what every loaded
integration declared into the descriptor's capability entries, and checks what can only be checked
across integrations (unique keys, targets, one ``configurable``, icon files).

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
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
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
    "descriptor_entries",
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
_TARGETS = ("webPanel", "dialog", "externalPage")
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
        """Declare a sidebar glance; the handler returns a ``Glance`` (§7.1)."""
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


def descriptor_entries(
    integrations: Iterable[UIDeclarations],
    url_for: Callable[[str], str],
    static: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The descriptor's UI capabilities for ``integrations``; ``IntegrationError`` when broken.

    ``static`` holds the extensions of ``capabilities/addon.json``: they count for targets and the
    one-``configurable`` rule, and are merged by the caller.
    """
    static = static or {}
    extensions = [e for i in integrations for e in i.extensions.values()]
    owners = {i.key: i for i in integrations}
    _check_unique(extensions, static)
    _check_targets(extensions, static)
    entries: dict[str, Any] = {}
    for extension in extensions:
        entry = _entry(extension, owners[extension.integration], url_for)
        if extension.kind == "configurable":
            entries["configurable"] = entry
        else:
            entries.setdefault(extension.kind, []).append(entry)
    return entries


def _check_unique(extensions: Sequence[Extension], static: Mapping[str, Any]) -> None:
    configurables = [e for e in extensions if e.kind == "configurable"]
    if len(configurables) + ("configurable" in static) > 1:
        owners = [e.integration for e in configurables] + (
            ["capabilities/addon.json"] * ("configurable" in static)
        )
        raise IntegrationError(
            f"Only one configuration page per add-on, but {', '.join(map(repr, owners))} "
            "declare one; keep one @integration.configure"
        )
    seen: dict[tuple[str, str], str] = {
        (kind, str(item.get("key"))): "capabilities/addon.json"
        for kind, items in static.items()
        if isinstance(items, list)
        for item in items
        if isinstance(item, Mapping)
    }
    for extension in extensions:
        name = (extension.kind, extension.key)
        if name in seen and extension.kind != "configurable":
            raise IntegrationError(
                f"{extension.kind} key {extension.key!r} is declared by both {seen[name]!r} and "
                f"{extension.integration!r}; rename one"
            )
        seen[name] = extension.integration


def _check_targets(extensions: Sequence[Extension], static: Mapping[str, Any]) -> None:
    targets = {e.key for e in extensions if e.kind in _TARGETS}
    for kind in _TARGETS:
        targets |= {
            str(item.get("key")) for item in static.get(kind, []) if isinstance(item, Mapping)
        }
    for extension in extensions:
        if extension.target is not None and extension.target not in targets:
            raise IntegrationError(
                f"Integration {extension.integration!r}, {extension.kind} {extension.key!r}: "
                f"target {extension.target!r} names no web panel, dialog or external page; "
                f"declare it or use one of {sorted(targets)}"
            )
        if extension.kind == "action" and extension.target is None:
            raise IntegrationError(
                f"Integration {extension.integration!r}, action {extension.key!r} needs a target"
            )


def _entry(
    extension: Extension, owner: UIDeclarations, url_for: Callable[[str], str]
) -> dict[str, Any]:
    if extension.kind == "configurable":
        return {"url": url_for(extension.path)}
    entry: dict[str, Any] = {"key": extension.key, "name": {"value": extension.name}}
    if extension.kind == "dialog":
        entry = {
            "key": extension.key,
            "title": {"value": extension.name},
            "options": dict(extension.options),
        }
    if extension.kind == "glance":
        entry["queryUrl"] = url_for(extension.path)
    elif extension.kind != "action":
        entry["url"] = url_for(extension.path)
    if extension.icon is not None:
        entry["icon"] = extension.icon.to_json(_static_url(owner, url_for, extension))
    for name, value in (("target", extension.target), ("location", extension.location)):
        if value is not None:
            entry[name] = value
    if extension.conditions:
        entry["conditions"] = [dict(c) for c in extension.conditions]
    if extension.kind in ("glance", "webPanel", "action"):
        entry["weight"] = extension.weight
    return entry


def _static_url(
    owner: UIDeclarations, url_for: Callable[[str], str], extension: Extension
) -> Callable[[str], str]:
    def resolve(path: str) -> str:
        if "://" in path:
            return path
        if not (owner.static_dir / path.lstrip("/")).is_file():
            raise IntegrationError(
                f"Integration {owner.key!r}, {extension.kind} {extension.key!r}: icon file "
                f"{path!r} is not in {owner.static_dir.parent.name}/static/; add it "
                "(HipChat needs both 'url' and 'url@2x')"
            )
        return url_for(f"/static/{owner.key}/{path.lstrip('/')}")

    return resolve

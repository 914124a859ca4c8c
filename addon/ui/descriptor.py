"""The descriptor entries of the UI extensions every loaded integration declared.

Their shape is in docs/protocol.md, Descriptor capabilities.

``descriptor_entries`` makes their URLs absolute (``/ui/{integration}/...``, icons under
``/static/{integration}/``) and checks what only the whole add-on can tell: keys unique per kind,
every ``target`` naming a web panel, dialog or external page, at most one ``configurable``, and
relative icon files present in the integration's ``static/`` folder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from addon.errors import IntegrationError
from addon.ui.extensions import Extension, UIDeclarations

__all__ = ["descriptor_entries"]

_TARGETS = ("webPanel", "dialog", "externalPage")


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

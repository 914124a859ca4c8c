"""The capability descriptor served at ``/atlassian-connect.json``.

It is built from two parts: the static file ``capabilities/addon.json`` (key, name, vendor, scopes,
install options, UI extensions) and what the loaded integrations declare (webhooks, extra scopes).
``build_descriptor`` is a pure function; ``validate_descriptor`` applies HipChat's rules
(docs/protocol.md, Descriptor validation) so that a broken descriptor stops the add-on at start-up
instead of an install.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from addon.errors import ConfigError
from addon.settings import Settings

__all__ = [
    "DESCRIPTOR_PATH",
    "EVENTS",
    "SCOPES",
    "Capabilities",
    "WebhookSpec",
    "build_descriptor",
    "load_capabilities",
    "validate_descriptor",
]

DESCRIPTOR_PATH = "/atlassian-connect.json"
EVENTS = frozenset(
    "room_archived room_created room_deleted room_enter room_exit room_file_upload room_message "
    "room_notification room_topic_change room_unarchived".split()
)
SCOPES = frozenset(
    "admin_group admin_room manage_rooms send_message send_notification view_group view_messages "
    "view_room import_data".split()
)
UI_EXTENSIONS = ("glance", "webPanel", "dialog", "action", "externalPage")
UI_PAGES = ("configurable", "adminPage")
_ADDON_KEY = re.compile(r"[A-Za-z0-9._-]{1,100}")


@dataclasses.dataclass(frozen=True)
class WebhookSpec:
    """One webhook an integration asks for; ``pattern`` only for message events."""

    event: str
    pattern: str | None
    name: str


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """The static part of the descriptor, read from ``capabilities/addon.json``."""

    key: str
    name: str
    description: str
    vendor: Mapping[str, str] | None = None
    homepage: str = "/"
    from_name: str | None = None
    avatar: object = None
    scopes: tuple[str, ...] = ("send_notification",)
    allow_room: bool = True
    allow_global: bool = True
    extensions: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def load_capabilities(directory: Path) -> Capabilities:
    """Read ``addon.json`` in ``directory``; raise ``ConfigError`` naming the file if wrong."""
    path = directory / "addon.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path} cannot be read as JSON ({exc}); set ADDON_CAPABILITIES_PATH to the folder "
            "holding addon.json"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    known = {"key", "name", "description", "vendor", "homepage", "fromName", "avatar", "scopes"}
    known |= {"allowRoom", "allowGlobal", *UI_EXTENSIONS, *UI_PAGES}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path} has unknown fields {unknown}; remove them or fix their spelling")
    return Capabilities(
        key=str(data.get("key", "")),
        name=str(data.get("name", "")),
        description=str(data.get("description", "")),
        vendor=data.get("vendor"),
        homepage=str(data.get("homepage", "/")),
        from_name=data.get("fromName"),
        avatar=data.get("avatar"),
        scopes=tuple(data.get("scopes", ("send_notification",))),
        allow_room=bool(data.get("allowRoom", True)),
        allow_global=bool(data.get("allowGlobal", True)),
        extensions={k: data[k] for k in (*UI_EXTENSIONS, *UI_PAGES) if k in data},
    )


def build_descriptor(
    settings: Settings,
    capabilities: Capabilities,
    webhooks: Sequence[WebhookSpec] = (),
    scopes: Iterable[str] = (),
    ui: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The descriptor: ``capabilities`` merged with the integrations' webhooks, scopes and UI."""
    all_scopes = sorted({*capabilities.scopes, *scopes})
    consumer: dict[str, Any] = {"scopes": all_scopes}
    if capabilities.from_name:
        consumer["fromName"] = capabilities.from_name
    if capabilities.avatar:
        consumer["avatar"] = _absolute(settings, capabilities.avatar)
    body: dict[str, Any] = {
        "hipchatApiConsumer": consumer,
        "installable": _installable(settings, capabilities),
        "oauth2Consumer": {"redirectionUrls": [settings.url_for("/oauth/callback")]},
    }
    if webhooks:
        body["webhook"] = [_webhook(settings, i, hook) for i, hook in enumerate(webhooks)]
    for name, value in capabilities.extensions.items():
        body[name] = _absolute(settings, value)
    for name, value in (ui or {}).items():  # UI declared in Python (addon.ui), URLs absolute
        body[name] = [*body.get(name, []), *value] if isinstance(value, list) else value
    descriptor: dict[str, Any] = {
        "key": capabilities.key,
        "name": capabilities.name,
        "description": capabilities.description,
        "links": {
            "self": settings.url_for(DESCRIPTOR_PATH),
            "homepage": _absolute(settings, capabilities.homepage),
        },
        "capabilities": body,
    }
    if capabilities.vendor:
        descriptor["vendor"] = dict(capabilities.vendor)
    return descriptor


def _installable(settings: Settings, capabilities: Capabilities) -> dict[str, Any]:
    installable: dict[str, Any] = {
        "allowRoom": capabilities.allow_room,
        "allowGlobal": capabilities.allow_global,
    }
    if settings.install_flow == "client":
        installable["installedUrl"] = settings.url_for("/installable/installed")
        installable["updatedUrl"] = settings.url_for("/installable/updated")
        installable["uninstalledUrl"] = settings.url_for("/installable/uninstalled")
    else:
        installable["callbackUrl"] = settings.url_for("/installable")
        installable["updateCallbackUrl"] = settings.url_for("/installable/update")
    return installable


def _webhook(settings: Settings, index: int, hook: WebhookSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "event": hook.event,
        "url": settings.url_for(f"/webhook/{hook.event}"),
        "name": hook.name[:100],
        "key": f"hook-{index}-{hook.event}"[:40],
        "authentication": "jwt",
    }
    if hook.pattern is not None:
        entry["pattern"] = hook.pattern
    return entry


def _absolute(settings: Settings, value: Any) -> Any:
    """Resolve relative URL strings (``/glance``) against ``ADDON_BASE_URL``, recursively."""
    if isinstance(value, str):
        return settings.url_for(value) if value.startswith("/") else value
    if isinstance(value, list):
        return [_absolute(settings, item) for item in value]
    if isinstance(value, dict):
        return {
            k: _absolute(settings, v) if _is_url_field(k) or not isinstance(v, str) else v
            for k, v in value.items()
        }
    return value


def _is_url_field(name: str) -> bool:
    return name.lower().endswith("url") or name in ("url@2x", "homepage")


def validate_descriptor(descriptor: Mapping[str, Any]) -> None:
    """Apply HipChat's descriptor rules; raise ``ConfigError`` naming the first broken field."""
    key = str(descriptor.get("key", ""))
    _check(_ADDON_KEY.fullmatch(key), "key must be 1-100 of [A-Za-z0-9._-]")
    _check(_length_ok(descriptor.get("name"), 100), "name must be 1-100 characters")
    _check(isinstance(descriptor.get("description"), str), "description must be a string")
    capabilities = descriptor["capabilities"]
    scopes = capabilities["hipchatApiConsumer"]["scopes"]
    _check(scopes and set(scopes) <= SCOPES, f"scopes must be non-empty and among {sorted(SCOPES)}")
    installable = capabilities["installable"]
    _check(
        installable["allowRoom"] or installable["allowGlobal"],
        "allowRoom and allowGlobal cannot both be false",
    )
    for hook in capabilities.get("webhook", []):
        _check(hook["event"] in EVENTS, f"webhook event {hook['event']!r} is not a HipChat event")
        _check(_length_ok(hook["key"], 40), f"webhook key {hook['key']!r} must be 1-40 characters")
        if "pattern" in hook:
            try:
                re.compile(hook["pattern"])
            except re.error as exc:
                _check(False, f"webhook pattern {hook['pattern']!r} does not compile ({exc})")
    for kind in UI_EXTENSIONS:
        _validate_extensions(kind, capabilities.get(kind, []))


def _validate_extensions(kind: str, entries: object) -> None:
    _check(isinstance(entries, list), f"{kind} must be a list")
    assert isinstance(entries, list)
    keys = [entry.get("key") if isinstance(entry, dict) else None for entry in entries]
    for key in keys:
        _check(_length_ok(key, 40), f"{kind} key {key!r} must be 1-40 characters")
    _check(len(set(keys)) == len(keys), f"{kind} keys must be unique")
    for entry in entries:
        name = entry.get("name") or entry.get("title")
        if name is not None:
            value = name.get("value") if isinstance(name, dict) else None
            _check(_length_ok(value, 100), f"{kind} {entry['key']!r} name.value must be 1-100")


def _length_ok(value: object, limit: int) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= limit


def _check(condition: object, message: str) -> None:
    if not condition:
        raise ConfigError(f"The descriptor is invalid: {message}; fix capabilities/addon.json")

"""The descriptor: built from capabilities/ plus integrations, validated."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from addon.descriptor import (
    WebhookSpec,
    build_descriptor,
    load_capabilities,
    validate_descriptor,
)
from addon.errors import ConfigError
from addon.settings import Settings
from tests.helpers import REPO

SETTINGS = Settings.from_environ({"ADDON_BASE_URL": "https://addon.example.com"})
CAPS = load_capabilities(REPO / "capabilities")


def test_links_self_is_the_served_url_and_server_flow_is_the_default() -> None:
    descriptor = build_descriptor(SETTINGS, CAPS)
    validate_descriptor(descriptor)
    assert descriptor["links"]["self"] == "https://addon.example.com/atlassian-connect.json"
    assert descriptor["links"]["homepage"] == "https://addon.example.com/"
    installable = descriptor["capabilities"]["installable"]
    assert installable["callbackUrl"] == "https://addon.example.com/installable"
    assert installable["updateCallbackUrl"] == "https://addon.example.com/installable/update"
    assert "installedUrl" not in installable
    assert descriptor["capabilities"]["oauth2Consumer"]["redirectionUrls"] == [
        "https://addon.example.com/oauth/callback"
    ]


def test_client_side_flow_when_asked() -> None:
    settings = dataclasses.replace(SETTINGS, install_flow="client")
    installable = build_descriptor(settings, CAPS)["capabilities"]["installable"]
    assert installable["installedUrl"] == "https://addon.example.com/installable/installed"
    assert installable["updatedUrl"] == "https://addon.example.com/installable/updated"
    assert installable["uninstalledUrl"] == "https://addon.example.com/installable/uninstalled"
    assert "callbackUrl" not in installable


def test_integrations_add_webhooks_and_scopes() -> None:
    hooks = [
        WebhookSpec("room_message", r"^/echo(\s|$)", "Echo"),
        WebhookSpec("room_enter", None, "Greeter"),
    ]
    descriptor = build_descriptor(SETTINGS, CAPS, hooks, scopes=["view_room"])
    validate_descriptor(descriptor)
    webhooks = descriptor["capabilities"]["webhook"]
    assert webhooks[0] == {
        "event": "room_message",
        "pattern": r"^/echo(\s|$)",
        "url": "https://addon.example.com/webhook/room_message",
        "name": "Echo",
        "key": "hook-0-room_message",
        "authentication": "jwt",
    }
    assert "pattern" not in webhooks[1]
    scopes = descriptor["capabilities"]["hipchatApiConsumer"]["scopes"]
    assert scopes == ["send_notification", "view_room"]


def test_ui_extensions_get_absolute_urls(tmp_path: Path) -> None:
    data: dict[str, Any] = json.loads((REPO / "capabilities" / "addon.json").read_text())
    data["glance"] = [
        {
            "key": "status",
            "name": {"value": "Status"},
            "queryUrl": "/glance/status",
            "icon": {"url": "/static/i.png", "url@2x": "/static/i2.png"},
            "target": "panel",
        }
    ]
    (tmp_path / "addon.json").write_text(json.dumps(data))
    descriptor = build_descriptor(SETTINGS, load_capabilities(tmp_path))
    validate_descriptor(descriptor)
    glance = descriptor["capabilities"]["glance"][0]
    assert glance["queryUrl"] == "https://addon.example.com/glance/status"
    assert glance["icon"]["url@2x"] == "https://addon.example.com/static/i2.png"
    assert glance["target"] == "panel"


def broken(**changes: Any) -> dict[str, Any]:
    descriptor = build_descriptor(SETTINGS, CAPS, [WebhookSpec("room_message", "^/x", "X")])
    for path, value in changes.items():
        node = descriptor
        *parents, leaf = path.split("__")
        for name in parents:
            node = node[name]
        node[leaf] = value
    return descriptor


@pytest.mark.parametrize(
    "descriptor",
    [
        broken(key=""),
        broken(key="k" * 101),
        broken(key="has space"),
        broken(name=""),
        broken(name="n" * 101),
        broken(capabilities__hipchatApiConsumer__scopes=["send_everything"]),
        broken(capabilities__hipchatApiConsumer__scopes=[]),
        broken(
            capabilities__installable__allowRoom=False, capabilities__installable__allowGlobal=False
        ),
        broken(capabilities__webhook=[{"event": "room_party", "key": "k", "url": "u"}]),
        broken(capabilities__webhook=[{"event": "room_message", "key": "k" * 41, "url": "u"}]),
        broken(
            capabilities__webhook=[
                {"event": "room_message", "key": "k", "pattern": "(", "url": "u"}
            ]
        ),
        broken(capabilities__glance=[{"key": "", "name": {"value": "x"}}]),
        broken(capabilities__glance=[{"key": "a", "name": {"value": "x" * 101}}]),
        broken(capabilities__glance=[{"key": "a"}, {"key": "a"}]),
    ],
)
def test_broken_descriptors_are_refused(descriptor: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="The descriptor is invalid"):
        validate_descriptor(descriptor)


@pytest.mark.parametrize(
    "content", ["not json", "[1, 2]", '{"key": "k", "nmae": "typo"}'], ids=["text", "list", "typo"]
)
def test_a_broken_capabilities_file_names_the_file(tmp_path: Path, content: str) -> None:
    (tmp_path / "addon.json").write_text(content)
    with pytest.raises(ConfigError, match=r"addon\.json"):
        load_capabilities(tmp_path)


def test_a_missing_capabilities_folder_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ADDON_CAPABILITIES_PATH"):
        load_capabilities(tmp_path / "nowhere")

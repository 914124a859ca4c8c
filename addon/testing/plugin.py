"""The pytest plugin of the test kit (entry point ``hipchat_addon``; ``-p no:hipchat_addon``).

Installing hipchat-addon registers it; there is nothing to add to ``conftest.py``. Fixtures:

- ``hipchat``: a fresh ``FakeHipChat``;
- ``addon_app``: the add-on with your integrations, talking to ``hipchat`` in-process, its host
  trusted, a handler's exception raised into the test; drained and closed afterwards;
- ``addon_settings``, ``addon_integrations``, ``addon_capabilities``: what it is built from,
  each overridable by a fixture of the same name.

```python
import pytest

pytestmark = pytest.mark.anyio

async def test_echo(hipchat, addon_app):
    room = await hipchat.install(addon_app)
    await hipchat.send_message(room, "/echo hi")
    assert hipchat.notifications(room) == ["hi"]
```

The integrations come from ``./integrations`` and the descriptor from ``./capabilities``
(relative to the folder of pytest's configuration file, else to where pytest was started), or
from the ini options ``hipchat_addon_integrations`` and
``hipchat_addon_capabilities``, or per test from
``@pytest.mark.hipchat_addon(integrations=..., capabilities=..., env={...})``, where
``integrations`` is a folder or a list of ``Integration`` objects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest
from starlette.applications import Starlette

from addon.integrations import Integration
from addon.settings import Settings
from addon.testing import _backend
from addon.testing.fake import FakeHipChat
from addon.testing.harness import addon_settings as build_settings
from addon.testing.harness import create_test_app

__all__ = [
    "addon_app",
    "addon_capabilities",
    "addon_integrations",
    "addon_settings",
    "hipchat",
]

MARKER = "hipchat_addon"
DRAIN_GRACE = 10.0
"""Seconds the handlers still running after a test get before they are cancelled."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "hipchat_addon_integrations",
        "hipchat-addon: folder of the integrations under test (default: integrations)",
        default="integrations",
    )
    parser.addini(
        "hipchat_addon_capabilities",
        "hipchat-addon: folder holding the add-on's addon.json (default: capabilities)",
        default="capabilities",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(integrations=None, capabilities=None, env=None): what the addon_app fixture "
        "is built from (a folder or a list of Integration objects; a folder; ADDON_* variables)",
    )
    config.pluginmanager.register(_backend, "hipchat_addon_anyio_backend")


@pytest.fixture
def hipchat() -> FakeHipChat:
    """A fresh fake HipChat at http://hipchat.test."""
    return FakeHipChat()


@pytest.fixture
def addon_integrations(request: pytest.FixtureRequest) -> Path | Sequence[Integration]:
    """The integrations under test: a folder, or ``Integration`` objects."""
    given = _marker_value(request, "integrations")
    if isinstance(given, list | tuple):
        return list(given)
    return _folder(request, given, "integrations")


@pytest.fixture
def addon_capabilities(request: pytest.FixtureRequest) -> Path:
    """The folder holding ``addon.json``."""
    given = _marker_value(request, "capabilities")
    return _folder(request, given, "capabilities")


@pytest.fixture
def addon_settings(
    request: pytest.FixtureRequest,
    hipchat: FakeHipChat,
    addon_integrations: Path | Sequence[Integration],
    addon_capabilities: Path,
    tmp_path: Path,
) -> Settings:
    """Settings for the add-on under test: a fresh SQLite store, ``hipchat``'s host trusted."""
    folder = addon_integrations if isinstance(addon_integrations, Path) else Path("integrations")
    return build_settings(
        hipchat,
        store_url=f"sqlite:///{tmp_path / 'addon.db'}",
        integrations_path=folder,
        capabilities_path=addon_capabilities,
        env=_env(_marker_value(request, "env")),
    )


@pytest.fixture
async def addon_app(
    hipchat: FakeHipChat,
    addon_settings: Settings,
    addon_integrations: Path | Sequence[Integration],
) -> AsyncIterator[Starlette]:
    """The add-on under test; ``await hipchat.install(addon_app)`` installs it."""
    integrations = None if isinstance(addon_integrations, Path) else addon_integrations
    app = create_test_app(hipchat, addon_settings, integrations=integrations)
    try:
        yield app
    finally:
        try:
            # Handlers still running get DRAIN_GRACE s, then are stopped. Raises what a handler
            # raised after its reply went out (raise_errors).
            await app.state.addon.aclose(grace=DRAIN_GRACE)
        finally:
            await hipchat.aclose()  # its connections wait for the requests still answering


def _marker_value(request: pytest.FixtureRequest, name: str) -> object:
    marker = request.node.get_closest_marker(MARKER)
    return None if marker is None else marker.kwargs.get(name)


def _env(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"@pytest.mark.{MARKER}(env=...) must be a dict of ADDON_* variables")
    return {str(k): str(v) for k, v in value.items()}


def _folder(request: pytest.FixtureRequest, given: object, what: str) -> Path:
    """The marker's folder, else the ini option's, relative to the configuration file's folder
    (or, without one, to where pytest was started)."""
    config = request.config
    path = Path(str(given or config.getini(f"hipchat_addon_{what}")))
    if not path.is_absolute():
        base = config.inipath.parent if config.inipath else config.invocation_params.dir
        path = base / path
    if not path.is_dir():
        pytest.fail(
            f"{path} is not a folder; set hipchat_addon_{what} in your pytest configuration "
            f"or mark the test with @pytest.mark.{MARKER}({what}=...)",
            pytrace=False,
        )
    return path

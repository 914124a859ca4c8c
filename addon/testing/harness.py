"""The add-on wired to a ``FakeHipChat`` for tests: settings that trust the fake, errors raised.

The pytest plugin's ``addon_app`` fixture is built from these; use them directly when you write
your own fixtures:

```python
hipchat = FakeHipChat()
settings = addon_settings(hipchat, store_url=f"sqlite:///{tmp_path}/addon.db")
app = create_test_app(hipchat, settings)
room = await hipchat.install(app)
await hipchat.send_message(room, "/echo hi")
assert hipchat.notifications(room) == ["hi"]
await app.state.addon.aclose()  # first: handlers still running are given a grace, then stopped
await hipchat.aclose()  # then the connections, which wait for the requests still answering
```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

from starlette.applications import Starlette

from addon.app import create_app
from addon.integrations import Integration, help_integration
from addon.settings import Settings
from addon.testing.fake import FakeHipChat

__all__ = ["TEST_ADDON_URL", "addon_settings", "create_test_app", "trusting"]

TEST_ADDON_URL = "http://addon.test"
"""Where the add-on under test says it lives (``ADDON_BASE_URL``); nothing resolves it."""


def addon_settings(
    hipchat: FakeHipChat,
    *,
    store_url: str,
    integrations_path: Path = Path("integrations"),
    capabilities_path: Path = Path("capabilities"),
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Settings for an add-on at ``TEST_ADDON_URL`` that trusts ``hipchat``'s host.

    ``env`` holds further ``ADDON_*`` variables; they win over these defaults.
    """
    base = {
        "ADDON_BASE_URL": TEST_ADDON_URL,
        "ADDON_STORE_URL": store_url,
        "ADDON_HIPCHAT_HOSTS": hipchat.host,
        "ADDON_INTEGRATIONS_PATH": str(integrations_path),
        "ADDON_CAPABILITIES_PATH": str(capabilities_path),
    }
    return trusting(Settings.from_environ({**base, **(env or {})}), hipchat)


def trusting(settings: Settings, hipchat: FakeHipChat) -> Settings:
    """``settings`` with ``hipchat``'s host added to ``ADDON_HIPCHAT_HOSTS`` when missing."""
    if hipchat.host in settings.hipchat_hosts:
        return settings
    return dataclasses.replace(settings, hipchat_hosts=(*settings.hipchat_hosts, hipchat.host))


def create_test_app(
    hipchat: FakeHipChat,
    settings: Settings,
    *,
    integrations: Sequence[Integration] | None = None,
    raise_errors: bool = True,
) -> Starlette:
    """The add-on talking to ``hipchat`` in-process; a handler's exception fails the test.

    ``integrations`` replaces the ones in ``ADDON_INTEGRATIONS_PATH`` (``/help`` is added).
    The caller closes it with ``await app.state.addon.aclose()``.
    """
    if integrations is not None:
        integrations = [*integrations, help_integration(integrations)]
    return create_app(
        trusting(settings, hipchat),
        transport=hipchat.transport(),
        integrations=integrations,
        raise_errors=raise_errors,
    )

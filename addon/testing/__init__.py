"""The public test kit: a fake HipChat that installs the add-on and talks to it for real.

With pytest, the plugin (``addon.testing.plugin``, registered on install) gives the fixtures
``hipchat`` and ``addon_app``. Without it:

```python
from addon.testing import FakeHipChat, addon_settings, create_test_app

hipchat = FakeHipChat()
app = create_test_app(hipchat, addon_settings(hipchat, store_url="sqlite:///test.db"))
room = await hipchat.install(app, room_id=1)
await hipchat.send_message(room, "/echo hi")
assert hipchat.notifications(room) == ["hi"]
```
"""

from __future__ import annotations

from addon.testing.api import FakeRestAPI, RecordedRequest
from addon.testing.fake import Call, FakeHipChat, FakeHipChatError, Installed, OAuthClient
from addon.testing.harness import TEST_ADDON_URL, addon_settings, create_test_app, trusting
from addon.testing.transport import AppTransport
from addon.testing.ui import GlancePush, LoadedPage

__all__ = [
    "TEST_ADDON_URL",
    "AppTransport",
    "Call",
    "FakeHipChat",
    "FakeHipChatError",
    "FakeRestAPI",
    "GlancePush",
    "Installed",
    "LoadedPage",
    "OAuthClient",
    "RecordedRequest",
    "addon_settings",
    "create_test_app",
    "trusting",
]

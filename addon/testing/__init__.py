"""The public test kit: a fake HipChat that installs the add-on and talks to it for real.

```python
from addon.testing import FakeHipChat

hipchat = FakeHipChat()
app = create_app(settings, transport=hipchat.transport())
async with hipchat.connect(app, settings.base_url) as addon:
    installed = await hipchat.install(addon, room_id=1)
```
"""

from __future__ import annotations

from addon.testing.api import FakeRestAPI, RecordedRequest
from addon.testing.fake import Call, FakeHipChat, FakeHipChatError, Installed, OAuthClient
from addon.testing.ui import GlancePush, LoadedPage

__all__ = [
    "Call",
    "FakeHipChat",
    "FakeHipChatError",
    "FakeRestAPI",
    "GlancePush",
    "Installed",
    "LoadedPage",
    "OAuthClient",
    "RecordedRequest",
]

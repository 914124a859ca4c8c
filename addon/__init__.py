"""hipchat-addon: an Atlassian Connect add-on server for HipChat.

What integration authors import:

```python
from addon import Integration, RoomMessage

integration = Integration(key="echo", name="Echo", scopes=["send_notification"])

@integration.command("echo", help="Repeat the text", usage="/echo <text>")
async def echo(message: RoomMessage) -> None:
    await message.reply(message.args)
```
"""

from __future__ import annotations

from addon.app import create_app
from addon.context import RoomEvent, RoomMessage, Storage
from addon.errors import AddonError, ApprovalRequired, HipChatAPIError, IntegrationError
from addon.hipchat import HipChatClient
from addon.integrations import Integration
from addon.settings import Settings
from addon.ui.request import UIRequest
from addon.ui.values import Glance, Icon, Lozenge, Page
from addon.wire import Room, Sender

__all__ = [
    "AddonError",
    "ApprovalRequired",
    "Glance",
    "HipChatAPIError",
    "HipChatClient",
    "Icon",
    "Integration",
    "IntegrationError",
    "Lozenge",
    "Page",
    "Room",
    "RoomEvent",
    "RoomMessage",
    "Sender",
    "Settings",
    "Storage",
    "UIRequest",
    "create_app",
]

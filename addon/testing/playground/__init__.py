"""The playground: a HipChat room in the browser, served by the fake (``hipchat-addon dev``).

```python
hipchat = FakeHipChat(base_url="http://127.0.0.1:8001")
room = PlaygroundRoom(hipchat, "http://127.0.0.1:8000")
app = playground_app(room)  # serve it on 127.0.0.1:8001; open /playground
```
"""

from __future__ import annotations

from addon.testing.playground.room import PlaygroundRoom
from addon.testing.playground.web import playground_app

__all__ = ["PlaygroundRoom", "playground_app"]

"""``/ping``: a seed-style script, as written for the older hipchat-integration server.

It defines ``run_integration`` with the old six arguments instead of an ``integration``; the
add-on wraps it so that it owns ``/ping`` (the module's name) and runs it in a worker thread.
Returning a string replies with it.

``token`` is the HipChat token the script may use to call the REST API itself: the static token
configured for this room and ``ping`` (``ADDON_TOKENS=ROOM_ID:ping:TOKEN``), else the one named
``ping`` (``ping:TOKEN``), else the installation's add-on token. An old script would POST to
``https://api.hipchat.com/v2/room/<id>/notification?auth_token=<token>``; this one just returns
its reply, and never logs the token.
"""

from __future__ import annotations

import logging

# Only for the type annotations: old scripts without them run the same.
from addon.seed import SeedNotification


def run_integration(
    notification: SeedNotification,
    query: str,
    all_tokens: dict[str, str],
    token: str,
    storage: dict[str, object],
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> str:
    """Answer pong, and count how many times it was pinged."""
    count = storage.get("count")
    storage["count"] = (count if isinstance(count, int) else 0) + 1
    log.info("ping #%d (%d static tokens configured)", storage["count"], len(all_tokens))
    who = notification.item.message.sender.name or "you"
    suffix = f": {query}" if query else ""
    return f"pong{suffix} (for {who}, ping #{storage['count']})"

"""How ``hipchat-addon serve`` runs uvicorn: options that keep slow or greedy clients from
holding the server (issue 8, item 6).

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but has no timer for a
connection that is still sending its request headers: ``HeaderTimeoutProtocol`` adds one. A slow
*body* is bounded by the routes' own body reader (``ADDON_READ_TIMEOUT``), which works under any
server.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, cast

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from addon.settings import Settings

__all__ = ["HeaderTimeoutProtocol", "uvicorn_options"]

LIMIT_CONCURRENCY = 1000  # connections + tasks; past it uvicorn answers 503 at once
TIMEOUT_KEEP_ALIVE = 5  # seconds an idle keep-alive connection stays open
MAX_HEADER_BYTES = 16 << 10  # h11's bound on an incomplete request head


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head takes too long.

    The timer runs from the connection's start, and again after each response, until the head
    of the next request has arrived in full.
    """

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._on_header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        # Still waiting for (the rest of) a request head: drop the connection. A request whose
        # head arrived is in the app's hands, and its body has the app's own read timeout.
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments ``serve`` passes to ``uvicorn.run`` to bound slow clients."""
    protocol = functools.partial(HeaderTimeoutProtocol, header_timeout=settings.read_timeout)
    return {
        "http": cast("type[asyncio.Protocol]", protocol),
        "limit_concurrency": LIMIT_CONCURRENCY,
        "timeout_keep_alive": TIMEOUT_KEEP_ALIVE,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
    }

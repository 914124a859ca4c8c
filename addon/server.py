"""How ``hipchat-addon serve`` runs uvicorn: the production stack (uvloop, httptools) and options
that keep slow or greedy clients from holding the server (issue 8, item 6; issue 9, item 6).

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but has no timer for a
connection that is still sending its request head, and its httptools protocol puts no bound on
the size of that head (h11 has one; httptools does not): ``HeaderTimeoutProtocol`` adds both. A
slow *body* is bounded by the routes' own body reader (``ADDON_READ_TIMEOUT``), which works under
any server.

``HeaderTimeoutProtocol`` also sets ``TCP_NODELAY`` on every connection itself. uvloop does so
on its own, but asyncio's loop skips a connection accepted from a socket bound with protocol
number 0 rather than TCP's (as uvicorn's ``--workers N`` supervisor binds it,
``Config.bind_socket``), and the response, written as its head then its body, then waits for the
client's delayed ACK (Nagle's algorithm): about 40 ms a request. The first two-worker bench ran
on asyncio and met exactly that (bench/README.md, *Scaling*).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import socket
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from addon.settings import Settings

__all__ = ["HeaderTimeoutProtocol", "set_nodelay", "uvicorn_options"]

LOOP = "uvloop"  # a dependency (uvicorn[standard]); naming it fails loudly if it is missing
LIMIT_CONCURRENCY = 1000  # connections + tasks; past it uvicorn answers 503 at once
TIMEOUT_KEEP_ALIVE = 5  # seconds an idle keep-alive connection stays open
MAX_HEADER_BYTES = 16 << 10  # bound on an incomplete request head (h11's default bound too)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request head is too slow or big.

    The timer runs from the connection's start, and again after each response, until the head
    of the next request has arrived in full. A head still incomplete past ``MAX_HEADER_BYTES``
    is answered 400 and the connection closed, as uvicorn's h11 protocol does.
    """

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._head_deadline = 0.0
        self._head_bytes = 0
        self._in_body = False  # the parser is between a head's end and its message's end

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        set_nodelay(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        began_in_body = self._in_body
        super().data_received(data)
        # Bytes of a body (one the app answered early, say a 401, and the client still sends)
        # are not head bytes; a chunk that ends one body and begins the next head is not
        # counted either, so the bound is approximate by at most one chunk.
        if began_in_body or self._in_body or not self._is_awaiting_head():
            self._head_bytes = 0
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
            self.send_400_response("Request head too large.")

    def on_headers_complete(self) -> None:
        self._in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete:
            self._arm_header_timer()  # answered before its body ended: the next head's time

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()

    def _is_awaiting_head(self) -> bool:
        # ``cycle`` is the request whose head arrived last: none yet, or answered in full, means
        # the connection is waiting for (the rest of) the next head.
        return self.cycle is None or self.cycle.response_complete

    def _arm_header_timer(self) -> None:
        # Moves the deadline; a timer is made only when none is pending (a keep-alive connection
        # answering request after request does not make and cancel one per request).
        self._head_deadline = self.loop.time() + self.header_timeout
        if self._header_timer is None:
            self._header_timer = self.loop.call_at(self._head_deadline, self._on_header_timeout)

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.loop.time() < self._head_deadline:  # the deadline moved on: wait for it
            self._header_timer = self.loop.call_at(self._head_deadline, self._on_header_timeout)
            return
        # Still waiting for (the rest of) a request head: drop the connection. A request whose
        # head arrived is in the app's hands, and its body has the app's own read timeout.
        if self._is_awaiting_head():
            self.transport.close()


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """``TCP_NODELAY`` on ``transport``'s TCP socket, so no response waits on Nagle's algorithm."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):  # a connection already reset by its peer
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments ``serve`` passes to ``uvicorn.run``: the stack and the bounds."""
    protocol = functools.partial(HeaderTimeoutProtocol, header_timeout=settings.read_timeout)
    return {
        "loop": LOOP,
        "http": cast("type[asyncio.Protocol]", protocol),
        "ws": "none",  # no WebSocket endpoints: an upgrade request is served as plain HTTP
        "limit_concurrency": LIMIT_CONCURRENCY,
        "timeout_keep_alive": TIMEOUT_KEEP_ALIVE,
        # A command's handler runs in its request's task (addon.dispatch): on SIGTERM the server
        # waits this long for those tasks, then cancels them (the handlers tell their rooms).
        "timeout_graceful_shutdown": math.ceil(settings.shutdown_timeout),
        # Below INFO nothing would write an access line, but uvicorn would still build its
        # arguments (the client address, the quoted path) for every response.
        "access_log": logging.getLevelName(settings.log_level) <= logging.INFO,
    }

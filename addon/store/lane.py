"""A pipelined Redis connection for the webhook path's one command (``RedisStore._command``).

redis-py gives each command a pooled connection of its own: a checkout, a write, a read on an
asyncio stream under ``asyncio.timeout``, a release. Under load that is about a third of a
webhook's CPU, and Redis reads each command with a syscall of its own. A lane is one
connection shared by every request of the process: commands are written in the order they are
made (those made in one turn of the event loop go out in one write) and Redis answers them in
that order, so each reply resolves the oldest waiter (``hiredis`` parses them).

- A waiter that stops waiting (its request was cancelled) leaves its place in the queue; its
  reply, when it comes, is dropped. The queue never goes out of step with the replies.
- One timer watches the oldest waiter: a reply not received within the socket timeout closes
  the lane and fails every waiter (``TimeoutError``); Redis answers in order, so nothing after
  it would come either. A lost connection fails them with ``ConnectionError``. The caller
  retries once on a new lane, as redis-py retries once on a new connection.
- A new lane sends ``AUTH`` and ``SELECT`` first when the URL asks for them.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping
from typing import Any, cast

import hiredis
import redis.exceptions

__all__ = ["Lane", "lane_target", "pack"]


def lane_target(connection_kwargs: Mapping[str, Any], connection_class: type) -> dict[str, Any]:
    """How to open a lane to the server a redis-py pool connects to; empty when a lane cannot
    (TLS, or a connection class of another kind)."""
    if connection_class is redis.asyncio.Connection:
        where = {"host": connection_kwargs.get("host", "localhost")}
        where["port"] = int(connection_kwargs.get("port", 6379))
    elif connection_class is redis.asyncio.UnixDomainSocketConnection:
        where = {"path": connection_kwargs["path"]}
    else:
        return {}
    return {
        **where,
        "db": int(connection_kwargs.get("db", 0) or 0),
        "username": connection_kwargs.get("username"),
        "password": connection_kwargs.get("password"),
        "timeout": float(connection_kwargs.get("socket_timeout") or 5.0),
        "connect_timeout": float(connection_kwargs.get("socket_connect_timeout") or 2.0),
    }


class Lane(asyncio.Protocol):
    """One pipelined connection: ``await lane.call(packed)`` is the reply to one command."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._reader = hiredis.Reader(encoding="utf-8", replyError=redis.exceptions.ResponseError)
        self._transport: asyncio.Transport | None = None
        self._waiters: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._outgoing: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False

    @classmethod
    async def open(cls, target: Mapping[str, Any]) -> Lane:
        """A lane connected (and authenticated, with its db selected) to ``target``."""
        loop = asyncio.get_running_loop()
        timeout = float(target["timeout"])
        try:
            async with asyncio.timeout(float(target["connect_timeout"])):
                if "path" in target:
                    _, lane = await loop.create_unix_connection(
                        lambda: cls(timeout), target["path"]
                    )
                else:
                    _, lane = await loop.create_connection(
                        lambda: cls(timeout), target["host"], target["port"]
                    )
        except TimeoutError:
            raise redis.exceptions.TimeoutError("Timeout connecting to Redis") from None
        except OSError as exc:
            raise redis.exceptions.ConnectionError(f"Error connecting to Redis: {exc}") from None
        setup: list[tuple[str | int, ...]] = []
        if target.get("password"):
            user = target.get("username")
            setup.append(
                ("AUTH", user, target["password"]) if user else ("AUTH", target["password"])
            )
        if target.get("db"):
            setup.append(("SELECT", int(target["db"])))
        try:
            for command in setup:
                await lane.call(pack(command))
        except BaseException:
            lane.close()
            raise
        return lane

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        reader, waiters = self._reader, self._waiters
        try:
            reader.feed(data)
            while (reply := _next(reader)) is not False:
                waiter, _sent = waiters.popleft()
                if waiter.done():  # its request stopped waiting: the reply is dropped
                    continue
                if isinstance(reply, Exception):
                    waiter.set_exception(_error(reply))
                else:
                    waiter.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # never reuse it
            self._fail(redis.exceptions.ConnectionError(f"Redis reply not understood: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(redis.exceptions.ConnectionError("Connection closed by Redis"))

    # -- calls --------------------------------------------------------------------------------

    async def call(self, packed: bytes) -> Any:
        """Send one packed command and wait for its reply (in the order of sending)."""
        if self.closed:
            raise redis.exceptions.ConnectionError("Connection to Redis closed")
        waiter: asyncio.Future[Any] = self._loop.create_future()
        if not self._waiters:
            self._watch(self._loop.time())
        self._waiters.append((waiter, self._loop.time()))
        if not self._outgoing:
            self._loop.call_soon(self._flush)
        self._outgoing.append(packed)
        return await waiter

    def close(self) -> None:
        """Close the connection (dropping what is still queued); every waiter gets
        ``ConnectionError``."""
        self._fail(redis.exceptions.ConnectionError("Connection to Redis closed"))

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if self._transport is not None and not self.closed:
            self._transport.write(b"".join(outgoing))

    def _watch(self, since: float) -> None:
        if self._timer is None:
            self._timer = self._loop.call_at(since + self._timeout, self._check)

    def _check(self) -> None:
        self._timer = None
        if not self._waiters:
            return
        oldest = self._waiters[0][1]
        if self._loop.time() - oldest >= self._timeout:
            self._fail(redis.exceptions.TimeoutError("Timeout reading from Redis"))
        else:
            self._watch(oldest)

    def _fail(self, error: redis.exceptions.RedisError) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters:
            waiter, _sent = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
        if self._transport is not None:  # abort: what is still queued would run after its failure
            self._transport.abort()


def _next(reader: hiredis.Reader) -> Any:
    """The next reply (``False``: none complete yet). One holding a value that is not UTF-8 is
    its caller's ``UnicodeDecodeError``, as redis-py raises it: hiredis has read past it, so the
    other callers' replies are still in step."""
    try:
        return reader.gets()
    except UnicodeDecodeError as exc:
        return exc


def _error(reply: Exception) -> Exception:
    message = str(reply)
    if message.startswith("NOSCRIPT"):
        return redis.exceptions.NoScriptError(message)
    if message.startswith(("NOAUTH", "WRONGPASS")):
        return redis.exceptions.AuthenticationError(message)
    return reply


def pack(args: tuple[str | int, ...] | list[str | int]) -> bytes:
    """``args`` as one RESP command (an array of bulk strings), as redis-py packs it."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else b"%d" % arg
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)

"""The production store: Redis through ``redis.asyncio`` (Redis 6.2 or newer, for GETDEL).

Every replica shares it, so locks, single-use values and TTLs hold across processes (DESIGN §4).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from addon.errors import ConfigError, StoreUnavailable
from addon.store.base import MapUpdate, Outcome

__all__ = ["RedisStore"]

# A command that hangs longer than this means Redis is in trouble: answer 503 rather than hang.
_SOCKET_TIMEOUT = 5.0
_CONNECT_TIMEOUT = 2.0
# PING a pooled connection idle for this long before reusing it, so a Redis restart costs no error.
_HEALTH_CHECK_INTERVAL = 30
# One immediate retry on a fresh connection covers a connection the server dropped; a Redis that
# is down is reported at once (503) instead of holding the request through a backoff.
_RETRY = Retry(NoBackoff(), retries=1)

# Deletes the key only while it holds the caller's value, so a holder whose lock expired cannot
# release the lock that someone else holds by now.
_DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
# SET only while the guard key exists (a late write for an installation that is gone fails).
_PUT_GUARDED = """
if redis.call('EXISTS', KEYS[2]) == 0 then
    return 0
end
if ARGV[2] == '' then
    redis.call('SET', KEYS[1], ARGV[1])
else
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""
# GET the first key; only when it exists, SET NX each further key (ARGV: value, PX or '' per key).
# The reply is {found (0/1), value or '', stored (0/1) per further key}: Lua drops nils in tables.
_READ_AND_CLAIM = """
local value = redis.call('GET', KEYS[1])
if not value then
    return {0, ''}
end
local reply = {1, value}
for i = 2, #KEYS do
    local stored
    if ARGV[2 * i - 2] == '' then
        stored = redis.call('SET', KEYS[i], ARGV[2 * i - 3], 'NX')
    else
        stored = redis.call('SET', KEYS[i], ARGV[2 * i - 3], 'NX', 'PX', ARGV[2 * i - 2])
    end
    reply[i + 1] = stored and 1 or 0
end
return reply
"""
# A map is a hash whose fields are "=" + name, plus "#size": the bytes of every name and value,
# kept with each write so that the quota costs no read of the other values (HSTRLEN of the old
# value only). ARGV: has_guard, quota (-1: none), replace, then (op, name, value) triples.
_MAP_UPDATE = """
local map = KEYS[1]
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[2]) == 0 then
    return {'no-guard', 0, 0}
end
local before = tonumber(redis.call('HGET', map, '#size') or '0')
local replace = ARGV[3] == '1'
local size = before
if replace then size = 0 end
local removed = 0
for i = 4, #ARGV, 3 do
    local op, name, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    if not replace and redis.call('HEXISTS', map, '=' .. name) == 1 then
        size = size - #name - redis.call('HSTRLEN', map, '=' .. name)
        if op == 'd' then removed = removed + 1 end
    end
    if op == 's' then size = size + #name + #value end
end
local quota = tonumber(ARGV[2])
if quota >= 0 and size > quota and size > before then
    return {'over-quota', before, 0}
end
if replace then redis.call('DEL', map) end
for i = 4, #ARGV, 3 do
    if ARGV[i] == 's' then
        redis.call('HSET', map, '=' .. ARGV[i + 1], ARGV[i + 2])
    else
        redis.call('HDEL', map, '=' .. ARGV[i + 1])
    end
end
redis.call('HSET', map, '#size', size)
if redis.call('HLEN', map) <= 1 then
    redis.call('DEL', map)
    size = 0
end
return {'written', size, removed}
"""
_FIELD = "="  # prefix of a name's field in a map's hash; "#size" is the only other field
_SIZE = "#size"
_GLOB_CHARS = re.compile(r"([*?\[\]\\])")
_PASSWORD_PARAM = re.compile(r"(^|&)(password=)[^&]*", re.IGNORECASE)


class RedisStore:
    """``Store`` on Redis: ``RedisStore("redis://:password@localhost:6379/0")``.

    ``namespace`` is prepended to every key and stripped from what ``scan`` returns.
    """

    def __init__(self, url: str, *, namespace: str = "") -> None:
        self.url = _mask_password(url)
        self.namespace = namespace
        try:
            self._redis = redis.asyncio.Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=_SOCKET_TIMEOUT,
                socket_connect_timeout=_CONNECT_TIMEOUT,
                health_check_interval=_HEALTH_CHECK_INTERVAL,
                retry=_RETRY,
            )
        except ValueError:
            # "from None": the parser's message may quote the URL, password included.
            raise ConfigError(
                f"Redis URL {self.url!r} is malformed; expected redis://[:password@]host:port/db"
            ) from None
        self._delete_if_equal = self._redis.register_script(_DELETE_IF_EQUAL)
        self._put_guarded = self._redis.register_script(_PUT_GUARDED)
        self._map_update = self._redis.register_script(_MAP_UPDATE)
        self._read_and_claim = self._redis.register_script(_READ_AND_CLAIM)
        self._where = _where(self._redis.connection_pool.connection_kwargs)

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, namespace={self.namespace!r})"

    async def get(self, key: str) -> str | None:
        """The value at ``key``, or None when it is missing or expired."""
        with self._unavailable():
            return _text(await self._redis.get(self.namespace + key))

    async def get_many(self, keys: list[str]) -> list[str | None]:
        """The values at ``keys``, in order, None where missing."""
        if not keys:
            return []  # MGET with no key is a syntax error
        with self._unavailable():
            values = await self._redis.mget([self.namespace + key for key in keys])
        return [_text(value) for value in values]

    async def put(self, key: str, value: str, *, ttl: float | None = None) -> None:
        """Store ``value`` at ``key``, replacing what was there (and its TTL)."""
        with self._unavailable():
            await self._redis.set(self.namespace + key, value, px=_milliseconds(ttl))

    async def put_if_absent(self, key: str, value: str, *, ttl: float | None = None) -> bool:
        """Store ``value`` only when ``key`` holds nothing; True when it was stored."""
        with self._unavailable():
            stored = await self._redis.set(
                self.namespace + key, value, nx=True, px=_milliseconds(ttl)
            )
        return bool(stored)

    async def put_many_if_absent(
        self, entries: Sequence[tuple[str, str, float | None]]
    ) -> list[bool]:
        """Each ``(key, value, ttl)`` stored only when its key holds nothing, in one atomic step."""
        if not entries:
            return []
        with self._unavailable():
            # MULTI/EXEC in one pipeline: one round trip, and no other client runs in between.
            async with self._redis.pipeline(transaction=True) as pipe:
                for key, value, ttl in entries:
                    pipe.set(self.namespace + key, value, nx=True, px=_milliseconds(ttl))
                stored = await pipe.execute()
        return [bool(one) for one in stored]

    async def read_and_claim(
        self, key: str, claims: Sequence[tuple[str, str, float | None]]
    ) -> tuple[str | None, list[bool]]:
        """The value at ``key`` and, when there is one, ``claims`` SET NX: one EVALSHA."""
        keys = [self.namespace + key]
        args: list[str | int] = []
        for name, value, ttl in claims:
            px = _milliseconds(ttl)
            keys.append(self.namespace + name)
            args += [value, "" if px is None else px]
        with self._unavailable():
            reply = await self._evalsha(self._read_and_claim, keys, args)
        if not reply[0]:
            return None, [False] * len(claims)
        return _text(reply[1]), [bool(one) for one in reply[2:]]

    async def _evalsha(self, script: AsyncScript, keys: list[str], args: list[str | int]) -> Any:
        """EVALSHA ``script`` (loading it once when the server lacks it): one round trip.

        ``execute_command`` directly: the hot path skips redis-py's per-call script wrappers.
        """
        try:
            return await self._redis.execute_command(  # type: ignore[no-untyped-call]
                "EVALSHA", script.sha, len(keys), *keys, *args
            )
        except redis.exceptions.NoScriptError:
            script.sha = await self._redis.script_load(script.script)
            return await self._redis.execute_command(  # type: ignore[no-untyped-call]
                "EVALSHA", script.sha, len(keys), *keys, *args
            )

    async def take(self, key: str) -> str | None:
        """Atomically read and delete ``key`` (single-use values)."""
        with self._unavailable():
            return _text(await self._redis.getdel(self.namespace + key))

    async def delete(self, *keys: str) -> int:
        """Delete ``keys``; return how many existed."""
        if not keys:
            return 0  # DEL with no key is a syntax error
        with self._unavailable():
            return int(await self._redis.delete(*[self.namespace + key for key in keys]))

    async def delete_if_equal(self, key: str, value: str) -> bool:
        """Delete ``key`` only when it holds ``value`` (lock release)."""
        with self._unavailable():
            deleted = await self._delete_if_equal(keys=[self.namespace + key], args=[value])
        return bool(deleted)

    async def ttl(self, key: str) -> float | None:
        """Seconds left before ``key`` expires; None when it has no TTL or does not exist."""
        with self._unavailable():
            milliseconds = await self._redis.pttl(self.namespace + key)
        # PTTL answers -1 for a key without TTL and -2 for a missing key.
        return None if milliseconds < 0 else milliseconds / 1000

    async def add_member(self, key: str, member: str) -> None:
        """Add ``member`` to the set at ``key``."""
        with self._unavailable():
            await self._redis.sadd(self.namespace + key, member)

    async def remove_member(self, key: str, member: str) -> None:
        """Remove ``member`` from the set at ``key``."""
        with self._unavailable():
            await self._redis.srem(self.namespace + key, member)

    async def members(self, key: str) -> set[str]:
        """Every member of the set at ``key``."""
        with self._unavailable():
            found = await self._redis.smembers(self.namespace + key)
        return {str(member) for member in found}

    async def put_guarded(
        self, key: str, value: str, *, guard: str, ttl: float | None = None
    ) -> bool:
        """Store ``value`` only while ``guard`` exists, atomically; True when it was stored."""
        px = _milliseconds(ttl)
        keys = [self.namespace + key, self.namespace + guard]
        with self._unavailable():
            stored = await self._put_guarded(keys=keys, args=[value, "" if px is None else px])
        return bool(stored)

    async def map_get(self, key: str, field: str) -> str | None:
        """The value of ``field`` in the map at ``key``, or None."""
        with self._unavailable():
            return _text(await self._redis.hget(self.namespace + key, _FIELD + field))

    async def map_all(self, key: str) -> dict[str, str]:
        """Every field and value of the map at ``key`` (empty when there is none)."""
        with self._unavailable():
            found = await self._redis.hgetall(self.namespace + key)
        return {
            str(name)[len(_FIELD) :]: str(value)
            for name, value in found.items()
            if str(name).startswith(_FIELD)
        }

    async def map_update(
        self,
        key: str,
        changes: Mapping[str, str | None],
        *,
        guard: str | None = None,
        quota: int | None = None,
        replace: bool = False,
    ) -> MapUpdate:
        """Set fields (None deletes one) in the map at ``key``, atomically, and keep its size."""
        keys = [self.namespace + key, self.namespace + (guard or key)]
        args: list[str | int] = ["0" if guard is None else "1", -1 if quota is None else quota]
        args.append("1" if replace else "0")
        for name, value in changes.items():
            args += ["d", name, ""] if value is None else ["s", name, value]
        with self._unavailable():
            outcome, size, removed = await self._map_update(keys=keys, args=args)
        return MapUpdate(Outcome(_text(outcome)), int(size), int(removed))

    async def scan(self, prefix: str) -> list[str]:
        """Every key that starts with ``prefix``, literally (glob characters are escaped)."""
        pattern = _GLOB_CHARS.sub(r"\\\1", self.namespace + prefix) + "*"
        cut = len(self.namespace)
        with self._unavailable():
            # SCAN may return a key more than once; the set folds the repeats.
            found = {key[cut:] async for key in self._redis.scan_iter(match=pattern, count=1000)}
        return sorted(found)

    async def ping(self) -> None:
        """Return when Redis answers; raise ``StoreUnavailable`` when it does not."""
        with self._unavailable():
            await self._redis.ping()

    async def close(self) -> None:
        """Close every pooled connection (calling it twice is harmless)."""
        await self._redis.aclose()

    @contextmanager
    def _unavailable(self) -> Iterator[None]:
        """Turn a connection failure, a timeout or an error reply into ``StoreUnavailable``.

        Error replies count too: a Redis that is out of memory, read-only after a failover or
        asks for a password cannot serve us either, and callers must get a 503, not a 500.
        """
        try:
            yield
        except redis.exceptions.RedisError as exc:
            raise StoreUnavailable(
                f"Redis at {self._where} is unavailable ({type(exc).__name__}); "
                "check that it is running and reachable from this host"
            ) from exc


def _text(value: bytes | str | None) -> str | None:
    # decode_responses=True makes every reply a str; the client's annotations also allow bytes.
    return value.decode() if isinstance(value, bytes) else value


def _milliseconds(ttl: float | None) -> int | None:
    """``ttl`` for SET's PX, rounded up so that a key never expires early."""
    if ttl is None:
        return None
    if not ttl > 0:
        raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")
    return math.ceil(ttl * 1000)


def _where(connection_kwargs: Mapping[str, Any]) -> str:
    """host:port (or the socket path) of the server, for error messages."""
    if "path" in connection_kwargs:
        return str(connection_kwargs["path"])
    return f"{connection_kwargs.get('host', 'localhost')}:{connection_kwargs.get('port', 6379)}"


def _mask_password(url: str) -> str:
    """``url`` with its password (in the userinfo or a ``password=`` parameter) replaced by ***."""
    parts = urlsplit(url)
    netloc, query = parts.netloc, _PASSWORD_PARAM.sub(r"\1\2***", parts.query)
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc, query=query))

"""The production store: Redis through ``redis.asyncio`` (Redis 6.2 or newer, for GETDEL).

Every replica shares it, so locks, single-use values and TTLs hold across processes: replicas
keep no state of their own.
One server, Sentinel (every command on the current master) or Cluster: see ``urls.py`` for the
URLs and docs/store.md for the hash tags that keep each atomic operation in one cluster slot.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import redis.asyncio
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from addon.errors import ConfigError, StoreUnavailable
from addon.store.base import MapUpdate, Outcome
from addon.store.keys import hash_tag, require_one_slot
from addon.store.lane import Lane, lane_target, pack
from addon.store.urls import RedisURL, parse_redis_url

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
# SET NX (with PX when the TTL is not empty) for each key; what was stored, in order. A script, not
# MULTI: one round trip that also runs on a cluster (every key has the same hash tag).
_PUT_MANY_IF_ABSENT = """
local stored = {}
for i, key in ipairs(KEYS) do
    local value, px = ARGV[2 * i - 1], ARGV[2 * i]
    local ok
    if px == '' then
        ok = redis.call('SET', key, value, 'NX')
    else
        ok = redis.call('SET', key, value, 'NX', 'PX', px)
    end
    stored[i] = ok and 1 or 0
end
return stored
"""
# RENAME keeps the TTL; a new key that exists already is the newer write and wins.
_MOVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
    return 0
end
if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('DEL', KEYS[1])
    return 0
end
redis.call('RENAME', KEYS[1], KEYS[2])
return 1
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
# GET the first key; only when it exists, SET NX each further key (ARGV: value, PX or '' per key);
# a key already holding the very value counts as stored (the caller's own claim, sent again).
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
    -- Holding the caller's own value: this script sent again after its reply was lost.
    stored = stored or redis.call('GET', KEYS[i]) == ARGV[2 * i - 3]
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
# What redis-py raises when a store is down or failing over, all answered with a 503: connection
# errors (MasterNotFoundError from Sentinel included), timeouts, error replies such as READONLY
# from a demoted master, TRYAGAIN and CLUSTERDOWN, and the cluster client's own "cannot be
# connected" / "slots not covered" (RedisClusterException, which is not a RedisError). A value
# that is not UTF-8 (written by something else) cannot be served either: UnicodeDecodeError.
_UNAVAILABLE = (
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,
    UnicodeDecodeError,
)
# Raised only for commands we never send (multi-slot transactions): bugs, not outages.
_BUGS = (redis.exceptions.CrossSlotTransactionError, redis.exceptions.InvalidPipelineStack)
_Client = redis.asyncio.Redis | RedisCluster


class RedisStore:
    """``Store`` on Redis: ``RedisStore("redis://:password@localhost:6379/0")``.

    Also ``redis+sentinel://host:26379,host:26379/mymaster/0`` and
    ``redis+cluster://host:6379,host:6379`` (``rediss+…`` for TLS). ``password`` is used when the
    URL has none. ``namespace`` is prepended to every key and stripped from what ``scan`` returns.
    """

    def __init__(self, url: str, *, namespace: str = "", password: str | None = None) -> None:
        target = parse_redis_url(url)
        self.url = target.masked
        self.namespace = namespace
        self.mode = target.mode
        self._sentinel: Sentinel | None = None
        self._lane_target: dict[str, Any] = {}  # one server, no TLS: the webhook path's lane
        self._lane: Lane | None = None
        self._opening: asyncio.Task[Lane] | None = None  # the new lane every waiter awaits
        self._redis: _Client
        self._where = target.where
        if target.mode == "cluster":
            self._redis = _cluster(target, password)
        elif target.mode == "sentinel":
            self._sentinel, self._redis = _sentinel(target, password)
        else:
            self._redis = _single(target, password)
            pool = self._redis.connection_pool
            self._where = _where(pool.connection_kwargs)
            self._lane_target = lane_target(pool.connection_kwargs, pool.connection_class)
        self._delete_if_equal = self._redis.register_script(_DELETE_IF_EQUAL)
        self._put_many = self._redis.register_script(_PUT_MANY_IF_ABSENT)
        self._put_guarded = self._redis.register_script(_PUT_GUARDED)
        self._map_update = self._redis.register_script(_MAP_UPDATE)
        self._move = self._redis.register_script(_MOVE)
        self._read_and_claim = self._redis.register_script(_READ_AND_CLAIM)

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
        names = [self.namespace + key for key in keys]
        with self._unavailable():
            if isinstance(self._redis, RedisCluster):
                # One MGET per slot: reading several installations is not atomic on a cluster.
                values = await self._redis.mget_nonatomic(names)
            else:
                values = await self._redis.mget(names)
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
        keys = [self.namespace + key for key, _, _ in entries]
        require_one_slot(keys)
        args: list[str | int] = []
        for _, value, ttl in entries:
            px = _milliseconds(ttl)
            args += [value, "" if px is None else px]
        with self._unavailable():
            stored = await self._put_many(keys=keys, args=args)
        return [bool(one) for one in stored]

    async def read_and_claim(
        self, key: str, claims: Sequence[tuple[str, str, float | None]]
    ) -> tuple[str | None, list[bool]]:
        """The value at ``key`` and, when there is one, ``claims`` SET NX: one EVALSHA."""
        require_one_slot([key, *(name for name, _value, _ttl in claims)])
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
        """EVALSHA ``script`` (loading it once when the server lacks it): one round trip."""
        try:
            return await self._command("EVALSHA", script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            script.sha = await self._redis.script_load(script.script)
            return await self._redis.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)

    async def _command(self, *args: str | int) -> Any:
        """``args`` as one command, for the webhook path: one round trip, lean.

        On one server without TLS it goes on the process's lane (``addon.store.lane``): one
        connection on which every request's command is pipelined. On a Sentinel's master (or
        over TLS) it is packed here and sent on a pooled connection: redis-py's
        ``execute_command`` wraps every call in a retry closure, a response-callback lookup and
        two observability hooks, which cost the webhook path more than its Lua script. Either
        way, when the connection fails the command goes once more, connected afresh: the one
        retry (``_RETRY``) of any other command, and no more (through ``execute_command`` it
        would be two more, each waiting its own socket timeout). A cluster routes by slot:
        ``execute_command`` there.
        """
        if self._lane_target:
            packed = pack(args)
            try:
                return await self._on_lane(packed)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                return await self._on_lane(packed)  # once more, on a new lane
        if isinstance(self._redis, RedisCluster):
            return await self._redis.execute_command(*args)
        pool = self._redis.connection_pool
        packed = pack(args)
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            try:
                await connection.send_packed_command(packed)
                return await connection.read_response()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                await connection.disconnect()  # sending connects it again
                await connection.send_packed_command(packed)
                return await connection.read_response()
        finally:
            await pool.release(connection)

    async def _on_lane(self, packed: bytes) -> Any:
        lane = self._lane
        if lane is None or lane.closed:
            # One new lane, however many requests wait for it, and its failure is theirs: taking
            # turns, each would wait out its own connect and AUTH (a request per socket timeout).
            if self._opening is None or self._opening.done():
                self._opening = asyncio.get_running_loop().create_task(self._open_lane())
            lane = await asyncio.shield(self._opening)  # a cancelled request leaves it opening
        return await lane.call(packed)

    async def _open_lane(self) -> Lane:
        lane = self._lane = await Lane.open(self._lane_target)
        return lane

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

    async def count_members(self, key: str) -> int:
        """How many members the set at ``key`` has (SCARD: no member is read)."""
        with self._unavailable():
            return int(await self._redis.scard(self.namespace + key))

    async def put_guarded(
        self, key: str, value: str, *, guard: str, ttl: float | None = None
    ) -> bool:
        """Store ``value`` only while ``guard`` exists, atomically; True when it was stored."""
        px = _milliseconds(ttl)
        keys = [self.namespace + key, self.namespace + guard]
        require_one_slot(keys)
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
        require_one_slot(keys)
        args: list[str | int] = ["0" if guard is None else "1", -1 if quota is None else quota]
        args.append("1" if replace else "0")
        for name, value in changes.items():
            args += ["d", name, ""] if value is None else ["s", name, value]
        with self._unavailable():
            outcome, size, removed = await self._map_update(keys=keys, args=args)
        return MapUpdate(Outcome(_text(outcome)), int(size), int(removed))

    async def move(self, old: str, new: str) -> bool:
        """Move ``old`` (with its TTL) to ``new`` unless ``new`` exists; ``old`` is gone after."""
        keys = [self.namespace + old, self.namespace + new]
        with self._unavailable():
            if isinstance(self._redis, RedisCluster) and hash_tag(keys[0]) != hash_tag(keys[1]):
                return await _move_across_slots(self._redis, *keys)
            return bool(await self._move(keys=keys))

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
        lane, self._lane = self._lane, None
        if lane is not None:
            lane.close()
        await self._redis.aclose()
        for sentinel in self._sentinel.sentinels if self._sentinel else ():
            await sentinel.aclose()

    @contextmanager
    def _unavailable(self) -> Iterator[None]:
        """Turn a connection failure, a timeout or an error reply into ``StoreUnavailable``.

        Error replies count too: a Redis that is out of memory, read-only after a failover or
        asks for a password cannot serve us either, and callers must get a 503, not a 500.
        """
        try:
            yield
        except _BUGS:
            raise
        except _UNAVAILABLE as exc:
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


async def _move_across_slots(cluster: RedisCluster, old: str, new: str) -> bool:
    """``move`` between two slots: DUMP, RESTORE (which refuses an existing key), DEL."""
    data = await cluster.dump(old)
    if data is None:
        return False
    ttl = await cluster.pttl(old)
    try:
        await cluster.restore(new, max(ttl, 0), data)
    except redis.exceptions.ResponseError as exc:
        if "BUSYKEY" not in str(exc):
            raise
        await cluster.delete(old)
        return False
    await cluster.delete(old)
    return True


def _options(target: RedisURL, password: str | None) -> dict[str, Any]:
    """Connection options of a Sentinel-managed master or a cluster node."""
    return {
        "username": target.username,
        "password": target.password or password,
        "ssl": target.is_tls,
        "decode_responses": True,
        "socket_timeout": _SOCKET_TIMEOUT,
        "socket_connect_timeout": _CONNECT_TIMEOUT,
        "health_check_interval": _HEALTH_CHECK_INTERVAL,
    }


def _single(target: RedisURL, password: str | None) -> redis.asyncio.Redis:
    try:
        return redis.asyncio.Redis.from_url(
            target.url,
            decode_responses=True,
            socket_timeout=_SOCKET_TIMEOUT,
            socket_connect_timeout=_CONNECT_TIMEOUT,
            health_check_interval=_HEALTH_CHECK_INTERVAL,
            retry=_RETRY,
            password=password,  # the URL's own password, when it has one, wins
        )
    except ValueError:
        # "from None": the parser's message may quote the URL, password included.
        raise ConfigError(
            f"Redis URL {target.masked!r} is malformed; expected redis://[:password@]host:port/db"
        ) from None


def _sentinel(target: RedisURL, password: str | None) -> tuple[Sentinel, redis.asyncio.Redis]:
    """The Sentinel client, and a client that sends every command to the service's master.

    Reads go to the master too: a replica may lag behind a write the same request just made.
    """
    sentinel_options = {
        "socket_timeout": _SOCKET_TIMEOUT,
        "socket_connect_timeout": _CONNECT_TIMEOUT,
        "ssl": target.is_tls,
        # redis-py's default retries each sentinel with a backoff of seconds; the next sentinel
        # in the list is the better retry.
        "retry": Retry(NoBackoff(), retries=0),
    }
    # redis-py leaves Sentinel's __init__ unannotated.
    sentinel = Sentinel(list(target.nodes), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    options = _options(target, password) | {"db": target.db, "retry": _RETRY}
    return sentinel, sentinel.master_for(target.service, **options)


def _cluster(target: RedisURL, password: str | None) -> RedisCluster:
    nodes = [ClusterNode(host, port) for host, port in target.nodes]
    return RedisCluster(startup_nodes=nodes, **_options(target, password))


def _where(connection_kwargs: Mapping[str, Any]) -> str:
    """host:port (or the socket path) of one server, for error messages."""
    if "path" in connection_kwargs:
        return str(connection_kwargs["path"])
    return f"{connection_kwargs.get('host', 'localhost')}:{connection_kwargs.get('port', 6379)}"

"""The store interface every backend implements, and the lock built on it.

Values are strings (JSON, written by the layers above). Every method raises ``StoreUnavailable``
when the backend cannot be reached, and nothing else for operational failures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from addon.errors import StoreUnavailable

__all__ = ["MapUpdate", "Outcome", "Store", "lock"]

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    """What ``Store.map_update`` did."""

    WRITTEN = "written"
    NO_GUARD = "no-guard"  # the guard key does not exist (e.g. the installation is gone)
    OVER_QUOTA = "over-quota"  # the map would grow past the quota


@dataclasses.dataclass(frozen=True)
class MapUpdate:
    """The result of ``Store.map_update``: the outcome, the map's size after it, fields removed.

    ``size`` is the UTF-8 bytes of every field name plus value (the size before, when refused).
    """

    outcome: Outcome
    size: int
    removed: int = 0


class Store(Protocol):
    """Key/value storage with TTLs, sets and atomic one-shot operations.

    ``ttl`` is in seconds (float); ``None`` keeps the key until it is deleted.
    """

    url: str

    async def get(self, key: str) -> str | None:
        """The value at ``key``, or None when it is missing or expired."""
        ...

    async def get_many(self, keys: list[str]) -> list[str | None]:
        """The values at ``keys``, in order, None where missing."""
        ...

    async def put(self, key: str, value: str, *, ttl: float | None = None) -> None:
        """Store ``value`` at ``key``, replacing what was there."""
        ...

    async def put_if_absent(self, key: str, value: str, *, ttl: float | None = None) -> bool:
        """Store ``value`` only when ``key`` holds nothing; True when it was stored."""
        ...

    async def put_many_if_absent(
        self, entries: Sequence[tuple[str, str, float | None]]
    ) -> list[bool]:
        """Each ``(key, value, ttl)`` stored only when its key holds nothing, in one atomic step.

        One round trip for several one-shot claims (now only the message id of an unsigned
        ``POST /commands``; signed requests use ``read_and_claim``); the answer says, in order,
        which entries were stored.
        """
        ...

    async def read_and_claim(
        self, key: str, claims: Sequence[tuple[str, str, float | None]]
    ) -> tuple[str | None, list[bool]]:
        """The value at ``key`` and, when there is one, each ``(key, value, ttl)`` of ``claims``
        stored only when its key holds nothing: one atomic step, one round trip.

        A signed request's installation read plus its ``jti`` and message-id claims: one round trip.
        When ``key`` holds nothing, nothing is claimed and the list is all False. A claim whose
        key already holds its very value counts as made (True): the same call sent again after
        its reply was lost (a retry after a timeout) finds its own claims. So each caller's
        values must be its own (a request id), never a constant.
        """
        ...

    async def take(self, key: str) -> str | None:
        """Atomically read and delete ``key`` (single-use values)."""
        ...

    async def delete(self, *keys: str) -> int:
        """Delete ``keys``; return how many existed."""
        ...

    async def delete_if_equal(self, key: str, value: str) -> bool:
        """Delete ``key`` only when it holds ``value`` (lock release)."""
        ...

    async def ttl(self, key: str) -> float | None:
        """Seconds left before ``key`` expires; None when it has no TTL or does not exist."""
        ...

    async def add_member(self, key: str, member: str) -> None:
        """Add ``member`` to the set at ``key``."""
        ...

    async def remove_member(self, key: str, member: str) -> None:
        """Remove ``member`` from the set at ``key``."""
        ...

    async def members(self, key: str) -> set[str]:
        """Every member of the set at ``key``."""
        ...

    async def count_members(self, key: str) -> int:
        """How many members the set at ``key`` has, without reading them (cheap)."""
        ...

    async def put_guarded(
        self, key: str, value: str, *, guard: str, ttl: float | None = None
    ) -> bool:
        """Store ``value`` only while ``guard`` exists, atomically; True when it was stored."""
        ...

    async def map_get(self, key: str, field: str) -> str | None:
        """The value of ``field`` in the map at ``key``, or None."""
        ...

    async def map_all(self, key: str) -> dict[str, str]:
        """Every field and value of the map at ``key`` (empty when there is none)."""
        ...

    async def map_update(
        self,
        key: str,
        changes: Mapping[str, str | None],
        *,
        guard: str | None = None,
        quota: int | None = None,
        replace: bool = False,
    ) -> MapUpdate:
        """Set fields (None deletes one) in the map at ``key``, atomically, and keep its size.

        Nothing is written when ``guard`` is given and does not exist, or when the map would end
        larger than ``quota`` bytes and larger than it was (shrinking is always allowed).
        ``replace`` drops every field not in ``changes`` first. An emptied map is deleted.
        """

    async def move(self, old: str, new: str) -> bool:
        """Move what ``old`` holds (any kind, with its TTL) to ``new``, unless ``new`` exists.

        ``old`` is gone afterwards either way: when ``new`` exists it is the newer write and wins.
        True when something moved. Atomic, except between two slots of a Redis Cluster.
        """
        ...

    async def scan(self, prefix: str) -> list[str]:
        """Every key (plain or set) that starts with ``prefix``, literally (no glob)."""
        ...

    async def ping(self) -> None:
        """Return when the backend answers; raise ``StoreUnavailable`` when it does not."""
        ...

    async def close(self) -> None:
        """Release connections. The store is not used afterwards."""
        ...


@asynccontextmanager
async def lock(
    store: Store, key: str, *, ttl: float = 10.0, wait: float = 15.0, poll: float = 0.02
) -> AsyncIterator[bool]:
    """Hold a lock at ``key`` across processes sharing ``store``.

    Yields True when the lock was acquired, False when ``wait`` ran out first (the caller then
    re-checks whatever the lock protects, and may proceed without it). The lock expires after
    ``ttl`` seconds, so a crashed holder cannot block the others for longer than that. A
    release that finds the store unavailable is logged, not raised: what ran under the lock
    stands (its own failure, if any, is the one raised), and the lock expires with its TTL.
    """
    owner = secrets.token_hex(16)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    acquired = await store.put_if_absent(key, owner, ttl=ttl)
    while not acquired and loop.time() < deadline:
        await asyncio.sleep(poll)
        acquired = await store.put_if_absent(key, owner, ttl=ttl)
    try:
        yield acquired
    finally:
        if acquired:
            try:
                await store.delete_if_equal(key, owner)
            except StoreUnavailable as exc:
                log.warning("Could not release the lock %s (%s); it expires in %g s", key, exc, ttl)

"""The embedded store: one SQLite file, for the one-process default deployment and for laptops.

It is not meant for several processes at once (use Redis for that), but two ``SQLiteStore``
objects on one file in one process see each other's writes.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from addon.errors import ConfigError, StoreUnavailable
from addon.store.base import MapUpdate, Outcome
from addon.store.keys import require_one_slot

__all__ = ["SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL);
CREATE TABLE IF NOT EXISTS members (key TEXT, member TEXT, PRIMARY KEY (key, member));
CREATE INDEX IF NOT EXISTS kv_expires_at ON kv (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS maps (key TEXT PRIMARY KEY, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS map_fields (
    key TEXT, field TEXT, value TEXT NOT NULL, PRIMARY KEY (key, field)
);
"""
# Appended to every read of kv: an expired row is invisible long before it is purged.
_LIVE = "(expires_at IS NULL OR expires_at > ?)"
_PURGE_EVERY = 60.0  # seconds of the store's clock between two purges of expired rows
_BATCH = 500  # keys per SELECT ... IN (...), well under SQLite's limit on bound parameters
_SCHEME = "sqlite:///"
_TABLES = ("kv", "members", "maps", "map_fields")


class SQLiteStore:
    """``Store`` on an SQLite file: ``SQLiteStore("sqlite:///addon.db")``.

    ``sqlite:///rel/path.db`` is relative to the working directory, ``sqlite:////abs/path.db``
    absolute; the file and its directory are created on first use. ``now`` is the clock of TTLs.
    """

    def __init__(
        self, url: str, *, namespace: str = "", now: Callable[[], float] = time.time
    ) -> None:
        self.url = url
        self.path = _path_from(url)
        self.namespace = namespace
        self._now = now
        # Every call runs inline on the event loop: with WAL and synchronous=NORMAL a statement
        # takes microseconds (a commit does not fsync), less than handing it to a thread would.
        # The lock serialises callers from other threads (Starlette's TestClient runs the app in
        # one), which check_same_thread=False lets share the connection.
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._is_closed = False
        self._next_purge = 0.0

    def __repr__(self) -> str:
        return f"SQLiteStore({self.url!r}, namespace={self.namespace!r})"

    async def get(self, key: str) -> str | None:
        """The value at ``key``, or None when it is missing or expired."""
        with self._connection() as db:
            return _live_value(db, self.namespace + key, self._now())

    async def get_many(self, keys: list[str]) -> list[str | None]:
        """The values at ``keys``, in order, None where missing."""
        names = [self.namespace + key for key in keys]
        found: dict[str, str] = {}
        now = self._now()
        with self._connection() as db:
            for start in range(0, len(names), _BATCH):
                batch = names[start : start + _BATCH]
                marks = ", ".join("?" * len(batch))
                sql = f"SELECT key, value FROM kv WHERE key IN ({marks}) AND {_LIVE}"
                found.update(db.execute(sql, (*batch, now)))
        return [found.get(name) for name in names]

    async def put(self, key: str, value: str, *, ttl: float | None = None) -> None:
        """Store ``value`` at ``key``, replacing what was there (and its TTL)."""
        now = self._now()
        with self._connection() as db:
            _write(db, self.namespace + key, value, _expires_at(now, ttl))
            self._purge_now_and_then(db, now)

    async def put_if_absent(self, key: str, value: str, *, ttl: float | None = None) -> bool:
        """Store ``value`` only when ``key`` holds nothing; True when it was stored."""
        name, now = self.namespace + key, self._now()
        expires_at = _expires_at(now, ttl)
        with self._transaction() as db:
            if _live_value(db, name, now) is not None:
                return False
            _write(db, name, value, expires_at)
            self._purge_now_and_then(db, now)
        return True

    async def put_many_if_absent(
        self, entries: Sequence[tuple[str, str, float | None]]
    ) -> list[bool]:
        """Each ``(key, value, ttl)`` stored only when its key holds nothing, in one transaction."""
        require_one_slot(key for key, _, _ in entries)  # as on a Redis Cluster
        now = self._now()
        planned = [
            (self.namespace + key, value, _expires_at(now, ttl)) for key, value, ttl in entries
        ]
        stored: list[bool] = []
        with self._transaction() as db:
            for name, value, expires_at in planned:
                is_free = _live_value(db, name, now) is None
                if is_free:
                    _write(db, name, value, expires_at)
                stored.append(is_free)
            self._purge_now_and_then(db, now)
        return stored

    async def read_and_claim(
        self, key: str, claims: Sequence[tuple[str, str, float | None]]
    ) -> tuple[str | None, list[bool]]:
        """The value at ``key`` and, when there is one, ``claims`` stored where free, at once."""
        require_one_slot([key, *(name for name, _value, _ttl in claims)])  # as on a Redis Cluster
        now = self._now()
        planned = [
            (self.namespace + name, value, _expires_at(now, ttl)) for name, value, ttl in claims
        ]
        stored: list[bool] = []
        with self._transaction() as db:
            found = _live_value(db, self.namespace + key, now)
            for name, value, expires_at in planned:
                held = _live_value(db, name, now) if found is not None else None
                if found is not None and held is None:
                    _write(db, name, value, expires_at)
                stored.append(found is not None and held in (None, value))
        return found, stored

    async def take(self, key: str) -> str | None:
        """Atomically read and delete ``key`` (single-use values)."""
        name = self.namespace + key
        with self._transaction() as db:
            value = _live_value(db, name, self._now())
            db.execute("DELETE FROM kv WHERE key = ?", (name,))
        return value

    async def delete(self, *keys: str) -> int:
        """Delete ``keys`` (plain or set); return how many existed."""
        now = self._now()
        count = 0
        with self._transaction() as db:
            # Like Redis DEL, a key named twice counts once.
            for name in dict.fromkeys(self.namespace + key for key in keys):
                live = db.execute(f"DELETE FROM kv WHERE key = ? AND {_LIVE}", (name, now))
                members = db.execute("DELETE FROM members WHERE key = ?", (name,))
                mapped = db.execute("DELETE FROM maps WHERE key = ?", (name,))
                db.execute("DELETE FROM map_fields WHERE key = ?", (name,))
                if live.rowcount > 0 or members.rowcount > 0 or mapped.rowcount > 0:
                    count += 1
        return count

    async def delete_if_equal(self, key: str, value: str) -> bool:
        """Delete ``key`` only when it holds ``value`` (lock release)."""
        sql = f"DELETE FROM kv WHERE key = ? AND value = ? AND {_LIVE}"
        with self._connection() as db:
            # One statement is one transaction: the comparison and the delete are atomic.
            cursor = db.execute(sql, (self.namespace + key, value, self._now()))
        return cursor.rowcount > 0

    async def ttl(self, key: str) -> float | None:
        """Seconds left before ``key`` expires; None when it has no TTL or does not exist."""
        now = self._now()
        with self._connection() as db:
            sql = f"SELECT expires_at FROM kv WHERE key = ? AND {_LIVE}"
            row = db.execute(sql, (self.namespace + key, now)).fetchone()
        if row is None or row[0] is None:
            return None
        return float(row[0]) - now

    async def add_member(self, key: str, member: str) -> None:
        """Add ``member`` to the set at ``key``."""
        with self._connection() as db:
            sql = "INSERT OR IGNORE INTO members (key, member) VALUES (?, ?)"
            db.execute(sql, (self.namespace + key, member))

    async def remove_member(self, key: str, member: str) -> None:
        """Remove ``member`` from the set at ``key``."""
        with self._connection() as db:
            sql = "DELETE FROM members WHERE key = ? AND member = ?"
            db.execute(sql, (self.namespace + key, member))

    async def members(self, key: str) -> set[str]:
        """Every member of the set at ``key``."""
        with self._connection() as db:
            rows = db.execute("SELECT member FROM members WHERE key = ?", (self.namespace + key,))
            return {str(member) for (member,) in rows}

    async def count_members(self, key: str) -> int:
        """How many members the set at ``key`` has."""
        with self._connection() as db:
            sql = "SELECT COUNT(*) FROM members WHERE key = ?"
            return int(db.execute(sql, (self.namespace + key,)).fetchone()[0])

    async def put_guarded(
        self, key: str, value: str, *, guard: str, ttl: float | None = None
    ) -> bool:
        """Store ``value`` only while ``guard`` exists, atomically; True when it was stored."""
        require_one_slot([key, guard])
        now = self._now()
        expires_at = _expires_at(now, ttl)
        with self._transaction() as db:
            if not _exists(db, self.namespace + guard, now):
                return False
            _write(db, self.namespace + key, value, expires_at)
        return True

    async def map_get(self, key: str, field: str) -> str | None:
        """The value of ``field`` in the map at ``key``, or None."""
        sql = "SELECT value FROM map_fields WHERE key = ? AND field = ?"
        with self._connection() as db:
            row = db.execute(sql, (self.namespace + key, field)).fetchone()
        return None if row is None else str(row[0])

    async def map_all(self, key: str) -> dict[str, str]:
        """Every field and value of the map at ``key`` (empty when there is none)."""
        sql = "SELECT field, value FROM map_fields WHERE key = ?"
        with self._connection() as db:
            return {str(f): str(v) for f, v in db.execute(sql, (self.namespace + key,))}

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
        require_one_slot([key, guard or key])
        name, now = self.namespace + key, self._now()
        with self._transaction() as db:
            if guard is not None and not _exists(db, self.namespace + guard, now):
                return MapUpdate(Outcome.NO_GUARD, 0)
            row = db.execute("SELECT size FROM maps WHERE key = ?", (name,)).fetchone()
            before = 0 if row is None else int(row[0])
            size, removed = _size_after(db, name, changes, before=before, replace=replace)
            if quota is not None and size > quota and size > before:
                return MapUpdate(Outcome.OVER_QUOTA, before)
            _apply(db, name, changes, replace=replace)
            if db.execute("SELECT 1 FROM map_fields WHERE key = ?", (name,)).fetchone() is None:
                db.execute("DELETE FROM maps WHERE key = ?", (name,))
                return MapUpdate(Outcome.WRITTEN, 0, removed)
            db.execute("INSERT OR REPLACE INTO maps (key, size) VALUES (?, ?)", (name, size))
        return MapUpdate(Outcome.WRITTEN, size, removed)

    async def move(self, old: str, new: str) -> bool:
        """Move ``old`` (with its TTL) to ``new`` unless ``new`` exists; ``old`` is gone after."""
        source, target, now = self.namespace + old, self.namespace + new, self._now()
        with self._transaction() as db:
            if not _exists(db, source, now) or _exists(db, target, now):
                for table in _TABLES:
                    db.execute(f"DELETE FROM {table} WHERE key = ?", (source,))
                return False
            db.execute("DELETE FROM kv WHERE key = ?", (target,))  # an expired row, if any
            for table in _TABLES:
                db.execute(f"UPDATE {table} SET key = ? WHERE key = ?", (target, source))
        return True

    async def scan(self, prefix: str) -> list[str]:
        """Every key (plain or set) that starts with ``prefix``, literally."""
        # A range on the primary key instead of LIKE, which would read "%" and "_" as wildcards.
        low = self.namespace + prefix
        high = _after_prefix(low)
        where = "key >= ?" if high is None else "key >= ? AND key < ?"
        bounds = (low,) if high is None else (low, high)
        sql = (
            f"SELECT key FROM kv WHERE {where} AND {_LIVE} "
            f"UNION SELECT key FROM members WHERE {where} "
            f"UNION SELECT key FROM maps WHERE {where}"
        )
        cut = len(self.namespace)
        with self._connection() as db:
            rows = db.execute(sql, (*bounds, self._now(), *bounds, *bounds))
            return sorted(str(name)[cut:] for (name,) in rows)

    async def ping(self) -> None:
        """Return when the file can be used; raise ``StoreUnavailable`` when it cannot."""
        with self._connection() as db:
            db.execute("SELECT 1")

    async def close(self) -> None:
        """Close the connection (calling it twice is harmless)."""
        with self._lock:
            self._is_closed = True
            if self._db is not None:
                self._db.close()
                self._db = None

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The connection (opened on first use) under the lock; failures raise StoreUnavailable."""
        with self._lock:
            if self._is_closed:
                raise StoreUnavailable(f"SQLite store at {self.path} is closed")
            try:
                if self._db is None:
                    self._db = _open(self.path)
                yield self._db
            except (sqlite3.Error, OSError) as exc:
                raise StoreUnavailable(
                    f"SQLite store at {self.path} cannot be used ({exc}); "
                    "check that its directory exists or can be created, and is writable"
                ) from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection inside one transaction: what the body reads and writes is atomic."""
        with self._connection() as db:
            # IMMEDIATE takes the write lock before the first read, so another connection to the
            # file cannot slip a write between what the body reads and what it writes.
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # also when COMMIT itself failed: leave no transaction open
                    db.execute("ROLLBACK")
                raise

    def _purge_now_and_then(self, db: sqlite3.Connection, now: float) -> None:
        """Delete expired rows, at most once per ``_PURGE_EVERY`` (reads already skip them)."""
        if now < self._next_purge:
            return
        self._next_purge = now + _PURGE_EVERY
        db.execute("DELETE FROM kv WHERE expires_at <= ?", (now,))


def _path_from(url: str) -> Path:
    """The file of ``sqlite:///path``, made absolute against the current working directory."""
    if not url.startswith(_SCHEME) or url == _SCHEME:
        raise ConfigError(
            f"SQLite URL {url!r} is malformed; "
            "expected sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    return Path(url.removeprefix(_SCHEME)).absolute()


def _open(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the database at ``path``, in WAL mode with the schema."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: autocommit; the transactions that need one are opened explicitly.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
    except sqlite3.Error:
        db.close()
        raise
    return db


def _live_value(db: sqlite3.Connection, name: str, now: float) -> str | None:
    row = db.execute(f"SELECT value FROM kv WHERE key = ? AND {_LIVE}", (name, now)).fetchone()
    return None if row is None else str(row[0])


def _exists(db: sqlite3.Connection, name: str, now: float) -> bool:
    """True when ``name`` is a live plain key, a set or a map (Redis EXISTS)."""
    if _live_value(db, name, now) is not None:
        return True
    sql = "SELECT 1 FROM members WHERE key = ? UNION ALL SELECT 1 FROM maps WHERE key = ?"
    return db.execute(sql, (name, name)).fetchone() is not None


def _size_after(
    db: sqlite3.Connection,
    name: str,
    changes: Mapping[str, str | None],
    *,
    before: int,
    replace: bool,
) -> tuple[int, int]:
    """The map's size once ``changes`` are applied, and how many fields they delete."""
    size, removed = (0 if replace else before), 0
    for field, value in changes.items():
        if not replace:
            sql = "SELECT value FROM map_fields WHERE key = ? AND field = ?"
            old = db.execute(sql, (name, field)).fetchone()
            if old is not None:
                size -= _bytes(field) + _bytes(str(old[0]))
                removed += value is None
        if value is not None:
            size += _bytes(field) + _bytes(value)
    return size, removed


def _apply(
    db: sqlite3.Connection, name: str, changes: Mapping[str, str | None], *, replace: bool
) -> None:
    if replace:
        db.execute("DELETE FROM map_fields WHERE key = ?", (name,))
    for field, value in changes.items():
        if value is None:
            db.execute("DELETE FROM map_fields WHERE key = ? AND field = ?", (name, field))
        else:
            sql = "INSERT OR REPLACE INTO map_fields (key, field, value) VALUES (?, ?, ?)"
            db.execute(sql, (name, field, value))


def _bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _write(db: sqlite3.Connection, name: str, value: str, expires_at: float | None) -> None:
    sql = "INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?, ?, ?)"
    db.execute(sql, (name, value, expires_at))


def _expires_at(now: float, ttl: float | None) -> float | None:
    if ttl is None:
        return None
    if not ttl > 0:
        raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")
    return now + ttl


def _after_prefix(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix``; None when unbounded.

    SQLite compares TEXT bytewise as UTF-8, which orders like code points: bump the last code
    point that can be bumped and drop what follows it.
    """
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code == 0xD800:
            code = 0xE000  # surrogates cannot be encoded in UTF-8; skip over them
        if code <= 0x10FFFF:
            return "".join(chars) + chr(code)
    return None

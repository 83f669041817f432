"""The SQLite store's state, records, counters, token buckets, leases and heartbeats.

Guarantees: every change here is one operation of the writer's group commit, so it is
atomic and durable once awaited; an expired row is invisible at once; a lease is taken only
when free or expired, and released only by its holder; ``scan`` lists the live keys of
records, states, counters and streams.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Sequence
from functools import partial

from gateway.store.base import Holding, TokenBucketResult, Versioned
from gateway.store.sqlite_writer import SqliteWriter, alive, expiry

__all__ = ["SqliteRecords"]

# Live keys of every listed kind within [prefix, upper): see SqliteStore.scan.
_SCAN_SQL = """
SELECT key FROM records WHERE key >= :prefix AND key < :upper
    AND substr(key, 1, :n) = :prefix AND (expires_at IS NULL OR expires_at > :now)
UNION SELECT key FROM states WHERE key >= :prefix AND key < :upper
    AND substr(key, 1, :n) = :prefix AND (expires_at IS NULL OR expires_at > :now)
UNION SELECT key FROM counters WHERE key >= :prefix AND key < :upper
    AND substr(key, 1, :n) = :prefix AND (expires_at IS NULL OR expires_at > :now)
UNION SELECT stream FROM streams WHERE stream >= :prefix AND stream < :upper
    AND substr(stream, 1, :n) = :prefix
ORDER BY 1 LIMIT :limit
"""


def _prefix_upper(prefix: str) -> str | None:
    """The smallest string above every string starting with ``prefix`` (None: no bound).

    SQLite compares TEXT as UTF-8 bytes, which orders like code points, so bumping the last
    code point works; surrogates cannot be encoded and are skipped.
    """
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            bumped = last + 1 if not 0xD7FF <= last < 0xDFFF else 0xE000
            return prefix[:-1] + chr(bumped)
        prefix = prefix[:-1]
    return None


class SqliteRecords(SqliteWriter):
    """State, records, counters, buckets and leases of :class:`gateway.store.sqlite.SqliteStore`."""

    @staticmethod
    def _put_record_row(
        conn: sqlite3.Connection, key: str, value: bytes, ttl: float | None
    ) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO records(key, value, expires_at) VALUES (?, ?, ?)",
            (key, value, expiry(time.time(), ttl)),
        )

    @staticmethod
    def _delete_rows(conn: sqlite3.Connection, keys: Sequence[str]) -> int:
        found = 0
        for key in keys:
            for table in ("records", "states", "counters", "buckets", "leases"):
                found += conn.execute(
                    f"DELETE FROM {table} WHERE key = ?",  # noqa: S608 — table names are constants
                    (key,),
                ).rowcount
            if conn.execute("DELETE FROM members WHERE key = ?", (key,)).rowcount:
                found += 1
            if conn.execute("DELETE FROM streams WHERE stream = ?", (key,)).rowcount:
                found += 1
                for table in ("entries", "groups", "pending"):
                    conn.execute(
                        f"DELETE FROM {table} WHERE stream = ?",  # noqa: S608 — constant names
                        (key,),
                    )
        return found

    # -- state and records ---------------------------------------------------------------------
    @staticmethod
    def _state_row(conn: sqlite3.Connection, key: str) -> Versioned | None:
        row = conn.execute(
            "SELECT value, version, expires_at FROM states WHERE key = ?", (key,)
        ).fetchone()
        if row is None or not alive(row[2], time.time()):
            return None
        return Versioned(bytes(row[0]), int(row[1]))

    async def get_state(self, key: str) -> Versioned | None:
        return await self._read(partial(self._state_row, key=key))

    async def put_record(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        await self._write(partial(self._put_record_row, key=key, value=value, ttl=ttl))

    async def get_record(self, key: str) -> bytes | None:
        row = await self._read(
            lambda conn: conn.execute(
                "SELECT value, expires_at FROM records WHERE key = ?", (key,)
            ).fetchone()
        )
        if row is None or not alive(row[1], time.time()):
            return None
        return bytes(row[0])

    async def delete(self, keys: Sequence[str]) -> int:
        return await self._write(partial(self._delete_rows, keys=list(keys)))

    async def scan(self, prefix: str, *, limit: int = 1000) -> list[str]:
        # A key range [prefix, upper) lets SQLite walk the primary-key indexes; the substr()
        # check keeps the match exact (and no LIKE/GLOB wildcards need escaping). Without an
        # upper bound, an empty BLOB serves: SQLite orders every TEXT value below any BLOB.
        upper: str | bytes = _prefix_upper(prefix) or b""
        params = {"prefix": prefix, "upper": upper, "n": len(prefix), "limit": limit}

        def op(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(_SCAN_SQL, params | {"now": time.time()}).fetchall()
            return [str(r[0]) for r in rows]

        return await self._read(op)

    # -- counters, buckets, leases -------------------------------------------------------------
    @staticmethod
    def _incr_row(conn: sqlite3.Connection, key: str, amount: int, ttl: float | None) -> int:
        now = time.time()
        row = conn.execute(
            "SELECT value, expires_at FROM counters WHERE key = ?", (key,)
        ).fetchone()
        if row is None or not alive(row[1], now):
            row = (0, expiry(now, ttl))
        value = int(row[0]) + amount
        conn.execute(
            "INSERT OR REPLACE INTO counters(key, value, expires_at) VALUES (?, ?, ?)",
            (key, value, row[1]),
        )
        return value

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        return await self._write(partial(self._incr_row, key=key, amount=amount, ttl=ttl))

    async def incr_many(self, items: Sequence[tuple[str, int, float | None]]) -> list[int]:
        if not items:
            return []
        batch = list(items)

        # One operation of the writer's next group commit, however many counters.
        def op(conn: sqlite3.Connection) -> list[int]:
            return [self._incr_row(conn, key, amount, ttl) for key, amount, ttl in batch]

        return await self._write(op)

    async def take_tokens(
        self, key: str, *, rate: float, burst: float, cost: float = 1.0
    ) -> TokenBucketResult:
        def op(conn: sqlite3.Connection) -> TokenBucketResult:
            now = time.time()
            row = conn.execute("SELECT tokens, stamp FROM buckets WHERE key = ?", (key,)).fetchone()
            tokens, stamp = (burst, now) if row is None else (float(row[0]), float(row[1]))
            # max(0, ...): another host's clock may be slightly ahead of ours.
            tokens = min(burst, tokens + max(0.0, now - stamp) * rate)
            allowed = tokens >= cost
            if allowed:
                tokens -= cost
            conn.execute(
                "INSERT OR REPLACE INTO buckets(key, tokens, stamp) VALUES (?, ?, ?)",
                (key, tokens, now),
            )
            if allowed:
                return TokenBucketResult(True, tokens, 0.0)
            wait = (cost - tokens) / rate if rate > 0 else math.inf
            return TokenBucketResult(False, tokens, wait)

        return await self._write(op)

    async def acquire_lease(self, key: str, owner: str, *, ttl: float) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            now = time.time()
            cur = conn.execute(
                "INSERT INTO leases(key, owner, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET owner = excluded.owner,"
                " expires_at = excluded.expires_at"
                " WHERE leases.owner = excluded.owner OR leases.expires_at <= ?",
                (key, owner, now + ttl, now),
            )
            return cur.rowcount == 1

        return await self._write(op)

    async def renew_lease(self, key: str, owner: str, *, ttl: float) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            now = time.time()
            cur = conn.execute(
                "UPDATE leases SET expires_at = ? WHERE key = ? AND owner = ? AND expires_at > ?",
                (now + ttl, key, owner, now),
            )
            return cur.rowcount == 1

        return await self._write(op)

    async def release_lease(self, key: str, owner: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM leases WHERE key = ? AND owner = ?", (key, owner))

        await self._write(op)

    async def heartbeat(self, key: str, member: str, *, ttl: float) -> list[str]:
        def op(conn: sqlite3.Connection) -> list[str]:
            now = time.time()
            conn.execute(
                "INSERT OR REPLACE INTO members(key, member, expires_at) VALUES (?, ?, ?)",
                (key, member, now + ttl),
            )
            conn.execute("DELETE FROM members WHERE key = ? AND expires_at <= ?", (key, now))
            rows = conn.execute(
                "SELECT member FROM members WHERE key = ? ORDER BY member", (key,)
            ).fetchall()
            return [str(r[0]) for r in rows]

        return await self._write(op)

    async def members(self, key: str) -> list[Holding]:
        def op(conn: sqlite3.Connection) -> list[Holding]:
            now = time.time()
            rows = conn.execute(
                "SELECT member, expires_at FROM members WHERE key = ? AND expires_at > ?"
                " ORDER BY member",
                (key, now),
            ).fetchall()
            return [Holding(str(r[0]), float(r[1]) - now) for r in rows]

        return await self._read(op)

    async def lease_holders(self, keys: Sequence[str]) -> dict[str, Holding | None]:
        wanted = json.dumps(list(keys))

        def op(conn: sqlite3.Connection) -> dict[str, Holding | None]:
            now = time.time()
            # The keys as one JSON parameter: any number of them, no SQL variable limit.
            rows = conn.execute(
                "SELECT key, owner, expires_at FROM leases"
                " WHERE key IN (SELECT value FROM json_each(?)) AND expires_at > ?",
                (wanted, now),
            ).fetchall()
            held = {str(r[0]): Holding(str(r[1]), float(r[2]) - now) for r in rows}
            return {key: held.get(key) for key in keys}

        return await self._read(op)

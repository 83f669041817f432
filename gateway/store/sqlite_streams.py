"""The SQLite store's streams, consumer groups and capped logs.

Guarantees: stream entry ids are decimal integers, increasing per stream (a per-stream
sequence, so ids are never reused even after the newest entries are deleted); an admit
claims its dedupe key and appends its entry in one savepoint, so neither exists without the
other; a delivered entry stays pending until acknowledged and a claim reports how often it
was delivered; a blocked ``read_group`` wakes at once for appends in this process and polls
for other processes' appends.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Sequence
from functools import partial

from gateway.store.base import Admission, StreamEntry
from gateway.store.cursors import decimal_id, log_cursor
from gateway.store.sqlite_writer import SqliteWriter, expiry

__all__ = ["SqliteStreams"]

_POLL_SECONDS = 0.025  # how often a blocked read_group looks for other processes' appends


class SqliteStreams(SqliteWriter):
    """Ingest, streams and logs of :class:`gateway.store.sqlite.SqliteStore`."""

    # -- shared row helpers (executor thread) --------------------------------------------------
    def _append_row(
        self, conn: sqlite3.Connection, stream: str, payload: bytes, maxlen: int | None = None
    ) -> str:
        (seq,) = conn.execute(
            "INSERT INTO streams(stream, seq) VALUES (?, 1)"
            " ON CONFLICT(stream) DO UPDATE SET seq = seq + 1 RETURNING seq",
            (stream,),
        ).fetchone()
        conn.execute(
            "INSERT INTO entries(stream, id, payload) VALUES (?, ?, ?)", (stream, seq, payload)
        )
        if maxlen is not None:
            conn.execute(
                "DELETE FROM entries WHERE stream = ? AND id <= (SELECT id FROM entries"
                " WHERE stream = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (stream, stream, maxlen),
            )
        self._appended = True
        return str(seq)

    @staticmethod
    def _claim_row(
        conn: sqlite3.Connection, key: str, ttl: float | None, holder: bytes = b"1"
    ) -> bool:
        now = time.time()
        cur = conn.execute(
            "INSERT INTO records(key, value, expires_at) VALUES (?, ?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value,"
            " expires_at = excluded.expires_at"
            " WHERE records.expires_at IS NOT NULL AND records.expires_at <= ?",
            (key, holder, expiry(now, ttl), now),
        )
        return cur.rowcount == 1

    @staticmethod
    def _ack_rows(conn: sqlite3.Connection, stream: str, group: str, ids: Sequence[str]) -> int:
        cur = conn.executemany(
            "DELETE FROM pending WHERE stream = ? AND grp = ? AND id = ?",
            [(stream, group, int(i)) for i in ids],
        )
        return max(cur.rowcount, 0)

    @staticmethod
    def _ensure_group_row(conn: sqlite3.Connection, stream: str, group: str) -> int:
        row = conn.execute(
            "SELECT last_delivered FROM groups WHERE stream = ? AND grp = ?", (stream, group)
        ).fetchone()
        if row is not None:
            return int(row[0])
        conn.execute("INSERT OR IGNORE INTO streams(stream, seq) VALUES (?, 0)", (stream,))
        conn.execute(
            "INSERT INTO groups(stream, grp, last_delivered) VALUES (?, ?, 0)", (stream, group)
        )
        return 0

    # -- ingest --------------------------------------------------------------------------------
    async def admit(self, items: Sequence[Admission], *, dedupe_ttl: float) -> list[str | None]:
        batch = list(items)

        def op(conn: sqlite3.Connection) -> list[str | None]:
            return [
                self._append_row(conn, item.stream, item.payload, item.log_cap)
                if self._claim_row(conn, item.dedupe_key, dedupe_ttl)
                else None
                for item in batch
            ]

        return await self._write(op)

    async def claim(self, key: str, *, ttl: float, holder: bytes = b"1") -> bool:
        return await self._write(partial(self._claim_row, key=key, ttl=ttl, holder=holder))

    # -- streams -------------------------------------------------------------------------------
    async def append(self, stream: str, payload: bytes, *, maxlen: int | None = None) -> str:
        return await self._write(
            partial(self._append_row, stream=stream, payload=payload, maxlen=maxlen)
        )

    async def ensure_group(self, stream: str, group: str) -> None:
        await self._write(partial(self._ensure_group_row, stream=stream, group=group))

    @staticmethod
    def _has_new(conn: sqlite3.Connection, streams: Sequence[str], group: str) -> bool:
        """Read-only probe, so an idle poller does not take the write lock every tick."""
        for stream in streams:
            row = conn.execute(
                "SELECT last_delivered FROM groups WHERE stream = ? AND grp = ?", (stream, group)
            ).fetchone()
            if row is None:
                return True  # the group must be created, which is a write anyway
            if conn.execute(
                "SELECT 1 FROM entries WHERE stream = ? AND id > ? LIMIT 1", (stream, row[0])
            ).fetchone():
                return True
        return False

    def _take_new(
        self,
        conn: sqlite3.Connection,
        streams: Sequence[str],
        group: str,
        consumer: str,
        count: int,
    ) -> list[tuple[str, StreamEntry]]:
        out: list[tuple[str, StreamEntry]] = []
        now = time.time()
        for stream in streams:
            last = self._ensure_group_row(conn, stream, group)
            rows = conn.execute(
                "SELECT id, payload FROM entries WHERE stream = ? AND id > ? ORDER BY id LIMIT ?",
                (stream, last, count),
            ).fetchall()
            if not rows:
                continue
            conn.executemany(
                "INSERT OR REPLACE INTO pending"
                "(stream, grp, id, consumer, delivered_at, deliveries) VALUES (?, ?, ?, ?, ?, 1)",
                [(stream, group, entry_id, consumer, now) for entry_id, _ in rows],
            )
            conn.execute(
                "UPDATE groups SET last_delivered = ? WHERE stream = ? AND grp = ?",
                (rows[-1][0], stream, group),
            )
            out.extend((stream, StreamEntry(str(i), bytes(p), 1)) for i, p in rows)
        return out

    async def read_group(
        self,
        streams: Sequence[str],
        *,
        group: str,
        consumer: str,
        count: int,
        block: float,
    ) -> list[tuple[str, StreamEntry]]:
        names = list(dict.fromkeys(streams))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block
        while True:
            wakeup = self._wakeup.current()
            if await self._read(partial(self._has_new, streams=names, group=group)):
                out = await self._write(
                    partial(
                        self._take_new, streams=names, group=group, consumer=consumer, count=count
                    )
                )
                if out:
                    return out
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            # Appends in this process wake us at once; other processes' appends are seen by
            # the next poll.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), min(_POLL_SECONDS, remaining))

    async def claim_pending(
        self, stream: str, *, group: str, consumer: str, min_idle: float, count: int
    ) -> list[StreamEntry]:
        def op(conn: sqlite3.Connection) -> list[StreamEntry]:
            now = time.time()
            rows = conn.execute(
                "SELECT p.id, p.deliveries, e.payload FROM pending p LEFT JOIN entries e"
                " ON e.stream = p.stream AND e.id = p.id"
                " WHERE p.stream = ? AND p.grp = ? AND p.delivered_at <= ? ORDER BY p.id",
                (stream, group, now - min_idle),
            )
            out: list[StreamEntry] = []
            gone: list[int] = []
            for entry_id, deliveries, payload in rows:
                if len(out) >= count:
                    break
                if payload is None:  # deleted while pending: drop it, as Redis does
                    gone.append(entry_id)
                    continue
                out.append(StreamEntry(str(entry_id), bytes(payload), deliveries + 1))
            conn.executemany(
                "DELETE FROM pending WHERE stream = ? AND grp = ? AND id = ?",
                [(stream, group, i) for i in gone],
            )
            conn.executemany(
                "UPDATE pending SET consumer = ?, delivered_at = ?, deliveries = ?"
                " WHERE stream = ? AND grp = ? AND id = ?",
                [(consumer, now, e.deliveries, stream, group, int(e.id)) for e in out],
            )
            return out

        return await self._write(op)

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        return await self._write(partial(self._ack_rows, stream=stream, group=group, ids=list(ids)))

    async def backlog(self, stream: str, group: str) -> int:
        def op(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT last_delivered FROM groups WHERE stream = ? AND grp = ?", (stream, group)
            ).fetchone()
            if row is None:
                return int(
                    conn.execute(
                        "SELECT count(*) FROM entries WHERE stream = ?", (stream,)
                    ).fetchone()[0]
                )
            (pending,) = conn.execute(
                "SELECT count(*) FROM pending WHERE stream = ? AND grp = ?", (stream, group)
            ).fetchone()
            (undelivered,) = conn.execute(
                "SELECT count(*) FROM entries WHERE stream = ? AND id > ?", (stream, row[0])
            ).fetchone()
            return int(pending) + int(undelivered)

        return await self._read(op)

    async def range(
        self, stream: str, *, after: str | None = None, count: int = 100
    ) -> list[StreamEntry]:
        floor = decimal_id(after) or 0
        rows = await self._read(
            lambda conn: conn.execute(
                "SELECT id, payload FROM entries WHERE stream = ? AND id > ? ORDER BY id LIMIT ?",
                (stream, floor, count),
            ).fetchall()
        )
        return [StreamEntry(str(i), bytes(p)) for i, p in rows]

    # -- logs (stream rows with a cap here) -----------------------------------------------------
    async def append_log(self, key: str, payload: bytes, *, cap: int) -> str:
        return await self.append(key, payload, maxlen=cap)

    async def read_log(
        self, key: str, *, after: str | None = None, count: int = 100
    ) -> list[StreamEntry]:
        floor = log_cursor(after)
        return await self.range(key, after=None if floor is None else str(floor), count=count)

    async def get_entry(self, stream: str, entry_id: str) -> StreamEntry | None:
        wanted = decimal_id(entry_id, strict=False)
        if wanted is None:
            return None
        row = await self._read(
            lambda conn: conn.execute(
                "SELECT payload FROM entries WHERE stream = ? AND id = ?", (stream, wanted)
            ).fetchone()
        )
        return None if row is None else StreamEntry(str(wanted), bytes(row[0]))

    async def delete_entries(self, stream: str, ids: Sequence[str]) -> int:
        wanted = [(stream, n) for n in (decimal_id(i, strict=False) for i in ids) if n is not None]
        if not wanted:
            return 0

        def op(conn: sqlite3.Connection) -> int:
            cur = conn.executemany("DELETE FROM entries WHERE stream = ? AND id = ?", wanted)
            return max(cur.rowcount, 0)

        return await self._write(op)

    async def trim_acknowledged(self, stream: str, group: str) -> int:
        def op(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT last_delivered FROM groups WHERE stream = ? AND grp = ?", (stream, group)
            ).fetchone()
            if row is None:
                return 0
            (oldest_pending,) = conn.execute(
                "SELECT min(id) FROM pending WHERE stream = ? AND grp = ?", (stream, group)
            ).fetchone()
            bound = int(row[0]) + 1 if oldest_pending is None else int(oldest_pending)
            cur = conn.execute("DELETE FROM entries WHERE stream = ? AND id < ?", (stream, bound))
            return max(cur.rowcount, 0)

        return await self._write(op)

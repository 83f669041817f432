"""SQLite store: the embedded default, durable on one host and shared by its processes.

Design, and why:

- One file in WAL mode. Readers never block the writer, and several gateway processes on one
  host can share the file; every write runs inside ``BEGIN IMMEDIATE`` so two processes
  never interleave a read-modify-write, and ``busy_timeout`` makes them queue instead of
  failing.
- ``synchronous=FULL`` by default: an acknowledged ``admit()`` survives power loss, which is
  the promise the ingest path makes to the chat platforms. ``?synchronous=normal`` trades
  that for speed.
- sqlite3 is blocking, so all of it runs on ONE dedicated thread; the event loop only awaits
  futures. A single thread also means one connection and no locking of our own.
- Group commit: a commit costs an fsync, so writes are queued and a flusher applies
  everything queued since its last run in one transaction. Each operation runs inside its
  own savepoint, so one failing operation does not take its batch-mates down with it.
- Expiry uses wall-clock time (``time.time()``) because several processes share the rows.
  Expired rows are invisible at once and purged lazily.
- Stream entry ids are decimal integers, increasing per stream (a per-stream sequence, so
  ids are never reused even after the newest entries are deleted).
- The file holds conversations and addresses, so it is created owner-only (0600) whatever
  the umask; SQLite gives its ``-wal`` and ``-shm`` files the database file's mode. A file
  found readable by others is left as it is (an operator may mean it) but logged at WARNING.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from gateway.errors import ConfigError, StoreError
from gateway.observability import get_logger
from gateway.store.base import (
    Admission,
    Commit,
    Holding,
    StreamEntry,
    TokenBucketResult,
    Versioned,
)
from gateway.store.cursors import decimal_id, log_cursor

__all__ = ["SqliteStore"]

log = get_logger(__name__)

T = TypeVar("T")
_Op = Callable[[sqlite3.Connection], Any]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_expiry ON records(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS states (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL, expires_at REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS states_expiry ON states(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS streams (
    stream TEXT PRIMARY KEY, seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    stream TEXT NOT NULL, id INTEGER NOT NULL, payload BLOB NOT NULL,
    PRIMARY KEY (stream, id)
);
CREATE TABLE IF NOT EXISTS groups (
    stream TEXT NOT NULL, grp TEXT NOT NULL, last_delivered INTEGER NOT NULL,
    PRIMARY KEY (stream, grp)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
    stream TEXT NOT NULL, grp TEXT NOT NULL, id INTEGER NOT NULL, consumer TEXT NOT NULL,
    delivered_at REAL NOT NULL, deliveries INTEGER NOT NULL,
    PRIMARY KEY (stream, grp, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY, value INTEGER NOT NULL, expires_at REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS buckets (
    key TEXT PRIMARY KEY, tokens REAL NOT NULL, stamp REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (
    key TEXT NOT NULL, member TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (key, member)
) WITHOUT ROWID;
"""

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

_SYNCHRONOUS = {"off", "normal", "full", "extra"}
_POLL_SECONDS = 0.025  # how often a blocked read_group looks for other processes' appends
_PURGE_SECONDS = 30.0  # at most this often, a flush also deletes some expired rows
_PURGE_BATCH = 1000


def _parse_url(url: str) -> tuple[str, str, float]:
    """``sqlite:///abs/path.db`` or ``sqlite://relative.db``, with optional query options."""
    parts = urlsplit(url)
    path = parts.netloc + parts.path
    if not path:
        raise ConfigError([("store.url", "sqlite URL names no database file")])
    synchronous = "full"
    busy_timeout = 10.0
    for name, values in parse_qs(parts.query, keep_blank_values=True).items():
        value = values[-1].lower()
        if name == "synchronous" and value in _SYNCHRONOUS:
            synchronous = value
        elif name == "busy_timeout":
            try:
                busy_timeout = float(value)
            except ValueError:
                raise ConfigError(
                    [("store.url", "sqlite busy_timeout must be a number of seconds")]
                ) from None
        else:
            raise ConfigError([("store.url", f"unsupported sqlite URL option {name}={value}")])
    return path, synchronous, busy_timeout


def _exp(now: float, ttl: float | None) -> float | None:
    return None if ttl is None else now + ttl


def _alive(expires_at: float | None, now: float) -> bool:
    return expires_at is None or expires_at > now


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


class _Wakeup:
    """Wakes every ``read_group`` waiting in this process when an append commits.

    A fresh event per generation: a waiter grabs the current event *before* it looks for
    entries, so an append that commits in between still wakes it (no lost wakeup).
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()


def _create_private(path: str) -> None:
    """Create the database file owner-only before SQLite does (it would use 0644 less umask)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            log.warning("store.sqlite_file_shared", path=path, mode=oct(mode), expected="0o600")
        return
    os.close(fd)


class SqliteStore:
    def __init__(self, url: str, path: str, *, synchronous: str, busy_timeout: float) -> None:
        self.url = url
        self._path = path
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._conn: sqlite3.Connection | None = None  # touched only on the executor thread
        self._queue: list[tuple[_Op, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._wakeup = _Wakeup()
        self._closed = False
        self._appended = False  # set on the executor thread by a batch that appended
        self._next_purge = 0.0  # executor thread only

    @classmethod
    async def open(cls, url: str) -> SqliteStore:
        path, synchronous, busy_timeout = _parse_url(url)
        store = cls(url, path, synchronous=synchronous, busy_timeout=busy_timeout)
        try:
            await store._call(store._connect)
        except OSError as exc:  # e.g. the directory cannot be created
            store._executor.shutdown(wait=False)
            raise StoreError(f"sqlite store cannot open its file: {exc}") from exc
        except BaseException:
            store._executor.shutdown(wait=False)
            raise
        return store

    # -- plumbing ------------------------------------------------------------------------------
    def _connect(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _create_private(self._path)
        # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
        conn = sqlite3.connect(self._path, timeout=self._busy_timeout, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if self._path != ":memory:" and str(mode).lower() != "wal":
                raise StoreError(f"sqlite store could not enable WAL mode (got {mode})")
            conn.execute(f"PRAGMA synchronous = {self._synchronous.upper()}")
            # In the script itself: executescript() would COMMIT a transaction begun outside.
            conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the store thread, outside any batch (reads, setup)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store failed: {exc}") from exc

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreError("sqlite store is closed")
        return await self._call(lambda: fn(self._db()))

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("sqlite store is closed")
        return self._conn

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Queue ``fn`` for the next group commit and wait until it is durable."""
        if self._closed:
            raise StoreError("sqlite store is closed")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((fn, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop(), name="sqlite-store-flush")
        return await fut

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            # Everything queued while the previous batch was committing goes in this one.
            batch, self._queue = self._queue, []
            try:
                results, appended = await loop.run_in_executor(
                    self._executor, self._run_batch, [fn for fn, _ in batch]
                )
            except sqlite3.Error as exc:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(StoreError(f"sqlite commit failed: {exc}"))
                continue
            except BaseException:
                # Never leave a caller waiting forever on a batch that died half-way.
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(StoreError("sqlite batch aborted"))
                raise
            if appended:
                self._wakeup.notify()
            for (_, fut), (ok, value) in zip(batch, results, strict=True):
                if fut.done():  # the caller gave up; its change is committed regardless
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)

    def _run_batch(self, ops: list[_Op]) -> tuple[list[tuple[bool, Any]], bool]:
        conn = self._db()
        self._appended = False
        results: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                conn.execute("SAVEPOINT op")
                try:
                    results.append((True, op(conn)))
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK TO op")
                    results.append((False, StoreError(f"sqlite store failed: {exc}")))
                except Exception as exc:  # noqa: BLE001 — handed to the caller's future, not swallowed
                    conn.execute("ROLLBACK TO op")
                    results.append((False, exc))
                conn.execute("RELEASE op")
            self._maybe_purge(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results, self._appended

    def _maybe_purge(self, conn: sqlite3.Connection) -> None:
        now = time.time()
        if now < self._next_purge:
            return
        self._next_purge = now + _PURGE_SECONDS
        # Own savepoint: a failed purge (it only tidies up) must not fail the batch's writes;
        # it is simply tried again next time.
        conn.execute("SAVEPOINT purge")
        try:
            self._purge(conn, now)
        except sqlite3.Error:
            conn.execute("ROLLBACK TO purge")
        conn.execute("RELEASE purge")

    @staticmethod
    def _purge(conn: sqlite3.Connection, now: float) -> None:
        for table in ("records", "states"):
            conn.execute(
                f"DELETE FROM {table} WHERE key IN (SELECT key FROM {table}"  # noqa: S608 — table names are constants
                " WHERE expires_at <= ? LIMIT ?)",
                (now, _PURGE_BATCH),
            )
        conn.execute("DELETE FROM members WHERE expires_at <= ?", (now,))
        conn.execute("DELETE FROM leases WHERE expires_at <= ?", (now,))

    async def ping(self) -> None:
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            await self._flusher

        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        try:
            await self._call(close)
        finally:
            self._executor.shutdown(wait=True)

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
    def _claim_row(conn: sqlite3.Connection, key: str, ttl: float | None) -> bool:
        now = time.time()
        cur = conn.execute(
            "INSERT INTO records(key, value, expires_at) VALUES (?, x'31', ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value,"
            " expires_at = excluded.expires_at"
            " WHERE records.expires_at IS NOT NULL AND records.expires_at <= ?",
            (key, _exp(now, ttl), now),
        )
        return cur.rowcount == 1

    @staticmethod
    def _put_record_row(
        conn: sqlite3.Connection, key: str, value: bytes, ttl: float | None
    ) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO records(key, value, expires_at) VALUES (?, ?, ?)",
            (key, value, _exp(time.time(), ttl)),
        )

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

    async def claim(self, key: str, *, ttl: float) -> bool:
        return await self._write(partial(self._claim_row, key=key, ttl=ttl))

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

    # -- state and records ---------------------------------------------------------------------
    @staticmethod
    def _state_row(conn: sqlite3.Connection, key: str) -> Versioned | None:
        row = conn.execute(
            "SELECT value, version, expires_at FROM states WHERE key = ?", (key,)
        ).fetchone()
        if row is None or not _alive(row[2], time.time()):
            return None
        return Versioned(bytes(row[0]), int(row[1]))

    async def get_state(self, key: str) -> Versioned | None:
        return await self._read(partial(self._state_row, key=key))

    async def commit(self, commit: Commit) -> int | None:
        def op(conn: sqlite3.Connection) -> int | None:
            version = 0
            state = commit.state
            if state is not None:
                current = self._state_row(conn, state.key)
                have = current.version if current is not None else 0
                if have != state.expected_version:
                    return None
                version = have + 1
                conn.execute(
                    "INSERT OR REPLACE INTO states(key, value, version, expires_at)"
                    " VALUES (?, ?, ?, ?)",
                    (state.key, state.value, version, _exp(time.time(), state.ttl)),
                )
            for stream, payload in commit.appends:
                self._append_row(conn, stream, payload)
            for log in commit.logs:
                self._append_row(conn, log.key, log.payload, log.cap)
            for key, value, ttl in commit.records:
                self._put_record_row(conn, key, value, ttl)
            for stream, group, entry_id in commit.acks:
                self._ack_rows(conn, stream, group, [entry_id])
            self._delete_rows(conn, commit.deletes)
            return version

        return await self._write(op)

    async def put_record(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        await self._write(partial(self._put_record_row, key=key, value=value, ttl=ttl))

    async def get_record(self, key: str) -> bytes | None:
        row = await self._read(
            lambda conn: conn.execute(
                "SELECT value, expires_at FROM records WHERE key = ?", (key,)
            ).fetchone()
        )
        if row is None or not _alive(row[1], time.time()):
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
        if row is None or not _alive(row[1], now):
            row = (0, _exp(now, ttl))
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

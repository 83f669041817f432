"""The SQLite store's thread and group-committed writer.

Guarantees:

- sqlite3 is blocking, so all of it runs on ONE dedicated thread; the event loop only awaits
  futures. A single thread also means one connection and no locking of our own.
- Group commit: a commit costs an fsync, so writes are queued and a flusher applies
  everything queued since its last run in one ``BEGIN IMMEDIATE`` transaction; a write's
  future resolves only once its batch is committed. Each operation runs inside its own
  savepoint, so one failing operation does not take its batch-mates down with it, and no
  caller is left waiting on a batch that died half-way.
- Expiry uses wall-clock time (``time.time()``) because several processes share the rows.
  Expired rows are invisible at once and purged lazily, a bounded number per flush.
- A batch that appended wakes every ``read_group`` waiting in this process.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from gateway.errors import StoreError
from gateway.store.sqlite_schema import connect

__all__ = ["Op", "SqliteWriter", "Wakeup", "alive", "expiry"]

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]

_PURGE_SECONDS = 30.0  # at most this often, a flush also deletes some expired rows
_PURGE_BATCH = 1000


def expiry(now: float, ttl: float | None) -> float | None:
    return None if ttl is None else now + ttl


def alive(expires_at: float | None, now: float) -> bool:
    return expires_at is None or expires_at > now


class Wakeup:
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


class SqliteWriter:
    """The thread, connection and write queue of one SQLite store."""

    def __init__(self, url: str, path: str, *, synchronous: str, busy_timeout: float) -> None:
        self.url = url
        self._path = path
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._conn: sqlite3.Connection | None = None  # touched only on the executor thread
        self._queue: list[tuple[Op, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._wakeup = Wakeup()
        self._closed = False
        self._appended = False  # set on the executor thread by a batch that appended
        self._next_purge = 0.0  # executor thread only

    def _connect(self) -> None:
        self._conn = connect(
            self._path, synchronous=self._synchronous, busy_timeout=self._busy_timeout
        )

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

    def _run_batch(self, ops: list[Op]) -> tuple[list[tuple[bool, Any]], bool]:
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

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

Where each part lives: :mod:`gateway.store.sqlite_schema` (the file, its schema and
connection settings), :mod:`gateway.store.sqlite_writer` (the store thread and the group
commit), :mod:`gateway.store.sqlite_streams` (ingest, streams, consumer groups, logs) and
:mod:`gateway.store.sqlite_records` (state, records, counters, buckets, leases). This module
assembles :class:`SqliteStore`, opens it, and holds ``commit``, which spans all of them.
"""

from __future__ import annotations

import sqlite3
import time

from gateway.errors import StoreError
from gateway.store.base import Commit
from gateway.store.sqlite_records import SqliteRecords
from gateway.store.sqlite_schema import parse_url
from gateway.store.sqlite_streams import SqliteStreams
from gateway.store.sqlite_writer import expiry

__all__ = ["SqliteStore"]


class SqliteStore(SqliteStreams, SqliteRecords):
    """The :class:`gateway.store.base.Store` in one SQLite file."""

    @classmethod
    async def open(cls, url: str) -> SqliteStore:
        path, synchronous, busy_timeout = parse_url(url)
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
                    (state.key, state.value, version, expiry(time.time(), state.ttl)),
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
            for key, amount, ttl in commit.counters:
                self._incr_row(conn, key, amount, ttl)
            return version

        return await self._write(op)

"""The SQLite store's file, schema and connection settings.

Guarantees: the file is created owner-only (0600) whatever the umask, and SQLite gives its
``-wal`` and ``-shm`` files the same mode; a file found readable by others is left as it is
(an operator may mean it) but logged at WARNING. A connection is in WAL mode (readers never
block the writer), waits ``busy_timeout`` for another process's write instead of failing,
and fsyncs as ``synchronous`` says (``full`` unless the URL asks otherwise). The schema is
created in one transaction and only ever with ``IF NOT EXISTS``, so opening an existing
file never changes its data.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from gateway.errors import ConfigError, StoreError
from gateway.observability import get_logger

__all__ = ["connect", "parse_url"]

# Under the store's own name: operators filter its events by it.
log = get_logger("gateway.store.sqlite")

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

_SYNCHRONOUS = {"off", "normal", "full", "extra"}


def parse_url(url: str) -> tuple[str, str, float]:
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


def connect(path: str, *, synchronous: str, busy_timeout: float) -> sqlite3.Connection:
    """Open ``path`` (creating it owner-only) with the schema in place, on the calling thread."""
    if path != ":memory:":
        Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _create_private(path)
    # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves.
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if path != ":memory:" and str(mode).lower() != "wal":
            raise StoreError(f"sqlite store could not enable WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        # In the script itself: executescript() would COMMIT a transaction begun outside.
        conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
    except BaseException:
        conn.close()
        raise
    return conn

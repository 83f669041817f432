"""Where the gateway keeps everything: see :mod:`gateway.store.base` for the protocol.

``open_store(url)`` picks the implementation from the URL scheme:

- ``sqlite:///path/to/file.db`` (or ``sqlite://relative.db``) — embedded default, one host
- ``redis://host:port/db`` / ``rediss://`` — production, shared by many processes; with
  ``cluster=True`` the URL names one node of a Redis Cluster (db 0)
- ``memory://`` — in-process reference, tests only
"""

from __future__ import annotations

from gateway.errors import ConfigError
from gateway.store.base import (
    Admission,
    Commit,
    Holding,
    LogAppend,
    StateWrite,
    Store,
    StreamEntry,
    TokenBucketResult,
    Versioned,
)
from gateway.store.keys import Keyspace

__all__ = [
    "Admission",
    "Commit",
    "Holding",
    "Keyspace",
    "LogAppend",
    "StateWrite",
    "Store",
    "StreamEntry",
    "TokenBucketResult",
    "Versioned",
    "open_store",
]


async def open_store(url: str, *, cluster: bool = False) -> Store:
    """Connect to the store named by ``url``; the caller must ``await store.aclose()``."""
    scheme = url.split(":", 1)[0].lower()
    if cluster and scheme not in {"redis", "rediss"}:
        raise ConfigError([("store.cluster", "a cluster needs a redis:// or rediss:// url")])
    if scheme == "memory":
        from gateway.store.memory import MemoryStore

        return MemoryStore(url)
    if scheme == "sqlite":
        from gateway.store.sqlite import SqliteStore

        return await SqliteStore.open(url)
    if scheme in {"redis", "rediss", "unix"}:
        from gateway.store.redis import RedisStore

        return await RedisStore.open(url, cluster=cluster)
    raise ConfigError([("store.url", f"unsupported store scheme {scheme!r}")])

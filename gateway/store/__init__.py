"""Where the gateway keeps everything: see :mod:`gateway.store.base` for the protocol.

``open_store(url)`` picks the implementation from the URL scheme:

- ``sqlite:///path/to/file.db`` (or ``sqlite://relative.db``) — embedded default, one host
- ``redis://host:port/db`` / ``rediss://`` — production, shared by many processes; with
  ``cluster=True`` the URL names one node of a Redis Cluster (db 0)
- ``redis+sentinel://host:port,host:port/master-name[/db]`` — the same, on the master that
  Redis Sentinel names (and, after a failover, the replica it promoted)
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
from gateway.store.redis_replication import ReplicaAcks, ReplicationError

__all__ = [
    "Admission",
    "Commit",
    "Holding",
    "Keyspace",
    "LogAppend",
    "ReplicaAcks",
    "ReplicationError",
    "StateWrite",
    "Store",
    "StreamEntry",
    "TokenBucketResult",
    "Versioned",
    "open_store",
]


async def open_store(
    url: str, *, cluster: bool = False, replica_acks: ReplicaAcks | None = None
) -> Store:
    """Connect to the store named by ``url``; the caller must ``await store.aclose()``.

    ``replica_acks`` (Redis only) makes acknowledging writes wait for replicas; asking it of
    a store without replicas is a :class:`ConfigError`, never silently ignored."""
    scheme = url.split(":", 1)[0].lower()
    if cluster and scheme not in {"redis", "rediss"}:
        raise ConfigError([("store.cluster", "a cluster needs a redis:// or rediss:// url")])
    redis_schemes = {"redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel"}
    if replica_acks is not None and replica_acks.replicas and scheme not in redis_schemes:
        raise ConfigError([("store.replica_acks", f"a {scheme} store has no replicas")])
    if scheme == "memory":
        from gateway.store.memory import MemoryStore

        return MemoryStore(url)
    if scheme == "sqlite":
        from gateway.store.sqlite import SqliteStore

        return await SqliteStore.open(url)
    if scheme in redis_schemes:
        from gateway.store.redis import RedisStore

        return await RedisStore.open(url, cluster=cluster, replica_acks=replica_acks)
    raise ConfigError([("store.url", f"unsupported store scheme {scheme!r}")])

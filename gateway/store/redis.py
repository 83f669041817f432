"""Redis store: production, shared by many gateway processes on many hosts.

Design, and why:

- Streams are Redis Streams, so consumer groups, pending lists and reclaiming are Redis's
  own (``XREADGROUP``/``XACK``/``XAUTOCLAIM``), not something rebuilt on top.
- Every multi-step change (admit, commit, token bucket, leases, heartbeats) is one Lua
  script, so it is atomic and costs one round trip. All keys a script touches are passed in
  ``KEYS`` so a cluster can route it; :mod:`gateway.store.keys` gives the keys of one
  partition a shared hash tag so they land in one slot.
- On a Redis Cluster (``open(url, cluster=True)``) the same code runs over redis-py's
  ``RedisCluster``; :mod:`gateway.store.redis_cluster` holds the few differences.
- Auto-pipelining: hot-path calls (admit, commit, ack, append, records) are queued and sent
  together: on one plain server everything queued during an event-loop turn is written at
  once on the store's own connection (:mod:`gateway.store.redis_wire`); on a cluster, TLS or
  a Unix socket a flusher sends everything queued since its last run as ONE redis-py
  pipeline. Concurrent admits are additionally merged into one script call per hash tag. On
  a small box a round trip per request costs most of the throughput; batching is the point.
- Blocking ``XREADGROUP`` runs on its own connection pool, so long polls never hold the
  connections the hot path needs.
- Automatic command retries are off: a pipeline resent after a connection drop could append
  twice or report a commit it applied as a conflict. Callers see a :class:`StoreError`
  instead and retry at their own level, where dedupe makes that safe.
- Times that several processes must agree on (buckets, heartbeats) come from the server's
  ``TIME``, never from client clocks.

Where each part lives: :mod:`gateway.store.redis_scripts` (the Lua scripts),
:mod:`gateway.store.redis_pipeline` (connections, the shared pipeline and its flush loop),
:mod:`gateway.store.redis_streams` (ingest, streams, consumer groups, logs),
:mod:`gateway.store.redis_records` (state, records, counters, buckets, leases) and
:mod:`gateway.store.redis_cluster` (what differs on a cluster). This module assembles
:class:`RedisStore` and connects it.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from gateway.errors import StoreError
from gateway.store.redis_cluster import connect_cluster
from gateway.store.redis_pipeline import (
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    REDIS_ERRORS,
    store_errors,
)
from gateway.store.redis_records import RedisRecords
from gateway.store.redis_replication import WAITAOF_PROBE, ReplicaAcks
from gateway.store.redis_scripts import ACQUIRE_LUA, CLAIM_LUA, COMMIT_LUA, HEARTBEAT_LUA
from gateway.store.redis_sentinel import SENTINEL_SCHEMES, parse_sentinel_url
from gateway.store.redis_streams import RedisStreams

__all__ = ["RedisStore"]

# Under their earlier names for the fault tests, which run them against a bare server.
_ACQUIRE_LUA = ACQUIRE_LUA
_CLAIM_LUA = CLAIM_LUA
_COMMIT_LUA = COMMIT_LUA
_HEARTBEAT_LUA = HEARTBEAT_LUA


class RedisStore(RedisStreams, RedisRecords):
    """The :class:`gateway.store.base.Store` on Redis or a Redis Cluster."""

    _sentinels: list[Sentinel]

    @classmethod
    async def open(
        cls, url: str, *, cluster: bool = False, replica_acks: ReplicaAcks | None = None
    ) -> RedisStore:
        """Connect to the server at ``url``, or with ``cluster`` to the Redis Cluster that
        the node at ``url`` belongs to, or to the master the sentinels of a
        ``redis+sentinel://`` url name (:mod:`gateway.store.redis_sentinel`). With
        ``replica_acks`` acknowledging writes wait for replicas
        (:mod:`gateway.store.redis_replication`)."""
        sentinels: list[Sentinel] = []

        def connect(socket_timeout: float | None) -> Redis | RedisCluster:
            if cluster:
                return connect_cluster(
                    url, connect_timeout=CONNECT_TIMEOUT, socket_timeout=socket_timeout
                )
            if url.split(":", 1)[0].lower() in SENTINEL_SCHEMES:
                sentinel, master = parse_sentinel_url(url).connect(
                    connect_timeout=CONNECT_TIMEOUT, socket_timeout=socket_timeout
                )
                sentinels.append(sentinel)
                return master
            # Options in the URL's query string take precedence over these defaults.
            return Redis.from_url(
                url,
                decode_responses=False,
                retry=Retry(NoBackoff(), 0),
                socket_connect_timeout=CONNECT_TIMEOUT,
                socket_timeout=socket_timeout,
            )

        # The blocking pool has no socket timeout (a BLOCK may be long); read_group bounds it.
        store = cls(url, connect(COMMAND_TIMEOUT), connect(None), replica_acks=replica_acks)
        store._sentinels = sentinels
        try:
            await store.ping()
            if isinstance(store._blocking, RedisCluster):
                with store_errors("cluster slot map"):
                    await store._blocking.initialize()  # a cluster client routes nothing before
            if replica_acks is not None and replica_acks.replicas and replica_acks.aof:
                await store._check_waitaof()
        except BaseException:
            await store.aclose()
            raise
        return store

    async def _check_waitaof(self) -> None:
        """Refuse a server without ``WAITAOF`` (Redis < 7.2) when it was asked for."""
        node = {"target_nodes": RedisCluster.PRIMARIES} if self._slot_reads is not None else {}
        try:
            await self._client.execute_command(*WAITAOF_PROBE, **node)
        except ResponseError as exc:
            if "unknown command" in str(exc).lower():
                raise StoreError(
                    "store.replica_ack_aof needs WAITAOF, which this Redis does not have "
                    "(Redis 7.2 or later); use replica_ack_aof: false for WAIT"
                ) from exc
            raise StoreError(f"redis WAITAOF probe failed: {exc}") from exc
        except REDIS_ERRORS as exc:
            raise StoreError(f"redis WAITAOF probe failed: {exc}") from exc

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            # The sentinels' own clients (master_for's client is closed above).
            sentinels, self._sentinels = getattr(self, "_sentinels", []), []
            for sentinel in sentinels:
                await sentinel.aclose()

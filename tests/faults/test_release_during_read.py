"""A partition being handed over is not released while a read of its stream is in flight.

When a second process joins, the first gives up some partitions: it marks them draining,
lets what it holds of them finish, then releases their leases. Its blocking read of the
partition streams may still be at Redis at that moment; an entry admitted just then is
delivered to that read, pending on the first process. Released too early, the partition
is no longer the first process's to handle it, and the next owner, which claimed what was
pending when it adopted the partition, never sees it: the message waited for the two-minute
stale-pending sweep and was answered after the conversation's later messages. A black-holed
process healing into a rebalance (tests/faults/test_partition_failover.py) hit this now
and then; here the interleaving is forced.
"""

from __future__ import annotations

import json

import pytest
import redis

from gateway.metrics import Metrics
from gateway.partitions import PartitionConsumer
from gateway.store import Keyspace, StreamEntry, open_store
from tests.conftest import RedisServer
from tests.harness import eventually

BLOCK_SECONDS = 3.0  # the first process's read stays at Redis this long


@pytest.mark.slow
@pytest.mark.redis
async def test_a_draining_partition_is_not_released_under_a_read_in_flight(
    redis_url: str, redis_server: RedisServer
) -> None:
    """The entry that reaches the in-flight read is handled by the process that read it."""
    keyspace = Keyspace(prefix="fb", partitions=2)
    store = await open_store(redis_url)
    handled: list[str] = []

    async def handler(partition: int, entry: StreamEntry) -> None:
        handled.append(entry.id)
        await store.ack(keyspace.inbox(partition), "workers", [entry.id])

    first = PartitionConsumer(
        store=store,
        keyspace=keyspace,
        role="worker",
        group="workers",
        stream_for=keyspace.inbox,
        handler=handler,
        consumer_id="first",
        metrics=Metrics(),
        lease_seconds=30,  # its own lease rounds stay out of the way: the test runs them
        block_seconds=BLOCK_SECONDS,
    )
    try:
        await first.start()
        assert first.owned_partitions == [0, 1]
        # Its read of both streams is blocking at Redis (and stays so for BLOCK_SECONDS).
        await eventually(lambda: _blocked_clients(redis_server) == 1, timeout=10)
        # A second process joins (its heartbeat is all the first sees of it): one partition
        # each, so the first drains partition 1 and, once it holds nothing of it, releases it.
        await store.heartbeat(keyspace.members("worker"), "second", ttl=30)
        await first._renew()
        await first._balance()
        await first._balance()
        entry_id = await store.append(
            keyspace.inbox(1), json.dumps({"conversation": "c1"}).encode()
        )
        await eventually(lambda: entry_id in handled, timeout=BLOCK_SECONDS + 5)

        async def released() -> bool:
            await first._balance()  # the read is over, the entry done: partition 1 can go
            return first.owned_partitions == [0]

        await eventually(released, timeout=10, interval=0.1)
    finally:
        await first.stop(grace=1)
        await store.aclose()


def _blocked_clients(server: RedisServer) -> int:
    with redis.Redis(port=server.port) as client:
        return int(client.info("clients")["blocked_clients"])

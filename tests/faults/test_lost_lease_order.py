"""A worker that lost a partition's lease leaves the conversation's queued messages alone.

Worker A reads a conversation's four messages and queues them. The store then fails it: a
loopback proxy in front of the real redis-server cuts A's connection whenever A commits the
first message, and for a while also when A renews its leases. A's lease expires, worker B
takes the partition over, claims all four and starts on the first (its commit held back by
B's own proxy). Then A's renewals go through again and A learns it lost the partition.

Before the fix A gave the first message up and went on to answer the second, third and
fourth as a zombie: they were answered before the first, which B answered last. Now A drops
what it still holds of the partition, and B answers all four once, in order.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from connectors.http_api.emulator import CallbackReceiver, HttpChannelClient
from gateway.partitions import PartitionConsumer
from gateway.store import Keyspace, open_store
from gateway.store.redis import _ACQUIRE_LUA, _COMMIT_LUA, _HEARTBEAT_LUA
from tests.conftest import RedisServer
from tests.faults.conftest import SECRETS
from tests.faults.redis_proxy import RedisFaultProxy, Rule, script_id
from tests.harness import RunningGateway, base_config, eventually, http_tenant, running_gateway

MESSAGES = 4


def _worker_consumer(gw: RunningGateway) -> PartitionConsumer:
    return next(c for c in gw.runtime.consumers if c.role == "worker")


def _left_pending(gw: RunningGateway) -> float:
    value = gw.runtime.metrics.registry.get_sample_value(
        "flowbiz_partition_entries_left_total", {"role": "worker"}
    )
    return value or 0.0


@pytest.mark.slow
@pytest.mark.redis
async def test_worker_that_lost_its_lease_does_not_answer_a_conversations_next_message(
    redis_url: str,
    redis_server: RedisServer,
    receiver: CallbackReceiver,
    echo_personas: Path,
) -> None:
    """A's queued messages go to the next owner: all answered once, in order, by B."""
    data = base_config(redis_url, tenants=[http_tenant(receiver.url)])
    data["personas_dir"] = str(echo_personas)
    texts = [f"m{i}" for i in range(MESSAGES)]
    async with running_gateway(data, role="web") as web, aiohttp.ClientSession() as session:
        client = HttpChannelClient(
            session=session, base_url=web.url, tenant="acme", signing_secret=SECRETS["T_SIGN"]
        )
        for text in texts:
            status, _ = await client.send(conversation_id="c1", text=text, event_id=text)
            assert status == 202

    keyspace = Keyspace(prefix=web.config.store.prefix, partitions=web.config.store.partitions)
    store = await open_store(redis_url)
    try:
        found = [
            (p, await store.range(keyspace.inbox(p), count=MESSAGES * 2))
            for p in range(keyspace.partitions)
        ]
        partition, entries = next((p, e) for p, e in found if e)
        assert len(entries) == MESSAGES
        # The commit that answers the first message: the commit script, acking its entry.
        first_commit = (
            script_id(_COMMIT_LUA),
            keyspace.inbox(partition).encode(),
            b"\r\n" + entries[0].id.encode() + b"\r\n",
        )
        fail_first = Rule(first_commit, "cut")
        fail_renewals = [
            Rule((script_id(_ACQUIRE_LUA),), "cut", active=False),
            Rule((script_id(_HEARTBEAT_LUA),), "cut", active=False),
        ]
        hold_first = Rule(first_commit, "hold")
        proxy_a = await RedisFaultProxy(redis_server.port, [fail_first, *fail_renewals]).start()
        proxy_b = await RedisFaultProxy(redis_server.port, [hold_first]).start()
        try:
            data_a = {**data, "store": {**data["store"], "url": proxy_a.url}}
            data_b = {**data, "store": {**data["store"], "url": proxy_b.url}}
            async with running_gateway(data_a, role="worker") as gw_a:
                worker_a = _worker_consumer(gw_a)
                # A holds all four: the first fails to commit, the others wait behind it.
                await eventually(lambda: fail_first.seen >= 1, timeout=10)
                for rule in fail_renewals:
                    rule.active = True

                async def leases_expired() -> bool:
                    keys = [
                        keyspace.lease(role, p)
                        for role in ("worker", "dispatcher")
                        for p in range(keyspace.partitions)
                    ]
                    return all([await store.get_record(key) is None for key in keys])

                await eventually(leases_expired, timeout=10)

                async with running_gateway(data_b, role="worker") as gw_b:
                    # B owns the partition, has claimed all four and is committing the first.
                    await eventually(lambda: hold_first.seen >= 1, timeout=10)
                    for rule in fail_renewals:
                        rule.active = False
                    await eventually(lambda: partition not in worker_a.owned_partitions, timeout=10)
                    # A retries its entry in hand until it sees it lost the partition (at most
                    # the longest retry pause); then it must leave the other three alone.
                    tries = fail_first.seen
                    await eventually(
                        lambda: fail_first.seen > tries or _left_pending(gw_a) > 0, timeout=10
                    )
                    # A zombie going on to the next message commits it within milliseconds.
                    await asyncio.sleep(0.5)
                    hold_first.released.set()

                    received = await receiver.wait_for(MESSAGES, timeout=15)
                    assert [cb.payload["text"] for cb in received] == texts
                    await asyncio.sleep(0.3)  # anything answered twice would show by now
                    assert [cb.payload["text"] for cb in receiver.received] == texts
                    assert _worker_consumer(gw_b).running
                assert _left_pending(gw_a) == MESSAGES
        finally:
            await proxy_b.stop()
            await proxy_a.stop()
    finally:
        await store.aclose()

"""A process cut off from Redis for longer than its lease touches nothing of the partition
until a renewal says whether it still holds it.

Process A owns the one partition; its link to Redis goes into a black hole for longer than
the lease. B takes the partition over and reads a conversation's first two messages; its
handler is slow, so both stay pending on B. Then A's link heals, but its lease rounds still
fail (the proxy cuts A's heartbeat and renewal scripts, and nothing else): its other
commands reach Redis again. Before the fence A, believing it still owned the partition,
claimed what was pending (B's two messages) to recover from its failed reads, read the
conversation's third message as well, and answered all three beside B. Now A waits at the
fence until a renewal goes through, learns the lease is B's, and B answers all three once,
in order.

The second test is the same cut on a process alone: its lease lapsed with nobody to take
it, so its renewal fails and it wins the partition back with a take-over, answering what
was admitted meanwhile once, in order. The third holds that process's blocking read at the
proxy across the loss and the win: the read, served only after the take-over, delivers a
new entry under the lost lease; it is claimed again at once, not left pending for the
two-minute stale sweep.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.metrics import Metrics
from gateway.partitions import PartitionConsumer
from gateway.store import Keyspace, Store, StreamEntry, open_store
from gateway.store.redis import _HEARTBEAT_LUA
from gateway.store.redis_scripts import RENEW_LUA
from tests.conftest import RedisServer
from tests.faults.redis_proxy import RedisFaultProxy, Rule, script_id
from tests.harness import eventually

KEYSPACE = Keyspace(prefix="fb", partitions=1)
LEASE = 1.0
GROUP = "workers"

pytestmark = [pytest.mark.slow, pytest.mark.redis]


class Recorder:
    """The handler of each consumer: records who handled what; ``b`` waits for ``gate``."""

    def __init__(self) -> None:
        self.handled: list[tuple[str, str]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    def handler(self, name: str, store: Store) -> Callable[[int, StreamEntry], Awaitable[None]]:
        async def handle(partition: int, entry: StreamEntry) -> None:
            text = json.loads(entry.payload)["text"]
            self.handled.append((name, text))
            if name == "b":
                await self.gate.wait()
            await store.ack(KEYSPACE.inbox(partition), GROUP, [entry.id])

        return handle

    def by(self, name: str) -> list[str]:
        return [text for who, text in self.handled if who == name]


def consumer(name: str, store: Store, recorder: Recorder) -> PartitionConsumer:
    return PartitionConsumer(
        store=store,
        keyspace=KEYSPACE,
        role="worker",
        group=GROUP,
        stream_for=KEYSPACE.inbox,
        handler=recorder.handler(name, store),
        consumer_id=name,
        metrics=Metrics(),
        lease_seconds=LEASE,
        block_seconds=0.2,
    )


async def post(store: Store, text: str) -> None:
    await store.append(KEYSPACE.inbox(0), json.dumps({"conversation": "c1", "text": text}).encode())


async def lease_free(store: Store) -> bool:
    return (await store.lease_holders([KEYSPACE.lease("worker", 0)]))[
        KEYSPACE.lease("worker", 0)
    ] is None


@pytest.fixture
async def direct(redis_url: str) -> AsyncIterator[Store]:
    store = await open_store(redis_url)
    yield store
    await store.aclose()


async def test_a_process_back_from_a_black_hole_leaves_the_new_owners_entries_alone(
    redis_server: RedisServer, direct: Store, short_store_timeout: None
) -> None:
    lease_rounds = [
        Rule((script_id(_HEARTBEAT_LUA),), "cut", active=False),
        Rule((script_id(RENEW_LUA),), "cut", active=False),
    ]
    proxy = await RedisFaultProxy(redis_server.port, lease_rounds).start()
    via_proxy = await open_store(proxy.url)
    recorder = Recorder()
    a = consumer("a", via_proxy, recorder)
    b = consumer("b", direct, recorder)
    try:
        await a.start()
        assert a.owned_partitions == [0]
        proxy.blackhole()
        await eventually(lambda: lease_free(direct), timeout=10)
        await b.start()
        assert b.owned_partitions == [0]
        recorder.gate.clear()  # B is slow: what it reads stays pending on it
        await post(direct, "m1")
        await post(direct, "m2")
        await eventually(lambda: recorder.by("b") == ["m1"], timeout=10)

        for rule in lease_rounds:
            rule.active = True
        await proxy.heal()
        await eventually(lambda: lease_rounds[0].seen >= 2, timeout=10)  # A is back, fenced
        await post(direct, "m3")
        await asyncio.sleep(3 * LEASE)  # the zombie claimed and read within a few 0.5 s reads
        assert recorder.by("a") == []
        assert a.owned_partitions == [0]  # A does not know yet

        for rule in lease_rounds:
            rule.active = False
        await eventually(lambda: a.owned_partitions == [], timeout=10)
        recorder.gate.set()
        await eventually(lambda: len(recorder.handled) >= 3, timeout=10)
        await asyncio.sleep(0.5)  # anything handled twice would show by now
        assert recorder.handled == [("b", "m1"), ("b", "m2"), ("b", "m3")]
        assert a.running
        assert b.running
    finally:
        await b.stop(grace=1)
        await a.stop(grace=1)
        await via_proxy.aclose()
        await proxy.stop()


async def test_a_process_alone_wins_its_lapsed_lease_back_and_loses_nothing(
    redis_server: RedisServer, direct: Store, short_store_timeout: None
) -> None:
    proxy = await RedisFaultProxy(redis_server.port, []).start()
    via_proxy = await open_store(proxy.url)
    recorder = Recorder()
    a = consumer("a", via_proxy, recorder)
    try:
        await a.start()
        await post(direct, "m1")
        await eventually(lambda: recorder.by("a") == ["m1"], timeout=10)
        proxy.blackhole()
        await post(direct, "m2")
        await post(direct, "m3")
        await eventually(lambda: lease_free(direct), timeout=10)
        await proxy.heal()
        await post(direct, "m4")
        await eventually(lambda: len(recorder.handled) >= 4, timeout=15)
        await asyncio.sleep(0.5)
        assert recorder.handled == [("a", "m1"), ("a", "m2"), ("a", "m3"), ("a", "m4")]
        assert a.owned_partitions == [0]
        assert await direct.backlog(KEYSPACE.inbox(0), GROUP) == 0
    finally:
        await a.stop(grace=1)
        await via_proxy.aclose()
        await proxy.stop()


async def test_a_read_served_after_the_lease_was_lost_and_won_back_is_not_left_pending(
    redis_server: RedisServer, direct: Store
) -> None:
    read = Rule((b"XREADGROUP",), "hold", once=True, active=False)
    lease_rounds = [
        Rule((script_id(_HEARTBEAT_LUA),), "cut", active=False),
        Rule((script_id(RENEW_LUA),), "cut", active=False),
    ]
    proxy = await RedisFaultProxy(redis_server.port, [read, *lease_rounds]).start()
    via_proxy = await open_store(proxy.url)
    recorder = Recorder()
    a = consumer("a", via_proxy, recorder)
    try:
        await a.start()
        first = a._owned[0]
        read.active = True
        await asyncio.wait_for(read.matched.wait(), timeout=5)  # a read is held at the proxy
        for rule in lease_rounds:
            rule.active = True
        await eventually(lambda: lease_free(direct), timeout=10)
        for rule in lease_rounds:
            rule.active = False

        def won_back() -> bool:
            again = a._owned.get(0)
            return again is not None and again is not first and again.taken_over

        await eventually(won_back, timeout=10)
        await post(direct, "m1")
        read.release()  # the old read reaches Redis now and is handed m1
        await eventually(lambda: recorder.handled == [("a", "m1")], timeout=10)
        assert await direct.backlog(KEYSPACE.inbox(0), GROUP) == 0
    finally:
        await a.stop(grace=1)
        await via_proxy.aclose()
        await proxy.stop()

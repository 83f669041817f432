"""Replication-aware acknowledgement (``store.replica_acks``) on a real primary and replica.

A replica is frozen with SIGSTOP (it stays connected but copies nothing) to tell a reply
that waited for it from one that did not.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
import pytest
from redis.asyncio import Redis

from connectors.http_api.emulator import HttpChannelClient
from gateway.config import parse_config
from gateway.errors import ConfigError, StoreError
from gateway.store import (
    Admission,
    Commit,
    Keyspace,
    LogAppend,
    ReplicaAcks,
    ReplicationError,
    Store,
    open_store,
)
from gateway.store.redis_sentinel import parse_sentinel_url
from tests.conftest import RedisServer
from tests.faults.conftest import post_until_stored
from tests.ha.redis_ha import Replicated, ReplicatedCluster, info
from tests.harness import SECRETS, base_config, http_tenant, running_gateway

KEYS = Keyspace(prefix="ha", partitions=4)


def admission(n: int, partition: int = 0) -> Admission:
    return Admission(
        KEYS.inbound_seen(partition, "http", "acme", f"e{n}"), KEYS.inbox(partition), b"m%d" % n
    )


@contextmanager
def frozen(server: RedisServer) -> Iterator[None]:
    """The server stopped (SIGSTOP) inside the block: connected, but copying nothing."""
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def wait_calls(server: RedisServer) -> int:
    """How many WAIT commands the server has run (INFO commandstats)."""
    line = info(server.port, "commandstats").get("cmdstat_wait", "calls=0,")
    return int(line.split(",")[0].removeprefix("calls="))


async def admitted_once_caught_up(store: Store, item: Admission) -> list[str | None]:
    """``admit`` once the replica thawed has caught up (it may take longer than the
    store's short ack timeout on a busy machine)."""
    for _ in range(50):
        try:
            return await store.admit([item], dedupe_ttl=60)
        except ReplicationError:
            await asyncio.sleep(0.1)
    raise AssertionError("the replica did not catch up")


async def test_admit_returns_only_once_the_replica_holds_it(replicated: Replicated) -> None:
    replica = replicated.replicas[0]
    store = await open_store(replicated.primary.url, replica_acks=ReplicaAcks(1, 5000))
    reader = Redis(port=replica.port)
    try:
        with frozen(replica):
            admitted = asyncio.gather(
                *(store.admit([admission(n)], dedupe_ttl=60) for n in range(20))
            )
            await asyncio.sleep(0.4)
            assert not admitted.done(), "the admission answered before the replica had it"
        ids = await asyncio.wait_for(admitted, 5)
        # Everything the store acknowledged is on the replica the moment it answered.
        assert await reader.xlen(KEYS.inbox(0)) == 20
        assert all(entry[0] is not None for entry in ids)
        assert wait_calls(replicated.primary) >= 1
    finally:
        await reader.aclose()
        await store.aclose()


async def test_a_replica_that_does_not_confirm_fails_admit_and_commit(
    replicated: Replicated,
) -> None:
    short: list[int] = []
    acks = ReplicaAcks(1, 1000, on_short=short.append)
    store = await open_store(replicated.primary.url, replica_acks=acks)
    try:
        with frozen(replicated.replicas[0]):
            with pytest.raises(ReplicationError, match="0 of 1 replicas"):
                await store.admit([admission(1)], dedupe_ttl=60)
            with pytest.raises(ReplicationError):
                await store.commit(Commit(logs=[LogAppend(KEYS.inbox(1) + ":log", b"x", 10)]))
            with pytest.raises(ReplicationError):
                await store.append(KEYS.outbox(0), b"reply")
            # Reads carry no acknowledging write: they send no WAIT and do not wait.
            began = time.monotonic()
            assert await store.get_record(KEYS.inbox(2) + ":none") is None
            assert time.monotonic() - began < 0.5  # a WAIT would hold it for 1 s
        assert short == [1, 1, 1]
        # Applied on the primary all the same (as after a lost reply): the retry is a duplicate.
        assert await admitted_once_caught_up(store, admission(1)) == [None]
    finally:
        await store.aclose()


async def test_a_duplicate_of_an_unreplicated_admission_is_not_acknowledged(
    replicated: Replicated,
) -> None:
    """The platform's retry reaches another process (another connection) while the first
    copy is still on the primary only: finding it a duplicate must not acknowledge it.
    (Redis 7.0 passes this even without the store's duplicate mark, as any command moves a
    connection's WAIT offset there; servers that move it only on replicated writes need it.)"""
    acks = ReplicaAcks(1, 200)
    first = await open_store(replicated.primary.url, replica_acks=acks)
    second = await open_store(replicated.primary.url, replica_acks=acks)
    try:
        await second.ping()  # connected before the replica stops, so it has written nothing
        with frozen(replicated.replicas[0]):
            with pytest.raises(ReplicationError):
                await first.admit([admission(7)], dedupe_ttl=60)
            with pytest.raises(ReplicationError):
                await second.admit([admission(7)], dedupe_ttl=60)
        assert await admitted_once_caught_up(second, admission(7)) == [None]
    finally:
        await first.aclose()
        await second.aclose()


async def test_without_replica_acks_no_wait_is_sent(replicated: Replicated) -> None:
    replica = replicated.replicas[0]
    store = await open_store(replicated.primary.url)
    try:
        with frozen(replica):
            # Answers at once although the replica copies nothing: today's behaviour.
            await asyncio.wait_for(store.admit([admission(1)], dedupe_ttl=60), 1)
            await asyncio.wait_for(store.commit(Commit(appends=[(KEYS.outbox(0), b"r")])), 1)
        assert wait_calls(replicated.primary) == 0
    finally:
        await store.aclose()


async def test_replica_ack_aof_is_refused_by_a_server_without_waitaof(
    replicated: Replicated,
) -> None:
    version = info(replicated.primary.port, "server")["redis_version"]
    if tuple(int(p) for p in version.split(".")[:2]) >= (7, 2):
        pytest.skip(f"redis {version} has WAITAOF")
    with pytest.raises(StoreError, match=r"7\.2"):
        await open_store(replicated.primary.url, replica_acks=ReplicaAcks(1, 100, aof=True))


@pytest.mark.parametrize("url", ["sqlite:///x.db", "memory://"])
def test_replica_acks_are_refused_for_a_store_without_replicas(url: str, tmp_path) -> None:
    data = base_config(url)
    data["store"]["replica_acks"] = 1
    with pytest.raises(ConfigError, match="replica_acks needs a Redis store"):
        parse_config(data)


async def test_open_store_refuses_replica_acks_without_replicas(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no replicas"):
        await open_store(f"sqlite:///{tmp_path}/x.db", replica_acks=ReplicaAcks(1, 100))


def test_replica_ack_aof_needs_replica_acks() -> None:
    data = base_config("redis://127.0.0.1:6379/0")
    data["store"]["replica_ack_aof"] = True
    with pytest.raises(ConfigError, match="replica_ack_aof needs replica_acks"):
        parse_config(data)


def test_replica_ack_timeout_must_leave_room_for_lease_renewals() -> None:
    data = base_config("redis://127.0.0.1:6379/0")  # leases of 1 s: renewed every 333 ms
    data["store"] |= {"replica_acks": 1, "replica_ack_timeout_ms": 400}
    with pytest.raises(ConfigError, match=r"below a third of pipeline\.lease_seconds") as caught:
        parse_config(data)
    assert caught.value.problems[0][0] == "store.replica_ack_timeout_ms"
    data["store"]["replica_ack_timeout_ms"] = 300
    assert parse_config(data).store.replica_ack_timeout_ms == 300


def test_sentinel_url() -> None:
    parsed = parse_sentinel_url("redis+sentinel://:s%40cret@10.0.0.1:26379,sentinel-b/main/2")
    assert parsed.sentinels == (("10.0.0.1", 26379), ("sentinel-b", 26379))
    assert (parsed.master, parsed.db, parsed.password, parsed.tls) == ("main", 2, "s@cret", False)
    assert parse_sentinel_url("rediss+sentinel://[::1]:5000/m").sentinels == (("::1", 5000),)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://h:1/", "/master-name"),
        ("redis+sentinel:///m", "at least one sentinel"),
        ("redis+sentinel://h:99999/m", "no valid port"),
        ("redis+sentinel://h:1/m/zero", "must be a number"),
        ("redis+sentinel://h:1/m/0/x", "/master-name"),
    ],
)
def test_a_bad_sentinel_url_is_a_config_problem(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        parse_config(base_config(url))
    assert caught.value.problems[0][0] == "store"


async def test_the_edge_answers_503_for_an_admission_no_replica_confirmed(
    replicated: Replicated, channel_env_on: None
) -> None:
    data = base_config(replicated.primary.url, tenants=[http_tenant(None)])
    data["store"] |= {"replica_acks": 1, "replica_ack_timeout_ms": 200}
    async with running_gateway(data, role="web") as gw, aiohttp.ClientSession() as session:
        client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", signing_secret=SECRETS["T_SIGN"]
        )
        with frozen(replicated.replicas[0]):
            status, _ = await client.send(conversation_id="c1", text="hello", event_id="e1")
        assert status == 503
        registry = gw.runtime.metrics.registry
        assert registry.get_sample_value("flowbiz_store_replica_acks_short_total") == 1
        outcome = {"channel": "http", "outcome": "not_replicated"}
        assert registry.get_sample_value("flowbiz_inbound_total", outcome) == 1

        # The platform's retries, once the replica is back (and caught up), are acknowledged.
        async def post() -> int:
            status, _ = await client.send(conversation_id="c1", text="hello", event_id="e1")
            return status

        assert await post_until_stored(post) == 202


async def test_on_a_cluster_each_master_waits_for_its_own_replica(
    replicated_cluster: ReplicatedCluster,
) -> None:
    """WAIT goes to the master that took the write: a frozen replica fails only the writes
    of its own master's slots, in the same batch as writes that succeed elsewhere."""
    by_master: dict[int, int] = {}
    for partition in range(KEYS.partitions):
        master = replicated_cluster.master_of_key(KEYS.inbox(partition))
        by_master.setdefault(master.port, partition)
    assert len(by_master) >= 2, "the partitions should span at least two masters"
    (frozen_port, frozen_partition), (_, other_partition) = list(by_master.items())[:2]
    master = next(n for n in replicated_cluster.nodes if n.port == frozen_port)
    replica = replicated_cluster.replica_of(master)
    # Long enough that the master whose replica runs copies in time on a loaded machine.
    acks = ReplicaAcks(1, 2000)
    store = await open_store(replicated_cluster.url, cluster=True, replica_acks=acks)
    try:
        assert await store.admit([admission(1, frozen_partition)], dedupe_ttl=60) != [None]
        with frozen(replica):
            results = await asyncio.gather(
                store.admit([admission(2, frozen_partition)], dedupe_ttl=60),
                store.admit([admission(3, other_partition)], dedupe_ttl=60),
                return_exceptions=True,
            )
        assert isinstance(results[0], ReplicationError)
        assert isinstance(results[1], list)
        assert results[1][0] is not None
        assert wait_calls(master) >= 1
    finally:
        await store.aclose()

"""The Redis store's hot-path connection (``gateway.store.redis_wire``) on its own.

The conformance suite runs every store call through it; these pin down what only the
connection decides: the handshake, order, an unanswered or dropped connection, a reply
nobody asked for, and which servers it is used for at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from gateway.errors import StoreError
from gateway.store.base import Admission
from gateway.store.redis import RedisStore
from gateway.store.redis_wire import PipelinedCommand, RedisWire, WireTarget, wire_target
from tests.conftest import start_redis_server
from tests.faults.redis_proxy import RedisFaultProxy, Rule

pytestmark = pytest.mark.redis


class Replies:
    """Collects each command's reply, and wakes a waiter when ``n`` have arrived."""

    def __init__(self) -> None:
        self.got: list[tuple[tuple[Any, ...], Any]] = []
        self._changed = asyncio.Event()

    def __call__(self, command: PipelinedCommand, result: Any) -> None:
        self.got.append((command.args, result))
        self._changed.set()

    async def wait(self, n: int) -> list[Any]:
        async with asyncio.timeout(10):
            while len(self.got) < n:
                self._changed.clear()
                await self._changed.wait()
        return [result for _, result in self.got]


def command(*args: Any) -> PipelinedCommand:
    return PipelinedCommand(args, lambda _: None)


@pytest.fixture
async def wire_for(redis_url: str) -> AsyncIterator[Any]:
    wires: list[RedisWire] = []

    def make(target: WireTarget | None = None, timeout: float = 5.0) -> tuple[RedisWire, Replies]:
        replies = Replies()
        client = Redis.from_url(redis_url)
        found = wire_target(client) if target is None else target
        assert found is not None
        wire = RedisWire(found, replies, connect_timeout=5.0, command_timeout=timeout)
        wires.append(wire)
        return wire, replies

    yield make
    for wire in wires:
        await wire.aclose()


async def test_replies_come_back_in_order_with_errors_as_values(wire_for: Any) -> None:
    wire, replies = wire_for()
    batch = [command("INCR", "wire:n") for _ in range(500)]
    batch.insert(250, command("HGET", "wire:n", "f"))  # a type error in the middle
    wire.send(batch)
    got = await replies.wait(501)
    assert got[:250] == list(range(1, 251))
    assert isinstance(got[250], ResponseError)
    assert "WRONGTYPE" in str(got[250])
    assert got[251:] == list(range(251, 501))


async def with_password(tmp_path: Path) -> Any:
    server = start_redis_server(tmp_path)
    admin = Redis(port=server.port)
    await admin.config_set("requirepass", "s3cret")
    await admin.aclose()
    return server


async def test_handshake_selects_the_database_and_authenticates(tmp_path: Path) -> None:
    server = await with_password(tmp_path)
    url = f"redis://:s3cret@127.0.0.1:{server.port}/3"
    store = await RedisStore.open(url)
    try:
        await store.admit([Admission("wire:seen", "wire:inbox", b"x")], dedupe_ttl=60)
    finally:
        await store.aclose()
    check = Redis(port=server.port, password="s3cret", db=3)
    try:
        assert await check.xlen("wire:inbox") == 1
    finally:
        await check.aclose()
        server.stop()


async def test_a_refused_handshake_fails_the_commands_behind_it(tmp_path: Path) -> None:
    server = await with_password(tmp_path)
    replies = Replies()
    wire = RedisWire(
        WireTarget("127.0.0.1", server.port, password="wrong"),
        replies,
        connect_timeout=5.0,
        command_timeout=5.0,
    )
    try:
        wire.send([command("SET", "wire:k", "v")])
        (result,) = await replies.wait(1)
        assert isinstance(result, StoreError)
        assert "handshake" in str(result)
    finally:
        await wire.aclose()
        server.stop()


async def test_an_unanswered_command_fails_in_time_and_the_next_reconnects(
    wire_for: Any, redis_server: Any
) -> None:
    hold = Rule((b"wire:held",), "hold", once=True)
    proxy = await RedisFaultProxy(redis_server.port, [hold]).start()
    try:
        client = Redis.from_url(proxy.url)
        target = wire_target(client)
        await client.aclose()
        wire, replies = wire_for(target, timeout=0.5)
        wire.send([command("SET", "wire:held", "1"), command("INCR", "wire:after")])
        first, second = await replies.wait(2)
        assert isinstance(first, StoreError)
        assert "in time" in str(first)
        assert isinstance(second, StoreError)
        hold.release()
        wire.send([command("INCR", "wire:after")])
        (_, _, third) = await replies.wait(3)
        assert isinstance(third, int)  # a new connection; the held one was aborted
    finally:
        await proxy.stop()


async def test_a_dropped_connection_fails_what_is_in_flight_and_the_next_reconnects(
    wire_for: Any, redis_server: Any
) -> None:
    cut = Rule((b"wire:cut",), "cut", once=True)
    proxy = await RedisFaultProxy(redis_server.port, [cut]).start()
    try:
        client = Redis.from_url(proxy.url)
        target = wire_target(client)
        await client.aclose()
        wire, replies = wire_for(target)
        wire.send([command("SET", "wire:cut", "1")])
        (first,) = await replies.wait(1)
        assert isinstance(first, StoreError)
        assert "lost" in str(first)
        wire.send([command("SET", "wire:fine", "1")])
        (_, second) = await replies.wait(2)
        assert second == b"OK"
    finally:
        await proxy.stop()


async def test_a_reply_nobody_asked_for_drops_the_connection() -> None:
    """A server out of step (two replies to one command) is not trusted any further."""

    hung_up = asyncio.Event()

    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            writer.write(b"+OK\r\n+EXTRA\r\n")
        writer.close()
        await writer.wait_closed()
        hung_up.set()

    server = await asyncio.start_server(chatty, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    replies = Replies()
    wire = RedisWire(
        WireTarget("127.0.0.1", port), replies, connect_timeout=5.0, command_timeout=5.0
    )
    try:
        wire.send([command("PING")])
        (first,) = await replies.wait(1)
        assert first == b"OK"
        async with asyncio.timeout(5):
            await hung_up.wait()  # the wire hung up on it
    finally:
        await wire.aclose()
        server.close()
        await server.wait_closed()


async def test_the_wire_is_used_only_for_a_plain_tcp_server(redis_cluster_url: str) -> None:
    plain = Redis.from_url("redis://u:p@127.0.0.1:6390/2")
    assert wire_target(plain) == WireTarget("127.0.0.1", 6390, 2, "u", "p")
    timed = Redis.from_url("redis://127.0.0.1:6390/0?socket_timeout=1.5")
    assert wire_target(timed) == WireTarget("127.0.0.1", 6390, command_timeout=1.5)
    for url in ("rediss://127.0.0.1:6390/0", "unix:///tmp/redis.sock", "redis://h:1/0?protocol=3"):
        assert wire_target(Redis.from_url(url)) is None, url
    cluster = RedisCluster.from_url(redis_cluster_url)
    assert wire_target(cluster) is None
    for client in (plain, timed, cluster):
        await client.aclose()


async def test_a_connection_given_up_on_cannot_touch_the_next_one(wire_for: Any) -> None:
    """Late events of a connection the wire dropped (its end, replies it still delivers)
    change nothing on the connection made after it: the next replies stay in step."""
    wire, replies = wire_for()
    wire.send([command("SET", "wire:k", "1")])
    await replies.wait(1)
    first = wire._link
    wire.abort()
    wire.send([command("INCR", "wire:n")])
    (_, one) = await replies.wait(2)
    assert one == 1
    assert wire._link is not None
    assert wire._link is not first
    # What the loop may still report for the first connection, after the second was made.
    assert first is not None
    first.data_received(b":999\r\n")
    first.connection_lost(None)
    assert wire.connected
    wire.send([command("INCR", "wire:n"), command("GET", "wire:k")])
    (_, _, two, k) = await replies.wait(4)
    assert (two, k) == (2, b"1")

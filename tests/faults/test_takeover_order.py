"""A partition's new owner answers what the dead owner left pending before anything newer.

When a worker dies holding entries it had read but not finished, the next owner claims
them (``XAUTOCLAIM``) and reads the partition's newer entries (``XREADGROUP >``). Under load
the answer to the claim can come back after the answer to a read: the newer messages of a
conversation must still wait for the older ones. Here a loopback proxy in front of the real
redis-server holds back just that claim, the interleaving a busy machine produced in
``tests/e2e/test_worker_crash.py``, so the test does not depend on load.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path

import aiohttp
import pytest

from connectors.http_api.emulator import CallbackReceiver, HttpChannelClient
from gateway.ingest import INBOX_GROUP
from gateway.store import Keyspace, open_store
from gateway.store.redis import _CLAIM_LUA
from tests.conftest import RedisServer
from tests.faults.conftest import SECRETS
from tests.harness import base_config, http_tenant, running_gateway

LEFT_PENDING = 3  # read by the owner that died, never answered
NEWER = 3  # admitted after them, never read
CLAIM_DELAY_SECONDS = 1.0


class SlowClaimProxy:
    """Forwards to redis-server; holds back a request that carries every one of ``markers``.

    Replies on one connection keep their order, so holding the request holds its answer;
    every other connection (the blocking reads among them) flows freely meanwhile.
    """

    def __init__(self, upstream_port: int, markers: tuple[bytes, ...], delay: float) -> None:
        self.upstream_port = upstream_port
        self.markers = markers
        self.delay = delay
        self.held = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def start(self) -> SlowClaimProxy:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._pipes:
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer, hold=True)),
            asyncio.create_task(self._pipe(up_reader, writer, hold=False)),
        ]
        self._pipes.update(pipes)
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        self._pipes.difference_update(pipes)
        for w in (writer, up_writer):
            w.close()
            with contextlib.suppress(ConnectionError):
                await w.wait_closed()

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, hold: bool
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await source.read(65536):
                if hold and all(marker in chunk for marker in self.markers):
                    self.held += 1
                    await asyncio.sleep(self.delay)
                sink.write(chunk)
                await sink.drain()


@pytest.mark.slow
@pytest.mark.redis
async def test_new_owner_answers_entries_left_pending_before_newer_ones(
    redis_url: str,
    redis_server: RedisServer,
    receiver: CallbackReceiver,
    echo_personas: Path,
) -> None:
    """The dead owner's pending messages are answered first, though their claim answers last."""
    data = base_config(redis_url, tenants=[http_tenant(receiver.url)])
    data["personas_dir"] = str(echo_personas)
    texts = [f"m{i}" for i in range(LEFT_PENDING + NEWER)]
    async with running_gateway(data, role="web") as web, aiohttp.ClientSession() as session:
        client = HttpChannelClient(
            session=session, base_url=web.url, tenant="acme", signing_secret=SECRETS["T_SIGN"]
        )
        for text in texts:
            status, _ = await client.send(conversation_id="c1", text=text, event_id=text)
            assert status == 202

    # The worker that died: it had read the first messages and answered none of them.
    keyspace = Keyspace(prefix=web.config.store.prefix, partitions=web.config.store.partitions)
    inboxes = [keyspace.inbox(p) for p in range(keyspace.partitions)]
    store = await open_store(redis_url)
    try:
        for inbox in inboxes:
            await store.ensure_group(inbox, INBOX_GROUP)
        taken = await store.read_group(
            inboxes, group=INBOX_GROUP, consumer="worker-that-died", count=LEFT_PENDING, block=0
        )
    finally:
        await store.aclose()
    assert len(taken) == LEFT_PENDING
    inbox = taken[0][0]

    claim_sha = hashlib.sha1(_CLAIM_LUA.encode()).hexdigest().encode()  # noqa: S324 - redis' script id
    proxy = await SlowClaimProxy(
        redis_server.port, markers=(claim_sha, inbox.encode()), delay=CLAIM_DELAY_SECONDS
    ).start()
    try:
        worker_data = {**data, "store": {**data["store"], "url": proxy.url}}
        async with running_gateway(worker_data, role="worker"):
            received = await receiver.wait_for(len(texts), timeout=15)
    finally:
        await proxy.stop()

    assert proxy.held >= 1, "the new owner's claim never passed the proxy"
    assert [cb.payload["text"] for cb in received] == texts

"""A partition's new owner answers what the dead owner left pending before anything newer.

When a worker dies holding entries it had read but not finished, the next owner claims
them (``XAUTOCLAIM``) and reads the partition's newer entries (``XREADGROUP >``). Under load
the answer to the claim can come back after the answer to a read: the newer messages of a
conversation must still wait for the older ones. Here a loopback proxy in front of the real
redis-server holds back just that claim, the interleaving a busy machine produced in
``tests/e2e/test_worker_crash.py``, so the test does not depend on load.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from connectors.http_api.emulator import CallbackReceiver, HttpChannelClient
from gateway.ingest import INBOX_GROUP
from gateway.store import Keyspace, open_store
from gateway.store.redis import _CLAIM_LUA
from tests.conftest import RedisServer
from tests.faults.conftest import SECRETS
from tests.faults.redis_proxy import RedisFaultProxy, Rule, script_id
from tests.harness import base_config, http_tenant, running_gateway

LEFT_PENDING = 3  # read by the owner that died, never answered
NEWER = 3  # admitted after them, never read
CLAIM_DELAY_SECONDS = 1.0


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

    slow_claim = Rule((script_id(_CLAIM_LUA), inbox.encode()), "delay", delay=CLAIM_DELAY_SECONDS)
    proxy = await RedisFaultProxy(redis_server.port, [slow_claim]).start()
    try:
        worker_data = {**data, "store": {**data["store"], "url": proxy.url}}
        async with running_gateway(worker_data, role="worker"):
            received = await receiver.wait_for(len(texts), timeout=15)
    finally:
        await proxy.stop()

    assert slow_claim.seen >= 1, "the new owner's claim never passed the proxy"
    assert [cb.payload["text"] for cb in received] == texts

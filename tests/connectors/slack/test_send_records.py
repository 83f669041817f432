"""A part of a long reply that Slack has posted is recorded even through a store failure,
so the retry of the reply posts only the parts that did not go out (Slack has no
idempotency key)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from connectors.slack.connector import unescape
from connectors.slack.emulator import SlackEmulator, event_callback, message_event
from gateway.deadletters import list_dead_letters
from tests.conftest import RedisServer
from tests.connectors.slack.conftest import LONG_TEXT, sender_for, slack_config
from tests.faults.redis_proxy import RedisFaultProxy, Rule
from tests.harness import running_gateway


@pytest.mark.redis
async def test_a_posted_part_is_recorded_through_a_store_failure_and_not_posted_again(
    emulator: SlackEmulator,
    session: aiohttp.ClientSession,
    personas_dir: Path,
    redis_url: str,
    redis_server: RedisServer,
) -> None:
    # The connection drops as the first part's progress record is written (the SET, not the
    # GET that looked for it before posting).
    dropped = Rule((b"SET\r\n", b"slack-part:", b":0\r\n"), "cut", once=True)
    proxy = await RedisFaultProxy(redis_server.port, [dropped]).start()
    try:
        data = slack_config(proxy.url, personas_dir, emulator, max_message_chars=2000)
        async with running_gateway(data) as gw:
            await sender_for(session, gw).event(
                event_callback(message_event(text=f"echo {LONG_TEXT}"))
            )
            await emulator.wait_for_posts(5)
            await asyncio.sleep(0.5)  # a second copy of the first part would arrive by now
            assert dropped.matched.is_set(), "the record was written without the fault"
            assert await list_dead_letters(gw.runtime.store, gw.runtime.keyspace) == []
    finally:
        await proxy.stop()
    assert "".join(unescape(p.text) for p in emulator.posted) == f"echo {LONG_TEXT}"

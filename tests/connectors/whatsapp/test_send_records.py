"""A part Twilio has taken is recorded even through a store failure, so the retry of the
reply does not send it a second time (the Messages API has no idempotency key)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from connectors.whatsapp.emulator import TwilioEmulator
from tests.conftest import RedisServer
from tests.connectors.whatsapp.conftest import ConfigFactory
from tests.connectors.whatsapp.support import CUSTOMER, SENDER, dead_letters, sender_for
from tests.connectors.whatsapp.test_outbound import long_text
from tests.faults.redis_proxy import RedisFaultProxy, Rule
from tests.harness import running_gateway


@pytest.mark.redis
async def test_a_sent_part_is_recorded_through_a_store_failure_and_not_sent_again(
    make_config: ConfigFactory,
    emulator: TwilioEmulator,
    http: aiohttp.ClientSession,
    redis_url: str,
    redis_server: RedisServer,
) -> None:
    # The connection drops as the first part's "sent" record is written (the SET, not the
    # GET that looked for it before sending).
    dropped = Rule((b"SET\r\n", b"wa_sent:", b":0\r\n"), "cut", once=True)
    proxy = await RedisFaultProxy(redis_server.port, [dropped]).start()
    try:
        data = make_config()
        data["store"]["url"] = proxy.url
        async with running_gateway(data) as gw:
            await sender_for(gw, http).send(from_=CUSTOMER, to=SENDER, body=long_text(1700))
            first, second = await emulator.wait_for(2)
            await asyncio.sleep(0.5)  # a second copy of the first part would arrive by now
            assert dropped.matched.is_set(), "the record was written without the fault"
            assert len(emulator.messages) == 2
            assert first.body != second.body
            assert await dead_letters(gw) == []
    finally:
        await proxy.stop()

"""Dedupe across gateway processes: two gateways sharing one Redis answer a retried event once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from connectors.slack.emulator import SlackEmulator, event_callback, message_event
from tests.connectors.slack.conftest import sender_for, slack_config
from tests.harness import running_gateway


@pytest.mark.redis
async def test_retry_to_another_process_is_deduped(
    redis_url: str, personas_dir: Path, emulator: SlackEmulator, session
) -> None:
    """Slack's retry lands on a second gateway (same Redis): acked 200, still one reply."""
    data = slack_config(redis_url, personas_dir, emulator)
    async with running_gateway(data) as first, running_gateway(data) as second:
        envelope = event_callback(message_event(text="pricing", channel="D0ALICE"))
        assert (await sender_for(session, first).event(envelope))[0] == 200
        for attempt in (1, 2):
            status, _ = await sender_for(session, second).event(envelope, retry_num=attempt)
            assert status == 200
        await emulator.wait_for_posts(1)
        await asyncio.sleep(0.5)
    assert len(emulator.posted) == 1
